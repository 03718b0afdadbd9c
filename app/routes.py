"""The HTTP API: each route turns a request into one call on `PricerService` and its result into a schema."""

from __future__ import annotations

from collections import Counter
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response, status
from fastapi.responses import HTMLResponse
from pydantic import StringConstraints

from pricer.app.deps import ServiceDep, require_predict_token, require_token
from pricer.app.errors import ErrorBody, status_code
from pricer.app.schemas import (
    MAX_PREDICTION_ROWS,
    BestCheckpoint,
    CheckpointPublic,
    ComparisonPublic,
    DroppedPublic,
    EvaluateRequest,
    EvaluationPublic,
    EvaluationsPublic,
    Health,
    PredictionPublic,
    PredictionRowsPublic,
    PredictionsPublic,
    PredictRequest,
    RacingPublic,
    RankedPublic,
    WatchPublic,
    WatchRequest,
    WebhookIgnored,
)
from pricer.app.webhooks import WebhookPayload, WebhookSecret, content_update
from pricer.evaluator.errors import NotEvaluated
from pricer.evaluator.records import JobStatus
from pricer.evaluator.service import PROMETHEUS_CONTENT_TYPE, PricerService
from pricer.evaluator.stats.metrics import Metric
from pricer.evaluator.stats.selection import EstimatorChoice, Rule
from pricer.evaluator.views.report import compare_view, render_compare, render_dashboard, render_views

router = APIRouter()
RepoQuery = Query(default=None, max_length=200, description="default (or empty): the repo the service serves")
RepoPath = Annotated[str, Path(min_length=1, max_length=200, description="a Hub repo id or local/<run folder>")]
JobId = Annotated[int, Path(ge=1, le=2**63 - 1, description="an evaluation job's id")]

_WHY = {
    401: "the API token (or the webhook secret) is missing or wrong",
    403: "webhooks are off: no PRICER_WEBHOOK_SECRET and no API token are configured",
    404: "no such repo, revision, job, watch or dataset, or nothing evaluated yet",
    413: "the request body is over the limit",
    422: "the request is malformed: a field out of range, a non-finite number, invalid Unicode, a hostile repo id",
    503: "the store cannot be used (a full disk), the Hub cannot be reached, or no adapter is loaded yet",
}


def error_answers(*codes: int) -> dict:
    """OpenAPI entries for the error answers a route can give (every one has the body `ErrorBody`); any route
    that reads the store can answer 503 when the store cannot be used."""
    return {code: {"model": ErrorBody, "description": _WHY[code]} for code in sorted({*codes, 503})}


@router.post(
    "/evaluate",
    response_model=EvaluationPublic,
    dependencies=[Depends(require_token)],
    status_code=202,
    responses={200: {"model": EvaluationPublic, "description": "evaluated already"}, **error_answers(401, 404, 413, 422)},
)
def evaluate(body: EvaluateRequest, service: ServiceDep, response: Response) -> EvaluationPublic:
    """Queue the evaluation of one revision (or return the one that exists for the same checkpoint)."""
    result, _ = service.submit(body.repo, body.revision, body.dataset)
    if result.job.status not in (JobStatus.QUEUED, JobStatus.RUNNING):
        response.status_code = status.HTTP_200_OK
    return EvaluationPublic.of(result)


@router.get("/evaluations/{job_id}", response_model=EvaluationPublic, responses=error_answers(404, 422))
def read_evaluation(job_id: JobId, service: ServiceDep) -> EvaluationPublic:
    """One evaluation job: its status and, when done, its metrics with 95% intervals."""
    return EvaluationPublic.of(service.job(job_id))


@router.get("/evaluations/{job_id}/predictions", response_model=PredictionRowsPublic, responses=error_answers(404, 422))
def read_predictions(
    job_id: JobId,
    service: ServiceDep,
    offset: Annotated[int, Query(ge=0, le=2**31, description="rows to skip")] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PREDICTION_ROWS, description="rows to give at most")] = 100,
) -> PredictionRowsPublic:
    """A done job's per-item predictions, a page at a time: each item's prompt, true price, split, every estimate,
    the 80% interval and the mass on number tokens. 404 while the job has none (queued, running or failed)."""
    result, total, rows = service.job_predictions(job_id, offset=offset, limit=limit)
    return PredictionRowsPublic.of(result, total, offset, limit, rows)


