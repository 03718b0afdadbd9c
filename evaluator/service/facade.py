"""`PricerService`: the one facade the HTTP app, the dashboard, the CLI and the demo call.

It decides once: which source a repo names, which held-out set a door uses, which checkpoint
the policy chooses (cached per repo, policy and evaluated ids), which adapter answers
predictions. The work behind it has a module each: the worker runs jobs (`worker`), serving
swaps and batches (`serving`), watching polls (`watching`), the store keeps everything.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

import pandas as pd

from pricer.evaluator.checkpoints.sources import CheckpointSource
from pricer.evaluator.data import HeldOutSet, load_heldout, prompts_for
from pricer.evaluator.errors import (
    DatasetNotFound,
    InvalidPredictionInput,
    ModelNotReady,
    NotEvaluated,
    PublishFailed,
    RevisionNotFound,
)
from pricer.evaluator.evaluate import Evaluator, Race, adapter_name
from pricer.evaluator.exports import prediction_rows, predictions_table, results_record
from pricer.evaluator.publishing import Run, publishers
from pricer.evaluator.publishing.delivery import Delivered, deliver
from pricer.evaluator.records import Evaluation, Job, JobResult, JobStatus, Progress, Revision, Watch
from pricer.evaluator.service.loop import Loop
from pricer.evaluator.service.serving import Served, Serving
from pricer.evaluator.service.telemetry import Telemetry
from pricer.evaluator.service.watching import Watching
from pricer.evaluator.service.worker import Executor, JobRunner, NoExecutor, ThreadWorker
from pricer.evaluator.settings import Settings
from pricer.evaluator.stats.comparison import Comparison, compare
from pricer.evaluator.stats.ranking import Ranked, rank
from pricer.evaluator.stats.selection import Choice, EstimatorChoice, Policy, choose
from pricer.evaluator.store import Deliveries, JobQueue, Watches, worker_name

log = logging.getLogger(__name__)
CHOICES_KEPT = 64
PUBLISH_RETRY_SECONDS = 60.0  # a target that refused (the Hub down) is tried again after this


@dataclass(frozen=True)
class ServedPrediction:
    prices: list[float]
    repo: str
    revision: Revision
    intervals: list[tuple[float, float]]  # the central 80% of the model's distribution, per price


@dataclass(frozen=True)
class RunRacing:
    """What racing left on one run: the checkpoints it stopped, and the validation-item scorings made for the stored
    checkpoints against what scoring every one of them on every validation item would make."""

    stopped: list[Evaluation]
    scorings: int
    full_scorings: int

    @property
    def saved(self) -> float:
        return 1 - self.scorings / self.full_scorings if self.full_scorings else 0.0


class PricerService:
    """Evaluate checkpoints off the request path, choose by one policy, and predict with each repo's choice.

    Any number of services (replicas, `pricer worker` processes) may share one store: each claims jobs under a lease,
    serves the choice the store's evaluations give (looking for new ones every `settings.refresh_seconds`), and
    takes a watch's poll only when no other has taken it.

    Args:
        settings: everything configurable; `settings.policy` is how every door chooses, `settings.executor` what
            runs the queued jobs (a worker thread of this process, Ray actors, or nothing here).
        evaluator: prices and stores (default: one over `settings`).
        serving: False for a process that only runs jobs (`pricer worker`): nothing is served, watched or published, and an
            evaluated adapter is let go at once.
    """

    def __init__(self, settings: Settings | None = None, *, evaluator: Evaluator | None = None, serving: bool = True) -> None:
        self.settings = settings or Settings()
        self.policy = self.settings.policy
        self._evaluator = evaluator or Evaluator(self.settings)
        self._jobs = JobQueue(self._evaluator.store)
        self._watches = Watches(self._evaluator.store)
        default = load_heldout(self.settings.data, token=self.settings.token, test_share=self.settings.test_share)
        self.default_dataset = default.name  # a broken file stops the service here, not at the first job
        self._datasets: dict[str, HeldOutSet] = {default.name: default}
        self._choices: OrderedDict[tuple, Choice] = OrderedDict()
        self._choices_lock = threading.Lock()
        self._alarmed: set[str] = set()  # repos whose overfitting alarm was logged
        self.telemetry = Telemetry(self._jobs.counts, self._served_revisions)
        self._serving = Serving(
            self._evaluator, max_batch=self.settings.predict_max_batch, max_wait=self.settings.predict_max_wait_ms / 1000
        )
        self.serving = serving
        self._following = Loop("pricer-follow", self._follow, wait=self.settings.refresh_seconds)
        self._stored_version: tuple | None = None  # what the store's evaluations were when the served choices were made
        self._unserved_version: tuple | None = None  # ...when a repo's choice could not be served
        self._refreshing = threading.RLock()
        self._executor: Executor = self._make_executor()
        self._publishers = publishers(self.settings) if serving else []  # a worker stores results; replicas publish them
        self._deliveries = Deliveries(self._evaluator.store)
        self._to_publish: set[str] = set()  # repos whose choice may have changed since they were last published
        self._to_publish_lock = threading.Lock()
        self._publishing = Loop("pricer-publish", self._publish_due, wait=PUBLISH_RETRY_SECONDS)
        # a poll leaves a stopped (partial) checkpoint as it is; asking for it completes it
        self._watching = Watching(self._watches, revisions=self._scan, enqueue=lambda repo, r: self._enqueue(repo, r, partial=True))

    def runner(self, worker: str) -> JobRunner:
        """What runs one job at a time here, claiming under `worker`'s name (a thread's, or a Ray actor's)."""
        return JobRunner(
            self._jobs,
            self._evaluator,
            open_job=self._open_job,
            done=self._job_done if self.serving else lambda job, evaluation: None,
            telemetry=self.telemetry,
            worker=worker,
            lease=self.settings.lease_seconds,
            redact=self.settings.redact,
            leader=self._leader if self.settings.race else None,
            keep=self.serving,
        )

    def _make_executor(self) -> Executor:
        kind = self.settings.executor
        if kind == "ray":
            from pricer.evaluator.service.ray_executor import RayExecutor

            return RayExecutor(self.settings, self._jobs, on_done=self._following.wake)
        if kind == "none":
            return NoExecutor()
        return ThreadWorker(self.runner(worker_name("serve" if self.serving else "worker")))

    # ---- lifecycle

    def start(self) -> None:
        """Requeue jobs whose worker is gone (a previous process of this one), then start the executor and, when
        serving, the watch poller and the loop that serves each repo's choice as results arrive from any process."""
        if (requeued := self._jobs.requeue_lost()) > 0:
            log.info("requeued %d job(s) whose worker had stopped", requeued)
        self._executor.start()
        if self.serving:
            self._watching.start()
            self._following.start()
            if self._publishers:
                self._publishing.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the running job (a job cut off by the process ending runs again: on the next start, or on
        another worker once its lease runs out)."""
        self._watching.stop(timeout)
        self._following.stop(timeout)
        self._publishing.stop(timeout)
        self._executor.stop(timeout)

    def health(self) -> list[str]:
        """What is wrong now (empty: healthy): a dead or stuck worker, a store that cannot be written.
        A worker or poller thread that ended is started again."""
        problems = self._executor.problems(self.settings.worker_stall_seconds)
        if self._watching.revive():
            problems.append("the watch poller had stopped; it was started again")
        if self._following.revive():
            problems.append("the loop that serves new choices had stopped; it was started again")
        if self._publishing.revive():
            problems.append("the loop that publishes choices had stopped; it was started again")
        if (error := self._evaluator.store.write_error) is not None:
            problems.append(f"the store cannot be written: {error}")
        return [self.redact(problem) for problem in problems]

    def store_name(self) -> str:
        """The store's URL as it may be shown: no password."""
        return self._evaluator.store.engine.url.render_as_string(hide_password=True)

    def redact(self, text: str) -> str:
        """A message as callers may see it: run names, not server paths (see `Settings.redact`)."""
        return self.settings.redact(text)

    # ---- names: repos, sources, held-out sets

    def source(self, repo: str) -> CheckpointSource:
        """The source a repo names: a Hub id, or `local/<name>` under the checkpoint root (never another path)."""
        return self._evaluator.source(repo, root=self.settings.checkpoint_root, paths=False)

    def dataset(self, name: str | None = None) -> HeldOutSet:
        """A held-out set this service knows (default: its configured one, `PRICER_DATA` or the catalogue)."""
        name = name or self.default_dataset
        if name not in self._datasets:
            raise DatasetNotFound(f"no dataset {name!r}; this service has {', '.join(self._datasets)}")
        return self._datasets[name]

    def repos(self) -> list[str]:
        """Watched repos and repos with jobs: the watched first, then the most recently active."""
        return list(dict.fromkeys([*(w.repo for w in self._watches.all()), *self._jobs.repos(status=None)]))

    def served_repo(self, repo: str | None = None) -> str:
        """The repo asked for, else the one this service serves (`PRICER_REPO`, or the latest evaluated)."""
        if repo:
            return repo
        if self.settings.repo:
            return self.settings.repo
        if repos := self._jobs.repos():
            return repos[0]
        raise NotEvaluated("nothing is evaluated yet: POST /evaluate a checkpoint first")

    # ---- evaluation jobs

    def submit(self, repo: str, revision: str | None = None, dataset: str | None = None) -> tuple[JobResult, bool]:
        """Ask for one evaluation. Returns (the job, whether it is new work); a checkpoint already
        evaluated (or queued) with the same base, data and config gives that job instead."""
        source, data = self.source(repo), self.dataset(dataset)
        return self._enqueue(repo, source.resolve(revision) if revision else source.latest(), source=source, data=data)

    def evaluate(self, repo: str, revisions: list[str] | None = None, *, progress: bool = False) -> list[Evaluation]:
        """Evaluate now, in the calling thread (the CLI): the named revisions, or every checkpoint, on the default data."""
        return self._evaluator.evaluate(self.source(repo), revisions, self.dataset(), progress=progress)

    def race(self, repo: str, revisions: list[str] | None = None, *, progress: bool = False) -> Race:
        """Evaluate now, in the calling thread, racing the checkpoints (`Evaluator.race`) under the policy."""
        return self._evaluator.race(self.source(repo), revisions, self.dataset(), policy=self.policy, progress=progress)

    def job(self, job_id: int) -> JobResult:
        return self._result(self._jobs.get(job_id))

    def jobs(self, repo: str) -> list[JobResult]:
        """Every job of a repo with its evaluation, oldest first."""
        return [self._result(job) for job in self._jobs.jobs(repo=repo)]

    def job_list(self, repo: str | None = None) -> list[Job]:
        """Jobs alone, oldest first (their evaluations are not loaded): for listing and counting."""
        return self._jobs.jobs(repo=repo)

    def job_counts(self) -> dict[str, int]:
        return self._jobs.counts()

    def activity(self) -> list[Progress]:
        """The jobs running now, here or on any worker of the store, and how far each is (this process's own
        progress is the freshest; other workers' is what their last lease renewal recorded)."""
        stored = {job.id: Progress(job, job.items_done, job.items_total) for job in self._jobs.jobs(status=JobStatus.RUNNING)}
        return list({**stored, **{progress.job.id: progress for progress in self._executor.activity()}}.values())

    def idle(self) -> bool:
        """Whether no job is queued or running."""
        counts = self._jobs.counts()
        return not counts[JobStatus.QUEUED] and not counts[JobStatus.RUNNING]

    def _scan(self, repo: str) -> list[Revision]:
        """The repo's usable checkpoints; each broken one is recorded as a failed job with the reason, once."""
        source = self.source(repo)
        scan = source.scan()
        for revision, reason in scan.skipped:
            job = self._jobs.skip(repo, revision, self.redact(reason), **self._job_data(self.dataset()))
            log.warning("skipped %s@%s (job %d): %s", repo, revision.revision, job.id, job.error)
        if not scan.revisions and scan.skipped:
            raise RevisionNotFound(f"{source.label}: no usable checkpoint ({len(scan.skipped)} broken, see the failed jobs)")
        return scan.revisions

    def _job_data(self, data: HeldOutSet) -> dict:
        return {"dataset": data.name, "dataset_fingerprint": data.fingerprint, "config_key": self._evaluator.config.key()}

    def _enqueue(
        self,
        repo: str,
        revision: Revision,
        *,
        source: CheckpointSource | None = None,
        data: HeldOutSet | None = None,
        partial: bool = False,
    ) -> tuple[JobResult, bool]:
        """Queue one checkpoint unless it is evaluated (`partial`: or stopped by racing) already."""
        source, data = source or self.source(repo), data or self.dataset()
        job_data = self._job_data(data)
        if stored := self._evaluator.stored(source, revision, data, partial=partial):  # the one admission check
            job, _ = self._jobs.add(repo, stored.revision, **job_data, evaluation_id=stored.id)
            return JobResult(job, stored), False
        job, created = self._jobs.add(repo, revision, **job_data)
        if created:
            log.info("queued job %d: %s@%s on %s", job.id, repo, revision.revision, data.name)
            self._executor.wake()
        return JobResult(job, None), created

    def _result(self, job: Job) -> JobResult:
        evaluation = self._evaluator.store.get(job.evaluation_id) if job.evaluation_id is not None else None
        return JobResult(job, evaluation)

    def _open_job(self, job: Job) -> tuple[CheckpointSource, HeldOutSet]:
        return self.source(job.repo), self.dataset(job.dataset)

    def _job_done(self, job: Job, evaluation: Evaluation) -> None:
        """A job finished: serve the new choice, keeping the just-evaluated adapter loaded when it is that choice."""
        model = self._evaluator.model(evaluation.base_model)
        with self._refreshing:
            try:
                self._serve_choice(job.repo)
            finally:
                name = adapter_name(evaluation.revision)
                if not self._serving.uses(model, name):
                    model.release_adapter(name)

    def _leader(self, repo: str, data: HeldOutSet) -> tuple[Revision, Policy] | None:
        """What a new checkpoint races against: the choice now on `data` (the default held-out set only) and the policy
        it was made under, its estimator resolved."""
        if data.fingerprint != self.dataset().fingerprint:
            return None
        try:
            choice = self.choice(repo)
        except NotEvaluated:
            return None
        return choice.chosen.evaluation.revision, choice.policy

    # ---- the choice: one read path

    def ranking(self, repo: str, *, metric: str | None = None, estimator: str | None = None) -> list[Ranked]:
        """The repo's evaluated checkpoints on the default data's validation items, best first."""
        choice = self.choice(repo, metric=metric, estimator=estimator)
        evaluations = [candidate.evaluation for candidate in choice.candidates]
        return rank(evaluations, metric=choice.policy.metric, estimator=choice.policy.estimator)

    def racing(self, repo: str) -> RunRacing:
        """What racing left on this run: the checkpoints it stopped (their partial evaluations, beside the ranked ones:
        same data, base and config) and the validation-item scorings made against what full evaluation would make."""
        source, data = self.source(repo), self.dataset()
        store = self._evaluator.store
        ids = store.comparable_ids(source.name, dataset_fingerprint=data.fingerprint, partial=True)
        stopped = store.evaluations(source.name, dataset_fingerprint=data.fingerprint, ids=ids) if ids else []
        complete = len(self._evaluator.comparable(source.name, data))
        validation = int((~data.test).sum())
        return RunRacing(stopped, complete * validation + sum(e.n for e in stopped), (complete + len(stopped)) * validation)

    def choice(
        self,
        repo: str,
        *,
        metric: str | None = None,
        rule: str | None = None,
        estimator: str | None = None,
        policy: Policy | None = None,
    ) -> Choice:
        """The checkpoint the policy chooses on the default data's validation items, its evidence and test figure.

        The service's policy, with any of `metric`, `rule`, `estimator` changed; cached until the repo's
        evaluations change."""
        policy = (policy or self.policy).but(metric=metric, rule=rule, estimator=estimator)
        source, data = self.source(repo), self.dataset()
        ids = self._evaluator.comparable(source.name, data)
        if not ids:
            raise NotEvaluated(f"{repo}: nothing is evaluated yet on {data.name}")
        key = (source.name, policy, tuple(ids))
        with self._choices_lock:
            if key in self._choices:
                self._choices.move_to_end(key)
                return self._choices[key]
        evaluations = self._evaluator.store.evaluations(source.name, dataset_fingerprint=data.fingerprint, ids=ids)
        choice = choose(evaluations, policy, test_mask=evaluations[0].test)
        with self._choices_lock:
            self._choices[key] = choice
            while len(self._choices) > CHOICES_KEPT:
                self._choices.popitem(last=False)
        return choice

    # ---- runs compared

    def compare(
        self, repos: list[str], *, metric: str | None = None, rule: str | None = None, estimator: str | None = None
    ) -> Comparison:
        """Several runs evaluated on the default data's items, every checkpoint of every run chosen among together
        (`stats.comparison.compare`): each run's own choice, the pooled ranking, and the run whose checkpoint the
        policy's rule takes. A run with nothing evaluated on these items (only on others) is a `NotEvaluated`."""
        policy, data, runs = self.policy.but(metric=metric, rule=rule, estimator=estimator), self.dataset(), {}
        for repo in dict.fromkeys(repos):
            source = self.source(repo)
            ids = self._evaluator.comparable(source.name, data)
            if not ids:
                stored = self._evaluator.store.evaluations(source.name)
                others = {e.dataset_name for e in stored if e.dataset_fingerprint != data.fingerprint}
                names = sorted(f"another version or split of {name}" if name == data.name else name for name in others)
                elsewhere = f" (only on other items: {', '.join(names)}; runs are compared on the same items)"
                raise NotEvaluated(f"{repo}: nothing is evaluated yet on {data.name}{elsewhere if others else ''}")
            runs[repo] = self._evaluator.store.evaluations(source.name, dataset_fingerprint=data.fingerprint, ids=ids)
        return compare(runs, policy, test_mask=data.test)

    # ---- exports

    def export(self, repo: str) -> tuple[pd.DataFrame, dict]:
        """(every stored prediction of the repo's checkpoints on the default data, one row per item and checkpoint;
        the run's results record: fingerprints, versions, each checkpoint's metrics, the choice)."""
        source, data = self.source(repo), self.dataset()
        evaluations = self._evaluator.store.evaluations(source.name, dataset_fingerprint=data.fingerprint)
        if not evaluations:
            raise NotEvaluated(f"{repo}: nothing is evaluated yet on {data.name}")
        try:
            choice = self.choice(repo)
        except NotEvaluated:  # only partial evaluations: no choice yet
            choice = None
        return predictions_table(evaluations, data), results_record(repo, evaluations, data, choice)

    def published_run(self, repo: str) -> Run:
        """What publishers are told about `repo`: its complete evaluations on the default data by step, and the choice."""
        choice = self.choice(repo)
        source, data = self.source(repo), self.dataset()
        evaluations = sorted(
            (candidate.evaluation for candidate in choice.candidates), key=lambda e: (e.revision.step is None, e.revision.step or 0, e.id)
        )
        return Run(repo, source, data, evaluations, choice, results_record(repo, evaluations, data, choice))

    def job_predictions(self, job_id: int, *, offset: int = 0, limit: int = 100) -> tuple[JobResult, int, pd.DataFrame]:
        """(a done job with its evaluation, how many rows that has, its rows from `offset`, at most `limit` of them)."""
        result = self.job(job_id)
        if result.evaluation is None:
            raise NotEvaluated(f"job {job_id} is {result.job.status}: it has no predictions (yet)")
        data = self.dataset(result.job.dataset)
        if data.fingerprint != result.evaluation.dataset_fingerprint:  # the file changed since: its items are others
            raise DatasetNotFound(f"job {job_id} priced another version of {data.name} than this service holds")
        rows = prediction_rows(result.evaluation, data)
        return result, len(rows), rows.iloc[offset : offset + limit]

    # ---- watches

    def watch(self, repo: str, *, interval: float | None = None) -> Watch:
        """Evaluate every checkpoint `repo` has, and each new one as it appears."""
        self.source(repo)  # a malformed repo is refused now, not at the first poll
        watch, _ = self._watches.add(repo, interval or self.settings.watch_interval)
        self._watching.wake()
        return watch

    def unwatch(self, repo: str) -> None:
        """Stop watching `repo` (its evaluations stay)."""
        self._watches.remove(repo)

    def watched(self, repo: str) -> Watch:
        return self._watches.get(repo)

    def watches(self) -> list[Watch]:
        return self._watches.all()

    # ---- serving

    def serve(self, repo: str | None = None) -> Served:
        """Serve the policy's choice for `repo` now (the worker does this after each job; the CLI before predicting)."""
        self._refresh_served(self.served_repo(repo))
        return self._serving.get(self.served_repo(repo))

    def served(self, repo: str | None = None) -> Served | None:
        try:
            return self._serving.get(self.served_repo(repo))
        except NotEvaluated:
            return None

    def predict(self, descriptions: list[str], *, repo: str | None = None, estimator: str | None = None) -> ServedPrediction:
        """Price descriptions with the served adapter; every answer comes wholly from one checkpoint.

        Concurrent requests for the same repo are priced together in one forward pass (micro-batching).
        """
        started = time.perf_counter()
        prompts = prompts_for(descriptions, max_chars=self.settings.max_description_chars)
        if sum(len(d) for d in descriptions) > self.settings.predict_max_chars:
            raise InvalidPredictionInput(f"the descriptions hold over {self.settings.predict_max_chars} characters in all")
        if repo:
            self.source(repo)  # a malformed repo is a 422, not "nothing served"
        try:
            name = self.served_repo(repo)
        except NotEvaluated as exc:
            raise ModelNotReady(f"{exc}; until then no adapter can answer") from exc
        if self._serving.get(name) is None:  # a clear 503 now, not after queuing
            if self._jobs.jobs(repo=name, status=JobStatus.DONE):
                raise ModelNotReady(f"{name}: the best adapter is still loading; try again shortly")
            raise ModelNotReady(f"{name}: nothing is evaluated yet, so no adapter can answer: POST /evaluate first")
        rows, served = self._serving.price(name, prompts)
        column = self.policy.but(estimator=estimator).estimator
        if column == EstimatorChoice.AUTO:  # the estimator chosen with the served checkpoint
            column = served.estimator
        self.telemetry.prediction_seconds.observe(time.perf_counter() - started)
        return ServedPrediction(
            [row[column] for row in rows], served.repo, served.revision, [(row["low"], row["high"]) for row in rows]
        )

    def _follow(self) -> bool:
        """Serve each repo's choice again when the store's evaluations changed: on start, and whenever this or
        another process (a worker, a replica, a Ray actor) stored one. Returns False: wait for the next look."""
        version = self._evaluator.store.version()
        if version == self._stored_version:
            return False
        served = True
        for repo in self._jobs.repos():
            try:
                self._refresh_served(repo)
            except Exception:  # one repo's missing files must not stop the others from being served
                if version != self._unserved_version:  # said once, tried again at every look
                    log.exception("cannot serve %s", repo)
                served = False
        # a repo that could not be served is tried again at the next look, not only once another result arrives
        self._stored_version, self._unserved_version = (version, None) if served else (None, version)
        return False

    def _refresh_served(self, repo: str) -> None:
        """Serve the checkpoint the policy chooses, swapping adapters atomically when it changed."""
        with self._refreshing:  # the worker's thread and the follower's: one swap at a time
            self._serve_choice(repo)

    def _serve_choice(self, repo: str) -> None:
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
        self._serving.serve(repo, choice.chosen.evaluation, self.source(repo), choice.policy.estimator)
        if self._publishers:
            with self._to_publish_lock:
                self._to_publish.add(repo)
            self._publishing.wake()

    # ---- publishing: the choice written back to the Hub, the run folder, MLflow, W&B

    def publish(self, repo: str, *, again: bool = True) -> Delivered:
        """Publish `repo`'s evaluations and choice to every target the settings turn on, now, in this thread
        (`again`: the choice even where it was published, with the evidence as it is now)."""
        source = self.source(repo)
        targets = [publisher for publisher in self._publishers if publisher.accepts(source)]
        if not targets:
            raise PublishFailed(
                f"{repo}: no publishing target is turned on for it: a Hub tag and model card (PRICER_PUBLISH_HUB, --hub), "
                "a local run's card (PRICER_RUN_CARD), MLflow or W&B"
            )
        return deliver(self.published_run(repo), targets, self._deliveries, worker=worker_name("publish"), again=again)

    def _publish_due(self) -> bool:
        """Publish each repo whose choice may have changed; a repo a target refused stays due, for the next round."""
        with self._to_publish_lock:
            due, self._to_publish = self._to_publish, set()
        for repo in due:
            try:
                failed = self.publish(repo, again=False).failed
            except PublishFailed:  # no target for this repo (a Hub repo where only local runs' cards are on)
                failed = False
            except Exception:
                log.exception("cannot publish %s", repo)
                failed = True
            if failed:
                with self._to_publish_lock:
                    self._to_publish.add(repo)
        return False

    def _served_revisions(self) -> list[tuple[str, Revision]]:
        return self._serving.revisions()
