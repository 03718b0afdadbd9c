"""Request and response bodies of the HTTP API (pydantic), one family per noun."""

from __future__ import annotations

import json
from datetime import datetime

import pandas as pd
from pydantic import BaseModel, Field, create_model, model_validator

from pricer.evaluator.data import MAX_DESCRIPTIONS
from pricer.evaluator.records import Evaluation, JobResult, RaceStop, Revision
from pricer.evaluator.service import RunRacing, ServedPrediction
from pricer.evaluator.stats.comparison import Comparison, Entry
from pricer.evaluator.stats.metrics import METRICS, Metrics
from pricer.evaluator.stats.ranking import Ranked
from pricer.evaluator.stats.selection import Candidate, Choice


class EvaluateRequest(BaseModel):
    repo: str = Field(min_length=1, max_length=200, description="a Hub repo id 'namespace/name', or 'local/<run folder>'")
    revision: str | None = Field(
        default=None, min_length=1, max_length=256, description="commit sha, branch, tag or checkpoint-N; default: the newest"
    )
    dataset: str | None = Field(default=None, max_length=256, description="a held-out set the service knows; default: its own")


# one field per registered metric, so a metric added to the registry appears here too
MetricsPublic = create_model(
    "MetricsPublic", n=(int, ...), **{name: (float, Field(description=spec.label)) for name, spec in METRICS.items()}
)


class CheckpointPublic(BaseModel):
    repo: str
    revision: str
    commit: str
    step: int | None
    epoch: float | None

    @staticmethod
    def fields(repo: str, revision: Revision) -> dict:
        return {"repo": repo, **revision.fields()}


class StoppedPublic(BaseModel):
    """Where racing stopped scoring a checkpoint: its evaluation is partial."""

    after_round: int = Field(description="the round (1 = the first) after which it was stopped")
    items_scored: int = Field(description="validation items it was scored on")
    metric: str
    difference: float = Field(description="its metric minus the leader's then, on the items both had scored")
    interval: tuple[float, float] = Field(description="that difference's interval at the policy's confidence")

    @classmethod
    def of(cls, stopped: RaceStop, items_scored: int) -> StoppedPublic:
        return cls(**stopped.to_dict(), items_scored=items_scored)


class ProgressPublic(BaseModel):
    items_done: int = Field(description="items priced so far")
    items_total: int = Field(description="items to price in all")


class EvaluationPublic(CheckpointPublic):
    id: int
    status: str
    dataset: str
    progress: ProgressPublic | None = Field(
        default=None, description="while running: how far its pricing is, as its worker (here or on any machine) last reported"
    )
    metrics: MetricsPublic | None = Field(default=None, description="on the validation items, once complete")
    intervals: dict[str, tuple[float, float]] | None = None
    complete: bool | None = Field(default=None, description="false: racing stopped it (see stopped); asking again completes it")
    stopped: StoppedPublic | None = None
    error: str | None = None
    created_at: datetime
    finished_at: datetime | None = None

    @classmethod
    def of(cls, result: JobResult, estimator: str = "argmax") -> EvaluationPublic:
        job, evaluation = result.job, result.evaluation
        metrics = evaluation.metrics(estimator) if evaluation is not None and evaluation.complete else None
        return cls(
            complete=None if evaluation is None else evaluation.complete,
            stopped=StoppedPublic.of(evaluation.stopped, evaluation.n) if evaluation is not None and evaluation.stopped else None,
            id=job.id,
            status=job.status,
            **CheckpointPublic.fields(job.repo, job.revision),
            dataset=job.dataset,
            progress=ProgressPublic(items_done=job.items_done, items_total=job.items_total)
            if job.status == "running" and job.items_total else None,
            metrics=_metrics(metrics) if metrics else None,
            intervals=metrics.intervals if metrics else None,
            error=job.error,
            created_at=job.created_at,
            finished_at=job.finished_at,
        )


MAX_PREDICTION_ROWS = 1000


