"""Watched repos: every checkpoint that appears is evaluated, while the training run goes on.

A watch lives in the store, so it survives restarts; a service's poller lists each
watched repo's revisions at the watch's interval and queues the new ones (a checkpoint
already evaluated or queued is never queued twice). With several replicas on one store, a
due poll is taken by one of them (`take_due`, a compare-and-set on its next poll's time).
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from pricer.evaluator.errors import WatchNotFound
from pricer.evaluator.records import Watch
from pricer.evaluator.store.evaluations import Store
from pricer.evaluator.store.schema import WatchRow, utcnow


def _watch(row: WatchRow) -> Watch:
    return Watch(row.repo, row.interval, row.checkpoints, row.last_polled, row.last_error, row.created_at, row.next_poll)


class Watches:
    """The watched repos; every method is one short transaction."""

    def __init__(self, store: Store) -> None:
        self.engine = store.engine

    def add(self, repo: str, interval: float) -> tuple[Watch, bool]:
        """Watch `repo` (a watch that exists keeps going, with the new interval). Returns (watch, whether new)."""
        with Session(self.engine) as session, session.begin():
            row = session.scalar(select(WatchRow).filter_by(repo=repo))
            created = row is None
            if created:
                row = WatchRow(repo=repo, interval=interval, checkpoints=0)
                session.add(row)
            if row.interval != interval:
                row.interval, row.next_poll = interval, None  # due now, at the new pace
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

    def take_due(self, lease: float) -> list[Watch]:
        """The watches due for a poll that this caller takes: each one's next poll moves `lease` seconds on at once,
        so no other replica takes it meanwhile (nor later, if this one dies mid-poll: it is due again after `lease`)."""
        now = utcnow()
        taken = []
        for watch in self.all():
            if watch.next_poll is not None and watch.next_poll > now:
                continue
            with Session(self.engine) as session, session.begin():
                won = session.execute(
                    update(WatchRow)
                    .where(WatchRow.repo == watch.repo, WatchRow.next_poll.is_(None) | (WatchRow.next_poll <= now))
                    .values(next_poll=now + timedelta(seconds=lease))
                ).rowcount
            if won:
                taken.append(watch)
        return taken

    def polled(self, repo: str, *, checkpoints: int | None = None, error: str | None = None) -> None:
        """Record a poll: how many checkpoints it found, or why it failed; the next is due one interval on."""
        with Session(self.engine) as session, session.begin():
            row = session.scalar(select(WatchRow).filter_by(repo=repo))
            if row is None:
                return  # unwatched meanwhile
            row.last_polled, row.last_error = utcnow(), error
            row.next_poll = row.last_polled + timedelta(seconds=row.interval)
            if checkpoints is not None:
                row.checkpoints = checkpoints
