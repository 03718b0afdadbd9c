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
    words: str  # in a sentence: "the validation average absolute error"
    label: str  # for headings and axes
    short: str  # for table columns
    higher_is_better: bool
    per_item: Callable[[np.ndarray, np.ndarray], np.ndarray]
    format: str  # a format spec for one value, e.g. ",.2f"
    unit: str = ""  # printed before a value, e.g. "$"
    change_format: str = ""  # a difference of two values; default: `format` with a sign
    change_scale: float = 1.0  # a hit-rate difference reads in percentage points
    change_unit: str = ""  # printed after a difference, e.g. " pts"
    axis_format: str = ""  # a chart's tick labels; default: `format`
    finish: Callable[[np.ndarray], np.ndarray] = _identity  # RMSLE is the root of a mean

    @property
    def sign(self) -> float:
        """Multiply values by this to compare them as "lower is better"."""
        return -1.0 if self.higher_is_better else 1.0

    def of_means(self, means: np.ndarray) -> np.ndarray:
        return self.finish(means)

    def show(self, value: float) -> str:
        """A value as people read it: "$52.29", "0.561", "57.4%"."""
        return f"{self.unit}{value:{self.format}}"

    def show_tick(self, value: float) -> str:
        return f"{self.unit}{value:{self.axis_format or self.format}}"

    def show_interval(self, low: float, high: float) -> str:
        """ "[$44.10, $60.87]" """
        return f"[{self.show(low)}, {self.show(high)}]"

    def show_change(self, difference: float) -> str:
        """A signed difference of two values: "+$2.38", "-$6.16", "+0.012", "-5.2 pts" (hit rate: points, not %)."""
        return f"{self._signed(difference)}{self.change_unit}"

    def show_change_interval(self, low: float, high: float) -> str:
        """ "[-$6.16, +$10.33]", "[-11.0, +0.5] pts" """
        return f"[{self._signed(low)}, {self._signed(high)}]{self.change_unit}"

    def show_paired(self, difference: float, low: float, high: float) -> str:
        """A paired difference and its interval, every number in the same unit: "+$2.38 [-$6.16, +$10.33]"."""
        return f"{self.show_change(difference)} {self.show_change_interval(low, high)}"

    def _signed(self, difference: float) -> str:
        magnitude = f"{abs(difference) * self.change_scale:{self.change_format or self.format}}"
        if float(magnitude.replace(",", "")) == 0:  # no "-$0.00": a zero reads as a zero
            return f"{self.unit}{magnitude}"
        return f"{'-' if difference < 0 else '+'}{self.unit}{magnitude}"


_REGISTRY = (
    MetricSpec("mae", "average absolute error", "average absolute error ($)", "avg error", False, _absolute_error, ",.2f", unit="$", axis_format=",.0f"),
    MetricSpec("rmsle", "RMSLE", "RMSLE", "RMSLE", False, _squared_log_error, ".3f", finish=np.sqrt),
    MetricSpec(
        "hit_rate", "hit rate", "hit rate", "hits", True, _hit, ".1%", change_format=".1f", change_scale=100, change_unit=" pts", axis_format=".0%"
    ),
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


COLOR_WORDS = {"green": "within $40 or 20%", "orange": "within $80 or 40%", "red": "further off"}


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
