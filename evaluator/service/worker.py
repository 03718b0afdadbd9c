"""The worker: claim a queued job from the store, run it, finish it.

`JobRunner` is what one job takes, whatever runs it; `Executor` is what runs jobs. Jobs are
claimed from the store with a lease that the runner renews while the job runs, so any number
of executors, in any number of processes and machines, share one queue: `ThreadWorker` is one
thread in this process (`pricer serve`, `pricer worker`); `RayExecutor` (`ray_executor`) hands
jobs to a pool of Ray actors.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol

from pricer.evaluator.checkpoints.sources import Checkpoint, CheckpointSource
from pricer.evaluator.data import HeldOutSet
from pricer.evaluator.errors import DatasetNotFound, PricerError, StoreUnavailable
from pricer.evaluator.evaluate import Evaluator
from pricer.evaluator.records import Evaluation, Job, Progress, Revision
from pricer.evaluator.service.loop import Loop
from pricer.evaluator.service.telemetry import Telemetry
from pricer.evaluator.stats.selection import Policy
from pricer.evaluator.store import JobQueue

log = logging.getLogger(__name__)


class Executor(Protocol):
    """Runs the queued jobs of a store until stopped."""

    def start(self) -> None: ...

    def stop(self, timeout: float) -> None: ...

    def wake(self) -> None:
        """New work was queued: look now rather than at the next poll."""
        ...

    def activity(self) -> list[Progress]:
        """The jobs running now and how far each is."""
        ...

    def problems(self, stall: float) -> list[str]:
        """What keeps jobs from running (a dead thread, a job with no progress for `stall` seconds, an outcome the
        store could not take); a dead thread is started again."""
        ...


class JobRunner:
    """Claim, run and finish jobs; the next queued checkpoint is fetched while one is scored.

    Args:
        jobs: the queue in the store.
        evaluator: prices and stores.
        open_job: the source and held-out set a job names.
        done: called with each finished job and its evaluation (the service re-chooses what it serves).
        worker: the name this runner claims jobs under (`worker_name()`).
        lease: seconds a claim holds a job; renewed while it runs, with its progress, so every replica sees both.
        leader: with racing on, the repo's current choice on a held-out set and the policy it was chosen under
            (None: nothing chosen yet); a new checkpoint is then raced against it.
        redact: what a caller may see of an error message (no server paths).
        keep: keep each evaluated adapter loaded (a process that serves may serve it next); False in a worker that
            only evaluates.

    Nothing a job raises ends the runner. An outcome the store cannot take (a full disk) is kept and
    written before any other job is claimed, so a job never stays "running" behind a live worker.
    """

    def __init__(
        self,
        jobs: JobQueue,
        evaluator: Evaluator,
        *,
        open_job: Callable[[Job], tuple[CheckpointSource, HeldOutSet]],
        done: Callable[[Job, Evaluation], None],
        telemetry: Telemetry,
        worker: str,
        lease: float,
        redact: Callable[[str], str] = lambda text: text,
        leader: Callable[[str, HeldOutSet], tuple[Revision, Policy] | None] | None = None,
        keep: bool = True,
    ) -> None:
        self.jobs, self.evaluator, self.open_job, self.done, self.telemetry = jobs, evaluator, open_job, done, telemetry
        self.worker, self.lease, self.leader, self.keep = worker, lease, leader, keep
        self.redact = redact
        self.progress: Progress | None = None
        self.unrecorded: dict[int, tuple[str, str | None]] = {}  # job id -> why it failed and its worker, not yet stored
        self._prefetch = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pricer-prefetch")
        self._fetched: tuple[tuple[str, str], Future[Checkpoint]] | None = None  # ((repo, commit), its fetch)

    def run_next(self) -> bool:
        """Run the oldest queued job, if there is one. Returns whether there was."""
        if not self._record_failures():
            return False  # the store still refuses writes: claim nothing until it takes them
        job = self.jobs.claim(self.worker, self.lease)
        if job is None:
            return False
        self.run(job)
        return True

    def run(self, job: Job) -> None:
        """Run a job claimed under `job.worker`'s lease (this runner's, or the name a dispatcher claimed it under)."""
        started = time.perf_counter()
        self.progress = Progress(job, 0, 0)
        heartbeat = Heartbeat(self, job)
        try:
            source, data = self.open_job(job)
            if data.fingerprint != job.dataset_fingerprint:
                raise DatasetNotFound(f"dataset {job.dataset!r} changed since the job was queued")
            fetched = self._take_prefetched(job)
            self._prefetch_next(job)
            evaluation = self._raced(job, source, data) or self.evaluator.evaluate_revision(
                source,
                job.revision,
                data,
                on_batch=lambda done, total: self._priced(job, done, total),
                fetched=fetched,
                keep=self.keep,
            )
            heartbeat.stop()
            finished = self.jobs.finish(job.id, evaluation.id, evaluation.revision, worker=job.worker)
            if self.progress.total:  # items were priced, not taken from the store
                self.telemetry.evaluation_seconds.observe(time.perf_counter() - started)
            if finished is None:  # its lease ran out meanwhile: its new run finds the evaluation stored and ends at once
                log.warning("job %d: evaluated, but its lease was lost; its next run completes it", job.id)
                return
            log.info("job %d done: %s@%s", job.id, job.repo, job.revision.revision)
            self.done(finished, evaluation)
        except PricerError as exc:
            log.warning("job %d failed: %s", job.id, exc)
            self._fail(job, str(exc))
        except Exception as exc:  # a bug, a broken device, a full disk: never the end of the worker
            log.exception("job %d failed unexpectedly", job.id)
            self._fail(job, f"internal error: {type(exc).__name__}: {exc}")
        finally:
            heartbeat.stop()
            self.progress = None

    def _raced(self, job: Job, source: CheckpointSource, data: HeldOutSet) -> Evaluation | None:
        """With racing on, a checkpoint never evaluated before raced against the current leader: its full evaluation
        if it keeps up, else the partial one. None: evaluate it in full (racing off, no leader yet, it is the leader,
        or it was evaluated before: asked again, a stopped checkpoint is completed)."""
        leader = self.leader(job.repo, data) if self.leader is not None else None
        if leader is None or leader[0].commit == job.revision.commit:
            return None
        if self.evaluator.stored(source, job.revision, data, partial=True) is not None:
            return None
        revision, policy = leader
        race = self.evaluator.race(source, [revision, job.revision], data, policy=policy)
        evaluation = next(e for e in [*race.evaluations, *(d.evaluation for d in race.dropped)] if e.revision.commit == job.revision.commit)
        log.info("job %d raced against %s: %s (%.0f%% of the validation scorings saved)", job.id, revision.revision,
                 "kept up, evaluated in full" if evaluation.complete else "stopped, significantly worse", 100 * race.saved)
        return evaluation

    def close(self) -> None:
        self._prefetch.shutdown(wait=True, cancel_futures=True)

    def problems(self, stall: float) -> list[str]:
        found = [f"job {job_id} failed but the store cannot record it yet" for job_id in self.unrecorded]
        if (progress := self.progress) is not None and time.monotonic() - progress.moved > stall:
            found.append(f"job {progress.job.id} has made no progress for over {stall:.0f} s")
        return found

    def _fail(self, job: Job, reason: str) -> None:
        self.unrecorded[job.id] = (self.redact(reason), job.worker)
        self._record_failures()

    def _record_failures(self) -> bool:
        """Write the failures the store could not take before. Returns whether none is left."""
        for job_id, (reason, worker) in list(self.unrecorded.items()):
            try:
                self.jobs.fail(job_id, reason, worker=worker)
            except StoreUnavailable as exc:
                log.warning("cannot record that job %d failed (%s); trying again", job_id, exc)
                return False
            except Exception:  # a job deleted meanwhile, a bug: nothing to retry
                log.exception("cannot record that job %d failed", job_id)
            del self.unrecorded[job_id]
        return True

    def _priced(self, job: Job, done: int, total: int) -> None:
        self.telemetry.items_scored.inc(done - (self.progress.done if self.progress else 0))
        self.progress = Progress(job, done, total)

    def _take_prefetched(self, job: Job) -> Future[Checkpoint] | None:
        fetched, self._fetched = self._fetched, None
        if fetched is not None and fetched[0] == (job.repo, job.revision.commit):
            return fetched[1]
        return None

    def _prefetch_next(self, job: Job) -> None:
        """Fetch the checkpoint of the job queued after this one (for a Hub repo, download it) while this one is scored."""
        following = self.jobs.next_queued()
        if following is None or following.id == job.id:
            return
        try:
            source, data = self.open_job(following)
            if self.evaluator.stored(source, following.revision, data) is None:
                self._fetched = (
                    (following.repo, following.revision.commit),
                    self._prefetch.submit(source.fetch, following.revision),
                )
        except PricerError:
            pass  # its own run reports why


class Heartbeat:
    """While a job runs: renew its lease, with its progress, every few seconds (a thread of its own, so a long
    forward pass never lets the lease run out)."""

    def __init__(self, runner: JobRunner, job: Job) -> None:
        self.runner, self.job = runner, job
        self.every = min(runner.lease / 4, 2.0)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"pricer-lease-{job.id}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not threading.current_thread():
            self._thread.join()

    def _beat(self) -> None:
        while not self._stopped.wait(self.every):
            progress = self.runner.progress
            done, total = (progress.done, progress.total) if progress is not None else (None, None)
            try:
                if not self.runner.jobs.renew(self.job.id, self.job.worker, self.runner.lease, done=done, total=total):
                    log.warning("job %d: its lease was lost (it is queued again); finishing the work in hand", self.job.id)
                    return
            except Exception as exc:  # the store down for a moment: the next beat tries again, the lease has slack
                log.warning("job %d: cannot renew its lease (%s)", self.job.id, exc)


class ThreadWorker:
    """An `Executor`: one thread of this process that runs jobs one at a time."""

    def __init__(self, runner: JobRunner) -> None:
        self.runner = runner
        self._loop = Loop("pricer-worker", runner.run_next)

    def start(self) -> None:
        self._loop.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the running job (a job cut off by the process ending is requeued on the next start)."""
        self._loop.stop(timeout)
        self.runner.close()

    def wake(self) -> None:
        self._loop.wake()

    def activity(self) -> list[Progress]:
        progress = self.runner.progress
        return [progress] if progress is not None else []

    def problems(self, stall: float) -> list[str]:
        revived = ["the worker thread had stopped; it was started again"] if self._loop.revive() else []
        return revived + self.runner.problems(stall)


class NoExecutor:
    """An `Executor` that runs nothing here: this replica only queues and serves; `pricer worker` processes (or
    another replica's executor) run the jobs."""

    def start(self) -> None:
        pass

    def stop(self, timeout: float = 30.0) -> None:
        pass

    def wake(self) -> None:
        pass

    def activity(self) -> list[Progress]:
        return []

    def problems(self, stall: float) -> list[str]:
        return []
