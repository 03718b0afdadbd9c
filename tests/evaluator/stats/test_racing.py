"""Racing on synthetic per-item errors whose truth is known: the same choice as `choose`, for fewer item scorings."""

from __future__ import annotations

import math
from datetime import datetime

import numpy as np
import pytest

from pricer.evaluator.records import Evaluation, ItemPrices, Revision
from pricer.evaluator.stats.metrics import item_errors
from pricer.evaluator.stats.racing import race
from pricer.evaluator.stats.selection import Policy, choose, paired, paired_resamples, significantly_worse

N = 400
# error scale per checkpoint, in training order: three clearly bad, then near-ties around the best (index 6)
SCALES = np.array([3.0, 2.2, 1.7, 1.3, 1.12, 1.03, 1.0, 1.01, 1.02, 1.06, 1.15, 1.4])
BAD = (0, 1, 2)


def _sweep(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(truth (n,), guesses (K, n)): item difficulty shared by every checkpoint, as with real items."""
    rng = np.random.default_rng(seed)
    truth = rng.lognormal(3.5, 1.0, N)
    difficulty = rng.exponential(30.0, N)
    errors = SCALES[:, None] * difficulty[None] + rng.normal(0, 10.0, (SCALES.size, N))
    sides = rng.choice([-1.0, 1.0], size=errors.shape)
    return truth, truth + sides * np.abs(errors)


def _full_choice(truth: np.ndarray, guesses: np.ndarray, **options) -> int:
    """What `selection.choose` picks when every checkpoint is scored on every item."""
    evaluations = [
        Evaluation(
            k, Revision("run", f"checkpoint-{10 * (k + 1)}", f"c{k}", 10 * (k + 1)), "base", "d", "fp", "cfg", truth,
            ItemPrices(argmax=g, mean=g, p_number=np.ones_like(g)), np.zeros(truth.size, bool), 1.0, datetime.now(),
        )
        for k, g in enumerate(guesses)
    ]
    return choose(evaluations, Policy(**options)).chosen.evaluation.id


class Scorer:
    """score_items over fixed guesses, recording every (candidate, item) it was asked for."""

    def __init__(self, truth: np.ndarray, guesses: np.ndarray, metric: str = "mae") -> None:
        self.truth, self.guesses, self.metric = truth, guesses, metric
        self.asked: list[tuple[int, int]] = []

    def __call__(self, k: int, items: np.ndarray) -> np.ndarray:
        self.asked += [(k, int(i)) for i in items]
        return item_errors(self.truth[items], self.guesses[k, items])[self.metric]


def _not_significantly_worse(values: np.ndarray, picked: int, reference: int, metric: str = "mae") -> bool:
    point, resampled = paired_resamples(values, metric)
    return not significantly_worse(paired(point, resampled, picked, reference, 0.95), metric)


@pytest.mark.parametrize("rule", ["earliest", "min"])
def test_racing_picks_what_full_evaluation_picks_for_a_fraction_of_the_scorings(rule):
    truth, guesses = _sweep()
    full = _full_choice(truth, guesses, rule=rule)
    values = item_errors(truth[None], guesses)["mae"]
    shares = []
    for shuffle_seed in range(5):
        scorer = Scorer(truth, guesses)
        result = race(len(SCALES), scorer, N, rule=rule, shuffle_seed=shuffle_seed)
        assert result.chosen == full or _not_significantly_worse(values, result.chosen, full)
        assert result.scored[result.chosen] == N and result.scored[result.best] == N  # the winner saw every item
        assert result.scorings == len(scorer.asked) < result.full == len(SCALES) * N
        assert len(set(scorer.asked)) == len(scorer.asked)  # no item scored twice for a checkpoint
        shares.append(result.share)
        for k in BAD:  # clearly bad: dropped after the first round, on an eighth of the items
            assert result.dropped_after[k] == 0 and result.scored[k] == math.ceil(N / 8)
    assert full == (5 if rule == "earliest" else 6)  # the synthetic truth: 6 is the best, 5 a near-tie before it
    assert max(shares) < 0.5


def test_each_round_scores_only_new_items_and_drops_nothing_it_cannot_tell_apart():
    truth, guesses = _sweep(seed=1)
    ties = np.repeat(guesses[6:7], 5, axis=0)  # five copies of one checkpoint: none is worse than another
    scorer = Scorer(truth, ties)
    result = race(5, scorer, N, shuffle_seed=3)
    assert result.dropped_after == (None,) * 5 and result.scored == (N,) * 5 and result.share == 1.0
    assert result.chosen == 0  # the earliest of equals
    calls = {}
    for k, item in scorer.asked:
        calls.setdefault(k, []).append(item)
    assert all(sorted(items) == list(range(N)) for items in calls.values())


def test_hit_rate_is_raced_as_higher_is_better():
    truth, guesses = _sweep(seed=2)
    scorer = Scorer(truth, guesses, metric="hit_rate")
    result = race(len(SCALES), scorer, N, metric="hit_rate", rule="min")
    full = _full_choice(truth, guesses, metric="hit_rate", rule="min")
    values = item_errors(truth[None], guesses)["hit_rate"]
    assert result.chosen == full or _not_significantly_worse(values, result.chosen, full, "hit_rate")
    assert result.scored[0] < N and result.scored[result.chosen] == N  # the worst lost early, not the best


def test_few_items_drop_nobody():
    truth, guesses = _sweep()
    result = race(len(SCALES), Scorer(truth, guesses), 40, rounds=(0.5, 1.0))  # 20 shared items: under MIN_ITEMS
    assert result.scored == (40,) * len(SCALES)


@pytest.mark.parametrize("rounds", [(0.5,), (0.5, 0.25, 1.0), (0.0, 1.0), ()])
def test_rounds_must_grow_to_every_item(rounds):
    with pytest.raises(ValueError, match="rounds"):
        race(2, lambda k, items: np.zeros(items.size), 10, rounds=rounds)


def test_a_scorer_that_answers_the_wrong_number_of_items_is_refused():
    with pytest.raises(ValueError, match="score_items gave"):
        race(2, lambda k, items: np.zeros(3), 100)