class PredictionRowPublic(BaseModel):
    """One item as one checkpoint priced it (an estimate an earlier pricer did not store is null)."""

    item: int = Field(description="the item's position in the held-out data")
    text: str = Field(description="the prompt the model was given")
    truth: float
    split: str = Field(description="validation (chooses) or test (the out-of-sample figure)")
    argmax: float
    mean: float
    median: float | None = None
    log: float | None = None
    hit: float | None = None
    low: float | None = Field(default=None, description="the 10th percentile of the model's distribution")
    high: float | None = Field(default=None, description="the 90th percentile")
    p_number: float | None = Field(default=None, description="the probability mass on number tokens")


class PredictionRowsPublic(CheckpointPublic):
    id: int = Field(description="the job")
    total: int = Field(description="rows in all")
    offset: int
    limit: int
    rows: list[PredictionRowPublic]

    @classmethod
    def of(cls, result: JobResult, total: int, offset: int, limit: int, rows: pd.DataFrame) -> PredictionRowsPublic:
        columns = [name for name in rows.columns if name in PredictionRowPublic.model_fields]
        records = json.loads(rows[columns].to_json(orient="records"))  # numpy values as JSON's, NaN as null
        return cls(**CheckpointPublic.fields(result.job.repo, result.evaluation.revision), id=result.job.id, total=total,
                   offset=offset, limit=limit, rows=records)


class RankedPublic(CheckpointPublic):
    rank: int
    metrics: MetricsPublic
    intervals: dict[str, tuple[float, float]]

    @classmethod
    def of(cls, repo: str, ranked: Ranked) -> RankedPublic:
        return cls(
            rank=ranked.rank,
            **CheckpointPublic.fields(repo, ranked.evaluation.revision),
            metrics=_metrics(ranked.metrics),
            intervals=ranked.metrics.intervals,
        )


class DroppedPublic(CheckpointPublic):
    """A checkpoint racing stopped scoring, significantly worse than the leader: a partial evaluation, never ranked."""

    evaluation_id: int
    stopped: StoppedPublic

    @classmethod
    def of(cls, repo: str, evaluation: Evaluation) -> DroppedPublic:
        return cls(**CheckpointPublic.fields(repo, evaluation.revision), evaluation_id=evaluation.id,
                   stopped=StoppedPublic.of(evaluation.stopped, evaluation.n))


class RacingPublic(BaseModel):
    scorings: int = Field(description="validation-item scorings made for the checkpoints stored (complete and partial)")
    full_scorings: int = Field(description="what scoring every one of them on every validation item would make")
    saved: float = Field(description="1 - scorings / full_scorings")

    @classmethod
    def of(cls, racing: RunRacing) -> RacingPublic:
        return cls(scorings=racing.scorings, full_scorings=racing.full_scorings, saved=round(racing.saved, 4))


class EvaluationsPublic(BaseModel):
    repo: str
    metric: str
    ranking: list[RankedPublic] = Field(description="evaluated checkpoints (complete evaluations only), best first")
    dropped: list[DroppedPublic] = Field(default=[], description="checkpoints racing stopped: partial evaluations")
    racing: RacingPublic | None = Field(default=None, description="what racing saved on this run (null: nothing stopped)")
    jobs: list[EvaluationPublic] = Field(description="every job of the repo, oldest first")


class PairedPublic(BaseModel):
    difference: float
    interval: tuple[float, float]
    significant: bool


class CandidatePublic(CheckpointPublic):
    metrics: MetricsPublic = Field(description="on the validation items")
    intervals: dict[str, tuple[float, float]]
    p_best: float = Field(description="share of paired bootstrap resamples in which this checkpoint is the best")
    versus_best: PairedPublic = Field(description="its metric minus the best checkpoint's, paired over the same items")
    train_loss: float | None = Field(description="the training loss its trainer_state.json logged last, if any")

    @classmethod
    def of(cls, repo: str, candidate: Candidate) -> CandidatePublic:
        return cls(
            **CheckpointPublic.fields(repo, candidate.evaluation.revision),
            train_loss=candidate.evaluation.revision.train_loss,
            metrics=_metrics(candidate.validation),
            intervals=candidate.validation.intervals,
            p_best=candidate.p_best,
            versus_best=PairedPublic(**candidate.versus_best.to_dict()),
        )


class TestFigure(BaseModel):
    metrics: MetricsPublic
    intervals: dict[str, tuple[float, float]]


