"""hash chain columns on batches; indexes for the common query filters

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("batches") as batch:
        batch.add_column(sa.Column("prev_hash", sa.Text))
        batch.add_column(sa.Column("hash", sa.Text))
    op.create_index("ix_events_comm_time", "events", ["comm", "time_ns"])
    op.create_index("ix_events_pid_start", "events", ["pid", "start_ns"])


def downgrade() -> None:
    op.drop_index("ix_events_pid_start", "events")
    op.drop_index("ix_events_comm_time", "events")
    with op.batch_alter_table("batches") as batch:
        batch.drop_column("hash")
        batch.drop_column("prev_hash")
