"""The dashboard in headless Chromium, `/metrics`, and `pricer report`, against a real server with evaluated checkpoints."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.browser import chromium_page, screenshot
from tests.server import API_TOKEN

REPO = "local/tiny-run"
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
DESCRIPTION = "Stainless steel 5-quart stand mixer, 10 speeds"


def _evaluate(server, *revisions: str) -> list[dict]:
    jobs = [server.client.post("/evaluate", json={"repo": REPO, "revision": r}, headers=AUTH).json() for r in revisions]
    return [server.wait_for(job["id"]) for job in jobs]


@pytest.fixture
def evaluated(make_server):
    """A server with checkpoint-10, -20 and -30 of the tiny run evaluated, and the chosen one served."""
    with make_server().start() as server:
        assert [job["status"] for job in _evaluate(server, "checkpoint-10", "checkpoint-20", "checkpoint-30")] == ["done"] * 3
        server.wait_served(server.client.get("/best-checkpoint").json()["commit"])
        yield server


def _money(x: float) -> str:
    return f"${x:,.2f}"


def test_dashboard_shows_every_checkpoint_the_choice_and_answers_the_predict_box(evaluated):
    server, client = evaluated, evaluated.client
    best = client.get("/best-checkpoint").json()
    ranking = client.get("/evaluations", params={"repo": REPO}).json()["ranking"]
    with chromium_page() as (page, log):
        page.goto(f"http://127.0.0.1:{server.port}/")
        # the curve: one marker per checkpoint, and the chosen one marked
        assert page.locator("#curve g#checkpoints use").count() == 3
        assert page.locator("#curve g#chosen use").count() == 1
        assert page.inner_text("#chosen-revision") == best["revision"]
        assert page.inner_text("#chosen-p-best") == f"{100 * best['p_best']:.0f}%"
        assert _money(best["metrics"]["mae"]) in page.inner_text("#chosen-value")
        assert _money(best["test"]["metrics"]["mae"]) in page.inner_text("#test-figure")
        # the ranking: the API's order and figures, the chosen row marked
        rows = page.locator("#ranking tbody tr")
        assert [rows.nth(i).get_attribute("data-revision") for i in range(rows.count())] == [r["revision"] for r in ranking]
        assert [_money(r["metrics"]["mae"]) in rows.nth(i).inner_text() for i, r in enumerate(ranking)] == [True] * 3
        assert page.locator("#ranking tr.chosen").get_attribute("data-revision") == best["revision"]
        assert page.locator("#jobs tbody tr[data-status=done]").count() == 3
        # the test-part scatter: one point per test item, and the course's title line
        assert page.locator("#scatter g#items use").count() == best["test"]["metrics"]["n"]
        assert page.inner_text("#scatter-title") == (
            f"Error={_money(best['test']['metrics']['mae'])} RMSLE={best['test']['metrics']['rmsle']:.2f} "
            f"Hits={best['test']['metrics']['hit_rate']:.1%}"
        )

        page.fill("#predict textarea", DESCRIPTION)
        page.click("#predict button")
        page.wait_for_selector("#price")
        answer = client.post("/predict", json={"description": DESCRIPTION}).json()
        assert page.inner_text("#price") == f"${answer['price']:.2f}"
        assert answer["revision"] in page.inner_text("#answer")
        screenshot(page, "dashboard.png")

        page.click(".switch a[data-metric=hit_rate]")  # choose by hit rate instead
        page.wait_for_selector("#repo-views[data-metric=hit_rate]")
        by_hits = client.get("/best-checkpoint", params={"metric": "hit_rate"}).json()
        assert page.inner_text("#chosen-revision") == by_hits["revision"]
        assert page.inner_text("#chosen-value").startswith(f"{100 * by_hits['metrics']['hit_rate']:.1f}%")
        if by_hits["commit"] != best["commit"]:  # the served adapter is chosen by the service's own metric: said so
            assert "the service chooses by average absolute error" in page.inner_text("#served-note")
        # a hit-rate difference is in points, and so is its interval
        assert re.fullmatch(r"[+-]?\d+\.\d pts \[[+-]?\d+\.\d, [+-]?\d+\.\d\] pts.*", page.inner_text("#compared-difference"))
    assert log.clean(), (log.console_errors, log.refused)
    assert all(re.match(rf"http://127\.0\.0\.1:{server.port}/", url) for url in log.requests), log.requests


def _overflowing(page) -> list[str]:
    """Elements wider than their box: the page itself, a table's wrapper, a chart."""
    return page.evaluate(
        """() => [document.documentElement, ...document.querySelectorAll('.table-wrap, figure, section')]
            .filter(e => e.scrollWidth > e.clientWidth + 1)
            .map(e => `${e.tagName}#${e.id}.${e.className}: ${e.scrollWidth} > ${e.clientWidth}`)"""
    )


