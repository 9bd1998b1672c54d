"""the live stream's counters on runs: lines written and lines dropped (issue #14)

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# the columns storage/schema.py adds to runs at this revision, in its order
STREAM = ("stream_lines_written", "stream_lines_dropped")


def upgrade() -> None:
    # ADD COLUMN: SQLite appends it without rewriting the table; a run written before had no
    # stream, and reads NULL (none), as a run without --stream writes it
    for name in STREAM:
        op.add_column("runs", sa.Column(name, sa.BigInteger))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        for name in reversed(STREAM):
            batch.drop_column(name)
