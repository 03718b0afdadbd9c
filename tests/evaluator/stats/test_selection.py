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
    earliest, lowest = choose(evaluations, Policy(rule="earliest")), choose(evaluations)  # min: the default
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


# curves measured precisely (300 items, little noise): where each rule must land is known
SHAPES = {
    "u": ([70, 55, 45, 38, 30, 38, 45, 55], {"min": {4}, "curve": {4}, "earliest": {4}}),
    "plateau": ([70, 50, 40, 35, 35, 35, 35, 35], {"min": {3, 4, 5, 6, 7}, "curve": {3, 4, 5, 6, 7}, "earliest": {3}}),
    "late minimum": ([80, 65, 55, 48, 43, 40, 38, 37, 30], {"min": {8}, "curve": {8}, "earliest": {8}}),
}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("rule", ["min", "curve", "earliest"])
def test_each_rule_lands_where_it_should_on_a_precisely_measured_curve(shape, rule):
    curve, expected = SHAPES[shape]
    for seed in range(5):
        choice = choose(_run(curve, seed=seed, noise=5.0), Policy(rule=rule))
        assert choice.chosen.evaluation.id in expected[rule], (shape, rule, seed, choice.chosen.evaluation.id)
        assert choice.best.evaluation.id in expected["min"]


@pytest.mark.parametrize("rule", ["min", "curve", "earliest"])
def test_on_pure_noise_every_rule_picks_one_and_no_checkpoint_stands_out(rule):
    flat = _run([40.0] * 9, seed=8, noise=30.0)
    choice = choose(flat, Policy(rule=rule))
    assert 0 <= choice.chosen.evaluation.id < 9
    assert max(c.p_best for c in choice.candidates) < 0.6 and sum(c.p_best for c in choice.candidates) == pytest.approx(1)
    if rule == "earliest":  # the least trained one not significantly worse: its bias toward early checkpoints
        first = next(c for c in choice.candidates if c is choice.best or not c.versus_best.significant)
        assert choice.chosen is first and choice.chosen.evaluation.id <= choice.best.evaluation.id


def _jittered(curve: list[float], *, seed: int, n: int = 150) -> list:
    """Checkpoints whose own noise is independent from one to the next: what a small validation set adds."""
    return _run(curve, seed=seed, noise=60.0, n=n)


def test_curve_rule_on_known_curves():
    u = [70, 52, 41, 35, 32, 31, 32, 35, 40, 46, 53]  # a U: the bottom at index 5
    chosen = [choose(_jittered(u, seed=s), Policy(rule="curve")).chosen.evaluation.id for s in range(20)]
    assert all(3 <= k <= 7 for k in chosen), chosen  # always near the bottom, never on a slope
    late = [80, 65, 55, 48, 43, 40, 38, 37, 36]  # still improving: the last ones
    assert all(choose(_jittered(late, seed=s), Policy(rule="curve")).chosen.evaluation.id >= 5 for s in range(10))
    flat = [40.0] * 9  # pure noise: a pick, and no checkpoint stands out
    choice = choose(_jittered(flat, seed=0), Policy(rule="curve"))
    assert 0 <= choice.chosen.evaluation.id < 9 and max(c.p_best for c in choice.candidates) < 0.6
    assert abs(sum(c.p_best for c in choice.candidates) - 1) < 1e-9
    assert "a smooth curve fitted" in choice.statement


def test_the_curve_lands_nearer_the_true_best_than_the_plain_minimum_when_only_the_measurement_jitters():
    u = [70, 55, 45, 39, 35, 33, 32, 32.5, 34, 37, 41, 46, 52]

    def regret(rule: str, seed: int) -> float:
        return u[choose(_jittered(u, seed=seed), Policy(rule=rule)).chosen.evaluation.id] - min(u)

    seeds = range(40)
    assert np.mean([regret("curve", s) for s in seeds]) < np.mean([regret("min", s) for s in seeds])


def test_the_fitted_curve_keeps_a_level_follows_precise_data_and_smooths_noisy_data():
    from pricer.evaluator.stats.selection import curve_smoother

    rng = np.random.default_rng(0)
    truth = np.array([50.0, 40, 33, 30, 31, 35, 41])
    for noise, close in ((0.01, 0.05), (8.0, None)):
        shared = rng.normal(0, noise, (2000, 1))  # what every checkpoint's measurement shares (the same items)
        resampled = truth + shared + rng.normal(0, noise / 2, (2000, truth.size))
        point = truth + rng.normal(0, noise / 2, truth.size)
        smoother = curve_smoother(point, resampled)
        assert np.allclose(smoother @ np.ones(truth.size), 1)  # a flat curve stays flat, at its level
        if close:  # measured precisely: the curve goes through the points
            assert np.abs(smoother @ point - point).max() < close
        else:  # measured noisily: the curve is smoother than the points
            assert np.abs(np.diff(smoother @ point, 2)).sum() < np.abs(np.diff(point, 2)).sum()