def test_dashboard_holds_its_layout_at_800_and_1400_px_and_shows_the_context(evaluated):
    server, client = evaluated, evaluated.client
    best = client.get("/best-checkpoint").json()
    with chromium_page() as (page, log):
        for width in (800, 1400):
            page.set_viewport_size({"width": width, "height": 900})
            page.goto(f"http://127.0.0.1:{server.port}/")
            assert _overflowing(page) == [], width  # nothing scrolls sideways or is cut off
            box = page.locator("#ranking").bounding_box()
            assert box["x"] + box["width"] <= width
            screenshot(page, f"dashboard-{width}px.png")
        # the training loss under the validation curve, one marker per checkpoint that logged one
        assert all(c["train_loss"] is not None and c["train_loss"] > 0 for c in best["candidates"])
        assert page.locator("#curve g#train-loss use").count() == 3
        # the constant guess: a line on the chart, and the API's figure beside the choice
        assert page.locator("#curve g#baseline").count() == 1
        assert page.inner_text("#baseline-figure").startswith(_money(best["baseline"]["mae"]))
        # the lowest-error checkpoint is marked beside the chosen one when they differ
        lowest = min(best["candidates"], key=lambda c: (c["metrics"]["mae"], c["step"]))
        assert page.locator("#curve g#best").count() == (lowest["commit"] != best["commit"])
        # the scatter's colours are explained
        legend = page.locator("#scatter svg").inner_html()
        assert all(words in legend for words in ("within $40 or 20%", "within $80 or 40%", "further off"))
    assert log.clean(), (log.console_errors, log.refused)


def test_dashboard_follows_new_evaluations_without_a_reload(make_server):
    with make_server().start() as server, chromium_page() as (page, log):
        page.goto(f"http://127.0.0.1:{server.port}/")
        assert "Nothing to show yet" in page.inner_text("#views")
        _evaluate(server, "checkpoint-10")
        page.wait_for_selector("#ranking tbody tr[data-revision=checkpoint-10]", timeout=40_000)  # the idle refresh
        queued = server.client.post("/evaluate", json={"repo": REPO, "revision": "checkpoint-30"}, headers=AUTH).json()
        page.wait_for_selector("#ranking tbody tr[data-revision=checkpoint-30]", timeout=40_000)
        assert server.client.get(f"/evaluations/{queued['id']}").json()["status"] == "done"
        assert page.locator("#curve g#checkpoints use").count() == 2
    assert log.clean(), (log.console_errors, log.refused)


def _metric(text: str, name: str, labels: str = "") -> float:
    match = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.M)
    assert match, f"{name}{labels} not in /metrics"
    return float(match.group(1))


def test_metrics_in_prometheus_text_format(evaluated):
    client = evaluated.client
    before = client.get("/metrics")
    assert before.status_code == 200 and before.headers["content-type"].startswith("text/plain")
    text = before.text
    assert _metric(text, "pricer_jobs", '{status="done"}') == 3 and _metric(text, "pricer_jobs", '{status="failed"}') == 0
    assert _metric(text, "pricer_items_scored_total") == 3 * 48  # every held-out item, validation and test, per checkpoint
    assert _metric(text, "pricer_evaluation_seconds_count") == 3 and _metric(text, "pricer_evaluation_seconds_sum") > 0
    best = client.get("/best-checkpoint").json()
    served = f'{{commit="{best["commit"]}",repo="{REPO}",revision="{best["revision"]}"}}'
    assert _metric(text, "pricer_served_info", served) == 1
    predictions = _metric(text, "pricer_prediction_seconds_count")
    for _ in range(3):
        assert client.post("/predict", json={"description": DESCRIPTION}).status_code == 200
    after = client.get("/metrics").text
    assert _metric(after, "pricer_prediction_seconds_count") == predictions + 3
    assert _metric(after, "pricer_prediction_seconds_bucket", '{le="+Inf"}') == predictions + 3


