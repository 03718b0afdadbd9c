"""Exports: `pricer export` (every stored prediction, and the run's results record) and the paginated
`GET /evaluations/{id}/predictions`, read back and compared with what the store holds."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from pricer.app.main import create_app
from pricer.evaluator.cli.main import main
from pricer.evaluator.data import catalogue_split, load_heldout
from pricer.evaluator.service import PricerService
from tests.server import write_items

REPO = "local/tiny-run"


@pytest.fixture
def evaluated(settings, tiny_run, tmp_path):
    """The tiny run's three checkpoints evaluated on 24 held-out items, in the store `settings` names."""
    items = write_items(tmp_path / "items.jsonl", catalogue_split()[1].iloc[:24])
    service = PricerService(settings.model_copy(update={"checkpoint_root": tiny_run.parent, "data": str(items)}))
    return service, service.evaluate(REPO), items


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_export_writes_every_prediction_and_a_results_record_that_names_what_they_depend_on(evaluated, tiny_run, tmp_path, capsys, fmt):
    service, evaluations, items = evaluated
    output, results = tmp_path / f"out.{fmt}", tmp_path / "results.json"
    argv = ["export", str(tiny_run), "--format", fmt, "--output", str(output), "--results", str(results), "--data", str(items), "--json"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == 3 * 24

    table = {"parquet": pd.read_parquet, "csv": pd.read_csv, "jsonl": lambda p: pd.read_json(p, lines=True)}[fmt](output)
    data = load_heldout(str(items))
    assert len(table) == 3 * 24 and table["step"].tolist() == [10] * 24 + [20] * 24 + [30] * 24
    for evaluation in evaluations:
        rows = table[table["commit"] == evaluation.revision.commit]
        assert rows["item"].tolist() == list(range(24)) and rows["text"].tolist() == data.prompts
        np.testing.assert_allclose(rows["truth"], evaluation.truth)
        np.testing.assert_allclose(rows["mean"], evaluation.prices.mean, rtol=1e-9)
        np.testing.assert_allclose(rows["high"], evaluation.prices.high, rtol=1e-9)
        assert (rows["split"] == "test").tolist() == evaluation.test.tolist()

    record = json.loads(results.read_text())
    choice = service.choice(REPO)
    assert record["choice"]["commit"] == choice.chosen.evaluation.revision.commit and record["choice"]["rule"] == "min"
    assert record["data"] == {"name": data.name, "fingerprint": data.fingerprint, "items": 24,
                              "validation": int((~data.test).sum()), "test": int(data.test.sum())}
    assert len(record["base"]["model"]) == 64 and len(record["base"]["tokenizer"]) == 64
    assert record["config"] == {"quantization": "none", "scorer": 1} and record["versions"]["torch"]
    assert set(record["results"]) == {"checkpoint-10", "checkpoint-20", "checkpoint-30"}
    assert record["results"]["checkpoint-20"]["mae"] == pytest.approx(evaluations[1].metrics().mae)


def test_predictions_of_a_job_come_a_page_at_a_time_and_a_job_without_any_is_a_404(evaluated, settings, tiny_run):
    service, _, _ = evaluated
    job, _ = service.submit(REPO, "checkpoint-20")  # evaluated already: done at once
    with TestClient(create_app(service=service)) as client:
        first = client.get(f"/evaluations/{job.job.id}/predictions", params={"limit": 10}).json()
        rest = client.get(f"/evaluations/{job.job.id}/predictions", params={"offset": 10, "limit": 1000}).json()
        assert first["total"] == rest["total"] == 24 and first["revision"] == "checkpoint-20"
        rows = first["rows"] + rest["rows"]
        assert [row["item"] for row in rows] == list(range(24))
        assert [row["argmax"] for row in rows] == job.evaluation.prices.argmax.tolist()
        assert client.get(f"/evaluations/{job.job.id}/predictions", params={"limit": 1001}).status_code == 422
        assert client.get("/evaluations/999/predictions").status_code == 404


def test_predictions_of_a_job_on_data_changed_since_are_refused_not_mislabelled(evaluated, settings, tiny_run, tmp_path):
    service, _, items = evaluated
    job, _ = service.submit(REPO, "checkpoint-10")
    write_items(items, catalogue_split()[1].iloc[24:48])  # the same file name, other items
    restarted = PricerService(settings.model_copy(update={"checkpoint_root": tiny_run.parent, "data": str(items)}))
    with TestClient(create_app(service=restarted)) as client:
        answer = client.get(f"/evaluations/{job.job.id}/predictions")
    assert answer.status_code == 404 and "another version" in answer.json()["detail"]
