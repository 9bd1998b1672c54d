"""exec context: working directory, executable hash, cgroup path, systemd unit, container id
(issue #13)

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# the columns storage/schema.py adds to both tables at this revision, in its order
CONTEXT = ("cwd", "cwd_status", "sha256", "hash_status", "cgroup", "cgroup_status", "unit",
           "container_id")


def upgrade() -> None:
    # ADD COLUMN: SQLite appends it without rewriting the table, and rows already written
    # read NULL (unknown), which is also what their hashes (format 2) never covered
    for table in ("events", "seen_processes"):
        for name in CONTEXT:
            op.add_column(table, sa.Column(name, sa.Text))


def downgrade() -> None:
    for table in ("seen_processes", "events"):
        with op.batch_alter_table(table) as batch:
            for name in reversed(CONTEXT):
                batch.drop_column(name)
