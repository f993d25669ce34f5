"""the OpenAI door across replicas: the links each replica holds, and a user's own
limit on inference requests in flight (issue 17)

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

import cynode.orchestrator.store.models

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "inference_links",
        sa.Column("node_id", sqlmodel.sql.sqltypes.AutoString(length=26), nullable=False),
        sa.Column("replica_id", sqlmodel.sql.sqltypes.AutoString(length=26), nullable=False),
        sa.Column("address", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("models", sa.JSON(), nullable=False),
        sa.Column("capacity", sa.Integer(), nullable=False),
        sa.Column(
            "seen_at", cynode.orchestrator.store.models.UTCDateTime(timezone=True), nullable=False
        ),
        sa.PrimaryKeyConstraint("node_id"),
    )
    with op.batch_alter_table("inference_links", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_inference_links_replica_id"), ["replica_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_inference_links_seen_at"), ["seen_at"], unique=False)
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("max_inference_requests", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("max_inference_requests")
    with op.batch_alter_table("inference_links", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_inference_links_seen_at"))
        batch_op.drop_index(batch_op.f("ix_inference_links_replica_id"))
    op.drop_table("inference_links")
