"""Leases: a running job names its worker and the moment its lease ends (and how far its pricing is); one open job
per checkpoint, data and config, enforced by the database; a watch's next poll, taken by one replica at a time.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


OPEN = "status IN ('queued', 'running')"


def upgrade() -> None:
    # a store written by several processes before this may hold the same open job twice: keep the oldest
    op.execute(
        "UPDATE jobs SET status = 'failed', error = 'a duplicate of an earlier job for the same checkpoint' "
        f"WHERE {OPEN} AND id NOT IN (SELECT min(id) FROM jobs WHERE {OPEN} "
        'GROUP BY repo, "commit", dataset_fingerprint, config_key)'
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("worker", sa.String(length=256), nullable=True))
        batch_op.add_column(sa.Column("lease_expires", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("items_done", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("items_total", sa.Integer(), nullable=True))
        batch_op.create_index(
            "jobs_open_once",
            ["repo", "commit", "dataset_fingerprint", "config_key"],
            unique=True,
            postgresql_where=sa.text(OPEN),
            sqlite_where=sa.text(OPEN),
        )

    with op.batch_alter_table("watches", schema=None) as batch_op:
        batch_op.add_column(sa.Column("next_poll", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("watches", schema=None) as batch_op:
        batch_op.drop_column("next_poll")

    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("jobs_open_once", postgresql_where=sa.text(OPEN), sqlite_where=sa.text(OPEN))
        batch_op.drop_column("items_total")
        batch_op.drop_column("items_done")
        batch_op.drop_column("lease_expires")
        batch_op.drop_column("worker")