@router.get("/evaluations", response_model=EvaluationsPublic, responses=error_answers(404, 422))
def read_evaluations(service: ServiceDep, repo: str | None = RepoQuery, metric: Metric | None = None) -> EvaluationsPublic:
    """A repo's evaluated checkpoints ranked best first (by the service's metric unless another is asked), and all its jobs."""
    name = service.served_repo(repo)
    try:
        ranking = service.ranking(name, metric=metric)
    except NotEvaluated:
        ranking = []
    jobs = [EvaluationPublic.of(result) for result in service.jobs(name)]
    metric = service.policy.but(metric=metric).metric
    racing = service.racing(name)
    return EvaluationsPublic(
        repo=name, metric=metric, ranking=[RankedPublic.of(name, r) for r in ranking], jobs=jobs,
        dropped=[DroppedPublic.of(name, e) for e in racing.stopped], racing=RacingPublic.of(racing) if racing.stopped else None,
    )


@router.get("/best-checkpoint", response_model=BestCheckpoint, responses=error_answers(404, 422))
def read_best_checkpoint(
    service: ServiceDep,
    repo: str | None = RepoQuery,
    metric: Metric | None = None,
    rule: Rule | None = None,
    estimator: EstimatorChoice | None = None,
) -> BestCheckpoint:
    """The checkpoint the service's policy chooses on validation items (or with the metric, rule or estimator asked),
    its evidence, the runner-up and its test figure."""
    name = service.served_repo(repo)
    choice = service.choice(name, metric=metric, rule=rule, estimator=estimator)
    served = service.served(name)
    return BestCheckpoint.of(name, choice, served=served is not None and served.evaluation.id == choice.chosen.evaluation.id)


MAX_RUNS = 20
RepoName = Annotated[str, StringConstraints(min_length=1, max_length=200)]
RunsQuery = Annotated[
    list[RepoName],
    Query(min_length=2, max_length=MAX_RUNS, description="a run: a Hub repo id or local/<run folder>; repeat it for each run"),
]


@router.get("/projects/compare", response_model=ComparisonPublic, responses=error_answers(404, 422))
def read_comparison(
    service: ServiceDep,
    repo: RunsQuery,
    metric: Metric | None = None,
    rule: Rule | None = None,
    estimator: EstimatorChoice | None = None,
) -> ComparisonPublic:
    """Several runs evaluated on the same held-out items: each run's own choice, every checkpoint of every run ranked
    together (P(best), the paired difference to the best), and which run's checkpoint the rule takes, with its test figure."""
    return ComparisonPublic.of(service.compare(repo, metric=metric, rule=rule, estimator=estimator))


@router.post(
    "/watches",
    response_model=WatchPublic,
    dependencies=[Depends(require_token)],
    status_code=202,
    responses=error_answers(401, 404, 413, 422),
)
def create_watch(body: WatchRequest, service: ServiceDep) -> WatchPublic:
    """Evaluate every checkpoint of a repo, and each new one as it appears."""
    service.watch(body.repo, interval=body.interval_seconds)
    return _watch(service, body.repo)


@router.get("/watches", response_model=list[WatchPublic], responses=error_answers())
def read_watches(service: ServiceDep) -> list[WatchPublic]:
    """Every watched repo."""
    return [_watch(service, watch.repo) for watch in service.watches()]


@router.get("/watches/{repo:path}", response_model=WatchPublic, responses=error_answers(404, 422))
def read_watch(repo: RepoPath, service: ServiceDep) -> WatchPublic:
    """A watched repo: its polls, its jobs, the chosen checkpoint and the overfitting alarm."""
    return _watch(service, repo)


@router.delete(
    "/watches/{repo:path}", dependencies=[Depends(require_token)], status_code=204, responses=error_answers(401, 404, 422)
)
def delete_watch(repo: RepoPath, service: ServiceDep) -> None:
    """Stop watching a repo (its evaluations stay)."""
    service.unwatch(repo)


