"""The service over HTTP: a real `pricer serve` process on loopback, real checkpoints, real jobs."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from pricer.evaluator.checkpoints.adapters import read_adapter
from pricer.evaluator.checkpoints.sources import LocalRun
from pricer.evaluator.data import build_prompt, catalogue_split
from pricer.evaluator.scoring import PriceModel
from pricer.evaluator.store.evaluations import Store
from pricer.evaluator.store.jobs import JobQueue
from tests.server import API_TOKEN, ServerProcess, validation_size, write_items
from tests.waiting import until

REPO = "local/tiny-run"
TOKEN = API_TOKEN
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DESCRIPTIONS = [
    "Stainless steel 5-quart stand mixer, 10 speeds",
    "Cordless drill, 20V, two batteries",
    "Garden hose, 50 ft",
]


def _evaluate(server: ServerProcess, revision: str, repo: str = REPO) -> dict:
    response = server.client.post("/evaluate", json={"repo": repo, "revision": revision}, headers=AUTH)
    assert response.status_code in (200, 202), response.text
    return response.json()


def test_evaluate_two_revisions_then_best_checkpoint_and_predict(make_server):
    with make_server().start() as server:
        client = server.client
        assert client.post("/predict", json={"description": DESCRIPTIONS[0]}).status_code == 503  # nothing evaluated yet
        assert "nothing is evaluated" in client.get("/best-checkpoint", params={"repo": REPO}).json()["detail"]

        queued = [_evaluate(server, revision) for revision in ("checkpoint-10", "checkpoint-30")]
        assert [job["status"] for job in queued] == ["queued", "queued"] and queued[0]["id"] != queued[1]["id"]
        assert all(len(job["commit"]) == 64 for job in queued)
        done = [server.wait_for(job["id"]) for job in queued]
        assert [job["status"] for job in done] == ["done", "done"], done
        assert [job["step"] for job in done] == [10, 30] and all(job["epoch"] > 0 for job in done)
        for job in done:
            assert job["metrics"]["n"] == validation_size(server.env["PRICER_DATA"]) and job["error"] is None
            low, high = job["intervals"]["mae"]
            assert low <= job["metrics"]["mae"] <= high

        again = client.post("/evaluate", json={"repo": REPO, "revision": "checkpoint-10"}, headers=AUTH)
        assert again.status_code == 200 and again.json()["id"] == done[0]["id"]  # the stored result, no new work
        assert again.json()["metrics"] == done[0]["metrics"]

        listing = client.get("/evaluations", params={"repo": REPO}).json()
        ranking = listing["ranking"]
        assert [r["metrics"]["mae"] for r in ranking] == sorted(job["metrics"]["mae"] for job in done)
        assert [job["id"] for job in listing["jobs"]] == [job["id"] for job in done]
        best = client.get("/best-checkpoint", params={"repo": REPO, "rule": "earliest"}).json()
        assert best["rule"].startswith("the earliest checkpoint") and best["evaluated"] == 2
        assert {best["revision"], best["runner_up"]["revision"]} == {"checkpoint-10", "checkpoint-30"}
        lowest = client.get("/best-checkpoint", params={"repo": REPO}).json()  # the default rule: the lowest
        assert lowest["rule"] == "the checkpoint with the lowest validation average absolute error"
        assert lowest["revision"] == ranking[0]["revision"] and lowest["metrics"] == ranking[0]["metrics"]
        # the rule takes the lowest error, or an earlier checkpoint that is not significantly worse
        assert best["revision"] == lowest["revision"] or (
            best["step"] < lowest["step"] and not best["versus_best"]["significant"]
        )
        assert sum(c["p_best"] for c in best["candidates"]) == pytest.approx(1.0)
        n_test = 48 - validation_size(server.env["PRICER_DATA"])
        assert best["test"]["metrics"]["n"] == n_test and 0 < n_test < 48  # out of sample: the test items only
        assert client.get("/best-checkpoint").json()["commit"] == lowest["commit"]  # the repo the service serves

        server.wait_served(lowest["commit"])
        one = client.post("/predict", json={"description": DESCRIPTIONS[0]}).json()
        batch = client.post("/predict", json={"descriptions": DESCRIPTIONS, "repo": REPO}).json()
        assert (one["revision"], one["commit"], batch["commit"]) == (lowest["revision"], lowest["commit"], lowest["commit"])
        assert len(batch["prices"]) == 3 and batch["prices"][0] == one["price"] and one["price"] >= 0
        assert 0 <= one["interval"][0] <= one["interval"][1] <= 999 and batch["intervals"][0] == one["interval"]
        auto = client.get("/best-checkpoint", params={"repo": REPO, "estimator": "auto"}).json()  # chosen on validation
        assert set(auto["estimators"]) == {"argmax", "mean", "median", "log", "hit"} and auto["estimator"] in auto["estimators"]
        assert auto["metrics"]["mae"] == min(auto["estimators"].values()) and 0 <= auto["coverage"] <= 1
        health = client.get("/health").json()
        assert health["jobs"]["done"] == 2 and health["jobs"]["queued"] == 0 and health["served"]["commit"] == lowest["commit"]


def test_bad_input_gets_a_clear_4xx_and_the_service_keeps_answering(make_server, tiny_run, tmp_path):
    root = tiny_run.parent
    pickled = root / "pickled-run" / "checkpoint-1"
    pickled.mkdir(parents=True, exist_ok=True)
    (pickled / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "base_model_name_or_path": "x"}))
    (pickled / "adapter_model.bin").write_bytes(b"\x80\x04not really a pickle")
    corrupt = root / "corrupt-run" / "checkpoint-1"
    corrupt.mkdir(parents=True, exist_ok=True)
    (corrupt / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "base_model_name_or_path": "x"}))
    (corrupt / "adapter_model.safetensors").write_bytes(b"garbage" * 10)

    with make_server().start() as server:
        client = server.client

        def evaluate(body, headers=AUTH, **kwargs):
            return client.post("/evaluate", json=body, headers=headers, **kwargs)

        ok = {"repo": REPO, "revision": "checkpoint-10"}
        assert evaluate(ok, headers={}).status_code == 401
        assert evaluate(ok, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert TOKEN not in evaluate(ok, headers={"Authorization": "Bearer wrong"}).text
        for repo in ("local/../etc", "../../etc/passwd", "/etc", "local/", "local/a/b", "org/name/extra", "a" * 300, "local/.."):
            response = evaluate({"repo": repo, "revision": "checkpoint-10"})
            assert response.status_code == 422, (repo, response.text)
        assert evaluate({"repo": "local/no-such-run", "revision": "checkpoint-10"}).status_code == 404
        for revision in ("checkpoint-999", "../tiny-run/checkpoint-10", "main"):
            response = evaluate({"repo": REPO, "revision": revision})
            assert response.status_code == 404 and "checkpoint" in response.json()["detail"], (revision, response.text)
        assert "pickled" in evaluate({"repo": "local/pickled-run", "revision": "checkpoint-1"}).json()["detail"]
        assert evaluate({"repo": "local/corrupt-run", "revision": "checkpoint-1"}).status_code == 422
        assert evaluate({"repo": REPO, "revision": "checkpoint-10", "dataset": "nope"}).status_code == 404
        malformed = client.post("/evaluate", content=b'{"repo": ', headers={**AUTH, "Content-Type": "application/json"})
        assert malformed.status_code == 422
        assert evaluate({"revision": "checkpoint-10"}).status_code == 422

        for body in ({"description": ""}, {"description": "   "}, {"description": "x" * 1_000_000}, {}, {"descriptions": []}):
            response = client.post("/predict", json=body)
            assert response.status_code == 422, (str(body)[:60], response.text[:200])
        assert client.post("/predict", json={"descriptions": ["a thing"] * 65}).status_code == 422
        assert client.post("/predict", content=b"x" * 3_000_000, headers={"Content-Type": "application/json"}).status_code == 413
        assert client.get("/evaluations/987654").status_code == 404
        assert client.get("/evaluations/abc").status_code == 422
        assert client.get("/best-checkpoint", params={"repo": "local/no-such-run"}).status_code == 404
        assert client.get("/best-checkpoint", params={"repo": REPO, "metric": "bogus"}).status_code == 422

        assert evaluate(ok).status_code == 202  # and it still works
        assert server.wait_for(evaluate(ok).json()["id"])["status"] == "done"
        assert client.get("/health").status_code == 200 and server.process.poll() is None
    assert TOKEN not in server.log.read_text()


def test_a_job_cut_off_by_a_crash_runs_again_after_restart_and_completes_once(make_server, tmp_path, tiny_run):
    many = write_items(tmp_path / "many.jsonl", catalogue_split()[0].iloc[:600])
    env = {"PRICER_DATA": str(many), "PRICER_BATCH_SIZE": "1"}  # one item per pass: a job long enough to kill
    server = make_server(**env).start()
    job = _evaluate(server, "checkpoint-20")
    assert server.wait_for(job["id"], statuses=("running", "done"))["status"] == "running"
    server.kill()

    store = Store(f"sqlite:///{tmp_path / 'service.db'}")
    assert JobQueue(store).get(job["id"]).status == "running"  # the dead process left it so
    with make_server(**env).start() as restarted:
        done = restarted.wait_for(job["id"], timeout=300)
        assert done["status"] == "done" and done["metrics"]["n"] == validation_size(many)
        assert [j["id"] for j in restarted.client.get("/evaluations", params={"repo": REPO}).json()["jobs"]] == [job["id"]]
    assert JobQueue(store).get(job["id"]).attempts == 2
    assert len(store.evaluations(str(tiny_run.resolve()))) == 1  # one result


def test_predictions_in_flight_while_the_best_adapter_changes_each_name_the_one_that_answered(make_server, tiny_run):
    model = PriceModel(str(read_adapter(tiny_run / "checkpoint-10").base_model), device="cpu")
    prompts = [build_prompt(d) for d in DESCRIPTIONS]
    expected = {}
    for revision in LocalRun(tiny_run).revisions():
        name = model.load_adapter(read_adapter(tiny_run / revision.revision), revision.revision)
        expected[revision.commit] = model.price(prompts, adapter=name, batch_size=len(prompts)).argmax.tolist()
        model.release_adapter(name)

    with make_server().start() as server:
        first = server.wait_for(_evaluate(server, "checkpoint-10")["id"])
        server.wait_served(first["commit"])
        answers, failures, stop = [], [], threading.Event()

        def client_loop() -> None:
            while not stop.is_set():
                response = server.client.post("/predict", json={"descriptions": DESCRIPTIONS})
                (answers if response.status_code == 200 else failures).append(response)

        threads = [threading.Thread(target=client_loop) for _ in range(4)]
        for thread in threads:
            thread.start()
        try:
            later = [server.wait_for(_evaluate(server, r)["id"]) for r in ("checkpoint-20", "checkpoint-30")]
            best = server.client.get("/best-checkpoint").json()
            server.wait_served(best["commit"])
            time.sleep(0.5)
        finally:
            stop.set()
            for thread in threads:
                thread.join()

    assert not failures, [f.text for f in failures[:3]]
    answered = [response.json() for response in answers]
    for answer in answered:  # every answer comes wholly from the checkpoint it names
        assert answer["prices"] == expected[answer["commit"]], answer
    assert {a["commit"] for a in answered} >= {first["commit"], best["commit"]}
    if best["commit"] != first["commit"]:
        assert np.mean([a["commit"] == best["commit"] for a in answered[-5:]]) == 1.0
    assert all(job["status"] == "done" for job in later)


def test_with_racing_on_a_new_checkpoint_far_worse_than_the_leader_is_stopped_shown_partial_and_completed_on_request(
    make_server, broken_run, tmp_path
):
    repo = f"local/{broken_run.name}"
    items = write_items(tmp_path / "heldout-200.jsonl", catalogue_split()[1].iloc[:200])  # enough items to stop one early
    with make_server(PRICER_RACE="1", PRICER_CHECKPOINT_ROOT=str(broken_run.parent), PRICER_DATA=str(items)).start() as server:
        client = server.client
        done = {}
        for revision in ("checkpoint-10", "checkpoint-20", "checkpoint-30", "checkpoint-40"):  # one at a time: a leader each
            done[revision] = server.wait_for(_evaluate(server, revision, repo)["id"])
            assert done[revision]["status"] == "done", done[revision]
        stopped = done["checkpoint-40"]
        assert stopped["complete"] is False and stopped["metrics"] is None  # never reported as complete
        low, high = stopped["stopped"]["interval"]
        assert stopped["stopped"]["metric"] == "mae" and 0 < low <= stopped["stopped"]["difference"] <= high
        assert stopped["stopped"]["after_round"] >= 1 and 0 < stopped["stopped"]["items_scored"] < validation_size(str(items))

        listing = client.get("/evaluations", params={"repo": repo}).json()
        assert "checkpoint-40" not in [r["revision"] for r in listing["ranking"]]
        (dropped,) = [d for d in listing["dropped"] if d["revision"] == "checkpoint-40"]
        assert dropped["stopped"] == stopped["stopped"] and dropped["evaluation_id"] > 0
        assert 0 < listing["racing"]["saved"] < 1 and listing["racing"]["scorings"] < listing["racing"]["full_scorings"]
        best = client.get("/best-checkpoint", params={"repo": repo}).json()
        assert best["revision"] != "checkpoint-40" and best["evaluated"] == len(listing["ranking"])
        page = client.get("/", params={"repo": repo}).text  # the dashboard marks it apart from the ranking
        ranking_table = page.split('id="ranking"')[1].split("</table>")[0]
        stopped_table = page.split('id="stopped"')[1].split("</table>")[0]
        assert 'data-revision="checkpoint-40"' not in ranking_table and 'data-revision="checkpoint-40"' in stopped_table

        # a watch leaves the stopped checkpoint as it is: its poll queues nothing
        jobs_before = len(listing["jobs"])
        assert client.post("/watches", json={"repo": repo, "interval_seconds": 3600}, headers=AUTH).status_code == 202
        until(lambda: client.get(f"/watches/{repo}").json()["last_polled"], "the watch to poll")
        assert len(client.get("/evaluations", params={"repo": repo}).json()["jobs"]) == jobs_before

        # asking for it again completes it
        completed = server.wait_for(_evaluate(server, "checkpoint-40", repo)["id"])
        assert completed["id"] != stopped["id"] and completed["complete"] is True and completed["stopped"] is None
        assert completed["metrics"]["n"] == validation_size(str(items))
        listing = client.get("/evaluations", params={"repo": repo}).json()
        assert "checkpoint-40" in [r["revision"] for r in listing["ranking"]]
        assert "checkpoint-40" not in [d["revision"] for d in listing["dropped"]]
