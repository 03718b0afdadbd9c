"""Deliveries: what each publishing target was told of each run, so that it is told once.

Replicas on one store all see a new choice; the one whose `claim` succeeds publishes it (a
compare-and-set on the row), the others leave it. A delivery that fails is released, to be
tried again; one whose worker stopped mid-way is taken over once it is `stale`.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pricer.evaluator.store.evaluations import Store
from pricer.evaluator.store.schema import DeliveryRow, utcnow


class Deliveries:
    """Claims on what to deliver; every method is one short transaction."""

    def __init__(self, store: Store, *, stale: timedelta = timedelta(minutes=10)) -> None:
        self.engine, self.stale = store.engine, stale

    def claim(self, target: str, source: str, subject: str, value: str, worker: str, *, again: bool = False) -> bool:
        """Whether `worker` is to deliver `value` now: nothing was delivered under this subject, or another value was
        (`again`: or the same), and no other worker is delivering it (or the one that was has been at it longer than
        `stale`)."""
        now = utcnow()
        key = DeliveryRow.target == target, DeliveryRow.source == source, DeliveryRow.subject == subject
        with Session(self.engine) as session, session.begin():
            taken = session.execute(
                update(DeliveryRow)
                .where(*key)
                .where(
                    or_(
                        and_(DeliveryRow.delivered.is_(True), or_(DeliveryRow.value != value, again)),
                        and_(DeliveryRow.delivered.is_(False), DeliveryRow.updated_at < now - self.stale),
                    )
                )
                .values(value=value, delivered=False, worker=worker, updated_at=now)
            )
            if taken.rowcount == 1:
                return True
            if session.scalar(select(DeliveryRow.id).where(*key)) is not None:
                return False
        try:  # the first delivery under this subject: the row's uniqueness decides who makes it
            with Session(self.engine) as session, session.begin():
                session.add(DeliveryRow(target=target, source=source, subject=subject, value=value, worker=worker, updated_at=now))
            return True
        except IntegrityError:
            return False

    def delivered(self, target: str, source: str, subject: str, worker: str) -> None:
        """`worker`'s claim went through."""
        with Session(self.engine) as session, session.begin():
            session.execute(
                update(DeliveryRow)
                .where(DeliveryRow.target == target, DeliveryRow.source == source, DeliveryRow.subject == subject)
                .where(DeliveryRow.worker == worker)
                .values(delivered=True, updated_at=utcnow())
            )

    def release(self, target: str, source: str, subject: str, worker: str) -> None:
        """`worker`'s claim failed: forget it, so the next try delivers again."""
        with Session(self.engine) as session, session.begin():
            session.execute(
                delete(DeliveryRow)
                .where(DeliveryRow.target == target, DeliveryRow.source == source, DeliveryRow.subject == subject)
                .where(DeliveryRow.worker == worker, DeliveryRow.delivered.is_(False))
            )

    def value(self, target: str, source: str, subject: str) -> str | None:
        """What was delivered under the subject (None: nothing yet)."""
        with Session(self.engine) as session:
            return session.scalar(
                select(DeliveryRow.value).filter_by(target=target, source=source, subject=subject, delivered=True)
            )
