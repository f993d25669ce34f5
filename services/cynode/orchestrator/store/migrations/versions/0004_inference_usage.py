"""inference usage: one row per answered chat or embeddings request (issue 17)

Revision ID: 0004
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

import cynode.orchestrator.store.models

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "inference_usage",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=26), nullable=False),
        sa.Column(
            "at", cynode.orchestrator.store.models.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column("user_id", sqlmodel.sql.sqltypes.AutoString(length=26), nullable=False),
        sa.Column("model", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("node_id", sqlmodel.sql.sqltypes.AutoString(length=26), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("inference_usage", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_inference_usage_at"), ["at"], unique=False)
        batch_op.create_index(batch_op.f("ix_inference_usage_user_id"), ["user_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("inference_usage", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_inference_usage_user_id"))
        batch_op.drop_index(batch_op.f("ix_inference_usage_at"))
    op.drop_table("inference_usage")
