"""What a repo's checkpoints look like, as HTML: the dashboard at `/` and `pricer report`.

`Views` builds a `RepoView` from the service (the choice and its evidence, the ranking,
the jobs, the served revision, the charts as inline SVG) and renders it with the Jinja2
templates in `evaluator/templates/`. The dashboard and the report share one template for
the views, so a shared report holds the numbers the API gave.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import jinja2

from pricer.evaluator.errors import NotEvaluated, PricerError
from pricer.evaluator.records import Job, JobStatus, Revision
from pricer.evaluator.stats.comparison import Comparison
from pricer.evaluator.stats.metrics import METRICS, spec
from pricer.evaluator.stats.selection import Candidate, Choice, significantly_worse
from pricer.evaluator.views.charts import LABELS, error_curve, runs_overlay, save_png, title_line, to_svg, truth_vs_prediction

if TYPE_CHECKING:
    from pricer.evaluator.service import PricerService, RunRacing

_templates = jinja2.Environment(
    loader=jinja2.PackageLoader("pricer.evaluator.views", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_templates.globals["spec"] = spec  # every number on the page is formatted by its metric's own functions


@dataclass(frozen=True)
class Charts:
    curve_svg: str
    scatter_svg: str
    scatter_title: str


@dataclass(frozen=True)
class RepoView:
    """Everything the page shows about one repo, for one metric."""

    repo: str
    metric: str
    choice: Choice | None
    jobs: list[Job]
    progress: dict[int, tuple[int, int]]  # running job id -> (items priced, items in all)
    served: Revision | None
    watched: bool
    charts: Charts | None
    serving_metric: str  # what the service's own policy chooses the served adapter by
    racing: RunRacing | None = None  # the checkpoints racing stopped on this run and what it saved

    @property
    def live(self) -> bool:
        """Whether jobs are queued or running: the page keeps refreshing itself meanwhile."""
        return any(job.status in (JobStatus.QUEUED, JobStatus.RUNNING) for job in self.jobs)

    @property
    def ranking(self) -> list[Candidate]:
        """Checkpoints best first by the view's metric (ties: the earlier one)."""
        if self.choice is None:
            return []
        sign = spec(self.metric).sign
        return sorted(
            self.choice.candidates, key=lambda c: (sign * c.validation.value(self.metric), c.evaluation.revision.step or 0)
        )

    @property
    def has_train_loss(self) -> bool:
        return self.choice is not None and any(c.evaluation.revision.train_loss is not None for c in self.choice.candidates)

    def status(self, candidate: Candidate) -> str:
        """One word for a checkpoint's standing: chosen, best, within noise of the best, or significantly worse."""
        choice = self.choice
        if candidate is choice.chosen:
            return "chosen"
        if candidate is choice.best:
            return "best"
        return "worse" if significantly_worse(candidate.versus_best, self.metric) else "within noise"


class Views:
    """Builds and renders repo views from the service's facade; charts are cached until the choice changes."""

    def __init__(self, service: PricerService, *, cache_size: int = 32) -> None:
        self.service = service
        self._charts: OrderedDict[tuple, Charts] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def view(self, repo: str | None, metric: str | None = None) -> RepoView | None:
        """The views of `repo` (default: the first of the service's repos; None when there is none), choosing by
        the service's policy, with `metric` instead of its metric when given."""
        service = self.service
        repo = repo or next(iter(service.repos()), None)
        if repo is None:
            return None
        try:
            choice = service.choice(repo, metric=metric)
        except NotEvaluated:
            choice = None
        served = service.served(repo)
        return RepoView(
            repo=repo,
            metric=service.policy.but(metric=metric).metric,
            choice=choice,
            jobs=service.job_list(repo),
            progress={p.job.id: (p.done, p.total) for p in service.activity() if p.total},
            served=served.revision if served else None,
            watched=repo in {watch.repo for watch in service.watches()},
            charts=self._charts_of(repo, choice) if choice else None,
            serving_metric=service.policy.metric,
            racing=service.racing(repo),
        )

    def _charts_of(self, repo: str, choice: Choice) -> Charts:
        # the same repo, policy and evaluations give the same choice, hence the same charts
        key = (repo, choice.policy, tuple(c.evaluation.id for c in choice.candidates))
        with self._lock:
            if key in self._charts:
                self._charts.move_to_end(key)
                return self._charts[key]
        charts = draw(repo, choice)
        with self._lock:
            self._charts[key] = charts
            while len(self._charts) > self._cache_size:
                self._charts.popitem(last=False)
        return charts


