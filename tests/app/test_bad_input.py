"""A corpus of bad requests over every route of a live `pricer serve`: each is a clear 4xx with one error body,
none is a 500, none shows a server path, and the service goes on answering and evaluating."""

from __future__ import annotations

import os
import shutil
import time

from tests.server import API_TOKEN
from tests.waiting import until

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
JSON = {"Content-Type": "application/json"}
REPO = "local/tiny-run"
SURROGATE = '"\\ud800"'  # a lone UTF-16 surrogate, as JSON writes it


def _raw(body: str) -> dict:
    return {"content": body.encode(), "headers": {**AUTH, **JSON}}


def _chunked(total: int):
    sent = 0
    while sent < total:
        yield b" " * 65536
        sent += 65536


BODIES = [  # bodies every JSON route refuses at the edge, whatever its fields
    '{"repo": NaN}',
    '{"repo": "local/tiny-run", "revision": Infinity}',
    '{"interval_seconds": -Infinity, "repo": "x/y"}',
    '{"repo": "x/y", "interval_seconds": 1e999}',
    '{"repo": "x/y", "n": 99999999999999999999999}',
    '{"repo": ' + SURROGATE + "}",
    '{"description": "a lamp ' + SURROGATE[1:-1] + '"}',
    '{"descriptions": [' + SURROGATE + "]}",
    '{"' + SURROGATE[1:-1] + '": 1}',
    "[" * 50_000 + "]" * 50_000,
    '{"repo": ',
    "",
    "null",
    "[]",
    '"just a string"',
]
JSON_ROUTES = ["/evaluate", "/watches", "/webhooks/hub", "/predict"]


