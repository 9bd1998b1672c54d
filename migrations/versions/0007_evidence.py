"""the chain covers every table an investigation reads: runs, seen_processes, removed files
(chain format 5, issue #23)

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# the columns storage/schema.py adds at this revision, in its order (chain.EVIDENCE_COLUMNS)
BATCH = (("stream_written", sa.BigInteger), ("stream_dropped", sa.BigInteger),
         ("run_values", sa.LargeBinary), ("seen_rows", sa.LargeBinary),
         ("removal_rows", sa.LargeBinary))


def upgrade() -> None:
    # ADD COLUMN: appended without rewriting the tables; rows written before read NULL, and no
    # hash of theirs (format 4 and before) covers the runs or seen_processes (verify says so)
    for name, kind in BATCH:
        op.add_column("batches", sa.Column(name, kind))
    op.add_column("seen_processes", sa.Column("batch_id", sa.Integer))
    # the same table as storage/schema.py's
    op.create_table(
        "removed_files",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("batch_id", sa.Integer, nullable=False),
        sa.Column("removed_ns", sa.BigInteger, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("detail", sa.Text),
        sa.Column("size", sa.BigInteger),
        sa.Column("first_batch_id", sa.Integer),
        sa.Column("first_prev_hash", sa.Text),
        sa.Column("last_batch_id", sa.Integer),
        sa.Column("last_hash", sa.Text),
        sa.Column("records", sa.BigInteger),
        sa.Column("first_ns", sa.BigInteger),
        sa.Column("last_ns", sa.BigInteger),
    )


def downgrade() -> None:
    op.drop_table("removed_files")
    with op.batch_alter_table("seen_processes") as batch:
        batch.drop_column("batch_id")
    with op.batch_alter_table("batches") as batch:
        for name, _ in reversed(BATCH):
            batch.drop_column(name)