def test_report_is_self_contained_and_holds_the_api_numbers(evaluated, tmp_path):
    server, client = evaluated, evaluated.client
    best = client.get("/best-checkpoint").json()
    output = tmp_path / "share" / "report.html"
    env = {k: v for k, v in server.env.items() if k != "PRICER_API_TOKEN"}
    done = subprocess.run(
        [sys.executable, "-m", "pricer.evaluator.cli.main", "report", REPO, "--output", str(output), "--png"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    pngs = sorted(output.parent.glob("*.png"))
    assert len(pngs) == 2 and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    html = output.read_text()
    assert "<script" not in html and not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # nothing to fetch
    with chromium_page() as (page, log):
        page.goto(output.as_uri())
        assert page.inner_text("#chosen-revision") == best["revision"]
        assert _money(best["metrics"]["mae"]) in page.inner_text("#chosen-value")
        assert page.inner_text("#chosen-p-best") == f"{100 * best['p_best']:.0f}%"
        assert _money(best["test"]["metrics"]["mae"]) in page.inner_text("#test-figure")
        assert page.locator("#curve g#checkpoints use").count() == best["evaluated"] == 3
        screenshot(page, "report.png")
    assert log.clean(), (log.console_errors, log.refused)
    assert log.requests == [output.as_uri()]  # the file alone: nothing else was asked for


def test_report_of_an_unevaluated_repo_is_a_clear_error(tmp_path, tiny_run):
    done = subprocess.run(
        [sys.executable, "-m", "pricer.evaluator.cli.main", "report", str(tiny_run), "--output", str(tmp_path / "r.html")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1 and "nothing is evaluated yet" in done.stderr
    assert not (tmp_path / "r.html").exists()


def test_jobs_table_shows_progress_of_the_running_job_and_why_one_failed(settings, tiny_run, monkeypatch):
    from pricer.evaluator.records import Progress
    from pricer.evaluator.service import PricerService
    from pricer.evaluator.store import JobQueue, Store
    from pricer.evaluator.views.report import Views, render_views

    service = PricerService(settings.model_copy(update={"checkpoint_root": tiny_run.parent}))  # not started: no worker
    for revision in ("checkpoint-10", "checkpoint-20"):
        service.submit(REPO, revision)
    queue = JobQueue(Store(settings.store_url))  # a worker elsewhere, sharing the store
    failed = queue.claim("w", 60)
    queue.fail(failed.id, "checkpoint-10: adapter_model.safetensors is <b>corrupt</b>")
    running = queue.claim("w", 60)
    monkeypatch.setattr(service, "activity", lambda: [Progress(running, 24, 48)])

    html = render_views(Views(service), REPO, "mae")
    assert re.search(r'<tr data-status="running">.*?<progress value="24" max="48"></progress> 24/48 items', html, re.S)
    assert "is &lt;b&gt;corrupt&lt;/b&gt;</td>" in html  # the reason, escaped
    assert 'data-live="true"' in html and "No checkpoint of this repo is evaluated yet" in html


def test_dashboard_refuses_bad_queries_with_a_4xx(settings, tmp_path):
    from fastapi.testclient import TestClient

    from pricer.app.main import create_app

    (tmp_path / "runs").mkdir()
    with TestClient(create_app(settings.model_copy(update={"checkpoint_root": tmp_path / "runs"}))) as client:
        assert "Nothing to show yet" in client.get("/").text
        for path in ("/", "/dashboard/views"):
            assert client.get(path, params={"repo": "../../etc"}).status_code == 422
            assert client.get(path, params={"repo": "<script>alert(1)</script>"}).status_code == 422
            assert client.get(path, params={"metric": "accuracy"}).status_code == 422
            assert client.get(path, params={"repo": "local/no-such-run"}).status_code == 404
            assert client.get(path, params={"repo": "x" * 500}).status_code == 422
        page = client.get("/", params={"repo": "org/not-evaluated"})
        assert page.status_code == 200 and "No checkpoint of this repo is evaluated yet" in page.text


def test_views_of_an_overfitting_run_raise_the_alarm_and_mark_the_choice():
    import numpy as np

    from pricer.evaluator.stats.selection import choose
    from pricer.evaluator.views.report import RepoView, _templates, draw
    from tests.evaluator.stats.test_selection import N, _run

    test = np.arange(N) % 3 == 0
    choice = choose(_run([80, 50, 30, 45, 60, 75], seed=3, noise=10, test=test))  # falls, then rises for 3 checkpoints
    assert choice.overfitting is not None
    view = RepoView("org/run", "mae", choice, [], {}, None, True, draw("org/run", choice), "mae")
    html = _templates.get_template("views.html").render(view=view, report=True, metrics=(), labels={"mae": "avg error"})
    assert re.search(r'<div class="alarm" id="overfitting"><strong>Overfitting.</strong> .* past step 30', html)
    curve = html.split('id="checkpoints"')[1].split('<g id="')[0]
    assert curve.count("<use ") == 6  # one marker per checkpoint
    assert html.split('id="items"')[1].split('<g id="')[0].count("<use ") == test.sum()  # one point per test item
    assert f'<span id="chosen-revision">{choice.chosen.evaluation.revision.revision}</span>' in html
    assert 'class="switch"' not in html  # a report has no links to other metrics


def test_the_api_docs_render_with_no_internet(make_server):
    with make_server().start() as server, chromium_page() as (page, log):
        page.goto(f"http://127.0.0.1:{server.port}/docs")
        page.wait_for_selector(".opblock-summary-path", timeout=40_000)  # Swagger UI drew the operations
        paths = {
            page.locator(".opblock-summary-path").nth(i).inner_text()
            for i in range(page.locator(".opblock-summary-path").count())
        }
        assert {"/evaluate", "/best-checkpoint", "/predict", "/health"} <= {p.replace("\u200b", "") for p in paths}
    assert log.clean(), (log.console_errors, log.refused)  # every file came from the service itself
