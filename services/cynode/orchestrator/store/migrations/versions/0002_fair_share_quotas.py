"""fair share, quotas, node admin: users' weight, fair tag and quota overrides; jobs'
fair key; nodes' admin state

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06 12:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("weight", sa.Float(), nullable=False, server_default="1"))
        batch_op.add_column(sa.Column("fair_last", sa.Float(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("max_queued_tasks", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("max_running_jobs", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("max_task_timeout_seconds", sa.Integer(), nullable=True))
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("fair_key", sa.Float(), nullable=False, server_default="0"))
        batch_op.create_index("ix_jobs_status_fair", ["status", "fair_key", "id"], unique=False)
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.create_index("ix_tasks_user_status", ["user_id", "status"], unique=False)
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("admin_state", sa.String(16), nullable=False, server_default="active")
        )


def downgrade() -> None:
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.drop_column("admin_state")
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_index("ix_tasks_user_status")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_status_fair")
        batch_op.drop_column("fair_key")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("max_task_timeout_seconds")
        batch_op.drop_column("max_running_jobs")
        batch_op.drop_column("max_queued_tasks")
        batch_op.drop_column("fair_last")
        batch_op.drop_column("weight")
