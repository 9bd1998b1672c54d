"""forward-secure seals of the hash chain (issue #15)

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # the same table as storage/schema.py's; a file upgraded in place holds no seal until the
    # daemon's next (start) seal, which covers every batch before it through the chain
    op.create_table(
        "seals",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("epoch", sa.Integer, nullable=False),
        sa.Column("key_id", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("sealed_ns", sa.BigInteger, nullable=False),
        sa.Column("batch_id", sa.Integer, nullable=False),
        sa.Column("batch_hash", sa.Text, nullable=False),
        sa.Column("interval_s", sa.Integer, nullable=False),
        sa.Column("mac", sa.Text, nullable=False),
    )
    op.create_index("ix_seals_key_epoch", "seals", ["key_id", "epoch"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_seals_key_epoch", "seals")
    op.drop_table("seals")
