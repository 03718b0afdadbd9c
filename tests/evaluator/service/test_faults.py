"""Faults inside the service: a store that cannot be written (a full disk), a worker thread that dies, a stuck job.
Each is reported by `health()`, and jobs run again once the fault is gone."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest
from sqlalchemy import event

from pricer.evaluator.data import catalogue_split
from pricer.evaluator.errors import StoreUnavailable
from pricer.evaluator.records import Job, JobStatus, Progress, Revision
from pricer.evaluator.service import PricerService
from pricer.evaluator.service.loop import Loop
from pricer.evaluator.service.worker import JobRunner
from tests.server import write_items
from tests.waiting import until

REPO = "local/tiny-run"


class FullDisk:
    """While `full`, every write to the store fails as SQLite's own does when the disk is full.

    `fill_after_next_claim()` fills it the moment a worker has claimed a job, so that job's own
    writes fail whatever the machine's speed (a tiny job may otherwise finish before a test reacts)."""

    def __init__(self, engine) -> None:
        self.full = False
        self._fill_after_claim = False
        event.listen(engine, "before_cursor_execute", self._write)
        event.listen(engine, "after_cursor_execute", self._written)

    def fill_after_next_claim(self) -> None:
        self._fill_after_claim = True

    def _write(self, connection, cursor, statement: str, *args) -> None:
        if self.full and statement.lstrip()[:6].upper() in ("INSERT", "UPDATE", "DELETE"):
            raise sqlite3.OperationalError("database or disk is full")

    def _written(self, connection, cursor, statement: str, parameters, context, executemany) -> None:
        if self._fill_after_claim and statement.lstrip().upper().startswith("UPDATE JOBS") and "running" in parameters:
            self._fill_after_claim, self.full = False, True


@pytest.fixture
def service(settings, tiny_run, tmp_path):
    items = write_items(tmp_path / "items.jsonl", catalogue_split()[1].iloc[:24])
    service = PricerService(settings.model_copy(update={"checkpoint_root": tiny_run.parent, "data": str(items)}))
    service.start()
    yield service
    service.stop()


def _done(service: PricerService, job_id: int) -> Job | None:
    job = service.job(job_id).job
    return job if job.status in (JobStatus.DONE, JobStatus.FAILED) else None


def test_a_full_disk_is_reported_and_jobs_run_again_once_it_has_room(service):
    first, _ = service.submit(REPO, "checkpoint-10")
    assert until(lambda: _done(service, first.job.id), "first job").status == JobStatus.DONE
    assert service.health() == []

    disk = FullDisk(service._evaluator.store.engine)
    disk.full = True
    with pytest.raises(StoreUnavailable, match="disk is full"):  # a clear error for the caller, and nothing queued
        service.submit(REPO, "checkpoint-20")
    problems = service.health()
    assert any("store cannot be written" in p and "disk is full" in p for p in problems), problems

    disk.full = False
    disk.fill_after_next_claim()  # claimed, then the disk is full: its evaluation cannot be saved
    cut, _ = service.submit(REPO, "checkpoint-20")
    problems = until(lambda: len(service.health()) == 2 and service.health(), "the unrecorded failure to be reported")
    assert any(f"job {cut.job.id} failed but the store cannot record it" in p for p in problems), problems
    assert [t.is_alive() for t in threading.enumerate() if t.name == "pricer-worker"] == [True]
    assert service.job(cut.job.id).job.status == JobStatus.RUNNING  # as the store last heard

    disk.full = False
    job = until(lambda: _done(service, cut.job.id), "the cut-off job to be recorded")
    assert job.status == JobStatus.FAILED and "disk is full" in job.error, job
    later, _ = service.submit(REPO, "checkpoint-30")
    assert until(lambda: _done(service, later.job.id), "a job after the fault").status == JobStatus.DONE
    assert until(lambda: service.health() == [], "health after the fault")
    assert service.job_counts()[JobStatus.RUNNING] == 0


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the thread is meant to die
def test_a_worker_thread_that_died_is_reported_and_started_again(service):
    loop = service._executor._loop
    step, calls = loop.step, []

    def dies_once() -> bool:
        calls.append(1)
        if len(calls) == 1:
            raise SystemExit("the thread ends")  # not an Exception: the loop cannot catch it
        return step()

    loop.step = dies_once
    loop.wake()
    until(lambda: not loop.alive, "the worker thread to end")
    assert any("started again" in p for p in service.health())
    job, _ = service.submit(REPO, "checkpoint-10")
    assert until(lambda: _done(service, job.job.id), "a job on the revived worker").status == JobStatus.DONE
    assert service.health() == []


def test_a_job_with_no_progress_for_too_long_is_reported_stuck():
    runner = JobRunner.__new__(JobRunner)
    runner.unrecorded = {}
    job = Job(
        id=1,
        repo="r",
        revision=Revision("s", "c", "abc"),
        dataset="d",
        dataset_fingerprint="f",
        config_key="k",
        status=JobStatus.RUNNING,
        error=None,
        evaluation_id=None,
        attempts=1,
        created_at=None,
        started_at=None,
        finished_at=None,
    )
    runner.progress = Progress(job, 3, 10, moved=time.monotonic() - 120)
    assert runner.problems(stall=60) == ["job 1 has made no progress for over 60 s"]
    runner.progress = Progress(job, 4, 10)
    assert runner.problems(stall=60) == []


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the thread is meant to die
def test_a_loop_that_ended_can_be_revived_unless_stopped_on_purpose():
    ran = threading.Event()

    def step() -> bool:
        ran.set()
        raise SystemExit

    loop = Loop("test-loop", step, wait=0.01)
    loop.start()
    assert ran.wait(30)
    until(lambda: not loop.alive, "the loop to end")
    ran.clear()
    assert loop.revive() and ran.wait(30)
    loop.stop(5)
    assert not loop.revive()  # stopped on purpose: not started again
