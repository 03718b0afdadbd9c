"""Every table of the store (SQLAlchemy 2 models): the one description that migrations (`migrations/`) bring a
database to, whatever wrote it first."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """A moment in UTC: stored without a zone (SQLite keeps none), always read back with it."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        return value.astimezone(UTC).replace(tzinfo=None) if value is not None and value.tzinfo else value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        return value.replace(tzinfo=UTC) if value is not None else None


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime}  # noqa: RUF012  (SQLAlchemy's own class attribute)


class CheckpointRow(Base):
    __tablename__ = "checkpoints"
    __table_args__ = (UniqueConstraint("source", "commit"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    source: Mapped[str] = mapped_column(String(512), index=True)
    revision: Mapped[str] = mapped_column(String(256))
    commit: Mapped[str] = mapped_column(String(64))
    step: Mapped[int | None] = mapped_column(Integer)
    epoch: Mapped[float | None] = mapped_column(Float)
    message: Mapped[str | None] = mapped_column(Text)
    train_loss: Mapped[float | None] = mapped_column(Float)
    adapter_base: Mapped[str | None] = mapped_column(String(512))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class EvaluationRow(Base):
    __tablename__ = "evaluations"
    __table_args__ = (UniqueConstraint("checkpoint_id", "base_model", "dataset_fingerprint", "config_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    checkpoint_id: Mapped[int] = mapped_column(ForeignKey("checkpoints.id"), index=True)
    base_model: Mapped[str] = mapped_column(String(512))
    dataset_name: Mapped[str] = mapped_column(String(256))
    dataset_fingerprint: Mapped[str] = mapped_column(String(64), index=True)
    config_key: Mapped[str] = mapped_column(String(256))
    n: Mapped[int] = mapped_column(Integer)
    seconds: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # set when racing dropped the checkpoint: the evaluation is partial (only the items scored), never taken as complete
    stopped_round: Mapped[int | None] = mapped_column(Integer)
    stopped_metric: Mapped[str | None] = mapped_column(String(32))
    stopped_difference: Mapped[float | None] = mapped_column(Float)
    stopped_low: Mapped[float | None] = mapped_column(Float)
    stopped_high: Mapped[float | None] = mapped_column(Float)

    checkpoint: Mapped[CheckpointRow] = relationship(lazy="joined")
    predictions: Mapped[list[PredictionRow]] = relationship(order_by="PredictionRow.item", cascade="all, delete-orphan")


class PredictionRow(Base):
    __tablename__ = "predictions"

    evaluation_id: Mapped[int] = mapped_column(ForeignKey("evaluations.id"), primary_key=True)
    item: Mapped[int] = mapped_column(Integer, primary_key=True)
    truth: Mapped[float] = mapped_column(Float)
    argmax: Mapped[float] = mapped_column(Float)
    mean: Mapped[float] = mapped_column(Float)
    p_number: Mapped[float | None] = mapped_column(Float)
    # the other estimates and the 80% interval (null in rows an earlier pricer wrote)
    median: Mapped[float | None] = mapped_column(Float)
    log: Mapped[float | None] = mapped_column(Float)
    hit: Mapped[float | None] = mapped_column(Float)
    low: Mapped[float | None] = mapped_column(Float)
    high: Mapped[float | None] = mapped_column(Float)
    test: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")  # a test item: never used to choose


class JobRow(Base):
    __tablename__ = "jobs"
    __table_args__ = (  # two replicas (or a webhook delivered twice) asking at once still queue one job
        Index(
            "jobs_open_once",
            "repo",
            "commit",
            "dataset_fingerprint",
            "config_key",
            unique=True,
            postgresql_where=text("status IN ('queued', 'running')"),
            sqlite_where=text("status IN ('queued', 'running')"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    repo: Mapped[str] = mapped_column(String(512), index=True)  # as the user named it: org/name or local/<name>
    source: Mapped[str] = mapped_column(String(512))  # the checkpoint source's own name, as the store keys it
    revision: Mapped[str] = mapped_column(String(256))
    commit: Mapped[str] = mapped_column(String(64))
    step: Mapped[int | None] = mapped_column(Integer)
    epoch: Mapped[float | None] = mapped_column(Float)
    message: Mapped[str | None] = mapped_column(Text)
    dataset: Mapped[str] = mapped_column(String(256))
    dataset_fingerprint: Mapped[str] = mapped_column(String(64))
    config_key: Mapped[str] = mapped_column(String(256))
    status: Mapped[str] = mapped_column(String(16), index=True)
    error: Mapped[str | None] = mapped_column(Text)
    evaluation_id: Mapped[int | None] = mapped_column(ForeignKey("evaluations.id"))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()
    # while running: who holds it and until when (renewed while it lives; past it, the job is queued again),
    # and how far its pricing is, for every replica to show
    worker: Mapped[str | None] = mapped_column(String(256))
    lease_expires: Mapped[datetime | None] = mapped_column()
    items_done: Mapped[int | None] = mapped_column(Integer)
    items_total: Mapped[int | None] = mapped_column(Integer)


class WatchRow(Base):
    __tablename__ = "watches"

    id: Mapped[int] = mapped_column(primary_key=True)
    repo: Mapped[str] = mapped_column(String(512), unique=True)
    interval: Mapped[float] = mapped_column(Float)
    checkpoints: Mapped[int] = mapped_column(Integer, default=0)  # revisions found at the last poll
    last_polled: Mapped[datetime | None] = mapped_column()
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # when it is next due; a replica that takes a poll moves it on first, so one replica polls at a time
    next_poll: Mapped[datetime | None] = mapped_column()


class DeliveryRow(Base):
    """What reached a publishing target (the Hub, a run folder, MLflow, W&B) for one run: each evaluation, and the
    choice. A row being delivered names its worker; one left behind by a worker that stopped is taken over."""

    __tablename__ = "deliveries"
    __table_args__ = (UniqueConstraint("target", "source", "subject"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    target: Mapped[str] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(512))
    subject: Mapped[str] = mapped_column(String(64))  # "evaluation:<id>" or "choice"
    value: Mapped[str] = mapped_column(String(128))  # what was (or is being) delivered: the chosen commit, ...
    delivered: Mapped[bool] = mapped_column(Boolean, default=False)
    worker: Mapped[str | None] = mapped_column(String(256))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