def draw(repo: str, choice: Choice) -> Charts:
    """The choice's error curve, and the chosen checkpoint's scatter on the test items (validation when there are none)."""
    chosen = choice.chosen.evaluation
    part = "test" if chosen.items("test").size else "validation"
    return Charts(
        to_svg(error_curve(choice, title=_curve_title(repo, choice.metric))),
        to_svg(truth_vs_prediction(chosen, part=part, titled=False)),
        title_line(chosen, part=part),
    )


def _curve_title(repo: str, metric: str) -> str:
    return f"{repo}: validation {LABELS[metric]} per checkpoint"


def _context(view: RepoView | None, *, report: bool = False) -> dict:
    return {"view": view, "report": report, "metrics": METRICS, "labels": LABELS}


def render_dashboard(views: Views, repo: str | None, metric: str | None = None) -> str:
    """The whole page: repo tabs, the views of `repo` (default: the first one), the predict box."""
    return _templates.get_template("dashboard.html").render(repos=views.service.repos(), **_context(views.view(repo, metric)))


def render_views(views: Views, repo: str | None, metric: str | None = None) -> str:
    """The part of the page that refreshes itself while jobs run."""
    return _templates.get_template("views.html").render(**_context(views.view(repo, metric)))


@dataclass(frozen=True)
class CompareView:
    """The runs-compared page: the runs asked for, and their comparison or why there is none."""

    repos: list[str]  # every repo the service knows: the page's choices
    asked: list[str]
    metric: str
    comparison: Comparison | None
    error: PricerError | None  # why there is no comparison (the page says it in `message`)
    message: str | None
    overlay_svg: str | None


def compare_view(views: Views, repos: list[str], metric: str | None = None) -> CompareView:
    """The comparison of `repos` (none with fewer than two: the page offers the service's repos to pick from)."""
    service, comparison, error = views.service, None, None
    if len(dict.fromkeys(repos)) >= 2:
        try:
            comparison = service.compare(repos, metric=metric)
        except PricerError as exc:
            error = exc
    overlay = to_svg(runs_overlay(comparison)) if comparison else None
    message = service.redact(str(error)) if error else None
    metric = service.policy.but(metric=metric).metric
    return CompareView(list(dict.fromkeys([*service.repos(), *repos])), repos, metric, comparison, error, message, overlay)


def render_compare(view: CompareView) -> str:
    """The runs-compared page: one validation curve per run, each run's choice, every checkpoint ranked together."""
    return _templates.get_template("compare.html").render(compare=view, metrics=METRICS, labels=LABELS)


def write_report(views: Views, repo: str, output: Path, *, metric: str | None = None, png: bool = False) -> list[Path]:
    """A self-contained HTML file of the repo's views (no script, no external resource); PNGs beside it with `png`."""
    view = views.view(repo, metric)
    if view is None or view.choice is None:
        raise NotEvaluated(f"{repo}: nothing is evaluated yet, so there is nothing to report")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(
        _templates.get_template("report.html").render(
            written=f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC", **_context(view, report=True)
        ),
        encoding="utf-8",
    )
    written = [output]
    if png:
        written += [
            save_png(
                error_curve(view.choice, title=_curve_title(repo, view.metric)),
                output.with_name(f"{output.stem}-validation-{view.metric}.png"),
            ),
            save_png(
                truth_vs_prediction(view.choice.chosen.evaluation),
                output.with_name(f"{output.stem}-chosen-truth-vs-prediction.png"),
            ),
        ]
    return written
