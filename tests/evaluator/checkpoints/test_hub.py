"""The Hub checkpoint source and the evaluator, with the real huggingface_hub client against a loopback Hub."""

import json
import shutil

import numpy as np
import pytest
from huggingface_hub import HfApi

from pricer.evaluator.errors import HubUnavailable, PickledWeightsRefused, RepoNotFound, RevisionNotFound
from pricer.evaluator.evaluate import Evaluator
from pricer.evaluator.settings import Settings
from tests.hubserver import ADAPTER_FILES, push_checkpoints

REPO = "pricer-tests/tiny-run"


@pytest.fixture(scope="module")
def pushed(hub_server, tiny_run):
    """checkpoint-10, -20, -30 of a real run, pushed as three commits the way Trainer's every_save does."""
    api = HfApi(endpoint=hub_server.endpoint, token=False)
    api.create_repo(REPO, exist_ok=True)
    shas = push_checkpoints(api, REPO, tiny_run)
    api.create_tag(REPO, tag="v-step-20", revision=shas[1])
    return api, shas


@pytest.fixture
def evaluator(hub_server, settings):
    return Evaluator(settings.model_copy(update={"hf_endpoint": hub_server.endpoint}))


def test_lists_every_checkpoint_commit_with_its_step(evaluator, pushed):
    _, shas = pushed
    revisions = evaluator.source(REPO).revisions()  # the repo's "initial commit" holds no adapter
    assert [(r.commit, r.step) for r in revisions] == [(sha, step) for sha, step in zip(shas, (10, 20, 30), strict=False)]
    assert revisions[0].message == "Training in progress, step 10"


def test_evaluates_by_sha_branch_tag_and_short_sha(evaluator, pushed, catalogue_heldout, tiny_run):
    _, shas = pushed
    source = evaluator.source(REPO)
    by_sha, by_main = evaluator.evaluate(source, [shas[2], "main"], catalogue_heldout)
    assert by_sha.revision.commit == by_main.revision.commit == shas[2]
    assert by_main.id == by_sha.id  # main resolves to the same commit: the stored result is returned
    by_tag, by_short = evaluator.evaluate(source, ["v-step-20", shas[1][:7]], catalogue_heldout)
    assert by_tag.id == by_short.id and by_tag.revision.commit == shas[1]
    assert by_tag.revision.step == 20 and by_tag.revision.epoch == pytest.approx(
        json.loads((tiny_run / "checkpoint-20" / "trainer_state.json").read_text())["epoch"]
    )
    local = evaluator.evaluate(evaluator.source(str(tiny_run)), ["checkpoint-20"], catalogue_heldout)[0]
    np.testing.assert_array_equal(local.prices.argmax, by_tag.prices.argmax)  # same adapter, same prices


def test_step_and_epoch_from_commit_messages_without_trainer_state(evaluator, pushed, tiny_run, tmp_path):
    api, _ = pushed
    for name in ADAPTER_FILES[:2]:  # the adapter alone
        shutil.copy(tiny_run / "checkpoint-10" / name, tmp_path / name)
    (tmp_path / "adapter_config.json").write_text(
        (tmp_path / "adapter_config.json").read_text().replace('"r": 8', '"r": 8, "revision": null')
    )  # a different config, so the upload makes a new commit
    api.create_branch(REPO, branch="epochs")
    api.upload_folder(repo_id=REPO, folder_path=tmp_path, commit_message="Training in progress, epoch 2", revision="epochs")
    revision = evaluator.source(REPO).resolve("epochs")
    assert (revision.step, revision.epoch) == (None, 2.0)


def test_unknown_repo_and_revision(evaluator, pushed):
    with pytest.raises(RepoNotFound):
        evaluator.source("pricer-tests/no-such-run").resolve("main")
    with pytest.raises(RevisionNotFound):
        evaluator.source(REPO).resolve("no-such-branch")
    with pytest.raises(RevisionNotFound):
        evaluator.source(REPO).resolve("deadbeef" * 5)


def test_a_repo_with_commits_but_no_adapter_has_no_revisions_and_says_so(evaluator, hub_server):
    repo = "pricer-tests/no-checkpoint-yet"
    HfApi(endpoint=hub_server.endpoint, token=False).create_repo(repo, exist_ok=True)  # its initial commit: no adapter
    source = evaluator.source(repo)
    assert source.scan().revisions == []  # a watch polls again until training pushes one
    with pytest.raises(RevisionNotFound, match="no commit holds an adapter"):
        source.revisions()


