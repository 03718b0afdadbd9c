"""The course's tester metrics, with 95% bootstrap intervals.

- average absolute error (`mae`);
- RMSLE = sqrt(mean((log(truth + 1) - log(guess + 1))^2)), negative guesses counted as 0;
- hit rate: the share of "green" items, error < $40 or error / truth < 20%
  ("orange": < $80 or < 40%; else "red").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

METRICS = ("mae", "rmsle", "hit_rate")
HIGHER_IS_BETTER = {"mae": False, "rmsle": False, "hit_rate": True}
BOOTSTRAP_SAMPLES = 1000


def item_errors(truth: np.ndarray, guess: np.ndarray) -> dict[str, np.ndarray]:
    """Per-item contributions to each metric: absolute error, squared log error, hit (0/1)."""
    truth, guess = np.asarray(truth, dtype=np.float64), np.asarray(guess, dtype=np.float64)
    error = np.abs(guess - truth)
    sle = (np.log1p(truth) - np.log1p(np.clip(guess, 0, None))) ** 2
    hit = ((error < 40) | (error / truth < 0.2)).astype(np.float64)
    return {"mae": error, "rmsle": sle, "hit_rate": hit}


def colors(truth: np.ndarray, guess: np.ndarray) -> list[str]:
    """The course's green / orange / red verdict per item."""
    error = np.abs(np.asarray(guess, dtype=np.float64) - truth)
    ratio = error / truth
    return [
        "green" if e < 40 or r < 0.2 else "orange" if e < 80 or r < 0.4 else "red" for e, r in zip(error, ratio, strict=False)
    ]


def _aggregate(per_item: dict[str, np.ndarray], axis: int = -1) -> dict[str, np.ndarray]:
    # RMSLE is the root of a mean, so resamples average the squared log errors first
    return {
        "mae": per_item["mae"].mean(axis=axis),
        "rmsle": np.sqrt(per_item["rmsle"].mean(axis=axis)),
        "hit_rate": per_item["hit_rate"].mean(axis=axis),
    }


@dataclass(frozen=True)
class Metrics:
    """Point estimates and percentile-bootstrap intervals of the three metrics."""

    n: int
    mae: float
    rmsle: float
    hit_rate: float
    intervals: dict[str, tuple[float, float]]

    def value(self, metric: str) -> float:
        return float(getattr(self, metric))

    def to_dict(self) -> dict:
        return asdict(self)


def score(
    truth: np.ndarray, guess: np.ndarray, *, confidence: float = 0.95, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0
) -> Metrics:
    """Score guesses against true prices. The bootstrap is seeded, so a result is reproducible."""
    truth = np.asarray(truth, dtype=np.float64)
    if truth.size == 0:
        raise ValueError("cannot score zero items")
    per_item = item_errors(truth, guess)
    point = _aggregate(per_item)
    rows = np.random.default_rng(seed).integers(0, truth.size, size=(samples, truth.size))
    resampled = _aggregate({name: values[rows] for name, values in per_item.items()})
    tail = (1 - confidence) / 2 * 100
    intervals = {
        name: (float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))) for name, values in resampled.items()
    }
    return Metrics(n=int(truth.size), **{k: float(v) for k, v in point.items()}, intervals=intervals)


def is_better(metric: str, a: float, b: float) -> bool:
    """Whether value `a` of `metric` beats value `b`."""
    return a > b if HIGHER_IS_BETTER[metric] else a < b
