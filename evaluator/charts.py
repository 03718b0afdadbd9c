"""PNG charts of a run: validation error per checkpoint, and truth vs prediction like the course's tester."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from evaluator.metrics import colors  # noqa: E402
from evaluator.ranking import Ranked  # noqa: E402
from evaluator.store import Evaluation  # noqa: E402

LABELS = {"mae": "average absolute error ($)", "rmsle": "RMSLE", "hit_rate": "hit rate"}


def error_curve(
    ranked: list[Ranked], path: Path, *, metric: str = "mae", chosen: Evaluation | None = None, title: str = ""
) -> Path:
    """Validation `metric` per checkpoint against step, with its 95% interval and the chosen one (default: the best) marked."""
    by_step = sorted(ranked, key=lambda r: (r.evaluation.revision.step or 0, r.evaluation.id))
    steps = np.array([r.evaluation.revision.step or i for i, r in enumerate(by_step)])
    values = np.array([r.metrics.value(metric) for r in by_step])
    low, high = np.array([r.metrics.intervals[metric] for r in by_step]).T
    best = next((r for r in ranked if chosen is not None and r.evaluation.id == chosen.id), ranked[0])
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.fill_between(steps, low, high, alpha=0.2, color="tab:blue", label="95% interval")
    ax.plot(steps, values, "o-", color="tab:blue", label=LABELS[metric])
    ax.plot(
        [best.evaluation.revision.step or 0],
        [best.metrics.value(metric)],
        "*",
        ms=18,
        color="tab:green",
        label=f"chosen: {best.evaluation.revision.revision}",
    )
    for epoch_start in _epoch_starts(by_step):
        ax.axvline(epoch_start, color="grey", lw=0.8, ls=":")
    ax.set(
        xlabel="training step (dotted: epoch boundaries)", ylabel=LABELS[metric], title=title or "validation error per checkpoint"
    )
    ax.legend()
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _epoch_starts(by_step: list[Ranked]) -> list[float]:
    """Steps where a new whole epoch begins, interpolated from the checkpoints' (step, epoch)."""
    known = [(r.evaluation.revision.step, r.evaluation.revision.epoch) for r in by_step]
    known = [(s, e) for s, e in known if s and e]
    if not known:
        return []
    steps_per_epoch = known[-1][0] / known[-1][1]
    return [k * steps_per_epoch for k in range(1, int(known[-1][1]) + 1)]


def truth_vs_prediction(
    evaluation: Evaluation, path: Path, *, part: str = "test", estimator: str = "argmax", title: str = ""
) -> Path:
    """Each item's true price against its prediction, green / orange / red as the course's tester colours them.

    By default on the test items: the chosen checkpoint's out-of-sample picture.
    """
    items = evaluation.items(part)
    if items.size == 0:  # data without test items: show the validation part
        part, items = "validation", evaluation.items("validation")
    truth, guess = evaluation.truth[items], evaluation.prices.guesses(estimator)[items]
    metrics = evaluation.metrics(estimator, part=part)
    fig, ax = plt.subplots(figsize=(7, 7))
    top = max(truth.max(), guess.max()) * 1.05
    ax.plot([0, top], [0, top], color="deepskyblue", lw=2, alpha=0.6)
    ax.scatter(truth, guess, s=6, c=colors(truth, guess))
    name = title or f"{evaluation.revision.revision} on {evaluation.dataset_name} ({part}, {metrics.n} items)"
    ax.set(
        xlabel="ground truth ($)",
        ylabel="model estimate ($)",
        xlim=(0, top),
        ylim=(0, top),
        title=f"{name}\nError=${metrics.mae:,.2f} RMSLE={metrics.rmsle:.2f} Hits={metrics.hit_rate:.1%}",
    )
    return _save(fig, path)


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
