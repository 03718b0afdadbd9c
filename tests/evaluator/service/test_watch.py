"""Automatic choice over HTTP: a watched run gains checkpoints; the served adapter follows the choice."""

from __future__ import annotations

import shutil
import time

from tests.server import API_TOKEN
from tests.waiting import until

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


def _add_checkpoint(source, run, name: str) -> None:
    # as the Trainer does: write elsewhere, then rename, so a poll never sees half a checkpoint
    shutil.copytree(source / name, run / f"tmp-{name}")
    (run / f"tmp-{name}").rename(run / name)


def test_a_watched_run_is_evaluated_once_per_checkpoint_as_they_appear(make_server, tiny_run, tmp_path):
    runs = tmp_path / "runs"
    run = runs / "growing"
    run.mkdir(parents=True)
    _add_checkpoint(tiny_run, run, "checkpoint-10")
    env = {"PRICER_CHECKPOINT_ROOT": str(runs), "PRICER_WATCH_INTERVAL": "0.3", "PRICER_REPO": "local/growing"}
    with make_server(**env).start() as server:
        client = server.client

        def watch() -> dict:
            return client.get("/watches/local/growing").json()

        assert client.post("/watches", json={"repo": "local/growing"}).status_code == 401
        assert client.post("/watches", json={"repo": "../etc"}, headers=AUTH).status_code == 422
        assert client.post("/watches", json={"repo": "local/growing", "interval_seconds": 0.3}, headers=AUTH).status_code == 202
        until(lambda: watch()["jobs"]["done"] == 1, "the first checkpoint evaluated")
        first = client.get("/best-checkpoint").json()
        until(lambda: (client.get("/health").json()["served"] or {}).get("commit") == first["commit"], "served")

        _add_checkpoint(tiny_run, run, "checkpoint-20")
        _add_checkpoint(tiny_run, run, "checkpoint-30")
        until(lambda: watch()["jobs"]["done"] == 3, "the new checkpoints evaluated")
        time.sleep(1.5)  # several more polls: nothing is evaluated twice
        state = watch()
        assert state["jobs"] == {"queued": 0, "running": 0, "done": 3, "failed": 0} and state["checkpoints"] == 3
        assert state["last_error"] is None and state["last_polled"] is not None
        jobs = client.get("/evaluations", params={"repo": "local/growing"}).json()["jobs"]
        assert sorted(j["revision"] for j in jobs) == ["checkpoint-10", "checkpoint-20", "checkpoint-30"]

        best = client.get("/best-checkpoint").json()
        assert state["chosen"]["commit"] == best["commit"]
        until(lambda: client.get("/health").json()["served"]["commit"] == best["commit"], "the served adapter follows")
        assert client.get("/predict", params={}).status_code == 405
        answer = client.post("/predict", json={"description": "Cordless drill"}).json()
        assert answer["commit"] == best["commit"]

        assert [w["repo"] for w in client.get("/watches").json()] == ["local/growing"]
        assert client.delete("/watches/local/growing", headers=AUTH).status_code == 204
        assert client.get("/watches/local/growing").status_code == 404


def test_watching_an_empty_run_reports_why_and_keeps_polling(make_server, tmp_path):
    runs = tmp_path / "runs"
    (runs / "empty").mkdir(parents=True)
    with make_server(PRICER_CHECKPOINT_ROOT=str(runs), PRICER_WATCH_INTERVAL="0.2").start() as server:
        server.client.post("/watches", json={"repo": "local/empty"}, headers=AUTH)
        state = until(lambda: (w := server.client.get("/watches/local/empty").json())["last_error"] and w, "an error")
        assert "no checkpoint" in state["last_error"] and server.client.get("/health").status_code == 200