def test_offline_mode_is_a_hub_unavailable_error(evaluator, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # what HF_HUB_OFFLINE=1 sets as the client is imported
    source = evaluator.source(REPO)
    for call in (source.revisions, source.refs, lambda: source.resolve("main")):
        with pytest.raises(HubUnavailable, match=r"offline mode is on \(HF_HUB_OFFLINE\)"):
            call()


def test_pickled_adapter_is_refused_before_download(evaluator, pushed, tmp_path, hub_server):
    api, _ = pushed
    (tmp_path / "adapter_config.json").write_text('{"peft_type": "LORA"}')
    (tmp_path / "adapter_model.bin").write_bytes(b"\x80\x04not really a pickle")
    api.create_branch(REPO, branch="pickled")
    api.upload_folder(
        repo_id=REPO, folder_path=tmp_path, commit_message="pickled", revision="pickled", delete_patterns=["*.safetensors"]
    )
    source = evaluator.source(REPO)
    with pytest.raises(PickledWeightsRefused):
        source.fetch(source.resolve("pickled"))
    assert not any("adapter_model.bin" in record.path for record in hub_server.requests)


def test_hf_token_is_sent(hub_server, pushed, tmp_path):
    evaluator = Evaluator(Settings(home=tmp_path, hf_endpoint=hub_server.endpoint, hf_token="hf_secret_for_tests"))
    evaluator.source(REPO).resolve("main")
    assert "Bearer hf_secret_for_tests" in hub_server.authorization_headers


def test_pricer_revisions_lists_commits_with_branches_and_tags(pushed, hub_server, monkeypatch, capsys):
    from pricer.evaluator.cli.main import main

    _, shas = pushed
    monkeypatch.setenv("HF_ENDPOINT", hub_server.endpoint)
    assert main(["revisions", REPO, "--json"]) == 0
    rows = {row["commit"]: row for row in json.loads(capsys.readouterr().out)}
    assert [rows[sha]["step"] for sha in shas] == [10, 20, 30]
    assert "v-step-20" in rows[shas[1]]["refs"]
    assert main(["revisions", REPO]) == 0 and "v-step-20" in capsys.readouterr().out


def test_the_service_evaluates_a_hub_revision_over_http(make_server, hub_server, pushed):
    from tests.server import API_TOKEN, validation_size

    _, shas = pushed
    with make_server(HF_ENDPOINT=hub_server.endpoint).start() as server:
        auth = {"Authorization": f"Bearer {API_TOKEN}"}
        job = server.client.post("/evaluate", json={"repo": REPO, "revision": "v-step-20"}, headers=auth).json()
        assert (job["status"], job["commit"], job["step"]) == ("queued", shas[1], 20)
        done = server.wait_for(job["id"])
        assert done["status"] == "done" and done["metrics"]["n"] == validation_size(server.env["PRICER_DATA"]), done
        newest = server.client.post("/evaluate", json={"repo": REPO}, headers=auth).json()  # no revision: main's head
        assert newest["commit"] == shas[2]
        missing = server.client.post("/evaluate", json={"repo": "pricer-tests/no-such-run", "revision": "main"}, headers=auth)
        assert missing.status_code == 404 and "no such Hub repo" in missing.json()["detail"]
        unknown = server.client.post("/evaluate", json={"repo": REPO, "revision": "no-such-branch"}, headers=auth)
        assert unknown.status_code == 404


def test_hub_webhook_evaluates_the_new_head_checks_the_secret_and_ignores_replays(make_server, hub_server, pushed):
    _, shas = pushed
    payload = {"event": {"action": "update", "scope": "repo.content"}, "repo": {"type": "model", "name": REPO, "headSha": shas[0]}}
    with make_server(HF_ENDPOINT=hub_server.endpoint, PRICER_WEBHOOK_SECRET="whsec-for-tests").start() as server:
        client = server.client
        assert client.post("/webhooks/hub", json=payload, headers={"X-Webhook-Secret": "wrong"}).status_code == 401
        assert client.post("/webhooks/hub", json=payload).status_code == 401
        first = client.post("/webhooks/hub", json=payload, headers={"X-Webhook-Secret": "whsec-for-tests"})
        assert first.status_code == 202 and first.json()["commit"] == shas[0] and first.json()["step"] == 10
        assert server.wait_for(first.json()["id"])["status"] == "done"
        replay = client.post("/webhooks/hub", json=payload, headers={"X-Webhook-Secret": "whsec-for-tests"})
        assert replay.status_code == 200 and replay.json()["id"] == first.json()["id"]  # no new work
        other = {**payload, "event": {"action": "update", "scope": "repo.config"}}
        assert "ignored" in client.post("/webhooks/hub", json=other, headers={"X-Webhook-Secret": "whsec-for-tests"}).json()
        assert len(client.get("/evaluations", params={"repo": REPO}).json()["jobs"]) == 1
    assert "whsec-for-tests" not in server.log.read_text()
