"""`RayExecutor`: evaluation jobs on a pool of Ray actors, one per GPU by default (`pricer serve --executor ray`).

The replica that runs it claims a job from the store for each idle actor, under that actor's
name, and hands the job's id to it. An actor (`EvaluationActor`) holds a `PricerService` of
its own, built from the same settings, so its base model is loaded once and stays loaded; it
runs the job as a worker thread would: it fetches the adapter, prices the items, stores the
evaluation and renews the job's lease with its progress, which every replica reads from the
store. An actor that dies is restarted by Ray, and its job goes back to the queue at once
(or, if this replica died with it, when the lease runs out): no job is lost.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import ray
from ray.exceptions import RayError

from pricer.evaluator.records import Job, Progress
from pricer.evaluator.service.loop import Loop
from pricer.evaluator.settings import Settings
from pricer.evaluator.store import JobQueue, worker_name

log = logging.getLogger(__name__)


class EvaluationActor:
    """One evaluating process: a `PricerService` that serves nothing, its base model loaded at the first job and
    kept. `name` is what its jobs are claimed under (Ray passes the same one again when it restarts the actor)."""

    def __init__(self, settings: Settings, name: str) -> None:
        from pricer.evaluator.service.facade import PricerService

        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")  # Ray keeps each actor's log
        self.service = PricerService(settings.model_copy(update={"executor": "none"}), serving=False)  # this runs them
        self.runner = self.service.runner(name)

    def run(self, job_id: int) -> str:
        """Run a job claimed under this actor's name; returns its status then."""
        self.runner.run(self.service.job(job_id).job)
        return self.service.job(job_id).job.status

    def device(self) -> str:
        """Where this actor prices: its settings' device, as Ray's GPU assignment makes it."""
        from pricer.evaluator.scoring import pick_device

        return str(pick_device(self.service.settings.device))


class RayExecutor:
    """An `Executor` over Ray actors: `settings.ray_actors` of them (default: one per GPU of the cluster, else one),
    each with `settings.ray_gpus_per_actor` GPUs (default 1 where the cluster has GPUs, else 0) and
    `settings.ray_cpus_per_actor` CPUs; the cluster is `settings.ray_address` (default: a local one).

    Args:
        on_done: called after an actor finished a job (the replica looks for a new choice at once).
    """

    def __init__(self, settings: Settings, jobs: JobQueue, *, on_done: Callable[[], None] = lambda: None) -> None:
        self.settings, self.jobs, self.on_done = settings, jobs, on_done
        self._actors: list[tuple[str, ray.actor.ActorHandle]] = []  # (the name it claims under, the actor)
        self._running: dict[ray.ObjectRef, tuple[str, Job]] = {}
        # an actor not ready yet (started, or restarted by Ray), and a call that answers once it is: a job is claimed for
        # an actor only then, so its lease starts when the actor can begin
        self._starting: dict[str, ray.ObjectRef] = {}
        self._loop = Loop("pricer-ray", self._dispatch, wait=1.0)

    def start(self) -> None:
        if self._actors:
            return
        if not ray.is_initialized():
            ray.init(address=self.settings.ray_address, log_to_driver=False, include_dashboard=False)
        gpus = ray.cluster_resources().get("GPU", 0)
        per_actor = self.settings.ray_gpus_per_actor if self.settings.ray_gpus_per_actor is not None else (1 if gpus else 0)
        count = self.settings.ray_actors or (max(1, int(gpus // per_actor)) if per_actor else 1)
        actor = ray.remote(EvaluationActor).options(
            num_gpus=per_actor, num_cpus=self.settings.ray_cpus_per_actor, max_restarts=-1, max_task_retries=0
        )
        names = [worker_name(f"ray-actor-{i}") for i in range(count)]
        self._actors = [(name, actor.remote(self.settings, name)) for name in names]
        self._starting = {name: self._ping(name) for name, _ in self._actors}
        log.info("evaluating on %d Ray actor(s), %g GPU(s) each", count, per_actor)
        self._loop.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop dispatching; jobs in the actors' hands go back to the queue for another replica or a restart."""
        self._loop.stop(timeout)
        for name, job in self._running.values():
            self.jobs.release(job.id, name)
        for _, actor in self._actors:
            ray.kill(actor)
        self._actors, self._running, self._starting = [], {}, {}

    def wake(self) -> None:
        self._loop.wake()

    def activity(self) -> list[Progress]:
        return []  # the actors report progress through the store, where every replica reads it

    def problems(self, stall: float) -> list[str]:
        return ["the Ray dispatcher had stopped; it was started again"] if self._loop.revive() else []

    def _ping(self, name: str) -> ray.ObjectRef:
        return dict(self._actors)[name].device.remote()

    def _check_starting(self) -> None:
        """An actor takes jobs once it answers (calls sent while it starts or restarts would wait, or fail)."""
        for name, ping in list(self._starting.items()):
            if ray.wait([ping], timeout=0)[0]:
                try:
                    ray.get(ping)
                    del self._starting[name]
                except RayError:
                    self._starting[name] = self._ping(name)

    def actors(self) -> list[ray.actor.ActorHandle]:
        return [actor for _, actor in self._actors]

    def _dispatch(self) -> bool:
        """Give each idle actor a job, then collect what finished. Returns whether anything moved."""
        self._check_starting()
        busy = {name for name, _ in self._running.values()} | set(self._starting)
        moved = False
        for name, actor in self._actors:
            if name not in busy and (job := self.jobs.claim(name, self.settings.lease_seconds)) is not None:
                self._running[actor.run.remote(job.id)] = (name, job)
                moved = True
        if self._running:
            finished, _ = ray.wait(list(self._running), num_returns=1, timeout=0.5)
            for ref in finished:
                name, job = self._running.pop(ref)
                try:
                    log.info("job %d %s on %s", job.id, ray.get(ref), name)
                except RayError as exc:  # the actor died or is restarting: the job runs again, here or elsewhere
                    log.warning("job %d: its Ray actor failed (%s); it is queued again", job.id, type(exc).__name__)
                    self.jobs.release(job.id, name)  # a no-op if it had finished
                    self._starting[name] = self._ping(name)
                self.on_done()
                moved = True
        return moved or bool(self._running)  # ray.wait was the pause
