"""The orchestrator's store: SQLModel tables, engines and migrations."""

from cynode.orchestrator.store.engine import (
    DatabaseUrlError,
    default_sqlite_url,
    is_postgres,
    make_engine,
    normalize_url,
    session_factory,
    transaction,
)
from cynode.orchestrator.store.migrate import current_revision, head_revision, is_current, upgrade
from cynode.orchestrator.store.models import (
    AuditLog,
    InferenceUsage,
    Job,
    JobAttempt,
    JobOutputChunk,
    Node,
    NodeConfig,
    RefreshSession,
    Task,
    TaskAttachment,
    User,
    new_id,
    utcnow,
)

__all__ = [
    "AuditLog",
    "DatabaseUrlError",
    "InferenceUsage",
    "Job",
    "JobAttempt",
    "JobOutputChunk",
    "Node",
    "NodeConfig",
    "RefreshSession",
    "Task",
    "TaskAttachment",
    "User",
    "current_revision",
    "default_sqlite_url",
    "head_revision",
    "is_current",
    "is_postgres",
    "make_engine",
    "new_id",
    "normalize_url",
    "session_factory",
    "transaction",
    "upgrade",
    "utcnow",
]