@router.post(
    "/webhooks/hub",
    response_model=EvaluationPublic | WebhookIgnored,
    dependencies=[WebhookSecret],
    responses={202: {"model": EvaluationPublic, "description": "queued"}, **error_answers(401, 403, 404, 413, 422)},
)
def hub_webhook(payload: WebhookPayload, service: ServiceDep, response: Response) -> EvaluationPublic | WebhookIgnored:
    """A Hugging Face Hub webhook: a model repo's new head is evaluated at once; replays do no new work."""
    update = content_update(payload)
    if update is None:
        return WebhookIgnored(ignored="not a content update of a model repo")
    result, created = service.submit(*update)
    response.status_code = status.HTTP_202_ACCEPTED if created else status.HTTP_200_OK
    return EvaluationPublic.of(result)


def _watch(service: PricerService, repo: str) -> WatchPublic:
    watch = service.watched(repo)
    counts = Counter(job.status for job in service.job_list(repo))
    try:
        choice = service.choice(repo)
    except NotEvaluated:
        choice = None
    chosen = choice.chosen.evaluation.revision if choice else None
    return WatchPublic(
        repo=repo,
        interval_seconds=watch.interval,
        checkpoints=watch.checkpoints,
        last_polled=watch.last_polled,
        last_error=service.redact(watch.last_error) if watch.last_error else None,
        jobs={s: counts.get(s, 0) for s in JobStatus},
        chosen=CheckpointPublic(**CheckpointPublic.fields(repo, chosen)) if chosen else None,
        overfitting=choice.overfitting.to_dict() if choice and choice.overfitting else None,
    )


@router.post(
    "/predict",
    response_model=PredictionPublic | PredictionsPublic,
    dependencies=[Depends(require_predict_token)],
    responses=error_answers(401, 404, 413, 422),
)
def predict(body: PredictRequest, service: ServiceDep) -> PredictionPublic | PredictionsPublic:
    """Price one description (or several) with the served best adapter; the answer names the revision."""
    descriptions = body.descriptions if body.descriptions is not None else [body.description or ""]
    answer = PredictionsPublic.of(service.predict(descriptions, repo=body.repo))
    if body.descriptions is None:
        return PredictionPublic(
            price=answer.prices[0], interval=answer.intervals[0], **answer.model_dump(exclude={"prices", "intervals"})
        )
    return answer


@router.get("/health", response_model=Health, responses={503: {"model": Health, "description": "something is wrong"}})
def health(service: ServiceDep, response: Response) -> Health:
    """Whether jobs can run (the worker alive and moving, the store writable), the adapter served and the job queue.
    503 with the problems named when not."""
    problems = service.health()
    if problems:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    served = service.served()
    running = service.activity()
    return Health(
        status="degraded" if problems else "ok",
        problems=problems,
        served=None if served is None else CheckpointPublic(**CheckpointPublic.fields(served.repo, served.revision)),
        jobs=service.job_counts(),
        running=running[0].job.id if running else None,
    )


# ---- the dashboard and Prometheus


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def dashboard(request: Request, repo: str | None = RepoQuery, metric: Metric | None = None) -> HTMLResponse:
    """The dashboard: each repo's checkpoints, curve, choice, ranking and jobs, and a box to try a description."""
    return HTMLResponse(render_dashboard(request.app.state.views, repo, metric))


@router.get("/dashboard/views", response_class=HTMLResponse, include_in_schema=False)
def dashboard_views(request: Request, repo: str | None = RepoQuery, metric: Metric | None = None) -> HTMLResponse:
    """The part of the dashboard that refreshes itself."""
    return HTMLResponse(render_views(request.app.state.views, repo, metric))


@router.get("/dashboard/compare", response_class=HTMLResponse, include_in_schema=False)
def dashboard_compare(
    request: Request,
    repo: Annotated[list[RepoName] | None, Query(max_length=MAX_RUNS, description="the runs to compare")] = None,
    metric: Metric | None = None,
) -> HTMLResponse:
    """Runs compared: one validation curve per run, each run's choice, every checkpoint ranked together."""
    view = compare_view(request.app.state.views, repo or [], metric)
    return HTMLResponse(render_compare(view), status_code=status_code(view.error) if view.error else 200)


@router.get("/metrics", include_in_schema=False)
def metrics(service: ServiceDep) -> Response:
    """Prometheus text format: jobs by status, items scored, evaluation seconds, prediction latency, served revisions."""
    return Response(service.telemetry.render(), media_type=PROMETHEUS_CONTENT_TYPE)
