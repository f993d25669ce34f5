"""The orchestrator's tables.

Every id is a ULID string. Times are timezone-aware UTC on both Postgres and SQLite
(SQLite keeps no zone, so `UTCDateTime` puts it back on read). Output is kept as bytes:
a byte cap can cut a UTF-8 character in half, and the gateway decides how to render it.
"""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

# Two Crockford base32 letters for each 10-bit value: a ULID's 130 bits are 13 of them.
_PAIRS = [
    a + b for a in "0123456789ABCDEFGHJKMNPQRSTVWXYZ" for b in "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
]


class _Ulids:
    """Monotonic ULIDs: 48 bits of milliseconds, 80 random bits; within a millisecond
    (or if the clock steps back) each id is the previous one plus one, so ids made in
    order sort in order, as python-ulid's ULID() made them. `take(n)` reserves n in a
    row under one lock: the scheduler needs one per dispatched job, and python-ulid's
    per-id cost was a visible share of a dispatch round."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.last = 0  # the last id handed out, as a 128-bit integer

    def take(self, n: int) -> int:
        """The first of `n` fresh consecutive ids, as an integer."""
        fresh = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10))
        with self._lock:
            first = fresh if fresh >> 80 > self.last >> 80 else self.last + 1
            self.last = first + n - 1
        return first


def _encode(v: int) -> str:
    # Unrolled: base64.b32encode is a Python loop, and a loop here costs as much.
    t = _PAIRS
    return (
        t[v >> 120]
        + t[v >> 110 & 1023]
        + t[v >> 100 & 1023]
        + t[v >> 90 & 1023]
        + t[v >> 80 & 1023]
        + t[v >> 70 & 1023]
        + t[v >> 60 & 1023]
        + t[v >> 50 & 1023]
        + t[v >> 40 & 1023]
        + t[v >> 30 & 1023]
        + t[v >> 20 & 1023]
        + t[v >> 10 & 1023]
        + t[v & 1023]
    )


_ULIDS = _Ulids()


def new_id() -> str:
    return _encode(_ULIDS.take(1))


def new_ids(n: int) -> list[str]:
    """`n` ids in order, as n calls of new_id would make them, for less."""
    first = _ULIDS.take(n)
    return [_encode(first + i) for i in range(n)]


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always stored and returned as aware UTC."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _id_field(**kw: Any) -> Any:
    return Field(default_factory=new_id, primary_key=True, max_length=26, **kw)


def _ts(nullable: bool = False, *, default_now: bool = True, index: bool = False) -> Any:
    if default_now:
        return Field(
            default_factory=utcnow,
            sa_column=sa.Column(UTCDateTime(), nullable=nullable, index=index),
        )
    return Field(default=None, sa_column=sa.Column(UTCDateTime(), nullable=True, index=index))


class User(SQLModel, table=True):
    __tablename__ = "users"

    id: str = _id_field()
    handle: str = Field(max_length=64, unique=True, index=True)
    email: str | None = Field(default=None, max_length=254)
    password_hash: str = Field(max_length=255)
    is_active: bool = True
    is_admin: bool = False
    # Fair share (SPEC §3.9): a user's share of free slots is proportional to `weight`;
    # `fair_last` is the finish tag of their last queued job (lifecycle.fair).
    weight: float = Field(
        default=1.0, sa_column=sa.Column(sa.Float, nullable=False, server_default="1")
    )
    fair_last: float = Field(
        default=0.0, sa_column=sa.Column(sa.Float, nullable=False, server_default="0")
    )
    # Quotas (SPEC §3.9): None takes the configured default.
    max_queued_tasks: int | None = None
    max_running_jobs: int | None = None
    max_task_timeout_seconds: int | None = None
    # Chat and embeddings requests in flight (SPEC §10.4); None: inference.user_concurrency.
    max_inference_requests: int | None = None
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class RefreshSession(SQLModel, table=True):
    """One refresh token. Rotation links tokens of one login into a family; presenting
    a token that was already rotated revokes the whole family (reuse detection)."""

    __tablename__ = "refresh_sessions"

    id: str = _id_field()
    user_id: str = Field(foreign_key="users.id", index=True, max_length=26)
    family_id: str = Field(index=True, max_length=26)
    token_hash: str = Field(max_length=128, unique=True, index=True)
    created_at: datetime = _ts()
    expires_at: datetime = _ts()
    rotated_at: datetime | None = _ts(default_now=False)
    revoked_at: datetime | None = _ts(default_now=False)


class Task(SQLModel, table=True):
    __tablename__ = "tasks"
    __table_args__ = (
        sa.UniqueConstraint("user_id", "name", name="uq_tasks_user_name"),
        sa.Index("ix_tasks_user_created", "user_id", "id"),
        # A user's queued tasks, counted at create for the quota (SPEC §3.9).
        sa.Index("ix_tasks_user_status", "user_id", "status"),
    )

    id: str = _id_field()
    user_id: str = Field(foreign_key="users.id", max_length=26)
    name: str | None = Field(default=None, max_length=200)
    status: str = Field(default="queued", max_length=16, index=True)
    input_mode: str = Field(max_length=16)
    prompt: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    script: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    commands: list[str] | None = Field(default=None, sa_column=sa.Column(sa.JSON, nullable=True))
    use_inference: bool = False
    timeout_seconds: int = 0
    image: str | None = Field(default=None, max_length=255)
    reason: str | None = Field(default=None, max_length=255)
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class TaskAttachment(SQLModel, table=True):
    __tablename__ = "task_attachments"

    id: str = _id_field()
    task_id: str = Field(foreign_key="tasks.id", index=True, max_length=26)
    name: str = Field(max_length=255)
    content: bytes = Field(sa_column=sa.Column(sa.LargeBinary, nullable=False))


class Job(SQLModel, table=True):
    """A task's unit of work. `attempt` counts dispatches; the lease says until when the
    node holding the current attempt is trusted to be alive."""

    __tablename__ = "jobs"
    __table_args__ = (
        sa.Index("ix_jobs_status_id", "status", "id"),
        # The claim's order: fair tag, then age (SPEC §3.9).
        sa.Index("ix_jobs_status_fair", "status", "fair_key", "id"),
    )

    id: str = _id_field()
    task_id: str = Field(foreign_key="tasks.id", index=True, max_length=26)
    status: str = Field(default="queued", max_length=16)
    needs_inference: bool = False
    # The job's start tag in fair-share order (lifecycle.fair); claims take the lowest.
    fair_key: float = Field(
        default=0.0, sa_column=sa.Column(sa.Float, nullable=False, server_default="0")
    )
    attempt: int = 0
    node_id: str | None = Field(default=None, max_length=26, index=True)
    lease_expires_at: datetime | None = _ts(default_now=False, index=True)
    cancel_requested: bool = False
    exit_code: int | None = None
    stdout: bytes = Field(default=b"", sa_column=sa.Column(sa.LargeBinary, nullable=False))
    stderr: bytes = Field(default=b"", sa_column=sa.Column(sa.LargeBinary, nullable=False))
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    reason: str | None = Field(default=None, max_length=255)
    started_at: datetime | None = _ts(default_now=False)
    ended_at: datetime | None = _ts(default_now=False)
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class JobAttempt(SQLModel, table=True):
    """Every attempt's result as it arrived: idempotent per (job, attempt), and a stale
    attempt's result is kept here without overwriting the job."""

    __tablename__ = "job_attempts"
    __table_args__ = (sa.UniqueConstraint("job_id", "attempt", name="uq_job_attempts_job_attempt"),)

    id: str = _id_field()
    job_id: str = Field(foreign_key="jobs.id", index=True, max_length=26)
    attempt: int
    node_id: str | None = Field(default=None, max_length=26)
    status: str = Field(max_length=16)
    exit_code: int | None = None
    stdout: bytes = Field(default=b"", sa_column=sa.Column(sa.LargeBinary, nullable=False))
    stderr: bytes = Field(default=b"", sa_column=sa.Column(sa.LargeBinary, nullable=False))
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    reason: str | None = Field(default=None, max_length=255)
    started_at: datetime | None = _ts(default_now=False)
    ended_at: datetime | None = _ts(default_now=False)
    received_at: datetime = _ts()


