"""The choice on synthetic per-item errors, where the truth is known."""

from datetime import datetime

import numpy as np
import pytest

from pricer.evaluator.records import Evaluation, ItemPrices, Revision
from pricer.evaluator.stats.selection import Policy, choose

N = 300


def _run(mean_errors: list[float], *, seed: int, noise: float = 30.0, n: int = N, test: np.ndarray | None = None):
    """Checkpoints whose absolute errors on the same items are item difficulty + checkpoint mean + noise."""
    rng = np.random.default_rng(seed)
    truth = rng.uniform(50, 500, n)
    difficulty = rng.gamma(2.0, 25.0, n)  # shared by every checkpoint: what pairing cancels
    test = np.zeros(n, dtype=bool) if test is None else test
    evaluations = []
    for k, mean in enumerate(mean_errors):
        error = np.clip(difficulty + mean + rng.normal(0, noise, n), 0, None)
        guess = truth + error * rng.choice([-1, 1], n)
        prices = ItemPrices(argmax=guess, mean=guess, p_number=np.ones(n))
        revision = Revision("run", f"checkpoint-{10 * (k + 1)}", f"c{k}", step=10 * (k + 1))
        evaluations.append(Evaluation(k, revision, "b", "d", "fp", "cfg", truth, prices, test, 0.0, datetime.now()))
    return evaluations


def test_clear_winner_is_chosen_by_both_rules_with_high_p_best():
    choice = choose(_run([60, 40, 20, 45, 70], seed=1))
    assert choice.chosen.evaluation.revision.step == 30 == choice.best.evaluation.revision.step
    assert choice.chosen.p_best > 0.95
    assert all(c.versus_best.significant for c in choice.candidates if c is not choice.best)
    assert choose(_run([60, 40, 20, 45, 70], seed=1), Policy(rule="min")).chosen is not None


def test_earliest_rule_prefers_an_earlier_checkpoint_that_is_not_significantly_worse():
    evaluations = _run([50, 20.5, 20.0, 20.2, 35], seed=2)
    earliest, lowest = choose(evaluations), choose(evaluations, Policy(rule="min"))
    assert earliest.chosen.evaluation.revision.step == 20  # ties within noise: the less trained one
    assert not earliest.chosen.versus_best.significant
    assert lowest.chosen is lowest.best and lowest.best.validation.mae <= earliest.chosen.validation.mae
    assert "not significantly worse" in earliest.statement


def test_test_items_never_choose_and_give_the_out_of_sample_figure():
    test = np.arange(N) % 3 == 0
    evaluations = _run([40, 20, 30], seed=3, test=test)
    choice = choose(evaluations, test_mask=test)
    assert choice.chosen.validation.n == (~test).sum() and choice.test.n == test.sum()
    chosen = choice.chosen.evaluation
    expected = np.abs(chosen.prices.argmax[test] - chosen.truth[test]).mean()
    assert choice.test.mae == pytest.approx(expected)


def test_paired_intervals_and_p_best_cover_as_they_should():
    # two checkpoints 3 dollars apart: the paired 95% interval of the difference covers 3 in about 95% of runs,
    # and P(best) of the truly better one is mostly high
    covered, p_best = [], []
    for seed in range(60):
        choice = choose(_run([23, 20], seed=100 + seed, noise=20), Policy(rule="min"), samples=600, seed=seed)
        worse = next(c for c in choice.candidates if c.evaluation.revision.step == 10)
        better = next(c for c in choice.candidates if c.evaluation.revision.step == 20)
        difference = worse.validation.mae - better.validation.mae
        low, high = (worse.versus_best.low, worse.versus_best.high) if choice.best is better else (
            -better.versus_best.high, -better.versus_best.low)
        covered.append(low - 1e-9 <= 3.0 <= high + 1e-9)
        assert worse.versus_best.difference == pytest.approx(difference if choice.best is better else 0.0)
        p_best.append(better.p_best)
    assert 0.85 <= np.mean(covered) <= 1.0
    assert np.median(p_best) > 0.7


def test_overfitting_alarm_needs_a_significant_rise_for_several_checkpoints():
    rising = choose(_run([60, 30, 20, 35, 50, 70], seed=4), Policy(patience=3))
    assert rising.overfitting is not None and rising.overfitting.since_step == 30 and rising.overfitting.rise.significant
    assert choose(_run([60, 30, 20, 35, 50, 70], seed=4), Policy(patience=4)).overfitting is None  # only 3 past the best
    assert choose(_run([60, 30, 20, 21, 20.5, 21], seed=5), Policy(patience=3)).overfitting is None  # flat: no alarm
    assert choose(_run([60, 40, 30, 25, 20], seed=6)).overfitting is None  # still improving