def _cases() -> list[tuple[str, str, dict, set[int]]]:
    cases = [("POST", route, _raw(body), {413, 422}) for route in JSON_ROUTES for body in BODIES]
    cases += [("POST", route, {"content": _chunked(3 << 20), "headers": {**AUTH, **JSON}}, {413}) for route in JSON_ROUTES]
    untyped = '{"description": "a lamp \\ud800", "repo": "\\udfff"}'  # no Content-Type: FastAPI still reads JSON
    cases += [("POST", route, {"content": untyped.encode(), "headers": AUTH}, {422}) for route in JSON_ROUTES]
    long = "r" * 256
    cases += [
        ("POST", "/evaluate", {"json": {"repo": REPO, "revision": long}, "headers": AUTH}, {404, 422}),
        ("POST", "/evaluate", {"json": {"repo": REPO, "revision": "c" * 255}, "headers": AUTH}, {404}),
        ("POST", "/evaluate", {"json": {"repo": REPO, "revision": "checkpoint-99999999999999999999999"}, "headers": AUTH}, {404}),
        ("POST", "/evaluate", {"json": {"repo": REPO, "revision": "../../etc/passwd"}, "headers": AUTH}, {404}),
        ("POST", "/evaluate", {"json": {"repo": "local/../../etc"}, "headers": AUTH}, {422}),
        ("POST", "/evaluate", {"json": {"repo": ["local/tiny-run"]}, "headers": AUTH}, {422}),
        ("POST", "/evaluate", {"json": {"repo": REPO, "dataset": "x" * 300}, "headers": AUTH}, {422}),
        ("POST", "/evaluate", {"json": {"repo": REPO}}, {401}),
        ("POST", "/watches", {"json": {"repo": REPO}}, {401}),
        ("POST", "/watches", {"json": {"repo": REPO, "interval_seconds": 0}, "headers": AUTH}, {422}),
        ("POST", "/watches", {"json": {"repo": "local/no-such-run"}, "headers": AUTH}, {404}),
        ("DELETE", "/watches/local/tiny-run", {}, {401}),
        ("DELETE", "/watches/local/never-watched", {"headers": AUTH}, {404}),
        ("GET", "/watches/" + "w" * 300, {}, {422}),
        ("GET", "/watches/local/..%2F..%2Fetc", {}, {404, 422}),
        ("GET", "/evaluations/9223372036854775808", {}, {422}),
        ("GET", "/evaluations/99999999999999999999999999", {}, {422}),
        ("GET", "/evaluations/0", {}, {422}),
        ("GET", "/evaluations/-1", {}, {422}),
        ("GET", "/evaluations/1e3", {}, {422}),
        ("GET", "/evaluations/424242", {}, {404}),
        ("GET", "/evaluations", {"params": {"repo": "x" * 300}}, {422}),
        ("GET", "/evaluations", {"params": {"repo": "local/../../etc"}}, {422}),
        ("GET", "/evaluations", {"params": {"repo": REPO, "metric": "bogus"}}, {422}),
        ("GET", "/best-checkpoint", {"params": {"repo": REPO, "rule": "bogus"}}, {422}),
        ("GET", "/best-checkpoint", {"params": {"repo": REPO, "estimator": "\x00"}}, {422}),
        ("GET", "/best-checkpoint", {"params": {"repo": "local/no-such-run"}}, {404}),
        ("POST", "/webhooks/hub", {"json": {"repo": {"type": "model", "name": "org/run"}}}, {401}),
        ("POST", "/webhooks/hub", {"json": {"repo": "x"}, "headers": AUTH}, {422}),
        ("POST", "/webhooks/hub", {"json": {"event": [], "repo": {}}, "headers": AUTH}, {422}),
        ("POST", "/webhooks/hub", {"json": {"repo": {"name": 5, "type": "model"}}, "headers": AUTH}, {422}),
        ("POST", "/webhooks/hub", {"json": {"repo": {"name": "x" * 300}}, "headers": AUTH}, {422}),
        (
            "POST",
            "/webhooks/hub",
            {
                "json": {"event": {"action": "update", "scope": "repo.content"}, "repo": {"type": "model", "name": "../x"}},
                "headers": AUTH,
            },
            {422},
        ),
        ("POST", "/predict", {"json": {"description": "a lamp"}}, {401}),
        ("POST", "/predict", {"json": {"description": "a lamp", "repo": "../../etc"}, "headers": AUTH}, {422}),
        ("POST", "/predict", {"json": {"descriptions": ["a lamp " * 60] * 3}, "headers": AUTH}, {422}),
        ("POST", "/predict", {"json": {"descriptions": ["a lamp"] * 65}, "headers": AUTH}, {422}),
        ("POST", "/predict", {"json": {"description": "a lamp", "descriptions": ["a lamp"]}, "headers": AUTH}, {422}),
        ("POST", "/predict", {"json": {"description": 5}, "headers": AUTH}, {422}),
        ("GET", "/", {"params": {"metric": "bogus"}}, {422}),
        ("GET", "/", {"params": {"repo": "local/no-such-run"}}, {200, 404}),
        ("PUT", "/evaluate", {}, {405}),
        ("GET", "/no-such-route", {}, {404}),
    ]
    return cases


def test_every_bad_request_is_a_clear_4xx_and_the_service_keeps_working(make_server, tiny_run):
    env = {"PRICER_PREDICT_NEEDS_TOKEN": "true", "PRICER_PREDICT_MAX_CHARS": "1000"}
    with make_server(**env).start() as server:
        client = server.client
        assert client.post("/evaluate", json={"repo": REPO, "revision": "checkpoint-10"}, headers=AUTH).status_code == 202
        server_paths = {str(tiny_run.parent), str(tiny_run.parent.resolve()), server.env["PRICER_HOME"]}
        wrong = []
        for method, path, kwargs, expected in _cases():
            response = client.request(method, path, **kwargs)
            body = response.json() if response.status_code >= 400 else {}
            shape_ok = isinstance(body, dict) and (response.status_code < 400 or isinstance(body.get("detail"), str))
            leaks = [p for p in server_paths if p in response.text]
            if response.status_code not in expected or not shape_ok or leaks:
                wrong.append((method, path, str(kwargs)[:80], response.status_code, response.text[:200], leaks))
        assert not wrong, "\n".join(map(str, wrong))
        assert client.get("/health").json()["status"] == "ok"
        job = client.post("/evaluate", json={"repo": REPO, "revision": "checkpoint-20"}, headers=AUTH).json()
        assert server.wait_for(job["id"])["status"] == "done"  # and it still evaluates
        until(lambda: client.get("/health").json()["served"], "an adapter to be served", timeout=60)
        assert client.post("/predict", json={"description": "a lamp"}, headers=AUTH).status_code == 200
        assert server.process.poll() is None
    log = server.log.read_text()
    assert "Traceback" not in log and API_TOKEN not in log


