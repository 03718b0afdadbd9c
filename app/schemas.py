"""Request and response bodies of the HTTP API (pydantic), one family per noun."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field, model_validator

from evaluator.data import MAX_DESCRIPTIONS
from evaluator.metrics import Metrics
from evaluator.ranking import Ranked
from evaluator.service import JobResult, ServedPrediction
from evaluator.sources import Revision


class EvaluateRequest(BaseModel):
    repo: str = Field(min_length=1, max_length=200, description="a Hub repo id 'namespace/name', or 'local/<run folder>'")
    revision: str | None = Field(
        default=None, min_length=1, max_length=256, description="commit sha, branch, tag or checkpoint-N; default: the newest"
    )
    dataset: str | None = Field(default=None, max_length=256, description="a held-out set the service knows; default: its own")


class MetricsPublic(BaseModel):
    n: int
    mae: float
    rmsle: float
    hit_rate: float


class CheckpointPublic(BaseModel):
    repo: str
    revision: str
    commit: str
    step: int | None
    epoch: float | None

    @staticmethod
    def fields(repo: str, revision: Revision) -> dict:
        return {"repo": repo, "revision": revision.revision, "commit": revision.commit, "step": revision.step, "epoch": revision.epoch}


class EvaluationPublic(CheckpointPublic):
    id: int
    status: str
    dataset: str
    metrics: MetricsPublic | None = None
    intervals: dict[str, tuple[float, float]] | None = None
    error: str | None = None
    created_at: datetime
    finished_at: datetime | None = None

    @classmethod
    def of(cls, result: JobResult, estimator: str = "argmax") -> EvaluationPublic:
        job = result.job
        metrics = result.evaluation.metrics(estimator) if result.evaluation is not None else None
        return cls(
            id=job.id,
            status=job.status,
            **CheckpointPublic.fields(job.repo, job.revision),
            dataset=job.dataset,
            metrics=_metrics(metrics) if metrics else None,
            intervals=metrics.intervals if metrics else None,
            error=job.error,
            created_at=job.created_at,
            finished_at=job.finished_at,
        )


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


class EvaluationsPublic(BaseModel):
    repo: str
    metric: str
    ranking: list[RankedPublic] = Field(description="evaluated checkpoints, best first")
    jobs: list[EvaluationPublic] = Field(description="every job of the repo, oldest first")


class BestCheckpoint(RankedPublic):
    metric: str
    estimator: str
    dataset: str
    evaluated: int
    served: bool = Field(description="whether /predict answers with this checkpoint now")
    runner_up: RankedPublic | None


class PredictRequest(BaseModel):
    description: str | None = Field(default=None, description="one product description")
    descriptions: list[str] | None = Field(default=None, max_length=MAX_DESCRIPTIONS, description="or several")
    repo: str | None = Field(default=None, max_length=200, description="default: the repo the service serves")

    @model_validator(mode="after")
    def _one_form(self) -> PredictRequest:
        if (self.description is None) == (self.descriptions is None):
            raise ValueError("give either 'description' or 'descriptions'")
        return self


class PredictionPublic(CheckpointPublic):
    price: float


class PredictionsPublic(CheckpointPublic):
    prices: list[float]

    @classmethod
    def of(cls, prediction: ServedPrediction) -> PredictionsPublic:
        return cls(prices=prediction.prices, **CheckpointPublic.fields(prediction.repo, prediction.revision))


class Health(BaseModel):
    status: str
    served: CheckpointPublic | None
    jobs: dict[str, int]
    running: int | None = Field(description="id of the job running now")


def _metrics(metrics: Metrics) -> MetricsPublic:
    return MetricsPublic(n=metrics.n, mae=metrics.mae, rmsle=metrics.rmsle, hit_rate=metrics.hit_rate)
