"""The pricer service: evaluation jobs run off the request path, and predictions from the best adapter.

`PricerService` is what the HTTP app calls (and `pricer demo`, and the tests): it queues
evaluations in the store, runs them one at a time on a worker thread that shares the
loaded model with predictions, and serves each repo's best checkpoint, swapping the served
adapter atomically when a better one is evaluated.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from pricer.evaluator.checkpoints.sources import CheckpointSource, Revision
from pricer.evaluator.data import HeldOutSet, load_heldout, prompts_for
from pricer.evaluator.errors import DatasetNotFound, InvalidRepoId, ModelNotReady, NotEvaluated, PricerError, WebhookRefused
from pricer.evaluator.evaluate import Evaluator
from pricer.evaluator.scoring import PriceModel
from pricer.evaluator.service.batching import MicroBatcher
from pricer.evaluator.service.telemetry import Telemetry
from pricer.evaluator.settings import Settings
from pricer.evaluator.stats.ranking import Ranked
from pricer.evaluator.stats.selection import Choice
from pricer.evaluator.store.evaluations import Evaluation, utcnow
from pricer.evaluator.store.jobs import DONE, QUEUED, RUNNING, Job, JobQueue
from pricer.evaluator.store.watches import Watch, Watches

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobResult:
    """A job and, once it is done, its evaluation."""

    job: Job
    evaluation: Evaluation | None


@dataclass(frozen=True)
class Served:
    """The adapter that answers predictions for a repo: the repo's best evaluated checkpoint."""

    repo: str
    evaluation: Evaluation
    model: PriceModel
    adapter: str

    @property
    def revision(self) -> Revision:
        return self.evaluation.revision


@dataclass(frozen=True)
class ServedPrediction:
    prices: list[float]
    repo: str
    revision: Revision


