"""End to end on real items: train a tiny adapter on appliances, evaluate its checkpoints on held-out items."""

import json

import numpy as np
import pandas as pd
import pytest

from pricer.evaluator.cli.main import main
from pricer.evaluator.data import load_heldout
from pricer.evaluator.evaluate import Evaluator
from pricer.evaluator.settings import Settings
from pricer.evaluator.stats.metrics import score
from pricer.trainer import preset, train
from tests.conftest import REAL_DATA

APPLIANCES = REAL_DATA / "appliances_lite_2000.jsonl"


@pytest.fixture(scope="module")
def appliance_run(tiny_base, tmp_path_factory):
    frame = pd.read_json(APPLIANCES, lines=True)
    folder = tmp_path_factory.mktemp("appliances")
    frame.iloc[:200].to_json(folder / "train.jsonl", orient="records", lines=True)
    frame.iloc[1900:].to_json(folder / "heldout.jsonl", orient="records", lines=True)
    config = preset("tiny", max_steps=40, save_steps=20, batch_size=4)
    run = train(tiny_base, load_heldout(folder / "train.jsonl"), folder / "run", config).output
    return run, folder / "heldout.jsonl"


def test_stored_predictions_and_reported_metrics_agree(appliance_run, capsys, tmp_path):
    run, heldout = appliance_run
    assert main(["evaluate", str(run), "--all", "--data", str(heldout), "--json"]) == 0
    reported = {entry["revision"]: entry for entry in json.loads(capsys.readouterr().out)}
    assert set(reported) == {"checkpoint-20", "checkpoint-40"}

    items = load_heldout(heldout)
    for evaluation in Evaluator(Settings()).store.evaluations(str(run)):
        entry = reported[evaluation.revision.revision]
        np.testing.assert_array_equal(evaluation.truth, items.prices)  # the real prices, item by item
        validation = ~items.test
        assert evaluation.n == 100 and entry["n"] == validation.sum() and 0 < validation.sum() < 100
        np.testing.assert_array_equal(evaluation.test, items.test)
        assert np.all((evaluation.prices.argmax >= 0) & (evaluation.prices.argmax <= 999))
        recomputed = score(evaluation.truth[validation], evaluation.prices.argmax[validation])  # ranking uses validation only
        assert (recomputed.mae, recomputed.rmsle, recomputed.hit_rate) == (entry["mae"], entry["rmsle"], entry["hit_rate"])

        # the stored predictions, exported and scored as a predictions file, give the same figures
        exported = tmp_path / f"{evaluation.revision.revision}.jsonl"
        pd.DataFrame({"price": evaluation.truth[validation], "guess": evaluation.prices.argmax[validation]}).to_json(
            exported, orient="records", lines=True
        )
        assert main(["score", str(exported), "--guess-field", "guess", "--json"]) == 0
        scored = json.loads(capsys.readouterr().out)
        assert scored["mae"] == pytest.approx(entry["mae"]) and scored["hit_rate"] == pytest.approx(entry["hit_rate"])
