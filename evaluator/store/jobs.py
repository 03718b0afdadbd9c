"""Evaluation jobs: a durable queue in the store.

A job lives in the `jobs` table from the moment it is asked for, so a process that dies
loses nothing: on start, jobs left `running` go back to `queued` and run again. Stored
evaluations are idempotent (see `Store.save`), so a job that finished its evaluation but
died before being marked done completes at once on its second run, without work.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Float, ForeignKey, Integer, String, Text, func, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from pricer.evaluator.errors import JobNotFound
from pricer.evaluator.records import Job, JobStatus, Revision
from pricer.evaluator.store.evaluations import Base, Store, utcnow

QUEUED, RUNNING, DONE, FAILED = JobStatus
MAX_ATTEMPTS = 3  # a job that kills its process this often is failed, not retried forever


class JobRow(Base):
    __tablename__ = "jobs"

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
        Base.metadata.create_all(self.engine, tables=[JobRow.__table__])

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
        with Session(self.engine) as session, session.begin():
            same = select(JobRow).where(
                JobRow.repo == repo,
                JobRow.commit == revision.commit,
                JobRow.dataset_fingerprint == dataset_fingerprint,
                JobRow.config_key == config_key,
                JobRow.status.in_(wanted),
            )
            if evaluation_id is not None:
                same = same.where(JobRow.evaluation_id == evaluation_id)
            if existing := session.scalars(same.order_by(JobRow.id)).first():
                return _job(existing), False
            row = _new_row(
                repo,
                revision,
                dataset=dataset,
                dataset_fingerprint=dataset_fingerprint,
                config_key=config_key,
                status=QUEUED if evaluation_id is None else DONE,
                evaluation_id=evaluation_id,
                finished_at=None if evaluation_id is None else utcnow(),
            )
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

    def claim(self) -> Job | None:
        """Mark the oldest queued job running and return it (None when nothing waits).

        A compare-and-set: of several workers (threads or processes) claiming at once, one gets each job."""
        while True:
            with Session(self.engine) as session, session.begin():
                job_id = session.scalar(select(JobRow.id).where(JobRow.status == QUEUED).order_by(JobRow.id).limit(1))
                if job_id is None:
                    return None
                claimed = session.execute(
                    update(JobRow)
                    .where(JobRow.id == job_id, JobRow.status == QUEUED)
                    .values(status=RUNNING, started_at=utcnow(), attempts=JobRow.attempts + 1)
                ).rowcount
                if claimed:
                    return _job(session.get(JobRow, job_id))

    def next_queued(self) -> Job | None:
        """The job the next claim would take, left queued (for prefetching its checkpoint)."""
        with Session(self.engine) as session:
            row = session.scalars(select(JobRow).where(JobRow.status == QUEUED).order_by(JobRow.id).limit(1)).first()
            return _job(row) if row else None

    def finish(self, job_id: int, evaluation_id: int, revision: Revision) -> Job:
        """Mark a job done with its evaluation (and the step / epoch the checkpoint's files gave)."""
        return self._update(
            job_id,
            status=DONE,
            evaluation_id=evaluation_id,
            error=None,
            finished_at=utcnow(),
            step=revision.step,
            epoch=revision.epoch,
        )

    def fail(self, job_id: int, error: str) -> Job:
        return self._update(job_id, status=FAILED, error=error, finished_at=utcnow())

    def recover(self) -> int:
        """After a restart: jobs left running go back to the queue (or fail, after MAX_ATTEMPTS). Returns how many."""
        with Session(self.engine) as session, session.begin():
            session.execute(
                update(JobRow)
                .where(JobRow.status == RUNNING, JobRow.attempts >= MAX_ATTEMPTS)
                .values(status=FAILED, error=f"the process stopped while running it, {MAX_ATTEMPTS} times", finished_at=utcnow())
            )
            return session.execute(update(JobRow).where(JobRow.status == RUNNING).values(status=QUEUED)).rowcount

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

    def _update(self, job_id: int, **values: object) -> Job:
        with Session(self.engine) as session, session.begin():
            row = session.get(JobRow, job_id)
            if row is None:
                raise JobNotFound(f"no evaluation job {job_id}")
            for name, value in values.items():
                setattr(row, name, value)
            session.flush()
            return _job(row)
