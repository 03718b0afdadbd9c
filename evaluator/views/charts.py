"""Charts of a run: validation error per checkpoint, and truth vs prediction like the course's tester.

Each function returns a matplotlib `Figure` (made without pyplot, so the server can draw
from several threads); `save_png` writes it for `pricer demo` and `pricer report --png`,
`to_svg` inlines it in the dashboard and the HTML report. Artists the page and its tests
look for carry ids: `checkpoints` (one marker per checkpoint), `chosen`, `best`, `baseline`, `interval`,
`train-loss`, `items`; the runs-compared overlay: `run-1`, `run-2`, ... (one line per run), `picks`, `chosen`.
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter

from pricer.evaluator.records import Evaluation
from pricer.evaluator.stats.comparison import Comparison
from pricer.evaluator.stats.metrics import COLOR_WORDS, METRICS, colors, spec
from pricer.evaluator.stats.selection import Choice

LABELS = {name: spec.label for name, spec in METRICS.items()}
MAX_EPOCH_LINES = 30


def error_curve(choice: Choice, *, title: str = "") -> Figure:
    """The choice's validation metric per checkpoint against step, with its 95% interval, the constant-guess
    baseline, epoch starts, the chosen and the best checkpoint; below it, the training loss when the
    checkpoints' trainer states logged one."""
    metric, by_step = spec(choice.metric), choice.candidates
    steps = np.array([c.evaluation.revision.step or i for i, c in enumerate(by_step)])
    values = np.array([c.validation.value(metric.name) for c in by_step])
    low, high = np.array([c.validation.intervals[metric.name] for c in by_step]).T
    losses = [(s, c.evaluation.revision.train_loss) for s, c in zip(steps, by_step, strict=True)]
    losses = [(s, loss) for s, loss in losses if loss is not None]
    fig = Figure(figsize=(8, 6) if losses else (8, 4.5))
    if losses:
        ax, loss_ax = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1.2])
    else:
        ax, loss_ax = fig.subplots(), None
    ax.fill_between(steps, low, high, alpha=0.2, color="tab:blue", label="95% interval", gid="interval")
    ax.plot(steps, values, "o-", color="tab:blue", label=f"validation {metric.words}", gid="checkpoints")
    baseline = choice.baseline.value(metric.name)
    ax.axhline(baseline, color="dimgrey", ls="--", lw=1, label=_literal(f"every item at the median price: {metric.show(baseline)}"), gid="baseline")

    def mark(candidate, style: str, size: int, color: str, label: str, gid: str) -> None:
        step = candidate.evaluation.revision.step or steps[by_step.index(candidate)]
        ax.plot([step], [candidate.validation.value(metric.name)], style, ms=size, color=color, label=label, gid=gid)

    chosen, best = choice.chosen, choice.best
    if best is not chosen:
        best_word = "highest" if metric.higher_is_better else "lowest"
        mark(best, "D", 10, "tab:orange", f"{best_word}: {best.evaluation.revision.revision}", "best")
    mark(chosen, "*", 18, "tab:green", f"chosen: {chosen.evaluation.revision.revision} (P(best) {chosen.p_best:.0%})", "chosen")
    for axes in (ax, loss_ax) if loss_ax else (ax,):
        for epoch_start in _epoch_starts(by_step):
            axes.axvline(epoch_start, color="grey", lw=0.8, ls=":")
        axes.grid(alpha=0.3)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: _literal(metric.show_tick(value))))
    ax.set(ylabel=_literal(metric.label), title=_literal(title or "validation error per checkpoint"))
    ax.legend(fontsize="small")
    if loss_ax:
        loss_ax.plot(*zip(*losses, strict=True), "s-", ms=4, color="tab:purple", gid="train-loss")
        loss_ax.set(ylabel="training loss")
    (loss_ax or ax).set(xlabel="training step (dotted: epoch boundaries)")
    fig.tight_layout()
    return fig


