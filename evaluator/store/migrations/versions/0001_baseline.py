"""Baseline: the store as pricer made it before migrations (its tables made by `create_all`, newer columns added).

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


# columns an earlier pricer added in place to the stores it had made (`create_all` makes no column on a table that exists)
ADDED_IN_PLACE = {
    ("predictions", "test"): "BOOLEAN NOT NULL DEFAULT FALSE",
    ("checkpoints", "train_loss"): "FLOAT",
    ("evaluations", "stopped_round"): "INTEGER",
    ("evaluations", "stopped_metric"): "VARCHAR(32)",
    **{("evaluations", f"stopped_{name}"): "FLOAT" for name in ("difference", "low", "high")},
    **{("predictions", name): "FLOAT" for name in ("median", "log", "hit", "low", "high")},
}


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    if "evaluations" in inspector.get_table_names():  # a store made before migrations: bring it to the baseline
        for (table, column), kind in ADDED_IN_PLACE.items():
            if column not in {c["name"] for c in inspector.get_columns(table)}:
                op.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        return
    op.create_table(
        "checkpoints",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=512), nullable=False),
        sa.Column("revision", sa.String(length=256), nullable=False),
        sa.Column("commit", sa.String(length=64), nullable=False),
        sa.Column("step", sa.Integer(), nullable=True),
        sa.Column("epoch", sa.Float(), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("train_loss", sa.Float(), nullable=True),
        sa.Column("adapter_base", sa.String(length=512), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("source", "commit"),
    )
    with op.batch_alter_table("checkpoints", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_checkpoints_source"), ["source"], unique=False)

    op.create_table(
        "watches",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("repo", sa.String(length=512), nullable=False),
        sa.Column("interval", sa.Float(), nullable=False),
        sa.Column("checkpoints", sa.Integer(), nullable=False),
        sa.Column("last_polled", sa.DateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("repo"),
    )
    op.create_table(
        "evaluations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("checkpoint_id", sa.Integer(), nullable=False),
        sa.Column("base_model", sa.String(length=512), nullable=False),
        sa.Column("dataset_name", sa.String(length=256), nullable=False),
        sa.Column("dataset_fingerprint", sa.String(length=64), nullable=False),
        sa.Column("config_key", sa.String(length=256), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("stopped_round", sa.Integer(), nullable=True),
        sa.Column("stopped_metric", sa.String(length=32), nullable=True),
        sa.Column("stopped_difference", sa.Float(), nullable=True),
        sa.Column("stopped_low", sa.Float(), nullable=True),
        sa.Column("stopped_high", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["checkpoint_id"],
            ["checkpoints.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("checkpoint_id", "base_model", "dataset_fingerprint", "config_key"),
    )
    with op.batch_alter_table("evaluations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_evaluations_checkpoint_id"), ["checkpoint_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_evaluations_dataset_fingerprint"), ["dataset_fingerprint"], unique=False)

    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("repo", sa.String(length=512), nullable=False),
        sa.Column("source", sa.String(length=512), nullable=False),
        sa.Column("revision", sa.String(length=256), nullable=False),
        sa.Column("commit", sa.String(length=64), nullable=False),
        sa.Column("step", sa.Integer(), nullable=True),
        sa.Column("epoch", sa.Float(), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("dataset", sa.String(length=256), nullable=False),
        sa.Column("dataset_fingerprint", sa.String(length=64), nullable=False),
        sa.Column("config_key", sa.String(length=256), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("evaluation_id", sa.Integer(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["evaluation_id"],
            ["evaluations.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_jobs_repo"), ["repo"], unique=False)
        batch_op.create_index(batch_op.f("ix_jobs_status"), ["status"], unique=False)

    op.create_table(
        "predictions",
        sa.Column("evaluation_id", sa.Integer(), nullable=False),
        sa.Column("item", sa.Integer(), nullable=False),
        sa.Column("truth", sa.Float(), nullable=False),
        sa.Column("argmax", sa.Float(), nullable=False),
        sa.Column("mean", sa.Float(), nullable=False),
        sa.Column("p_number", sa.Float(), nullable=True),
        sa.Column("median", sa.Float(), nullable=True),
        sa.Column("log", sa.Float(), nullable=True),
        sa.Column("hit", sa.Float(), nullable=True),
        sa.Column("low", sa.Float(), nullable=True),
        sa.Column("high", sa.Float(), nullable=True),
        sa.Column("test", sa.Boolean(), server_default="0", nullable=False),
        sa.ForeignKeyConstraint(
            ["evaluation_id"],
            ["evaluations.id"],
        ),
        sa.PrimaryKeyConstraint("evaluation_id", "item"),
    )


def downgrade() -> None:
    op.drop_table("predictions")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_jobs_status"))
        batch_op.drop_index(batch_op.f("ix_jobs_repo"))

    op.drop_table("jobs")
    with op.batch_alter_table("evaluations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_evaluations_dataset_fingerprint"))
        batch_op.drop_index(batch_op.f("ix_evaluations_checkpoint_id"))

    op.drop_table("evaluations")
    op.drop_table("watches")
    with op.batch_alter_table("checkpoints", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_checkpoints_source"))

    op.drop_table("checkpoints")
