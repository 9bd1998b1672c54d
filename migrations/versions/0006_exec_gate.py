"""the gate of an exec (its ABI) and the parent's start time (issue #20)

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# the columns storage/schema.py adds to events at this revision, in its order (rows.GATE_FIELDS)
GATE = (("abi", sa.Text), ("parent_start_ns", sa.BigInteger))


def upgrade() -> None:
    # ADD COLUMN: appended without rewriting the table; rows already written read NULL
    # (unknown), which is also what their hashes (format 3 and before) never covered
    for name, kind in GATE:
        op.add_column("events", sa.Column(name, kind))


def downgrade() -> None:
    with op.batch_alter_table("events") as batch:
        for name, _ in reversed(GATE):
            batch.drop_column(name)
