"""Every door names the same checkpoint: with a non-default policy in the environment, the API, the dashboard,
the served adapter, `/predict` and `pricer best` / `pricer predict` all give the policy's choice."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from tests.server import API_TOKEN
from tests.waiting import until

REPO = "local/tiny-run"
POLICY = {"PRICER_METRIC": "rmsle", "PRICER_RULE": "min", "PRICER_OVERFIT_PATIENCE": "2", "PRICER_ESTIMATOR": "mean"}


def _pricer(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pricer.evaluator.cli.main", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_api_dashboard_served_adapter_and_cli_name_the_same_checkpoint(make_server, tiny_run):
    with make_server(**POLICY).start() as server:
        client = server.client
        jobs = [
            client.post("/evaluate", json={"repo": REPO, "revision": f"checkpoint-{step}"}, headers={"Authorization": f"Bearer {API_TOKEN}"})
            for step in (10, 20, 30)
        ]
        assert all(server.wait_for(job.json()["id"])["status"] == "done" for job in jobs)

        best = client.get("/best-checkpoint", params={"repo": REPO}).json()
        assert best["metric"] == "rmsle" and best["estimator"] == "mean" and best["rule"].startswith("the checkpoint with the lowest validation RMSLE")
        lowest = min(best["candidates"], key=lambda c: c["metrics"]["rmsle"])
        assert best["revision"] == lowest["revision"]  # the rule in the environment, not the default one

        served = lambda: (client.get("/health").json()["served"] or {}).get("revision") == best["revision"]  # noqa: E731
        until(served, "the worker to serve the policy's choice after the last job", timeout=60)
        assert client.post("/predict", json={"description": "A 5-quart stand mixer"}).json()["revision"] == best["revision"]
        views = client.get("/dashboard/views", params={"repo": REPO}).text
        assert re.search(rf'<span id="chosen-revision">{best["revision"]}</span>', views)
        assert 'data-metric="rmsle"' in views  # the dashboard chooses by the service's metric, not "mae"

        cli_env = {**POLICY, "PRICER_DB_URL": server.env["PRICER_DB_URL"], "PRICER_DATA": server.env["PRICER_DATA"]}
        answer = _pricer("best", str(tiny_run), "--json", env=cli_env)
        assert answer.returncode == 0, answer.stderr
        assert json.loads(answer.stdout) == {**best, "served": False}  # the same choice, in the same shape
        priced = _pricer("predict", str(tiny_run), "A 5-quart stand mixer", "--json", "--device", "cpu", env=cli_env)
        assert priced.returncode == 0, priced.stderr
        assert json.loads(priced.stdout)["revision"] == best["revision"]

        flagged = json.loads(_pricer("best", str(tiny_run), "--json", "--rule", "earliest", env=cli_env).stdout)
        assert flagged["rule"].startswith("the earliest") and flagged["metric"] == "rmsle"  # a flag overrides one field only