def test_webhooks_without_any_secret_or_token_are_refused(make_server):
    with make_server(PRICER_API_TOKEN="").start() as server:
        payload = {"event": {"action": "update", "scope": "repo.content"}, "repo": {"type": "model", "name": "org/run"}}
        refused = server.client.post("/webhooks/hub", json=payload)
        assert refused.status_code == 403 and "PRICER_WEBHOOK_SECRET" in refused.json()["detail"]
    assert "PRICER_API_TOKEN is not set" in server.log.read_text()  # the open door is said at startup


def test_a_run_with_a_broken_checkpoint_evaluates_the_others_and_reports_it(make_server, tiny_run, tmp_path):
    runs = tmp_path / "runs"
    run = runs / "crashed"
    for name in ("checkpoint-10", "checkpoint-20"):
        shutil.copytree(tiny_run / name, run / name)
    (run / "checkpoint-999").mkdir()  # what a training process killed mid-save leaves
    os.utime(run / "checkpoint-999", (1_000_000_000, 1_000_000_000))
    env = {"PRICER_CHECKPOINT_ROOT": str(runs), "PRICER_WATCH_INTERVAL": "0.3"}
    with make_server(**env).start() as server:
        client = server.client
        latest = client.post("/evaluate", json={"repo": "local/crashed"}, headers=AUTH)
        assert latest.status_code == 202 and latest.json()["revision"] == "checkpoint-20", latest.text
        assert client.post("/watches", json={"repo": "local/crashed"}, headers=AUTH).status_code == 202
        watch = until(
            lambda: (w := client.get("/watches/local/crashed").json())["jobs"]["done"] >= 2 and w, "both checkpoints", timeout=180
        )
        assert watch["jobs"]["failed"] == 1 and watch["checkpoints"] == 2 and watch["last_error"] is None, watch
        jobs = client.get("/evaluations", params={"repo": "local/crashed"}).json()["jobs"]
        broken = [job for job in jobs if job["status"] == "failed"]
        assert [job["revision"] for job in broken] == ["checkpoint-999"]
        assert "local/crashed/checkpoint-999" in broken[0]["error"] and "adapter_model.safetensors" in broken[0]["error"]
        assert str(runs) not in client.get("/", params={"repo": "local/crashed"}).text
        time.sleep(1)  # a few more polls: the broken checkpoint is reported once while it is unchanged
        assert client.get("/watches/local/crashed").json()["jobs"]["failed"] == 1


def test_a_webhook_secret_when_set_is_the_only_way_in(make_server):
    secret = "whsec-for-tests"
    with make_server(PRICER_WEBHOOK_SECRET=secret).start() as server:
        payload = {"event": {"action": "update", "scope": "repo.settings"}, "repo": {"type": "model", "name": "org/run"}}
        assert server.client.post("/webhooks/hub", json=payload, headers=AUTH).status_code == 401  # the token is no secret
        ignored = server.client.post("/webhooks/hub", json=payload, headers={"X-Webhook-Secret": secret})
        assert ignored.status_code == 200 and "ignored" in ignored.json()
