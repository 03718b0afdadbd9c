"""Evaluation jobs: a durable queue in the store, shared by every worker on any machine.

A job lives in the `jobs` table from the moment it is asked for, so a process that dies
loses nothing. A worker claims a job with a lease (`FOR UPDATE SKIP LOCKED` on PostgreSQL,
a compare-and-set everywhere) and renews it while the job runs; a job whose lease ran out,
or whose worker on this machine is gone, goes back to the queue and runs again. Stored
evaluations are idempotent (see `Store.save`), so a job that finished its evaluation but
died before being marked done completes at once on its second run, without work, and a
job runs to completion once in the store's eyes.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pricer.evaluator.errors import JobNotFound
from pricer.evaluator.records import Job, JobStatus, Revision
from pricer.evaluator.store.evaluations import Store
from pricer.evaluator.store.schema import JobRow, utcnow

QUEUED, RUNNING, DONE, FAILED = JobStatus
MAX_ATTEMPTS = 3  # a job that kills its process this often is failed, not retried forever
_TOKENS: set[str] = set()  # the worker names this process gave out


def worker_name(role: str = "worker") -> str:
    """A name no other worker has, anywhere: `host:pid:token` (and the role), so a restart on the same machine can
    tell that the process holding a job is gone without waiting for its lease."""
    token = uuid.uuid4().hex[:8]
    _TOKENS.add(token)
    return f"{socket.gethostname()}:{os.getpid()}:{token}:{role}"


def _gone(worker: str) -> bool:
    """Whether a worker name belongs to a process of this machine that no longer runs."""
    host, pid, token, *_ = [*worker.split(":"), "", "", ""]
    if host != socket.gethostname() or not pid.isdigit():
        return False  # another machine's: only its lease tells
    if int(pid) == os.getpid():
        return token not in _TOKENS  # this pid, but an earlier process's (a container restarted as pid 1)
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    return False


def _job(row: JobRow) -> Job:
    return Job(
        id=row.id,
        repo=row.repo,
        revision=Revision(row.source, row.revision, row.commit, row.step, row.epoch, row.message),
        dataset=row.dataset,
        dataset_fingerprint=row.dataset_fingerprint,
        config_key=row.config_key,
        status=JobStatus(row.status),
        error=row.error,
        evaluation_id=row.evaluation_id,
        attempts=row.attempts,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        worker=row.worker,
        items_done=row.items_done or 0,
        items_total=row.items_total or 0,
    )


def _new_row(repo: str, revision: Revision, **values: object) -> JobRow:
    return JobRow(
        repo=repo,
        source=revision.source,
        revision=revision.revision,
        commit=revision.commit,
        step=revision.step,
        epoch=revision.epoch,
        message=revision.message,
        attempts=0,
        **values,
    )


class JobQueue:
    """Queued, running, done and failed evaluation jobs; every method is one short transaction."""

    def __init__(self, store: Store) -> None:
        self.engine = store.engine

    def add(
        self,
        repo: str,
        revision: Revision,
        *,
        dataset: str,
        dataset_fingerprint: str,
        config_key: str,
        evaluation_id: int | None = None,
    ) -> tuple[Job, bool]:
        """The job for this checkpoint, data and config: an unfinished (or, with `evaluation_id`, done) one
        that exists already, else a new one. Returns (job, whether it is new)."""
        wanted = {QUEUED, RUNNING} if evaluation_id is None else {DONE}
        same = select(JobRow).where(
            JobRow.repo == repo,
            JobRow.commit == revision.commit,
            JobRow.dataset_fingerprint == dataset_fingerprint,
            JobRow.config_key == config_key,
            JobRow.status.in_(wanted),
        )
        if evaluation_id is not None:
            same = same.where(JobRow.evaluation_id == evaluation_id)

        def new_row() -> JobRow:
            return _new_row(
                repo,
                revision,
                dataset=dataset,
                dataset_fingerprint=dataset_fingerprint,
                config_key=config_key,
                status=QUEUED if evaluation_id is None else DONE,
                evaluation_id=evaluation_id,
                finished_at=None if evaluation_id is None else utcnow(),
            )

        try:
            return self._found_or_added(same, new_row)
        except IntegrityError:  # another process queued it between the look and the write: look again, and find it
            return self._found_or_added(same, new_row)

    def _found_or_added(self, same, new_row: Callable[[], JobRow]) -> tuple[Job, bool]:
        with Session(self.engine) as session, session.begin():
            if existing := session.scalars(same.order_by(JobRow.id)).first():
                return _job(existing), False
            row = new_row()
            session.add(row)
            session.flush()
            return _job(row), True

    def skip(self, repo: str, revision: Revision, reason: str, *, dataset: str, dataset_fingerprint: str, config_key: str) -> Job:
        """Record a checkpoint that cannot be evaluated (a broken folder) as a failed job, once while it is unchanged."""
        with Session(self.engine) as session, session.begin():
            same = select(JobRow).where(
                JobRow.repo == repo, JobRow.commit == revision.commit, JobRow.status == FAILED, JobRow.error == reason
            )
            if existing := session.scalars(same.order_by(JobRow.id)).first():
                return _job(existing)
            row = _new_row(
                repo,
                revision,
                dataset=dataset,
                dataset_fingerprint=dataset_fingerprint,
                config_key=config_key,
                status=FAILED,
                error=reason,
                finished_at=utcnow(),
            )
            session.add(row)
            session.flush()
            return _job(row)

    def claim(self, worker: str, lease: float) -> Job | None:
        """Mark the oldest queued job running under `worker`'s lease of `lease` seconds and return it (None when
        nothing waits). Jobs whose worker vanished are queued again first.

        Of several workers (threads, processes, machines) claiming at once, one gets each job: PostgreSQL hands
        each a different row (`FOR UPDATE SKIP LOCKED`), and the update is a compare-and-set on every database."""
        self.requeue_lost()
        while True:
            with Session(self.engine) as session, session.begin():
                oldest = select(JobRow.id).where(JobRow.status == QUEUED).order_by(JobRow.id).limit(1)
                job_id = session.scalar(oldest.with_for_update(skip_locked=True))
                if job_id is None:
                    return None
                now = utcnow()
                claimed = session.execute(
                    update(JobRow)
                    .where(JobRow.id == job_id, JobRow.status == QUEUED)
                    .values(
                        status=RUNNING, started_at=now, attempts=JobRow.attempts + 1, worker=worker,
                        lease_expires=now + timedelta(seconds=lease), items_done=0, items_total=0,
                    )
                ).rowcount
                if claimed:
                    return _job(session.get(JobRow, job_id))

    def renew(self, job_id: int, worker: str, lease: float, *, done: int | None = None, total: int | None = None) -> bool:
        """Extend `worker`'s lease on a running job (and record how far it is). False: the lease is lost (it ran out
        and the job was queued again, perhaps claimed by another worker): the job's outcome is no longer this
        worker's to write."""
        progress = {} if done is None else {"items_done": done, "items_total": total}
        with Session(self.engine) as session, session.begin():
            return bool(session.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.worker == worker, JobRow.status == RUNNING)
                .values(lease_expires=utcnow() + timedelta(seconds=lease), **progress)
            ).rowcount)

    def next_queued(self) -> Job | None:
        """The job the next claim would take, left queued (for prefetching its checkpoint)."""
        with Session(self.engine) as session:
            row = session.scalars(select(JobRow).where(JobRow.status == QUEUED).order_by(JobRow.id).limit(1)).first()
            return _job(row) if row else None

    def finish(self, job_id: int, evaluation_id: int, revision: Revision, *, worker: str | None = None) -> Job | None:
        """Mark a job done with its evaluation (and the step / epoch the checkpoint's files gave). With `worker`: only
        while it holds the job (None otherwise: the job was queued again meanwhile and its new run decides)."""
        return self._close(
            job_id, worker, status=DONE, evaluation_id=evaluation_id, error=None, step=revision.step, epoch=revision.epoch
        )

    def fail(self, job_id: int, error: str, *, worker: str | None = None) -> Job | None:
        """Mark a job failed with the reason (with `worker`: only while it holds the job, as `finish`)."""
        return self._close(job_id, worker, status=FAILED, error=error)

    def release(self, job_id: int, worker: str) -> Job | None:
        """Give a running job back to the queue now (its worker died, and whoever noticed knows it), or fail it
        after MAX_ATTEMPTS; without waiting for its lease to run out."""
        with Session(self.engine) as session, session.begin():
            row = session.get(JobRow, job_id)
            if row is None or row.worker != worker or row.status != RUNNING:
                return None
            self._requeue(row)
            session.flush()
            return _job(row)

    def requeue_lost(self) -> int:
        """Queue again the running jobs whose worker is gone: its lease ran out, or its process on this machine no
        longer runs (or it was started by a pricer before leases). A job that was lost MAX_ATTEMPTS times is failed
        instead. Returns how many went back to the queue."""
        now = utcnow()
        running = select(JobRow).where(JobRow.status == RUNNING).with_for_update(skip_locked=True)
        with Session(self.engine) as session, session.begin():
            lost = [
                row for row in session.scalars(running)
                if row.lease_expires is None or row.lease_expires < now or (row.worker is not None and _gone(row.worker))
            ]
            return sum(self._requeue(row) for row in lost)

    @staticmethod
    def _requeue(row: JobRow) -> bool:
        if row.attempts >= MAX_ATTEMPTS:
            row.status, row.finished_at = FAILED, utcnow()
            row.error = f"its worker stopped while running it, {MAX_ATTEMPTS} times"
            return False
        row.status, row.worker, row.lease_expires, row.items_done, row.items_total = QUEUED, None, None, 0, 0
        return True

    def get(self, job_id: int) -> Job:
        with Session(self.engine) as session:
            row = session.get(JobRow, job_id)
            if row is None:
                raise JobNotFound(f"no evaluation job {job_id}")
            return _job(row)

    def jobs(self, *, repo: str | None = None, status: str | None = None) -> list[Job]:
        """Jobs, oldest first, of one repo and / or in one status."""
        query = select(JobRow).order_by(JobRow.id)
        if repo is not None:
            query = query.where(JobRow.repo == repo)
        if status is not None:
            query = query.where(JobRow.status == status)
        with Session(self.engine) as session:
            return [_job(row) for row in session.scalars(query)]

    def counts(self) -> dict[str, int]:
        """How many jobs are in each status."""
        with Session(self.engine) as session:
            found = dict(session.execute(select(JobRow.status, func.count()).group_by(JobRow.status)).all())
        return {status: int(found.get(status, 0)) for status in JobStatus}

    def repos(self, status: str | None = DONE) -> list[str]:
        """Repos with a job in `status` (None: any), the one with the latest such job first."""
        query = (
            select(JobRow.repo, func.max(JobRow.id).label("latest")).group_by(JobRow.repo).order_by(func.max(JobRow.id).desc())
        )
        if status is not None:
            query = query.where(JobRow.status == status)
        with Session(self.engine) as session:
            return [repo for repo, _ in session.execute(query).all()]

    def _close(self, job_id: int, worker: str | None, **values: object) -> Job | None:
        with Session(self.engine) as session, session.begin():
            row = session.get(JobRow, job_id)
            if row is None:
                raise JobNotFound(f"no evaluation job {job_id}")
            if worker is not None and (row.worker != worker or row.status != RUNNING):
                return None
            values = {**values, "finished_at": utcnow(), "lease_expires": None}
            for name, value in values.items():
                setattr(row, name, value)
            session.flush()
            return _job(row)
