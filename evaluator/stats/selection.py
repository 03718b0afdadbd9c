"""Choose a run's checkpoint on purpose: paired statistics over the same validation items.

Every checkpoint of a run is scored on the same items, so checkpoints are compared pair by
pair: one bootstrap resample of the items serves every checkpoint at once, which cancels
the item-to-item variance they share. From the resamples come each checkpoint's paired
difference to the best, the probability that it is the best, and the choice:

- rule `earliest` (default): the earliest checkpoint whose validation error is not
  significantly worse than the best's (paired, 95%): for equal error, less training is
  less overfit;
- rule `min`: the plainly lowest error.

The chosen checkpoint's test items, never used to choose, give the out-of-sample figure.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pricer.evaluator.errors import NotEvaluated
from pricer.evaluator.stats.metrics import HIGHER_IS_BETTER, METRICS, Metrics, item_errors, score
from pricer.evaluator.store.evaluations import Evaluation

RULES = ("earliest", "min")
SAMPLES = 2000


@dataclass(frozen=True)
class Paired:
    """metric(checkpoint) - metric(reference) on the same resampled items, with its interval."""

    difference: float
    low: float
    high: float

    @property
    def significant(self) -> bool:
        return self.low > 0 or self.high < 0

    def to_dict(self) -> dict:
        return {"difference": self.difference, "interval": (self.low, self.high), "significant": self.significant}


@dataclass(frozen=True)
class Candidate:
    """One checkpoint's validation evidence."""

    evaluation: Evaluation
    validation: Metrics
    p_best: float
    versus_best: Paired  # this checkpoint minus the best one (zero for the best itself)


@dataclass(frozen=True)
class Overfitting:
    """Validation error rose for `checkpoints` checkpoints in a row past the best, significantly."""

    since_step: int | None
    checkpoints: int
    rise: Paired  # latest minus best

    def to_dict(self) -> dict:
        return {"since_step": self.since_step, "checkpoints": self.checkpoints, "rise": self.rise.to_dict()}


@dataclass(frozen=True)
class Choice:
    """The chosen checkpoint and the evidence for it."""

    rule: str
    metric: str
    confidence: float
    candidates: list[Candidate]  # by step
    chosen: Candidate
    best: Candidate  # lowest validation error (highest for hit rate)
    runner_up: Candidate | None
    versus_runner_up: Paired | None  # chosen minus runner-up
    test: Metrics | None  # the chosen checkpoint on the test items: the out-of-sample figure
    overfitting: Overfitting | None

    @property
    def statement(self) -> str:
        better = "higher" if HIGHER_IS_BETTER[self.metric] else "lower"
        if self.rule == "min":
            return f"the checkpoint with the best validation {self.metric} ({better} is better)"
        return (
            f"the earliest checkpoint whose validation {self.metric} is not significantly worse than the best's "
            f"(paired bootstrap, {self.confidence:.0%})"
        )


def _per_item(evaluation: Evaluation, metric: str, estimator: str, items: np.ndarray) -> np.ndarray:
    return item_errors(evaluation.truth[items], evaluation.prices.guesses(estimator)[items])[metric]


def _summary(metric: str, resampled_means: np.ndarray) -> np.ndarray:
    # RMSLE is the root of the mean squared log error; the others are plain means
    return np.sqrt(resampled_means) if metric == "rmsle" else resampled_means


