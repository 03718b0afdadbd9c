"""The durable job queue: dedup, claim order, recovery after a crash."""

from pricer.evaluator.records import Revision
from pricer.evaluator.store.evaluations import Store
from pricer.evaluator.store.jobs import MAX_ATTEMPTS, JobQueue

DATA = {"dataset": "d", "dataset_fingerprint": "f" * 64, "config_key": "c"}


def _queue(tmp_path) -> JobQueue:
    return JobQueue(Store(f"sqlite:///{tmp_path / 'jobs.db'}"))


def test_the_same_checkpoint_is_queued_once_and_jobs_run_oldest_first(tmp_path):
    queue = _queue(tmp_path)
    a, b = Revision("/runs/r", "checkpoint-1", "a" * 64, step=1), Revision("/runs/r", "checkpoint-2", "b" * 64, step=2)
    first, created = queue.add("local/r", a, **DATA)
    again, created_again = queue.add("local/r", a, **DATA)
    second, _ = queue.add("local/r", b, **DATA)
    other_data, created_other = queue.add("local/r", a, **{**DATA, "dataset_fingerprint": "e" * 64})
    assert created and not created_again and again.id == first.id and created_other
    assert queue.counts() == {"queued": 3, "running": 0, "done": 0, "failed": 0}
    claimed = queue.claim()
    assert claimed.id == first.id and claimed.status == "running" and claimed.attempts == 1
    assert queue.add("local/r", a, **DATA)[0].id == first.id  # running counts as queued
    assert queue.claim().id == second.id


def test_after_a_crash_running_jobs_are_queued_again_until_they_failed_too_often(tmp_path):
    queue = _queue(tmp_path)
    job, _ = queue.add("local/r", Revision("/runs/r", "checkpoint-1", "a" * 64), **DATA)
    for attempt in range(1, MAX_ATTEMPTS + 1):
        assert queue.claim().attempts == attempt
        restarted = _queue(tmp_path)  # a new process on the same store
        assert restarted.recover() == (1 if attempt < MAX_ATTEMPTS else 0)
    failed = queue.get(job.id)
    assert failed.status == "failed" and "stopped while running" in failed.error
    assert queue.claim() is None


def test_done_and_failed_jobs(tmp_path):
    queue = _queue(tmp_path)
    revision = Revision("/runs/r", "checkpoint-1", "a" * 64)
    job, _ = queue.add("local/r", revision, **DATA)
    queue.claim()
    assert queue.fail(job.id, "adapter is corrupt").status == "failed"
    retry, created = queue.add("local/r", revision, **DATA)  # a failed job does not block a new try
    assert created and retry.id != job.id
    assert queue.repos() == []
