"""Watched repos: every checkpoint that appears is evaluated, while the training run goes on.

A watch lives in the store, so it survives restarts; the service's poller lists each
watched repo's revisions at the watch's interval and queues the new ones (a checkpoint
already evaluated or queued is never queued twice).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Float, Integer, String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from pricer.evaluator.errors import WatchNotFound
from pricer.evaluator.records import Watch
from pricer.evaluator.store.evaluations import Base, Store, utcnow


class WatchRow(Base):
    __tablename__ = "watches"

    id: Mapped[int] = mapped_column(primary_key=True)
    repo: Mapped[str] = mapped_column(String(512), unique=True)
    interval: Mapped[float] = mapped_column(Float)
    checkpoints: Mapped[int] = mapped_column(Integer, default=0)  # revisions found at the last poll
    last_polled: Mapped[datetime | None] = mapped_column()
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


def _watch(row: WatchRow) -> Watch:
    return Watch(row.repo, row.interval, row.checkpoints, row.last_polled, row.last_error, row.created_at)


class Watches:
    """The watched repos; every method is one short transaction."""

    def __init__(self, store: Store) -> None:
        self.engine = store.engine
        Base.metadata.create_all(self.engine, tables=[WatchRow.__table__])

    def add(self, repo: str, interval: float) -> tuple[Watch, bool]:
        """Watch `repo` (a watch that exists keeps going, with the new interval). Returns (watch, whether new)."""
        with Session(self.engine) as session, session.begin():
            row = session.scalar(select(WatchRow).filter_by(repo=repo))
            created = row is None
            if created:
                row = WatchRow(repo=repo, interval=interval, checkpoints=0)
                session.add(row)
            row.interval = interval
            session.flush()
            return _watch(row), created

    def remove(self, repo: str) -> None:
        with Session(self.engine) as session, session.begin():
            row = session.scalar(select(WatchRow).filter_by(repo=repo))
            if row is None:
                raise WatchNotFound(f"{repo} is not watched")
            session.delete(row)

    def get(self, repo: str) -> Watch:
        with Session(self.engine) as session:
            row = session.scalar(select(WatchRow).filter_by(repo=repo))
            if row is None:
                raise WatchNotFound(f"{repo} is not watched")
            return _watch(row)

    def all(self) -> list[Watch]:
        with Session(self.engine) as session:
            return [_watch(row) for row in session.scalars(select(WatchRow).order_by(WatchRow.id))]

    def polled(self, repo: str, *, checkpoints: int | None = None, error: str | None = None) -> None:
        """Record a poll: how many checkpoints it found, or why it failed."""
        with Session(self.engine) as session, session.begin():
            row = session.scalar(select(WatchRow).filter_by(repo=repo))
            if row is None:
                return  # unwatched meanwhile
            row.last_polled, row.last_error = utcnow(), error
            if checkpoints is not None:
                row.checkpoints = checkpoints
