"""The course's tester metrics, in one registry, with 95% bootstrap intervals.

- average absolute error (`mae`);
- RMSLE = sqrt(mean((log(truth + 1) - log(guess + 1))^2)), negative guesses counted as 0;
- hit rate: the share of "green" items, error < $40 or error / truth < 20%
  ("orange": < $80 or < 40%; else "red").

Each metric is a mean of per-item values, then a `finish` (RMSLE's square root), so that one
bootstrap resample of the items serves every metric and every checkpoint. Adding a metric is
one `MetricSpec` in `_REGISTRY`: scoring, ranking, selection, racing, the API, the CLI and the
charts all read it from here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

BOOTSTRAP_SAMPLES = 1000


def _absolute_error(truth: np.ndarray, guess: np.ndarray) -> np.ndarray:
    return np.abs(guess - truth)


def _squared_log_error(truth: np.ndarray, guess: np.ndarray) -> np.ndarray:
    return (np.log1p(truth) - np.log1p(np.clip(guess, 0, None))) ** 2


def _hit(truth: np.ndarray, guess: np.ndarray) -> np.ndarray:
    error = np.abs(guess - truth)
    return ((error < 40) | (error / truth < 0.2)).astype(np.float64)


def _identity(means: np.ndarray) -> np.ndarray:
    return means


@dataclass(frozen=True)
class MetricSpec:
    """One metric: how each item contributes, how the mean becomes the metric, which way is better."""

    name: str
    label: str  # for headings and axes
    short: str  # for table columns
    higher_is_better: bool
    per_item: Callable[[np.ndarray, np.ndarray], np.ndarray]
    format: str  # a format spec for one value, e.g. ",.2f"
    unit: str = ""  # printed before a value, e.g. "$"
    finish: Callable[[np.ndarray], np.ndarray] = _identity  # RMSLE is the root of a mean

    @property
    def sign(self) -> float:
        """Multiply values by this to compare them as "lower is better"."""
        return -1.0 if self.higher_is_better else 1.0

    def of_means(self, means: np.ndarray) -> np.ndarray:
        return self.finish(means)

    def show(self, value: float) -> str:
        """A value as people read it: "$52.29", "0.56", "57.4%"."""
        return f"{self.unit}{value:{self.format}}"


_REGISTRY = (
    MetricSpec("mae", "average absolute error ($)", "avg error", False, _absolute_error, ",.2f", unit="$"),
    MetricSpec("rmsle", "RMSLE", "RMSLE", False, _squared_log_error, ".2f", finish=np.sqrt),
    MetricSpec("hit_rate", "hit rate", "hits", True, _hit, ".1%"),
)
METRICS: dict[str, MetricSpec] = {spec.name: spec for spec in _REGISTRY}
Metric = StrEnum("Metric", {spec.name.upper(): spec.name for spec in _REGISTRY})  # the names, for settings and routes


def spec(metric: str) -> MetricSpec:
    """The registered metric of that name (a clear error for an unknown one)."""
    try:
        return METRICS[metric]
    except KeyError:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}") from None


def item_errors(truth: np.ndarray, guess: np.ndarray) -> dict[str, np.ndarray]:
    """Per-item contributions to each metric (absolute error, squared log error, hit 0/1), by name."""
    truth, guess = np.asarray(truth, dtype=np.float64), np.asarray(guess, dtype=np.float64)
    return {name: s.per_item(truth, guess) for name, s in METRICS.items()}


def colors(truth: np.ndarray, guess: np.ndarray) -> list[str]:
    """The course's green / orange / red verdict per item."""
    error = np.abs(np.asarray(guess, dtype=np.float64) - truth)
    ratio = error / truth
    return [
        "green" if e < 40 or r < 0.2 else "orange" if e < 80 or r < 0.4 else "red" for e, r in zip(error, ratio, strict=False)
    ]


@dataclass(frozen=True)
class Metrics:
    """Point estimates and percentile-bootstrap intervals of every registered metric on `n` items."""

    n: int
    values: dict[str, float]
    intervals: dict[str, tuple[float, float]]

    def value(self, metric: str) -> float:
        return self.values[metric]

    def __getattr__(self, name: str) -> float:  # m.mae, m.rmsle, m.hit_rate
        values = self.__dict__.get("values", {})
        if name in values:
            return values[name]
        raise AttributeError(name)

    def to_dict(self) -> dict:
        return {"n": self.n, **self.values, "intervals": self.intervals}


def score(
    truth: np.ndarray, guess: np.ndarray, *, confidence: float = 0.95, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0
) -> Metrics:
    """Score guesses against true prices. The bootstrap is seeded, so a result is reproducible."""
    truth = np.asarray(truth, dtype=np.float64)
    if truth.size == 0:
        raise ValueError("cannot score zero items")
    rows = np.random.default_rng(seed).integers(0, truth.size, size=(samples, truth.size))
    tail = (1 - confidence) / 2 * 100
    values, intervals = {}, {}
    for name, per_item in item_errors(truth, guess).items():
        finish = METRICS[name].of_means
        values[name] = float(finish(per_item.mean()))
        resampled = finish(per_item[rows].mean(axis=1))
        intervals[name] = (float(np.percentile(resampled, tail)), float(np.percentile(resampled, 100 - tail)))
    return Metrics(n=int(truth.size), values=values, intervals=intervals)