class BestCheckpoint(CandidatePublic):
    rule: str = Field(description="the selection rule, stated")
    metric: str
    estimator: str
    dataset: str
    evaluated: int
    served: bool = Field(description="whether /predict answers with this checkpoint now")
    test: TestFigure | None = Field(
        description="the chosen checkpoint on the test items, never used to choose: the expected error in use"
    )
    estimators: dict[str, float] = Field(
        description="with estimator=auto: the validation metric of the checkpoint chosen under each estimator"
    )
    cross_fitted: dict | None = Field(
        description="without test items: the rule chosen on random halves of the validation items and scored on the "
        "other halves ({value, spread: (2.5th, 97.5th percentile over folds), folds}): the error to expect in use"
    )
    coverage: float | None = Field(
        description="the share of test prices inside the chosen checkpoint's 80% intervals (80% when calibrated)"
    )
    baseline: MetricsPublic = Field(description="every validation item priced at their median: what a checkpoint must beat")
    runner_up: CandidatePublic | None = Field(
        description="the best-scoring other checkpoint: the best one when the rule chose a less trained checkpoint"
    )
    versus_runner_up: PairedPublic | None = Field(description="chosen minus runner-up, paired")
    overfitting: dict | None = Field(description="raised when validation error rose for several checkpoints past the best")
    candidates: list[CandidatePublic] = Field(description="every checkpoint by step, with its evidence")

    @classmethod
    def of(cls, repo: str, choice: Choice, *, served: bool) -> BestCheckpoint:
        chosen = CandidatePublic.of(repo, choice.chosen)
        return cls(
            **chosen.model_dump(),
            rule=choice.statement,
            metric=choice.metric,
            estimator=choice.policy.estimator,
            dataset=choice.chosen.evaluation.dataset_name,
            evaluated=len(choice.candidates),
            served=served,
            test=TestFigure(metrics=_metrics(choice.test), intervals=choice.test.intervals) if choice.test else None,
            estimators=choice.estimators,
            coverage=choice.coverage,
            cross_fitted=choice.cross_fitted.to_dict() if choice.cross_fitted else None,
            baseline=_metrics(choice.baseline),
            runner_up=CandidatePublic.of(repo, choice.runner_up) if choice.runner_up else None,
            versus_runner_up=PairedPublic(**choice.versus_runner_up.to_dict()) if choice.versus_runner_up else None,
            overfitting=choice.overfitting.to_dict() if choice.overfitting else None,
            candidates=[CandidatePublic.of(repo, c) for c in choice.candidates],
        )


class PooledPublic(CandidatePublic):
    """One checkpoint of one run (`repo`), with P(best) and its paired difference to the best over every run's checkpoints."""

    rank: int = Field(description="its place among every checkpoint of every run, best first")

    @classmethod
    def of(cls, rank: int, entry: Entry) -> PooledPublic:
        return cls(rank=rank, **CandidatePublic.of(entry.run, entry.candidate).model_dump())


class RunChoicePublic(BaseModel):
    """One run's own choice, as `GET /best-checkpoint` gives it for that run alone."""

    repo: str
    evaluated: int = Field(description="the run's checkpoints compared")
    chosen: CandidatePublic = Field(description="the run's own pick; P(best) and the difference to the best within the run")
    test: TestFigure | None = Field(description="the run's pick on the test items")
    overfitting: dict | None = Field(description="the run's overfitting alarm, when raised")

    @classmethod
    def of(cls, repo: str, choice: Choice) -> RunChoicePublic:
        return cls(
            repo=repo,
            evaluated=len(choice.candidates),
            chosen=CandidatePublic.of(repo, choice.chosen),
            test=TestFigure(metrics=_metrics(choice.test), intervals=choice.test.intervals) if choice.test else None,
            overfitting=choice.overfitting.to_dict() if choice.overfitting else None,
        )