def paired_resamples(values: np.ndarray, metric: str, *, samples: int = SAMPLES, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(point (K,), resampled (B, K)) metric values of K checkpoints over the same n items (`values` is (K, n))."""
    n = values.shape[1]
    rows = np.random.default_rng(seed).integers(0, n, size=(samples, n))
    resampled = np.stack([_summary(metric, v[rows].mean(axis=1)) for v in values], axis=1)
    return _summary(metric, values.mean(axis=1)), resampled


def paired(point: np.ndarray, resampled: np.ndarray, k: int, ref: int, confidence: float) -> Paired:
    tail = (1 - confidence) / 2 * 100
    diffs = resampled[:, k] - resampled[:, ref]
    return Paired(float(point[k] - point[ref]), float(np.percentile(diffs, tail)), float(np.percentile(diffs, 100 - tail)))


def significantly_worse(difference: Paired, metric: str) -> bool:
    """Whether a paired difference (candidate minus reference) says the candidate is significantly worse."""
    return difference.high < 0 if HIGHER_IS_BETTER[metric] else difference.low > 0


def pick(point: np.ndarray, resampled: np.ndarray, *, metric: str, rule: str, confidence: float = 0.95) -> tuple[int, int]:
    """(chosen, best) indices among K candidates in training order, from their point (K,) and resampled (B, K) values."""
    sign = -1.0 if HIGHER_IS_BETTER[metric] else 1.0
    best = int(np.argmin(sign * point))  # ties: the earliest
    if rule == "min":
        return best, best
    chosen = next(k for k in range(point.size) if not significantly_worse(paired(point, resampled, k, best, confidence), metric))
    return chosen, best


def choose(
    evaluations: list[Evaluation],
    *,
    metric: str = "mae",
    rule: str = "earliest",
    estimator: str = "argmax",
    test_mask: np.ndarray | None = None,
    confidence: float = 0.95,
    patience: int = 3,
    samples: int = SAMPLES,
    seed: int = 0,
) -> Choice:
    """Choose among checkpoints evaluated on the same items, using only the items where `test_mask` is False.

    Args:
        evaluations: one per checkpoint, all on the same data, base and scoring config.
        metric: mae, rmsle or hit_rate.
        rule: `earliest` or `min` (see the module's docstring).
        test_mask: (n,) True for test items: left out of the choice, scored for the chosen one only.
        patience: checkpoints in a row, past the best, whose rise raises the overfitting alarm.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; choose one of {', '.join(RULES)}")
    if not evaluations:
        raise NotEvaluated("nothing is evaluated yet")
    by_step = sorted(evaluations, key=lambda e: (e.revision.step if e.revision.step is not None else 10**12, e.id))
    n = by_step[0].n
    test = np.zeros(n, dtype=bool) if test_mask is None else np.asarray(test_mask, dtype=bool)
    validation_items = np.flatnonzero(~test)
    if validation_items.size == 0:
        raise ValueError("no validation items: every item is in the test part")

    sign = -1.0 if HIGHER_IS_BETTER[metric] else 1.0  # compare as "lower is better"
    values = np.stack([_per_item(e, metric, estimator, validation_items) for e in by_step])
    point, resampled = paired_resamples(values, metric, samples=samples, seed=seed)
    chosen, best = pick(point, resampled, metric=metric, rule=rule, confidence=confidence)
    winners = np.argmin(sign * resampled, axis=1)
    p_best = np.bincount(winners, minlength=len(by_step)) / samples
    versus_best = [paired(point, resampled, k, best, confidence) for k in range(len(by_step))]
    candidates = [
        Candidate(e, score(e.truth[validation_items], e.prices.guesses(estimator)[validation_items]), float(p), v)
        for e, p, v in zip(by_step, p_best, versus_best, strict=True)
    ]
    others = [k for k in np.argsort(sign * point, kind="stable") if k != chosen]
    runner_up = int(others[0]) if others else None
    test_items = np.flatnonzero(test)
    test_metrics = (
        score(by_step[chosen].truth[test_items], by_step[chosen].prices.guesses(estimator)[test_items]) if test_items.size else None
    )
    return Choice(
        rule=rule,
        metric=metric,
        confidence=confidence,
        candidates=candidates,
        chosen=candidates[chosen],
        best=candidates[best],
        runner_up=candidates[runner_up] if runner_up is not None else None,
        versus_runner_up=paired(point, resampled, chosen, runner_up, confidence) if runner_up is not None else None,
        test=test_metrics,
        overfitting=_overfitting(point, resampled, best, by_step, sign, patience, confidence),
    )


def _overfitting(
    point: np.ndarray, resampled: np.ndarray, best: int, by_step: list[Evaluation], sign: float, patience: int, confidence: float
) -> Overfitting | None:
    """The alarm: the last `patience` checkpoints come after the best, each worse than the one before,
    and the latest is significantly worse than the best."""
    after = list(range(best + 1, len(by_step)))
    if patience < 1 or len(after) < patience:
        return None
    tail = after[-patience:]
    rising = all(sign * (point[k] - point[k - 1]) > 0 for k in tail)
    rise = paired(point, resampled, len(by_step) - 1, best, confidence)
    if not (rising and (rise.low > 0 if sign > 0 else rise.high < 0)):
        return None
    return Overfitting(by_step[best].revision.step, len(after), rise)
