"""Runs compared: two real tiny runs evaluated on the same items, their checkpoints chosen among together, through the
facade, `pricer compare` and `GET /projects/compare`."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest

from pricer.evaluator.cli.main import main
from pricer.evaluator.data import catalogue_split, heldout_from_frame
from pricer.evaluator.errors import InvalidRequest, NotEvaluated
from pricer.evaluator.service import PricerService
from pricer.evaluator.settings import Settings
from pricer.evaluator.stats.comparison import compare
from pricer.evaluator.stats.selection import Policy, choose
from pricer.trainer import preset, train
from tests.server import write_items

RUNS = ["local/run-a", "local/run-b"]


@pytest.fixture(scope="module")
def project(tiny_base, tiny_run, tmp_path_factory):
    """Two runs side by side, each evaluated on the same 32 held-out items: run-a is the tiny run (checkpoint-10, -20,
    -30), run-b a second one trained with another learning rate and seed (checkpoint-20, -40). A third, run-c, is
    evaluated on other items only."""
    folder = tmp_path_factory.mktemp("project")
    shutil.copytree(tiny_run, folder / "run-a")
    items = heldout_from_frame(catalogue_split()[0].iloc[:240], name="train")
    train(tiny_base, items, folder / "run-b", preset("tiny", max_steps=40, save_steps=20, learning_rate=1e-3, seed=1))
    shutil.copytree(tiny_run / "checkpoint-10", folder / "run-c" / "checkpoint-10")
    heldout = write_items(folder / "heldout.jsonl", catalogue_split()[1].iloc[:32])
    other = write_items(folder / "other.jsonl", catalogue_split()[1].iloc[32:48])
    settings = Settings(
        home=folder / "home",
        batch_size=8,
        device="cpu",
        checkpoint_root=folder,
        data=str(heldout),
        base_models=["*/*", str(tmp_path_factory.getbasetemp())],
    )
    service = PricerService(settings)  # not started: the CLI's way, evaluating in this thread
    for repo in RUNS:
        service.evaluate(repo)
    PricerService(settings.model_copy(update={"data": str(other)})).evaluate("local/run-c")
    return service


def test_each_run_keeps_its_own_choice_and_the_pool_is_ranked_as_one_choice_over_every_checkpoint(project):
    service = project
    comparison = service.compare(RUNS)
    assert list(comparison.runs) == RUNS and comparison.policy == service.policy  # min, argmax: the defaults
    for repo in RUNS:  # each run's pick is the one `best` gives for it alone, evidence and all
        own, alone = comparison.runs[repo], service.choice(repo)
        assert own.chosen.evaluation.id == alone.chosen.evaluation.id and own.chosen.p_best == alone.chosen.p_best
        assert [c.evaluation.id for c in own.candidates] == [c.evaluation.id for c in alone.candidates]

    pool = [c.evaluation for repo in RUNS for c in service.choice(repo).candidates]
    pooled = choose(pool, service.policy, test_mask=pool[0].test)  # the same machinery over all five checkpoints
    assert len(comparison.ranking) == 5 and comparison.chosen.evaluation.id == pooled.chosen.evaluation.id
    by_id = {c.evaluation.id: c for c in pooled.candidates}
    for entry in comparison.ranking:
        assert entry.candidate.p_best == by_id[entry.evaluation.id].p_best
        assert entry.candidate.versus_best == by_id[entry.evaluation.id].versus_best
        assert entry.evaluation.revision.source.endswith(entry.run.removeprefix("local/"))
    assert sum(e.candidate.p_best for e in comparison.ranking) == pytest.approx(1.0)
    maes = [e.candidate.validation.mae for e in comparison.ranking]
    assert maes == sorted(maes) and comparison.best is comparison.ranking[0] is comparison.chosen
    assert comparison.chosen.evaluation.id == comparison.runs[comparison.chosen.run].chosen.evaluation.id
    test = comparison.chosen.evaluation.metrics(part="test")  # the out-of-sample figure: the chosen one's test items
    assert comparison.test.n == test.n == int(pool[0].test.sum()) and comparison.test.mae == pytest.approx(test.mae)


@pytest.mark.parametrize("rule", ["curve", "earliest"])
def test_curve_and_earliest_run_within_each_run_and_take_one_of_the_runs_picks(project, rule):
    comparison = project.compare(RUNS, rule=rule)
    picks = {repo: project.choice(repo, rule=rule).chosen.evaluation.id for repo in RUNS}
    assert {repo: choice.chosen.evaluation.id for repo, choice in comparison.runs.items()} == picks
    assert comparison.chosen.evaluation.id == picks[comparison.chosen.run]
    assert "within each run" in comparison.statement and "across runs" in comparison.statement
    if rule == "earliest":  # no other pick that is not significantly worse than the best has fewer steps
        others = [e for e in comparison.ranking if e.evaluation.id in picks.values() and e is not comparison.chosen]
        assert all(
            e.candidate.versus_best.low > 0 or e.evaluation.revision.step >= comparison.chosen.evaluation.revision.step
            for e in others
        )


def test_runs_on_other_items_or_none_or_one_run_are_clear_errors(project):
    with pytest.raises(
        NotEvaluated, match=r"local/run-c: nothing is evaluated yet on heldout\.jsonl \(only on other items: other\.jsonl"
    ):
        project.compare(["local/run-a", "local/run-c"])
    (project.settings.checkpoint_root / "run-d" / "checkpoint-10").mkdir(parents=True, exist_ok=True)
    with pytest.raises(NotEvaluated, match=r"local/run-d: nothing is evaluated yet on heldout\.jsonl$"):
        project.compare(["local/run-a", "local/run-d"])
    with pytest.raises(InvalidRequest, match="two runs or more"):
        project.compare(["local/run-a", "local/run-a"])
    a, b = (project.choice(repo).candidates for repo in RUNS)
    moved = [replace(c.evaluation, truth=c.evaluation.truth + 1, dataset_fingerprint="other") for c in b]
    with pytest.raises(InvalidRequest, match="different items"):  # the core refuses them too, whoever calls it
        compare({"a": [c.evaluation for c in a], "b": moved}, Policy())


def test_pricer_compare_prints_the_api_schema_with_json_and_a_table_without(project, capsys, tmp_path):
    root, db = project.settings.checkpoint_root, project.settings.store_url
    argv = ["compare", str(root / "run-a"), str(root / "run-b"), "--data", project.settings.data, "--db", db]
    assert main([*argv, "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    comparison = project.compare(RUNS)
    assert answer["repos"] == RUNS and answer["chosen"]["commit"] == comparison.chosen.evaluation.revision.commit
    assert answer["chosen"]["repo"] == comparison.chosen.run and [r["rank"] for r in answer["ranking"]] == [1, 2, 3, 4, 5]
    assert [(r["repo"], r["commit"]) for r in answer["ranking"]] == [
        (e.run, e.evaluation.revision.commit) for e in comparison.ranking
    ]
    assert [r["chosen"]["commit"] for r in answer["runs"]] == [
        c.chosen.evaluation.revision.commit for c in comparison.runs.values()
    ]
    assert answer["test"]["metrics"]["n"] == comparison.test.n and answer["rule"] == comparison.statement

    assert main([*argv, "--rule", "earliest"]) == 0
    out = capsys.readouterr().out
    assert "across runs, of those not significantly worse" in out and "each run's own choice:" in out
    assert out.count("local/run-a: checkpoint-") == 1 and "never used to choose" in out
    table = out.split("(P(best) and vs best: over them all)\n")[1].splitlines()
    assert len(table) == 6 and table[0].split()[:3] == ["#", "run", "revision"] and sum("chosen" in row for row in table) == 1

    elsewhere = tmp_path / "run-e"
    shutil.copytree(root / "run-c", elsewhere)
    assert main(["compare", str(root / "run-a"), str(elsewhere), "--db", db, "--json"]) == 1
    assert "must lie in one folder" in json.loads(capsys.readouterr().err)["detail"]
    assert main(["compare", str(root / "run-a"), str(root / "run-c"), "--data", project.settings.data, "--db", db]) == 1
    assert "only on other items: other.jsonl" in capsys.readouterr().err


def test_the_api_and_the_dashboard_compare_the_runs(project):
    from fastapi.testclient import TestClient

    from pricer.app.main import create_app

    for repo in RUNS:  # jobs for the stored evaluations: the service then lists both repos
        for checkpoint in project.choice(repo).candidates:
            project.submit(repo, checkpoint.evaluation.revision.revision)
    comparison = project.compare(RUNS)
    with TestClient(create_app(project.settings)) as client:
        answer = client.get("/projects/compare", params={"repo": RUNS})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["chosen"]["commit"] == comparison.chosen.evaluation.revision.commit and body["dataset"] == "heldout.jsonl"
        assert [r["repo"] for r in body["runs"]] == RUNS and len(body["ranking"]) == 5
        assert np.isclose(body["chosen"]["p_best"], comparison.chosen.candidate.p_best)
        by_rule = client.get("/projects/compare", params={"repo": RUNS, "rule": "earliest"}).json()
        assert "not significantly worse" in by_rule["rule"]

        missing = client.get("/projects/compare", params={"repo": ["local/run-a", "local/run-c"]})
        assert missing.status_code == 404 and "only on other items" in missing.json()["detail"]
        assert client.get("/projects/compare", params={"repo": ["local/run-a"]}).status_code == 422
        assert client.get("/projects/compare", params={"repo": ["local/run-a", "local/run-a"]}).status_code == 422
        assert client.get("/projects/compare", params={"repo": ["local/run-a", "../etc"]}).status_code == 422

        page = client.get("/")
        assert page.status_code == 200 and 'id="compare-link" href="dashboard/compare?repo=' in page.text
        html = client.get("/dashboard/compare", params={"repo": RUNS}).text
        overlay = html.split('<figure id="overlay">')[1].split("</figure>")[0]
        assert all(f'<g id="run-{k}">' in overlay for k in (1, 2)) and '<g id="chosen">' in overlay
        assert f'<span id="chosen-run">{comparison.chosen.run}</span>' in html
        assert html.split('<table id="pooled">')[1].count("<tr class=") == 5
        refused = client.get("/dashboard/compare", params={"repo": ["local/run-a", "local/run-c"]})
        assert refused.status_code == 404 and 'id="compare-error"' in refused.text and "only on other items" in refused.text
        form = client.get("/dashboard/compare")
        assert form.status_code == 200 and 'id="overlay"' not in form.text and 'value="local/run-b"' in form.text