def _estimated(truth: np.ndarray, guesses: dict[str, np.ndarray], test: np.ndarray, k: int = 0, low=None, high=None):
    prices = ItemPrices(p_number=np.ones(truth.size), low=low, high=high, **guesses)
    revision = Revision("run", f"checkpoint-{10 * (k + 1)}", f"c{k}", step=10 * (k + 1))
    return Evaluation(k, revision, "b", "d", "fp", "cfg", truth, prices, test, 0.0, datetime.now())


def test_auto_chooses_the_estimator_on_validation_items_only_and_reports_each():
    rng = np.random.default_rng(7)
    n = 400
    truth = rng.uniform(20, 400, n)
    test = np.arange(n) % 2 == 0
    near, far = truth + rng.normal(0, 5, n), truth + rng.normal(0, 60, n)
    # on validation items the median is near the truth; on test items the argmax is: test items must not decide
    guesses = {
        "argmax": np.where(test, near, far),
        "median": np.where(test, far, near),
        **{name: far for name in ("mean", "log", "hit")},
    }
    runs = [_estimated(truth, guesses, test, k) for k in range(3)]
    choice = choose(runs, Policy(estimator="auto"), test_mask=test)
    assert choice.policy.estimator == "median" and set(choice.estimators) == {"argmax", "mean", "median", "log", "hit"}
    assert choice.estimators["median"] == min(choice.estimators.values()) == choice.chosen.validation.mae
    assert choice.test.mae == pytest.approx(np.abs(far - truth)[test].mean())  # the honest, bad test figure
    older = [_estimated(truth, {"argmax": near, "mean": far}, test, k) for k in range(2)]  # stored before the estimates
    assert set(choose(older, Policy(estimator="auto"), test_mask=test).estimators) == {"argmax", "mean"}


def test_an_interval_from_a_calibrated_model_covers_about_80_percent_of_test_prices():
    rng = np.random.default_rng(3)
    n = 4000
    centre = rng.uniform(50, 500, n)
    truth = centre * np.exp(rng.normal(0, 0.3, n))  # the model's distribution is the truth's: calibrated
    z = 1.2815515655446004  # the standard normal's 90th percentile
    low, high = centre * np.exp(-0.3 * z), centre * np.exp(0.3 * z)
    test = np.arange(n) % 2 == 0
    run = _estimated(truth, {"argmax": centre, "mean": centre}, test, low=low, high=high)
    coverage = choose([run], test_mask=test).coverage
    assert coverage == pytest.approx(0.8, abs=0.03)
    too_narrow = _estimated(truth, {"argmax": centre, "mean": centre}, test, low=centre * 0.98, high=centre * 1.02)
    assert choose([too_narrow], test_mask=test).coverage < 0.2  # an overconfident model shows as such
    assert choose([_estimated(truth, {"argmax": centre, "mean": centre}, test)], test_mask=test).coverage is None


def test_without_test_items_the_out_of_sample_figure_is_cross_fitted_on_halves_never_reused():
    from pricer.evaluator.stats.selection import halves

    for fit, held in halves(101, repeats=4, seed=2):
        assert not set(fit) & set(held) and len(fit) + len(held) == 101  # the choice never sees what scores it
    runs = _run([60, 40, 30, 35, 50], seed=1)
    choice = choose(runs)  # no test mask: every item chooses
    cf = choice.cross_fitted
    assert choice.test is None and cf.folds == 20 and cf.low <= cf.value <= cf.high
    assert cf.value >= choice.chosen.validation.mae - 5  # about the chosen one's error, without its optimism
    # on pure noise the in-sample minimum is optimistic and the cross-fitted figure is not
    flat = _run([40.0] * 8, seed=5)
    noisy = choose(flat)
    truth = np.mean([e.metrics().mae for e in flat])
    assert noisy.chosen.validation.mae < truth <= noisy.cross_fitted.value + 1.0
    assert choose(runs, test_mask=np.arange(N) % 3 == 0).cross_fitted is None  # a test part: that figure instead


def test_auto_without_test_items_chooses_the_estimator_inside_each_cross_fitting_fold():
    rng = np.random.default_rng(11)
    n = 300
    truth = rng.uniform(20, 400, n)
    noisy = {name: truth + rng.normal(0, 40, n) for name in ("argmax", "mean", "median", "log", "hit")}
    runs = [_estimated(truth, noisy, np.zeros(n, dtype=bool), k) for k in range(3)]
    choice = choose(runs, Policy(estimator="auto"))
    cf = choice.cross_fitted
    assert cf is not None and cf.folds == 20 and len(choice.estimators) == 5
    # five equally good estimators: the in-sample winner is lucky, the nested cross-fitted figure is not
    assert choice.chosen.validation.mae <= cf.value
