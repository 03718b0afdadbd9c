"""The HTTP API: each route turns a request into one call on `PricerService` and its result into a schema."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Query, Response, status

from app.deps import ServiceDep, require_token
from app.schemas import (
    BestCheckpoint,
    CheckpointPublic,
    EvaluateRequest,
    EvaluationPublic,
    EvaluationsPublic,
    Health,
    PredictionPublic,
    PredictionsPublic,
    PredictRequest,
    RankedPublic,
)
from evaluator.errors import NotEvaluated
from evaluator.metrics import METRICS

router = APIRouter()
Metric = Literal[METRICS]  # type: ignore[valid-type]
Estimator = Literal["argmax", "mean"]
RepoQuery = Query(default=None, max_length=200, description="default: the repo the service serves")


@router.post("/evaluate", response_model=EvaluationPublic, dependencies=[Depends(require_token)], status_code=202)
def evaluate(body: EvaluateRequest, service: ServiceDep, response: Response) -> EvaluationPublic:
    """Queue the evaluation of one revision (or return the one that exists for the same checkpoint)."""
    result, _ = service.submit(body.repo, body.revision, body.dataset)
    if result.job.status not in ("queued", "running"):
        response.status_code = status.HTTP_200_OK
    return EvaluationPublic.of(result)


@router.get("/evaluations/{job_id}", response_model=EvaluationPublic)
def read_evaluation(job_id: int, service: ServiceDep) -> EvaluationPublic:
    """One evaluation job: its status and, when done, its metrics with 95% intervals."""
    return EvaluationPublic.of(service.job(job_id))


@router.get("/evaluations", response_model=EvaluationsPublic)
def read_evaluations(service: ServiceDep, repo: str | None = RepoQuery, metric: Metric = "mae") -> EvaluationsPublic:
    """A repo's evaluated checkpoints ranked best first, and all its jobs."""
    name = service.served_repo(repo)
    try:
        ranking = service.ranking(name, metric=metric)
    except NotEvaluated:
        ranking = []
    jobs = [EvaluationPublic.of(result) for result in service.jobs(name)]
    return EvaluationsPublic(repo=name, metric=metric, ranking=[RankedPublic.of(name, r) for r in ranking], jobs=jobs)


@router.get("/best-checkpoint", response_model=BestCheckpoint)
def read_best_checkpoint(
    service: ServiceDep, repo: str | None = RepoQuery, metric: Metric = "mae", estimator: Estimator = "argmax"
) -> BestCheckpoint:
    """The best evaluated checkpoint of a repo, its evidence and the runner-up."""
    name = service.served_repo(repo)
    ranking = service.ranking(name, metric=metric, estimator=estimator)
    best = ranking[0]
    served = service.served(name)
    return BestCheckpoint(
        **RankedPublic.of(name, best).model_dump(),
        metric=metric,
        estimator=estimator,
        dataset=best.evaluation.dataset_name,
        evaluated=len(ranking),
        served=served is not None and served.evaluation.id == best.evaluation.id,
        runner_up=RankedPublic.of(name, ranking[1]) if len(ranking) > 1 else None,
    )


@router.post("/predict", response_model=PredictionPublic | PredictionsPublic)
def predict(body: PredictRequest, service: ServiceDep) -> PredictionPublic | PredictionsPublic:
    """Price one description (or several) with the served best adapter; the answer names the revision."""
    descriptions = body.descriptions if body.descriptions is not None else [body.description or ""]
    answer = PredictionsPublic.of(service.predict(descriptions, repo=body.repo))
    if body.descriptions is None:
        return PredictionPublic(price=answer.prices[0], **answer.model_dump(exclude={"prices"}))
    return answer


@router.get("/health", response_model=Health)
def health(service: ServiceDep) -> Health:
    """Liveness, the adapter served and the job queue."""
    served = service.served()
    running = service.running
    return Health(
        status="ok",
        served=None if served is None else CheckpointPublic(**CheckpointPublic.fields(served.repo, served.revision)),
        jobs=service.queue.counts(),
        running=running.id if running else None,
    )

