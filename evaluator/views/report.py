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
from pathlib import Path

import jinja2

from pricer.evaluator.checkpoints.sources import Revision
from pricer.evaluator.errors import NotEvaluated
from pricer.evaluator.service.facade import PricerService
from pricer.evaluator.stats.metrics import HIGHER_IS_BETTER, METRICS
from pricer.evaluator.stats.selection import Candidate, Choice, significantly_worse
from pricer.evaluator.store.evaluations import utcnow
from pricer.evaluator.store.jobs import DONE, QUEUED, RUNNING, Job
from pricer.evaluator.views.charts import LABELS, error_curve, save_png, title_line, to_svg, truth_vs_prediction

_templates = jinja2.Environment(
    loader=jinja2.PackageLoader("evaluator.views", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


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

    @property
    def live(self) -> bool:
        """Whether jobs are queued or running: the page keeps refreshing itself meanwhile."""
        return any(job.status in (QUEUED, RUNNING) for job in self.jobs)

    @property
    def ranking(self) -> list[Candidate]:
        """Checkpoints best first by the view's metric (ties: the earlier one)."""
        if self.choice is None:
            return []
        sign = -1 if HIGHER_IS_BETTER[self.metric] else 1
        return sorted(
            self.choice.candidates, key=lambda c: (sign * c.validation.value(self.metric), c.evaluation.revision.step or 0)
        )

    def status(self, candidate: Candidate) -> str:
        """One word for a checkpoint's standing: chosen, best, within noise of the best, or significantly worse."""
        choice = self.choice
        if candidate is choice.chosen:
            return "chosen"
        if candidate is choice.best:
            return "best"
        return "worse" if significantly_worse(candidate.versus_best, self.metric) else "within noise"


class Views:
    """Builds and renders repo views from a service; charts are cached until the repo's evaluations change."""

    def __init__(self, service: PricerService, *, cache_size: int = 32) -> None:
        self.service = service
        self._charts: OrderedDict[tuple, tuple[Choice, Charts]] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def repos(self, watched: list[str] | None = None) -> list[str]:
        """Watched repos and repos with jobs: the watched first, then the most recently active."""
        if watched is None:
            watched = [watch.repo for watch in self.service.watches.all()]
        return list(dict.fromkeys([*watched, *self.service.queue.repos(status=None)]))

    def view(self, repo: str | None, metric: str = "mae") -> RepoView | None:
        """The views of `repo` (default: the first of `repos()`; None when there is none)."""
        service = self.service
        watched = [watch.repo for watch in service.watches.all()]
        repo = repo or next(iter(self.repos(watched)), None)
        if repo is None:
            return None
        jobs = service.queue.jobs(repo=repo)  # the jobs alone: their evaluations are not needed to list them
        running = service.running
        progress = {running.id: service.progress} if running is not None and service.progress else {}
        served = service.served(repo)
        choice, charts = self._choice_and_charts(repo, metric, jobs)
        return RepoView(
            repo=repo,
            metric=metric,
            choice=choice,
            jobs=jobs,
            progress=progress,
            served=served.revision if served else None,
            watched=repo in watched,
            charts=charts,
        )

    def _choice_and_charts(self, repo: str, metric: str, jobs: list[Job]) -> tuple[Choice | None, Charts | None]:
        # the evaluations behind a choice are the repo's done jobs: the same ids, the same choice and charts
        key = (repo, metric, tuple(sorted(job.evaluation_id for job in jobs if job.status == DONE)))
        with self._lock:
            if key in self._charts:
                self._charts.move_to_end(key)
                return self._charts[key]
        try:
            choice = self.service.choice(repo, metric=metric)
        except NotEvaluated:
            return None, None
        charts = draw(repo, choice)
        with self._lock:
            self._charts[key] = (choice, charts)
            while len(self._charts) > self._cache_size:
                self._charts.popitem(last=False)
        return choice, charts


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


def render_dashboard(views: Views, repo: str | None, metric: str) -> str:
    """The whole page: repo tabs, the views of `repo` (default: the first one), the predict box."""
    return _templates.get_template("dashboard.html").render(repos=views.repos(), **_context(views.view(repo, metric)))


def render_views(views: Views, repo: str | None, metric: str) -> str:
    """The part of the page that refreshes itself while jobs run."""
    return _templates.get_template("views.html").render(**_context(views.view(repo, metric)))


def write_report(views: Views, repo: str, output: Path, *, metric: str = "mae", png: bool = False) -> list[Path]:
    """A self-contained HTML file of the repo's views (no script, no external resource); PNGs beside it with `png`."""
    view = views.view(repo, metric)
    if view is None or view.choice is None:
        raise NotEvaluated(f"{repo}: nothing is evaluated yet, so there is nothing to report")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(
        _templates.get_template("report.html").render(written=f"{utcnow():%Y-%m-%d %H:%M} UTC", **_context(view, report=True)),
        encoding="utf-8",
    )
    written = [output]
    if png:
        written += [
            save_png(
                error_curve(view.choice, title=_curve_title(repo, metric)),
                output.with_name(f"{output.stem}-validation-{metric}.png"),
            ),
            save_png(
                truth_vs_prediction(view.choice.chosen.evaluation),
                output.with_name(f"{output.stem}-chosen-truth-vs-prediction.png"),
            ),
        ]
    return written