class JobOutputChunk(SQLModel, table=True):
    """Output as it streams in while a job runs, for logs and watch."""

    __tablename__ = "job_output_chunks"
    __table_args__ = (
        sa.UniqueConstraint("job_id", "attempt", "stream", "offset", name="uq_job_output_chunk"),
    )

    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(foreign_key="jobs.id", index=True, max_length=26)
    attempt: int
    stream: str = Field(max_length=6)
    offset: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    data: bytes = Field(sa_column=sa.Column(sa.LargeBinary, nullable=False))
    created_at: datetime = _ts()


class Node(SQLModel, table=True):
    __tablename__ = "nodes"

    id: str = _id_field()
    slug: str = Field(max_length=128, unique=True, index=True)
    name: str | None = Field(default=None, max_length=200)
    status: str = Field(default="offline", max_length=16)
    # What an administrator set (SPEC §2.8): active, draining or disabled.
    admin_state: str = Field(
        default="active",
        sa_column=sa.Column(sa.String(16), nullable=False, server_default="active"),
    )
    capability: dict[str, Any] = Field(default_factory=dict, sa_column=sa.Column(sa.JSON))
    inference_supported: bool = False
    max_concurrency: int = 1
    worker_api_url: str | None = Field(default=None, max_length=255)
    last_heartbeat_at: datetime | None = _ts(default_now=False)
    connected_replica: str | None = Field(default=None, max_length=64)
    registered_at: datetime = _ts()
    updated_at: datetime = _ts()