class ComparisonPublic(BaseModel):
    """Several runs evaluated on the same held-out items: each run's choice, every checkpoint ranked together, and
    the run whose checkpoint the rule takes."""

    repos: list[str] = Field(description="the runs compared, as named")
    rule: str = Field(description="how the rule chooses across runs, stated")
    metric: str
    estimator: str
    dataset: str
    chosen: PooledPublic = Field(description="the checkpoint the rule takes, and its run (repo)")
    test: TestFigure | None = Field(description="the chosen checkpoint on the test items, never used to choose")
    coverage: float | None = Field(description="the share of test prices inside the chosen checkpoint's 80% intervals")
    cross_fitted: dict | None = Field(
        description="rule min without test items: the choice over every run's checkpoints made on random halves of the "
        "validation items and scored on the other halves ({value, spread, folds})"
    )
    baseline: MetricsPublic = Field(description="every validation item priced at their median")
    runs: list[RunChoicePublic] = Field(description="each run's own choice, in the order the runs were named")
    ranking: list[PooledPublic] = Field(description="every checkpoint of every run, best first")

    @classmethod
    def of(cls, comparison: Comparison) -> ComparisonPublic:
        ranking = [PooledPublic.of(k, entry) for k, entry in enumerate(comparison.ranking, start=1)]
        chosen = next(p for p, e in zip(ranking, comparison.ranking, strict=True) if e is comparison.chosen)
        return cls(
            repos=list(comparison.runs),
            rule=comparison.statement,
            metric=comparison.metric,
            estimator=comparison.policy.estimator,
            dataset=comparison.chosen.evaluation.dataset_name,
            chosen=chosen,
            test=TestFigure(metrics=_metrics(comparison.test), intervals=comparison.test.intervals) if comparison.test else None,
            coverage=comparison.coverage,
            cross_fitted=comparison.cross_fitted.to_dict() if comparison.cross_fitted else None,
            baseline=_metrics(comparison.baseline),
            runs=[RunChoicePublic.of(repo, choice) for repo, choice in comparison.runs.items()],
            ranking=ranking,
        )


class WatchRequest(BaseModel):
    repo: str = Field(min_length=1, max_length=200, description="a Hub repo id or local/<run folder>")
    interval_seconds: float | None = Field(
        default=None, gt=0, le=86400, description="between polls; default PRICER_WATCH_INTERVAL"
    )


class WatchPublic(BaseModel):
    repo: str
    interval_seconds: float
    checkpoints: int = Field(description="revisions found at the last poll")
    last_polled: datetime | None
    last_error: str | None
    jobs: dict[str, int] = Field(description="the repo's jobs by status")
    chosen: CheckpointPublic | None
    overfitting: dict | None


class WebhookIgnored(BaseModel):
    ignored: str


class PredictRequest(BaseModel):
    description: str | None = Field(default=None, description="one product description")
    descriptions: list[str] | None = Field(default=None, max_length=MAX_DESCRIPTIONS, description="or several")
    repo: str | None = Field(default=None, max_length=200, description="default: the repo the service serves")

    @model_validator(mode="after")
    def _one_form(self) -> PredictRequest:
        if (self.description is None) == (self.descriptions is None):
            raise ValueError("give either 'description' or 'descriptions'")
        return self


INTERVAL_TEXT = "the central 80% of the model's distribution over prices: (10th, 90th percentile)"


class PredictionPublic(CheckpointPublic):
    price: float
    interval: tuple[float, float] = Field(description=INTERVAL_TEXT)


class PredictionsPublic(CheckpointPublic):
    prices: list[float]
    intervals: list[tuple[float, float]] = Field(description=f"per price, {INTERVAL_TEXT}")

    @classmethod
    def of(cls, prediction: ServedPrediction) -> PredictionsPublic:
        return cls(
            prices=prediction.prices,
            intervals=prediction.intervals,
            **CheckpointPublic.fields(prediction.repo, prediction.revision),
        )


class Health(BaseModel):
    status: str = Field(description="'ok', or 'degraded' (with the status code 503)")
    problems: list[str] = Field(
        description="what keeps jobs from running: a dead or stuck worker, a store that cannot be written"
    )
    served: CheckpointPublic | None
    jobs: dict[str, int]
    running: int | None = Field(description="id of the job running now")


def _metrics(metrics: Metrics) -> MetricsPublic:
    return MetricsPublic(n=metrics.n, **metrics.values)
