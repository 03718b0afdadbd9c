"""The durable job queue: dedup, claim order, leases, recovery when a worker is gone; on SQLite and PostgreSQL."""

import subprocess
import sys
import threading
from datetime import timedelta

from sqlalchemy import update
from sqlalchemy.orm import Session

from pricer.evaluator.records import Revision
from pricer.evaluator.store import JobQueue, Store, utcnow, worker_name
from pricer.evaluator.store.jobs import MAX_ATTEMPTS
from pricer.evaluator.store.schema import JobRow

DATA = {"dataset": "d", "dataset_fingerprint": "f" * 64, "config_key": "c"}
LEASE = 60


def _revision(n: int) -> Revision:
    return Revision("/runs/r", f"checkpoint-{n}", f"{n:064x}", step=n)


def _expire(queue: JobQueue, job_id: int) -> None:
    """As if its worker had stopped renewing the lease a while ago."""
    with Session(queue.engine) as session, session.begin():
        session.execute(update(JobRow).where(JobRow.id == job_id).values(lease_expires=utcnow() - timedelta(seconds=1)))


def test_the_same_checkpoint_is_queued_once_and_jobs_run_oldest_first(store_url):
    queue = JobQueue(Store(store_url))
    a, b = _revision(1), _revision(2)
    first, created = queue.add("local/r", a, **DATA)
    again, created_again = queue.add("local/r", a, **DATA)
    second, _ = queue.add("local/r", b, **DATA)
    other_data, created_other = queue.add("local/r", a, **{**DATA, "dataset_fingerprint": "e" * 64})
    assert created and not created_again and again.id == first.id and created_other
    assert queue.counts() == {"queued": 3, "running": 0, "done": 0, "failed": 0}
    claimed = queue.claim("w", LEASE)
    assert claimed.id == first.id and claimed.status == "running" and claimed.attempts == 1 and claimed.worker == "w"
    assert queue.add("local/r", a, **DATA)[0].id == first.id  # running counts as queued
    assert queue.claim("w", LEASE).id == second.id


def test_many_processes_asking_at_once_queue_one_job_and_each_job_is_claimed_once(store_url):
    """Threads with a store each stand for replicas and workers: the database, not the process, decides."""
    Store(store_url)  # migrated once, before the race
    asked: list[int] = []
    claimed: list[int] = []

    def replica() -> None:
        queue = JobQueue(Store(store_url))
        asked.extend(queue.add("local/r", _revision(n), **DATA)[0].id for n in range(10))

    def worker() -> None:
        queue, name = JobQueue(Store(store_url)), worker_name()
        while (job := queue.claim(name, LEASE)) is not None:
            claimed.append(job.id)

    replicas = [threading.Thread(target=replica) for _ in range(4)]
    for thread in replicas:
        thread.start()
    for thread in replicas:
        thread.join()
    assert len(asked) == 40 and len(set(asked)) == 10  # every replica got the one job of each checkpoint
    workers = [threading.Thread(target=worker) for _ in range(4)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    assert sorted(claimed) == sorted(set(asked))  # each claimed by exactly one worker


def test_a_lease_renewed_keeps_the_job_and_one_that_ran_out_sends_it_to_another_worker(store_url):
    queue = JobQueue(Store(store_url))
    job, _ = queue.add("local/r", _revision(1), **DATA)
    assert queue.claim("a", LEASE).id == job.id
    assert queue.renew(job.id, "a", LEASE, done=3, total=10)
    assert queue.get(job.id).items_done == 3 and queue.get(job.id).items_total == 10
    assert queue.claim("b", LEASE) is None  # a live lease: nothing for b
    _expire(queue, job.id)
    again = queue.claim("b", LEASE)
    assert again.id == job.id and again.worker == "b" and again.attempts == 2 and again.items_done == 0
    assert not queue.renew(job.id, "a", LEASE)  # a's lease is lost: its outcome is no longer its to write
    assert queue.finish(job.id, 1, _revision(1), worker="a") is None and queue.fail(job.id, "late", worker="a") is None
    assert queue.get(job.id).status == "running"
    assert queue.fail(job.id, "adapter is corrupt", worker="b").status == "failed"


def test_a_job_whose_process_on_this_machine_is_gone_is_queued_again_at_once(store_url):
    queue = JobQueue(Store(store_url))
    job, _ = queue.add("local/r", _revision(1), **DATA)
    gone = subprocess.run(
        [sys.executable, "-c", "from pricer.evaluator.store import worker_name; print(worker_name())"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # a worker name of a process that has ended
    queue.claim(gone, LEASE)
    alive = queue.claim(worker_name(), LEASE)  # the lease has a minute left, but its holder is gone
    assert alive.id == job.id and alive.attempts == 2


def test_a_job_lost_too_often_is_failed_not_retried_forever(store_url):
    queue = JobQueue(Store(store_url))
    job, _ = queue.add("local/r", _revision(1), **DATA)
    for attempt in range(1, MAX_ATTEMPTS + 1):
        assert queue.claim("w", LEASE).attempts == attempt
        _expire(queue, job.id)
        assert queue.requeue_lost() == (1 if attempt < MAX_ATTEMPTS else 0)
    failed = queue.get(job.id)
    assert failed.status == "failed" and "stopped while running" in failed.error
    assert queue.claim("w", LEASE) is None


def test_a_released_job_runs_again_without_waiting_for_its_lease(store_url):
    queue = JobQueue(Store(store_url))
    job, _ = queue.add("local/r", _revision(1), **DATA)
    queue.claim("actor-1", LEASE)
    assert queue.release(job.id, "actor-2") is None  # not its job
    assert queue.release(job.id, "actor-1").status == "queued"
    assert queue.claim("actor-2", LEASE).id == job.id


def test_done_and_failed_jobs(store_url):
    queue = JobQueue(Store(store_url))
    revision = _revision(1)
    job, _ = queue.add("local/r", revision, **DATA)
    queue.claim("w", LEASE)
    assert queue.fail(job.id, "adapter is corrupt").status == "failed"
    retry, created = queue.add("local/r", revision, **DATA)  # a failed job does not block a new try
    assert created and retry.id != job.id
    assert queue.repos() == []