class NodeConfig(SQLModel, table=True):
    """Every configuration issued to a node; `config_version` is a ULID, new per change."""

    __tablename__ = "node_configs"

    id: str = _id_field()
    node_id: str = Field(foreign_key="nodes.id", index=True, max_length=26)
    config_version: str = Field(default_factory=new_id, unique=True, max_length=26)
    body: dict[str, Any] = Field(default_factory=dict, sa_column=sa.Column(sa.JSON))
    issued_at: datetime = _ts()
    ack_status: str | None = Field(default=None, max_length=16)
    ack_error: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    ack_at: datetime | None = _ts(default_now=False)


class AuditLog(SQLModel, table=True):
    """Security-relevant events. `detail` never holds a secret."""

    __tablename__ = "audit_log"

    id: str = _id_field()
    at: datetime = _ts(index=True)
    action: str = Field(max_length=64, index=True)
    outcome: str = Field(max_length=16)
    user_id: str | None = Field(default=None, max_length=26)
    node_id: str | None = Field(default=None, max_length=26)
    handle: str | None = Field(default=None, max_length=64)
    client: str | None = Field(default=None, max_length=128)
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=sa.Column(sa.JSON))


class ArtifactSet(SQLModel, table=True):
    """What a job attempt's result announced from /workspace/out/ (SPEC §2.11): its files
    are `Artifact` rows; the set itself says whether a limit cut it short."""

    __tablename__ = "artifact_sets"
    __table_args__ = (
        sa.UniqueConstraint("job_id", "attempt", name="uq_artifact_sets_job_attempt"),
    )

    id: str = _id_field()
    task_id: str = Field(foreign_key="tasks.id", index=True, max_length=26)
    job_id: str = Field(foreign_key="jobs.id", max_length=26)
    attempt: int
    count: int = 0
    truncated: bool = False
    truncated_reason: str | None = Field(default=None, max_length=255)
    created_at: datetime = _ts()


class Artifact(SQLModel, table=True):
    """One collected file; its bytes are the blob named by `sha256` once `stored_at` is
    set (the node uploads after the result, SPEC §7.11)."""

    __tablename__ = "artifacts"
    __table_args__ = (
        sa.UniqueConstraint("job_id", "attempt", "name", name="uq_artifacts_job_attempt_name"),
        sa.Index("ix_artifacts_job_attempt", "job_id", "attempt"),
    )

    id: str = Field(primary_key=True, max_length=26)
    task_id: str = Field(foreign_key="tasks.id", index=True, max_length=26)
    job_id: str = Field(foreign_key="jobs.id", max_length=26)
    attempt: int
    node_id: str = Field(max_length=26)
    name: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    size_bytes: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    content_type: str = Field(max_length=255)
    sha256: str = Field(max_length=64, index=True)
    stored_at: datetime | None = _ts(default_now=False)
    created_at: datetime = _ts()


class InferenceUsage(SQLModel, table=True):
    """One answered chat or embeddings request of the OpenAI door or InferenceService,
    with the token counts the model reported (SPEC §10.6). Append-only: replicas only
    insert, reads sum."""

    __tablename__ = "inference_usage"

    id: str = _id_field()
    at: datetime = _ts(index=True)
    user_id: str = Field(max_length=26, index=True)
    model: str = Field(max_length=200)
    node_id: str = Field(max_length=26)
    # chat or embeddings.
    kind: str = Field(max_length=16)
    prompt_tokens: int = 0
    completion_tokens: int = 0


class InferenceLinkRecord(SQLModel, table=True):
    """A node's inference link as the replica holding it announces it to the others
    (SPEC §10.3): what it serves, and the address where that replica takes forwarded
    calls. The holder writes it when the link opens or changes, refreshes `seen_at`
    while it holds it and deletes it when it ends; a row not refreshed for a while is
    a dead replica's and is ignored, then deleted, by the others."""

    __tablename__ = "inference_links"

    node_id: str = Field(primary_key=True, max_length=26)
    replica_id: str = Field(max_length=26, index=True)
    address: str = Field(max_length=255)
    models: list[str] = Field(default_factory=list, sa_column=sa.Column(sa.JSON, nullable=False))
    capacity: int = 1
    seen_at: datetime = _ts(index=True)
