import json

import numpy as np
import pytest

from pricer.evaluator.cli.main import main
from pricer.evaluator.stats.metrics import colors, score
from tests.conftest import REAL_DATA

# The course's published table for course_test250_with_predictions.jsonl (README of the data)
COURSE_TABLE = {
    "random_pricer": (340.74, 1.72, 11.6),
    "constant_pricer": (145.51, 1.22, 16.8),
    "linear_regression_pricer": (139.34, 1.17, 15.6),
    "bow_lr_pricer": (113.60, 0.99, 24.8),
    "word2vec_lr_pricer": (115.47, 1.01, 27.6),
    "svr_pricer": (112.52, 0.93, 26.4),
    "random_forest_pricer": (97.11, 0.88, 34.0),
    "human_pricer": (126.55, 1.00, 32.0),
    "gpt_4o_mini": (79.58, 0.59, 52.0),
    "gpt_4o_frontier": (75.92, 0.75, 58.0),
    "claude_3_point_5_sonnet": (100.83, 0.60, 50.8),
    "gpt_fine_tuned": (91.45, 0.68, 44.0),
}


@pytest.mark.parametrize("predictor", sorted(COURSE_TABLE))
def test_pricer_score_reproduces_the_course_table(predictor, capsys):
    code = main(
        ["score", str(REAL_DATA / "course_test250_with_predictions.jsonl"), "--guess-field", f"predictions.{predictor}", "--json"]
    )
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    mae, rmsle, hits = COURSE_TABLE[predictor]
    assert result["n"] == 250
    assert round(result["mae"], 2) == mae
    assert round(result["rmsle"], 2) == rmsle
    assert round(result["hit_rate"] * 100, 1) == hits
    for name in ("mae", "rmsle", "hit_rate"):
        low, high = result["intervals"][name]
        assert low <= result[name] <= high and low < high


def test_colors_follow_the_course_thresholds():
    truth = np.array([100.0, 100.0, 1000.0, 100.0, 10.0])
    guess = np.array([139.0, 179.0, 1190.0, 181.0, 50.0])
    assert colors(truth, guess) == ["green", "orange", "green", "red", "orange"]


def test_rmsle_counts_negative_guesses_as_zero():
    assert score(np.array([9.0]), np.array([-5.0])).rmsle == pytest.approx(np.log(10))


def test_bootstrap_is_reproducible_and_interval_narrows_with_n():
    rng = np.random.default_rng(1)
    truth = rng.uniform(5, 500, 2000)
    guess = truth * rng.lognormal(0, 0.5, 2000)
    assert score(truth, guess).intervals == score(truth, guess).intervals
    small, large = score(truth[:100], guess[:100]), score(truth, guess)
    assert np.diff(large.intervals["mae"])[0] < np.diff(small.intervals["mae"])[0]


def test_score_rejects_bad_guess_field(capsys):
    code = main(["score", str(REAL_DATA / "course_test250_with_predictions.jsonl"), "--guess-field", "predictions.nope"])
    assert code == 1  # pricer's own error (a usage error is 2)
    assert "no field 'predictions.nope'" in capsys.readouterr().err
