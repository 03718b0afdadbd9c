"""Choose a run's checkpoint on purpose: paired statistics over the same validation items.

Every checkpoint of a run is scored on the same items, so checkpoints are compared pair by
pair: one bootstrap resample of the items serves every checkpoint at once, which cancels
the item-to-item variance they share. From the resamples come each checkpoint's paired
difference to the best, the probability that it is the best, and the choice:

- rule `min` (default): the plainly lowest validation error;
- rule `curve`: the lowest point of a smooth curve fitted through every checkpoint's error
  (`curve_smoother`), which borrows strength from neighbouring checkpoints;
- rule `earliest`: the earliest checkpoint whose error is not significantly worse than the
  best's (paired, 95%). It was the default until `bench/sweeps.py` showed it turns a small
  validation set's noise into a bias toward under-trained checkpoints.

`bench/sweeps.py` and `bench/tiny_sweeps.py` judge the rules against an oracle on many
sweeps; the README gives the table.

The chosen checkpoint's test items, never used to choose, give the out-of-sample figure; a
constant guess (every item at the median price) is the floor a useful model must beat.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum

import numpy as np

from pricer.evaluator.errors import NotEvaluated
from pricer.evaluator.records import Estimator, Evaluation
from pricer.evaluator.stats.metrics import Metric, Metrics, score, spec

SAMPLES = 2000
# an estimator, or "auto": the one whose chosen checkpoint scores best on the validation items
EstimatorChoice = StrEnum("EstimatorChoice", {**{e.name: e.value for e in Estimator}, "AUTO": "auto"})


class Rule(StrEnum):
    """How the checkpoint is chosen from the paired evidence."""

    EARLIEST = "earliest"  # the earliest checkpoint not significantly worse than the best
    MIN = "min"  # the plainly lowest error
    CURVE = "curve"  # the lowest point of a smooth curve fitted through every checkpoint's error


@dataclass(frozen=True)
class Policy:
    """How a run's checkpoint is chosen: one object, built once from the settings, used by every door.

    Args:
        metric: what measures a checkpoint (`mae`, `rmsle`, `hit_rate`).
        rule: `min`, `curve` or `earliest` (see the module's docstring).
        estimator: which price is read from the model (`argmax`, `mean`, `median`, `log`, `hit`), or `auto`:
            the one whose chosen checkpoint scores best on validation, chosen together with the checkpoint.
        confidence: of the paired intervals that decide "significantly worse".
        patience: checkpoints in a row, past the best, whose rise raises the overfitting alarm.
    """

    metric: Metric = Metric.MAE
    rule: Rule = Rule.MIN
    estimator: EstimatorChoice = EstimatorChoice.ARGMAX
    confidence: float = 0.95
    patience: int = 3

    def __post_init__(self) -> None:
        spec(self.metric)  # a clear error for an unknown metric
        for name, kind in (("metric", Metric), ("rule", Rule), ("estimator", EstimatorChoice)):
            try:
                object.__setattr__(self, name, kind(getattr(self, name)))
            except ValueError:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}; choose one of {', '.join(kind)}") from None
        if not 0 < self.confidence < 1:
            raise ValueError(f"confidence must lie in (0, 1), not {self.confidence}")
        if self.patience < 1:
            raise ValueError(f"patience must be at least 1, not {self.patience}")

    def but(self, **overrides: object) -> Policy:
        """This policy with the given fields changed; None leaves a field as it is (an unset flag or query)."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    @property
    def statement(self) -> str:
        """The rule in words, as every answer states it."""
        metric = spec(self.metric)
        better = "highest" if metric.higher_is_better else "lowest"
        if self.rule is Rule.MIN:
            return f"the checkpoint with the {better} validation {metric.words}"
        if self.rule is Rule.CURVE:
            return (
                f"the checkpoint at the {better} point of a smooth curve fitted through every checkpoint's validation "
                f"{metric.words} (a Gaussian process over steps, its noise from the paired bootstrap)"
            )
        return (
            f"the earliest checkpoint whose validation {metric.words} is not significantly worse than the best's "
            f"(paired bootstrap, {self.confidence:.0%})"
        )


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
class CrossFitted:
    """The error to expect from the checkpoint the policy picks, measured without a test part: the validation
    items are halved at random `repeats` times, and a choice made on each half is scored on the other half."""

    value: float  # the mean over every fold
    low: float  # the 2.5th and 97.5th percentiles over the folds: how much the figure moves with the split
    high: float
    folds: int

    def to_dict(self) -> dict:
        return {"value": self.value, "spread": (self.low, self.high), "folds": self.folds}


@dataclass(frozen=True)
class Choice:
    """The chosen checkpoint and the evidence for it."""

    policy: Policy
    candidates: list[Candidate]  # by step
    chosen: Candidate
    best: Candidate  # lowest validation error (highest for hit rate)
    runner_up: Candidate | None
    versus_runner_up: Paired | None  # chosen minus runner-up
    test: Metrics | None  # the chosen checkpoint on the test items: the out-of-sample figure
    overfitting: Overfitting | None
    baseline: Metrics  # every validation item priced at their median: what a model has to beat
    estimators: dict[str, float] = field(default_factory=dict)  # with `auto`: each estimator's chosen validation metric
    coverage: float | None = None  # the share of test prices inside the chosen checkpoint's 80% intervals
    cross_fitted: CrossFitted | None = None  # without test items: the out-of-sample figure by cross-fitting
    ranked: float | None = None  # what the rule ranked the chosen one on, lower is better (`curve`: the fitted curve)

    @property
    def metric(self) -> Metric:
        return self.policy.metric

    @property
    def rule(self) -> Rule:
        return self.policy.rule

    @property
    def statement(self) -> str:
        return self.policy.statement

    @property
    def compared_with(self) -> str:
        """What `runner_up` is to the chosen one: the best when the rule chose a less trained checkpoint, else the
        next best."""
        return "best" if self.chosen is not self.best else "runner-up"


def _per_item(evaluation: Evaluation, metric: str, estimator: str, items: np.ndarray) -> np.ndarray:
    return spec(metric).per_item(evaluation.truth[items], evaluation.prices.guesses(estimator)[items])


def paired_resamples(values: np.ndarray, metric: str, *, samples: int = SAMPLES, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(point (K,), resampled (B, K)) metric values of K checkpoints over the same n items (`values` is (K, n))."""
    n = values.shape[1]
    rows = np.random.default_rng(seed).integers(0, n, size=(samples, n))
    finish = spec(metric).of_means
    resampled = np.stack([finish(v[rows].mean(axis=1)) for v in values], axis=1)
    return finish(values.mean(axis=1)), resampled


def paired(point: np.ndarray, resampled: np.ndarray, k: int, ref: int, confidence: float) -> Paired:
    tail = (1 - confidence) / 2 * 100
    diffs = resampled[:, k] - resampled[:, ref]
    return Paired(float(point[k] - point[ref]), float(np.percentile(diffs, tail)), float(np.percentile(diffs, 100 - tail)))


def significantly_worse(difference: Paired, metric: str) -> bool:
    """Whether a paired difference (candidate minus reference) says the candidate is significantly worse."""
    return difference.high < 0 if spec(metric).higher_is_better else difference.low > 0


LENGTH_SCALES = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)  # in checkpoints
AMPLITUDES = (1 / 16, 1 / 4, 1.0, 4.0, 16.0)  # times the variance of the measured curve


def curve_smoother(point: np.ndarray, resampled: np.ndarray) -> np.ndarray:
    """(K, K) matrix S: S @ y is the posterior mean of a smooth curve through the K checkpoints' values y.

    The curve has a Gaussian-process prior over checkpoint index (a constant mean, an exponential covariance:
    continuous but rough, as real validation curves are, where a squared-exponential one smoothed real minima
    away in `bench/sweeps.py`); the measurement noise is the paired bootstrap's covariance, so the noise that every
    checkpoint shares (the same items) moves the whole curve while the differences between neighbours
    are trusted as far as the items support them. The length scale and amplitude maximise the marginal
    likelihood of `point` over a small grid; S is linear in y, so it smooths every resample alike.
    """
    k = point.size
    noise = np.cov(resampled, rowvar=False).reshape(k, k)
    noise += np.eye(k) * (1e-9 * max(float(np.trace(noise)) / k, 1e-12))
    distance = np.abs(np.subtract.outer(np.arange(k), np.arange(k)))
    shapes = [np.exp(-distance / length) for length in LENGTH_SCALES]  # exponential: real sweeps have kinks
    spread = max(float(point.var()), 1e-12)
    ones, best = np.ones(k), (-np.inf, np.eye(k))
    for shape in shapes:
        for amplitude in AMPLITUDES:
            prior = amplitude * spread * shape
            total = prior + noise
            try:
                lower = np.linalg.cholesky(total)
            except np.linalg.LinAlgError:
                continue
            inverse = np.linalg.inv(total)
            weights = inverse @ ones / (ones @ inverse @ ones)  # the mean's generalised least-squares estimate
            centred = np.eye(k) - np.outer(ones, weights)
            residual = centred @ point
            likelihood = -0.5 * residual @ inverse @ residual - np.log(np.diag(lower)).sum()
            if likelihood > best[0]:
                best = (likelihood, np.outer(ones, weights) + prior @ inverse @ centred)
    return best[1]


def ranked_curve(point: np.ndarray, resampled: np.ndarray, policy: Policy) -> tuple[np.ndarray, np.ndarray]:
    """The (K,) point and (B, K) resampled curves the rule ranks checkpoints on, as "lower is better":
    the fitted curve for `curve`, else as measured."""
    point, resampled = spec(policy.metric).sign * point, spec(policy.metric).sign * resampled
    if policy.rule is Rule.CURVE:
        smoother = curve_smoother(point, resampled)
        return smoother @ point, resampled @ smoother.T
    return point, resampled


def pick(point: np.ndarray, resampled: np.ndarray, *, metric: str, rule: str, confidence: float = 0.95) -> tuple[int, int]:
    """(chosen, best) indices among K candidates in training order, from their point (K,) and resampled (B, K) values."""
    best = int(np.argmin(spec(metric).sign * point))  # ties: the earliest
    if Rule(rule) is Rule.MIN:
        return best, best
    if Rule(rule) is Rule.CURVE:
        return int(np.argmin(ranked_curve(point, resampled, Policy(metric, Rule.CURVE))[0])), best
    chosen = next(k for k in range(point.size) if not significantly_worse(paired(point, resampled, k, best, confidence), metric))
    return chosen, best


def choose(
    evaluations: list[Evaluation],
    policy: Policy = Policy(),
    *,
    test_mask: np.ndarray | None = None,
    samples: int = SAMPLES,
    seed: int = 0,
) -> Choice:
    """Choose among checkpoints evaluated on the same items, using only the items where `test_mask` is False.

    Args:
        evaluations: one per checkpoint, all on the same data, base and scoring config.
        policy: the metric, rule, estimator, confidence and alarm patience.
        test_mask: (n,) True for test items: left out of the choice, scored for the chosen one only.
    """
    if not evaluations:
        raise NotEvaluated("nothing is evaluated yet")
    estimators = [policy.estimator]
    if policy.estimator == EstimatorChoice.AUTO:  # every estimator all the evaluations hold (ties: argmax first)
        estimators = [e.value for e in Estimator if all(ev.prices.holds(e) for ev in evaluations)]
    under = {e: _choose_under(evaluations, policy.but(estimator=e), test_mask, samples, seed) for e in estimators}
    sign = spec(policy.metric).sign
    figures = {e: choice.chosen.validation.value(policy.metric) for e, (choice, _) in under.items()}
    winner = min(figures, key=lambda e: sign * figures[e])  # on validation items only
    choice = under[winner][0]
    if choice.test is None:  # no test part: the out-of-sample figure by cross-fitting, estimator choice included
        choice = replace(choice, cross_fitted=cross_fit({e: values for e, (_, values) in under.items()}, policy, seed=seed))
    return replace(choice, estimators=figures) if policy.estimator == EstimatorChoice.AUTO else choice


def _choose_under(
    evaluations: list[Evaluation], policy: Policy, test_mask: np.ndarray | None, samples: int, seed: int
) -> tuple[Choice, np.ndarray]:
    """The choice under one estimator, and the (K, n) per-item validation values it was made on."""
    metric, estimator, confidence = policy.metric, policy.estimator, policy.confidence
    by_step = sorted(evaluations, key=lambda e: (e.revision.step if e.revision.step is not None else 10**12, e.id))
    test = np.zeros(by_step[0].n, dtype=bool) if test_mask is None else np.asarray(test_mask, dtype=bool)
    validation_items = np.flatnonzero(~test)
    if validation_items.size == 0:
        raise ValueError("no validation items: every item is in the test part")

    sign = spec(metric).sign  # compare as "lower is better"
    values = np.stack([_per_item(e, metric, estimator, validation_items) for e in by_step])
    point, resampled = paired_resamples(values, metric, samples=samples, seed=seed)
    chosen, best = pick(point, resampled, metric=metric, rule=policy.rule, confidence=confidence)
    ranked_point, ranked_resampled = ranked_curve(point, resampled, policy)
    winners = np.argmin(ranked_resampled, axis=1)  # where the rule's own curve is lowest
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
        score(by_step[chosen].truth[test_items], by_step[chosen].prices.guesses(estimator)[test_items])
        if test_items.size
        else None
    )
    return Choice(
        policy=policy,
        candidates=candidates,
        chosen=candidates[chosen],
        best=candidates[best],
        runner_up=candidates[runner_up] if runner_up is not None else None,
        versus_runner_up=paired(point, resampled, chosen, runner_up, confidence) if runner_up is not None else None,
        test=test_metrics,
        overfitting=_overfitting(point, resampled, best, by_step, metric, policy.patience, confidence),
        baseline=constant_guess(by_step[0].truth[validation_items]),
        coverage=_coverage(by_step[chosen], test_items),
        ranked=float(ranked_point[chosen]),
    ), values


CROSS_FIT_REPEATS = 10
CROSS_FIT_SAMPLES = 500  # bootstrap resamples per fold: enough for the rules' decisions


def halves(n: int, *, repeats: int = CROSS_FIT_REPEATS, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """(choose on, score on) item indices: `repeats` random halvings of n items, each half used both ways."""
    folds = []
    for repeat in range(repeats):
        order = np.random.default_rng((seed, repeat)).permutation(n)
        first, second = np.sort(order[: n // 2]), np.sort(order[n // 2 :])
        folds += [(first, second), (second, first)]
    return folds


def cross_fit(values: dict[str, np.ndarray], policy: Policy, *, seed: int = 0) -> CrossFitted | None:
    """The policy's rule run on one half of the items and scored on the other, over `halves`.

    `values` holds the (K, n) per-item values under each estimator the choice may take: with several (`auto`),
    the estimator too is chosen on the fitting half only, so the figure pays for that choice as well.
    """
    n = next(iter(values.values())).shape[1]
    if n < 20:  # halves too small to choose on
        return None
    metric = spec(policy.metric)
    scores = []
    for fold, (fit, held) in enumerate(halves(n, seed=seed)):
        picks = {}
        for name, per_item in values.items():
            point, resampled = paired_resamples(per_item[:, fit], policy.metric, samples=CROSS_FIT_SAMPLES, seed=seed + fold)
            k, _ = pick(point, resampled, metric=policy.metric, rule=policy.rule, confidence=policy.confidence)
            picks[name] = (metric.sign * point[k], k)
        name = min(picks, key=lambda e: picks[e][0])
        scores.append(float(metric.of_means(values[name][picks[name][1], held].mean())))
    return CrossFitted(float(np.mean(scores)), float(np.percentile(scores, 2.5)), float(np.percentile(scores, 97.5)), len(scores))


def _coverage(evaluation: Evaluation, items: np.ndarray) -> float | None:
    """Whether "80%" means 80%: the share of these items' true prices inside their predicted intervals."""
    low, high = evaluation.prices.low, evaluation.prices.high
    if low is None or high is None or items.size == 0:
        return None
    truth = evaluation.truth[items]
    return float(((low[items] <= truth) & (truth <= high[items])).mean())


def constant_guess(truth: np.ndarray) -> Metrics:
    """The metrics of pricing every item at the items' median price: the best constant guess for the average error."""
    return score(truth, np.full(truth.size, np.median(truth)))


def _overfitting(
    point: np.ndarray, resampled: np.ndarray, best: int, by_step: list[Evaluation], metric: str, patience: int, confidence: float
) -> Overfitting | None:
    """The alarm: the last `patience` checkpoints come after the best, each worse than the one before,
    and the latest is significantly worse than the best."""
    after = list(range(best + 1, len(by_step)))
    if patience < 1 or len(after) < patience:
        return None
    tail = after[-patience:]
    rising = all(spec(metric).sign * (point[k] - point[k - 1]) > 0 for k in tail)
    rise = paired(point, resampled, len(by_step) - 1, best, confidence)
    if not (rising and significantly_worse(rise, metric)):
        return None
    return Overfitting(by_step[best].revision.step, len(after), rise)