def runs_overlay(comparison: Comparison, *, title: str = "") -> Figure:
    """Several runs' validation metric per checkpoint against step, one line per run: each run's own pick ringed,
    the checkpoint the rule takes across runs starred, the constant-guess baseline dashed."""
    metric, chosen = spec(comparison.metric), comparison.chosen.evaluation
    fig = Figure(figsize=(8, 4.5))
    ax = fig.subplots()
    for k, (run, choice) in enumerate(comparison.runs.items(), start=1):
        steps = [c.evaluation.revision.step or i for i, c in enumerate(choice.candidates)]
        values = [c.validation.value(metric.name) for c in choice.candidates]
        (line,) = ax.plot(steps, values, "o-", ms=4, label=_literal(run), gid=f"run-{k}")
        ids = [c.evaluation.id for c in choice.candidates]
        pick = ids.index(choice.chosen.evaluation.id)
        ax.plot([steps[pick]], [values[pick]], "o", ms=12, mfc="none", mew=1.5, color=line.get_color(), gid=f"pick-{k}")
        if run == comparison.chosen.run:
            star = (steps[ids.index(chosen.id)], values[ids.index(chosen.id)])
    label = f"chosen: {comparison.chosen.run} {chosen.revision.revision} (P(best) {comparison.chosen.candidate.p_best:.0%})"
    ax.plot(*star, "*", ms=18, color="tab:green", label=_literal(label), gid="chosen")
    baseline = comparison.baseline.value(metric.name)
    label = _literal(f"every item at the median price: {metric.show(baseline)}")
    ax.axhline(baseline, color="dimgrey", ls="--", lw=1, label=label, gid="baseline")
    ax.plot([], [], "o", ms=12, mfc="none", color="grey", label="each run's own choice")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: _literal(metric.show_tick(value))))
    title = title or "validation error per checkpoint, by run"
    ax.set(xlabel="training step", ylabel=_literal(metric.label), title=_literal(title))
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def _epoch_starts(by_step: list) -> list[float]:
    """Steps where a new whole epoch begins, interpolated from the checkpoints' (step, epoch)."""
    known = [(c.evaluation.revision.step, c.evaluation.revision.epoch) for c in by_step]
    known = [(s, e) for s, e in known if s and e]
    if not known:
        return []
    steps_per_epoch, epochs = known[-1][0] / known[-1][1], int(known[-1][1])
    stride = max(1, -(-epochs // MAX_EPOCH_LINES))  # thousands of epochs would be thousands of lines: thin them
    return [k * steps_per_epoch for k in range(stride, epochs + 1, stride)]


def truth_vs_prediction(
    evaluation: Evaluation, *, part: str = "test", estimator: str = "argmax", title: str = "", titled: bool = True
) -> Figure:
    """Each item's true price against its prediction, green / orange / red as the course's tester colours them.

    By default on the test items: the chosen checkpoint's out-of-sample picture. `titled=False`
    leaves the title line to the page around the figure.
    """
    items = evaluation.items(part)
    if items.size == 0:  # data without test items: show the validation part
        part, items = "validation", evaluation.items("validation")
    truth, guess = evaluation.truth[items], evaluation.prices.guesses(estimator)[items]
    fig = Figure(figsize=(7, 7) if titled else (6, 5.5))
    ax = fig.subplots()
    top = max(truth.max(), guess.max()) * 1.05
    ax.plot([0, top], [0, top], color="deepskyblue", lw=2, alpha=0.6)
    verdicts = colors(truth, guess)
    ax.scatter(truth, guess, s=6, c=verdicts, gid="items")
    ax.set(xlabel="ground truth ($)", ylabel="model estimate ($)", xlim=(0, top), ylim=(0, top))
    ax.legend(
        handles=[
            Line2D([], [], ls="", marker="o", color=color, label=_literal(f"{words} ({verdicts.count(color)})"))
            for color, words in COLOR_WORDS.items()
        ],
        loc="upper left",
        fontsize="small",
    )
    if titled:
        ax.set_title(_literal(title_line(evaluation, part=part, estimator=estimator, name=title)))
    fig.tight_layout()
    return fig


def title_line(evaluation: Evaluation, *, part: str = "test", estimator: str = "argmax", name: str = "") -> str:
    """The course tester's title: what was scored, then its error, RMSLE and hits."""
    m = evaluation.metrics(estimator, part=part)
    name = name or f"{evaluation.revision.revision} on {evaluation.dataset_name} ({part}, {m.n} items)"
    return f"{name}\nError=${m.mae:,.2f} RMSLE={m.rmsle:.2f} Hits={m.hit_rate:.1%}"


def _literal(text: str) -> str:
    """Text matplotlib shows as written: two "$" would otherwise start a formula."""
    return text.replace("$", r"\$")


def save_png(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def to_svg(fig: Figure) -> str:
    """The figure as an inline `<svg>` element: text stays text, ids are stable from one render to the next."""
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "pricer"}):
        fig.savefig(buffer, format="svg")
    text = buffer.getvalue()
    return text[text.index("<svg") :]