class PricerService:
    """Queue evaluations, run them on one worker thread, rank, and predict with each repo's best adapter."""

    def __init__(self, settings: Settings | None = None, *, evaluator: Evaluator | None = None) -> None:
        self.settings = settings or Settings()
        self.evaluator = evaluator or Evaluator(self.settings)
        self.queue = JobQueue(self.evaluator.store)
        self.watches = Watches(self.evaluator.store)
        default = load_heldout(self.settings.data, test_share=self.settings.test_share)  # a broken file stops it here
        self.default_dataset = default.name
        self.datasets: dict[str, HeldOutSet] = {default.name: default}
        self._served: dict[str, Served] = {}
        self._served_lock = threading.Lock()
        self._wake = threading.Event()
        self._wake_poller = threading.Event()
        self._stopping = threading.Event()
        self._worker: threading.Thread | None = None
        self._poller: threading.Thread | None = None
        self._alarmed: set[str] = set()  # repos whose overfitting alarm was logged
        self._batchers: dict[str, MicroBatcher] = {}
        self.running: Job | None = None
        self.progress: tuple[int, int] | None = None  # (items priced, items in all) of the running job
        self.telemetry = Telemetry(self.queue.counts, self._served_revisions)

    # ---- lifecycle

    def start(self) -> None:
        """Requeue jobs a previous process left running, then start the worker (once)."""
        if self._worker is not None and self._worker.is_alive():
            return
        if (requeued := self.queue.recover()) > 0:
            log.info("requeued %d job(s) interrupted by a restart", requeued)
        self._stopping.clear()
        self._worker = threading.Thread(target=self._work, name="pricer-worker", daemon=True)
        self._worker.start()
        self._poller = threading.Thread(target=self._poll_watches, name="pricer-watches", daemon=True)
        self._poller.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the running job (a job cut off by the process ending is requeued on the next start)."""
        self._stopping.set()
        self._wake.set()
        for thread in (self._worker, self._poller):
            if thread is not None:
                thread.join(timeout)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no job is queued or running (for the demo and tests). Returns False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.queue.counts()[QUEUED] or self.queue.counts()[RUNNING]:
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    # ---- evaluation jobs

    def source(self, repo: str) -> CheckpointSource:
        """The source a repo names: a Hub id, or `local/<name>` under the checkpoint root (never another path)."""
        if repo.startswith("local/") and self.settings.checkpoint_root is None:
            raise InvalidRepoId(f"{repo!r}: local runs are not served (no checkpoint root is configured)")
        if not repo.startswith("local/") and (repo.startswith((".", "/", "~")) or repo.count("/") != 1):
            raise InvalidRepoId(f"{repo!r} is neither a Hub repo id 'namespace/name' nor 'local/<run folder>'")
        root = self.settings.checkpoint_root or Path("/nonexistent")
        return self.evaluator.source(repo, root=root)

    def dataset(self, name: str | None) -> HeldOutSet:
        name = name or self.default_dataset
        if name not in self.datasets:
            raise DatasetNotFound(f"no dataset {name!r}; this service has {', '.join(self.datasets)}")
        return self.datasets[name]

    def submit(self, repo: str, revision: str | None = None, dataset: str | None = None) -> tuple[JobResult, bool]:
        """Ask for one evaluation. Returns (the job, whether it is new work); a checkpoint already
        evaluated (or queued) with the same base, data and config gives that job instead."""
        source, data = self.source(repo), self.dataset(dataset)
        return self._enqueue(repo, source, source.resolve(revision) if revision else source.latest(), data)

    def _enqueue(self, repo: str, source: CheckpointSource, resolved: Revision, data: HeldOutSet) -> tuple[JobResult, bool]:
        base = self.evaluator.base_for(source, resolved)
        if base and (stored := self.evaluator.store.find(self.evaluator.key(source, resolved, base, data))):
            job, _ = self.queue.add(repo, stored.revision, **self._job_data(data), evaluation_id=stored.id)
            return JobResult(job, stored), False
        job, created = self.queue.add(repo, resolved, **self._job_data(data))
        if created:
            log.info("queued job %d: %s@%s on %s", job.id, repo, resolved.revision, data.name)
            self._wake.set()
        return JobResult(job, None), created

    def job(self, job_id: int) -> JobResult:
        return self._result(self.queue.get(job_id))

    def jobs(self, repo: str) -> list[JobResult]:
        """Every job of a repo, oldest first."""
        return [self._result(job) for job in self.queue.jobs(repo=repo)]

    def _result(self, job: Job) -> JobResult:
        evaluation = self.evaluator.store.get(job.evaluation_id) if job.evaluation_id is not None else None
        return JobResult(job, evaluation)

    def ranking(self, repo: str, *, metric: str = "mae", estimator: str = "argmax") -> list[Ranked]:
        """The repo's evaluated checkpoints on the default data's validation items, best first."""
        return self.evaluator.ranking(self.source(repo).name, dataset=self.dataset(None), metric=metric, estimator=estimator)

    def choice(self, repo: str, *, metric: str | None = None, rule: str | None = None, estimator: str = "argmax") -> Choice:
        """The checkpoint the rule chooses on the validation items, with its evidence and test figure."""
        return self.evaluator.choice(
            self.source(repo).name,
            dataset=self.dataset(None),
            metric=metric or self.settings.metric,
            rule=rule or self.settings.rule,
            estimator=estimator,
            patience=self.settings.overfit_patience,
        )

    def served_repo(self, repo: str | None = None) -> str:
        """The repo asked for, else the one this service serves (`PRICER_REPO`, or the latest evaluated)."""
        if repo:
            return repo
        if self.settings.repo:
            return self.settings.repo
        if repos := self.queue.repos():
            return repos[0]
        raise NotEvaluated("nothing is evaluated yet: POST /evaluate a checkpoint first")

    def _job_data(self, data: HeldOutSet) -> dict[str, str]:
        return {"dataset": data.name, "dataset_fingerprint": data.fingerprint, "config_key": self.evaluator.config.key()}

    # ---- the worker

    def _work(self) -> None:
        self._restore_served()
        while not self._stopping.is_set():
            job = self.queue.claim()
            if job is None:
                self._wake.wait(timeout=1.0)
                self._wake.clear()
                continue
            self._run(job)

    def _run(self, job: Job) -> None:
        self.running, self.progress, started = job, None, time.perf_counter()
        try:
            source, data = self.source(job.repo), self.dataset(job.dataset)
            if data.fingerprint != job.dataset_fingerprint:
                raise DatasetNotFound(f"dataset {job.dataset!r} changed since the job was queued")
            evaluation = self.evaluator.evaluate_revision(source, job.revision, data, on_batch=self._priced)
            self.queue.finish(job.id, evaluation.id, evaluation.revision)
            if self.progress is not None:  # items were priced, not taken from the store
                self.telemetry.evaluation_seconds.observe(time.perf_counter() - started)
            log.info("job %d done: %s@%s", job.id, job.repo, job.revision.revision)
            self._refresh_served(job.repo)
        except PricerError as exc:
            log.warning("job %d failed: %s", job.id, exc)
            self.queue.fail(job.id, str(exc))
        except Exception as exc:  # a bug or a broken device must not kill the worker
            log.exception("job %d failed unexpectedly", job.id)
            self.queue.fail(job.id, f"internal error: {type(exc).__name__}: {exc}")
        finally:
            self.running, self.progress = None, None

    def _priced(self, done: int, total: int) -> None:
        self.telemetry.items_scored.inc(done - (self.progress[0] if self.progress else 0))
        self.progress = (done, total)

    # ---- watches and webhooks

    def watch(self, repo: str, *, interval: float | None = None) -> Watch:
        """Evaluate every checkpoint `repo` has, and each new one as it appears."""
        self.source(repo)  # a malformed repo is refused now, not at the first poll
        watch, _ = self.watches.add(repo, interval or self.settings.watch_interval)
        self._wake_poller.set()
        return watch

    def on_hub_webhook(self, payload: dict, *, secret: str | None) -> tuple[JobResult, bool] | None:
        """A Hub webhook call: a model repo's new head is evaluated at once. None: not an event to act on."""
        expected = self.settings.webhook_secret
        if expected is not None and not secrets.compare_digest((secret or "").encode(), expected.get_secret_value().encode()):
            raise WebhookRefused("a valid X-Webhook-Secret header is required")
        event, repo = payload.get("event") or {}, payload.get("repo") or {}
        if repo.get("type") != "model" or not str(event.get("scope", "")).startswith("repo.content"):
            return None
        if event.get("action") not in ("create", "update") or not repo.get("name"):
            return None
        return self.submit(str(repo["name"]), str(repo.get("headSha") or "main"))

    def _poll_watches(self) -> None:
        while not self._stopping.is_set():
            now = utcnow()
            for watch in self.watches.all():
                if watch.due(now) and not self._stopping.is_set():
                    self._poll(watch)
            self._wake_poller.wait(timeout=1.0)
            self._wake_poller.clear()

    def _poll(self, watch: Watch) -> None:
        try:
            source, data = self.source(watch.repo), self.dataset(None)
            revisions = source.revisions()
            for revision in revisions:
                self._enqueue(watch.repo, source, revision, data)
            self.watches.polled(watch.repo, checkpoints=len(revisions))
        except PricerError as exc:  # a repo with no checkpoint yet, or the Hub down: try again next time
            self.watches.polled(watch.repo, error=str(exc))
        except Exception as exc:
            log.exception("polling %s failed", watch.repo)
            self.watches.polled(watch.repo, error=f"internal error: {type(exc).__name__}: {exc}")

    # ---- serving

    def _restore_served(self) -> None:
        for repo in self.queue.repos():
            try:
                self._refresh_served(repo)
            except Exception:  # one repo's missing files must not stop the others from being served
                log.exception("cannot serve %s", repo)

    def _refresh_served(self, repo: str) -> None:
        """Serve the checkpoint the rule chooses, swapping adapters atomically when it changed."""
        choice = self.choice(repo)
        if choice.overfitting and repo not in self._alarmed:
            self._alarmed.add(repo)
            log.warning(
                "%s is overfitting: validation %s rose for %d checkpoints past step %s",
                repo,
                choice.metric,
                choice.overfitting.checkpoints,
                choice.overfitting.since_step,
            )
        best = choice.chosen.evaluation
        current = self._served.get(repo)
        if current is not None and current.evaluation.id == best.id:
            return
        checkpoint = self.source(repo).fetch(best.revision)
        model = self.evaluator.model(best.base_model)
        adapter = model.load_adapter(checkpoint.adapter, name=f"served_{best.revision.commit[:16]}")
        with model.lock:  # no prediction runs between the swap and the release of the old adapter
            with self._served_lock:
                self._served[repo] = Served(repo, best, model, adapter)
            if current is not None and current.adapter != adapter:
                still_used = any(s.model is current.model and s.adapter == current.adapter for s in self._served.values())
                if not still_used:
                    current.model.release_adapter(current.adapter)
        log.info("serving %s@%s for %s", best.revision.revision, best.revision.commit[:10], repo)

    def _served_revisions(self) -> list[tuple[str, Revision]]:
        with self._served_lock:
            return [(repo, served.revision) for repo, served in self._served.items()]

    def served(self, repo: str | None = None) -> Served | None:
        try:
            name = self.served_repo(repo)
        except NotEvaluated:
            return None
        with self._served_lock:
            return self._served.get(name)

    def predict(self, descriptions: list[str], *, repo: str | None = None, estimator: str = "argmax") -> ServedPrediction:
        """Price descriptions with the served adapter; every answer comes wholly from one checkpoint.

        Concurrent requests for the same repo are priced together in one forward pass (micro-batching).
        """
        started = time.perf_counter()
        prompts = prompts_for(descriptions, max_chars=self.settings.max_description_chars)
        try:
            name = self.served_repo(repo)
        except NotEvaluated as exc:
            raise ModelNotReady(f"{exc}; until then no adapter can answer") from exc
        self._model_of(name)  # nothing served: a clear 503 now, not after queuing
        if self.settings.predict_max_batch > 1:
            rows, served = self._batcher(name).submit(prompts)
        else:
            rows, served = self._price_served(name, prompts)
        column = 0 if estimator == "argmax" else 1
        self.telemetry.prediction_seconds.observe(time.perf_counter() - started)
        return ServedPrediction([float(row[column]) for row in rows], served.repo, served.revision)

    def _batcher(self, repo: str) -> MicroBatcher:
        with self._served_lock:
            if repo not in self._batchers:
                self._batchers[repo] = MicroBatcher(
                    lambda prompts: self._price_served(repo, prompts),
                    max_batch=self.settings.predict_max_batch,
                    max_wait=self.settings.predict_max_wait_ms / 1000,
                )
            return self._batchers[repo]

    def _price_served(self, repo: str, prompts: list[str]) -> tuple[list[tuple[float, float]], Served]:
        """(argmax, mean) per prompt from the adapter served for `repo`, and that adapter."""
        while True:
            model = self._model_of(repo)
            with model.lock:  # the served adapter cannot change while these prompts are priced
                with self._served_lock:
                    served = self._served[repo]
                if served.model is model:  # else a new choice on another base was swapped in meanwhile: take that
                    prices = model.price(prompts, adapter=served.adapter, batch_size=len(prompts))
                    return list(zip(prices.argmax.tolist(), prices.mean.tolist(), strict=True)), served

    def _model_of(self, repo: str) -> PriceModel:
        with self._served_lock:
            served = self._served.get(repo)
        if served is None:
            if self.queue.jobs(repo=repo, status=DONE):
                raise ModelNotReady(f"{repo}: the best adapter is still loading; try again shortly")
            raise ModelNotReady(f"{repo}: nothing is evaluated yet, so no adapter can answer: POST /evaluate first")
        return served.model
