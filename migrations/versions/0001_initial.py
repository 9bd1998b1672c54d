"""initial schema: runs, batches, events, seen_processes

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("boot_id", sa.Text, nullable=False),
        sa.Column("host", sa.Text, nullable=False),
        sa.Column("kernel", sa.Text, nullable=False),
        sa.Column("version", sa.Text, nullable=False),
        sa.Column("settings", sa.Text, nullable=False),
        sa.Column("started_ns", sa.BigInteger, nullable=False),
        sa.Column("attached_ns", sa.BigInteger),
        sa.Column("stopped_ns", sa.BigInteger),
        sa.Column("lost_kernel", sa.BigInteger, nullable=False),
        sa.Column("lost_user", sa.BigInteger, nullable=False),
        sa.Column("events_written", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "batches",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id"), nullable=False),
        sa.Column("written_ns", sa.BigInteger, nullable=False),
        sa.Column("first_event_id", sa.BigInteger),
        sa.Column("last_event_id", sa.BigInteger),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("lost_kernel", sa.BigInteger, nullable=False),
        sa.Column("lost_user", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "events",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id"), nullable=False),
        sa.Column("batch_id", sa.Integer, sa.ForeignKey("batches.id"), nullable=False),
        sa.Column("event", sa.Text, nullable=False),
        sa.Column("time_ns", sa.BigInteger, nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("tid", sa.Integer, nullable=False),
        sa.Column("ppid", sa.Integer, nullable=False),
        sa.Column("uid", sa.BigInteger, nullable=False),
        sa.Column("gid", sa.BigInteger, nullable=False),
        sa.Column("comm", sa.Text, nullable=False),
        sa.Column("start_ns", sa.BigInteger, nullable=False),
        sa.Column("old_pid", sa.Integer),
        sa.Column("euid", sa.BigInteger),
        sa.Column("auid", sa.BigInteger),
        sa.Column("sessionid", sa.BigInteger),
        sa.Column("cgroup_id", sa.BigInteger),
        sa.Column("filename", sa.Text),
        sa.Column("argv", sa.LargeBinary),
        sa.Column("argc", sa.Integer),
        sa.Column("args_truncated", sa.Boolean),
        sa.Column("errno", sa.Integer),
        sa.Column("status", sa.Integer),
        sa.Column("exit_code", sa.Integer),
        sa.Column("signal", sa.Integer),
        sa.Column("core_dumped", sa.Boolean),
        sa.Column("duration_ns", sa.BigInteger),
    )
    op.create_index("ix_events_time", "events", ["time_ns"])
    op.create_table(
        "seen_processes",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id"), nullable=False),
        sa.Column("time_ns", sa.BigInteger, nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("ppid", sa.Integer, nullable=False),
        sa.Column("uid", sa.BigInteger, nullable=False),
        sa.Column("comm", sa.Text, nullable=False),
        sa.Column("filename", sa.Text),
        sa.Column("argv", sa.LargeBinary),
        sa.Column("start_ns", sa.BigInteger, nullable=False),
        sa.Column("start_tick_ns", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("seen_processes")
    op.drop_index("ix_events_time", "events")
    op.drop_table("events")
    op.drop_table("batches")
    op.drop_table("runs")
