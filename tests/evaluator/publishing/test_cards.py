"""The choice written back: a Hub tag and model card (against the loopback Hub), a local run's card and record, each
delivered once between replicas, and what a refused delivery leaves."""

import json
import shutil

import pytest
from huggingface_hub import HfApi, ModelCard
from safetensors.torch import load_file

from pricer.evaluator.data import catalogue_split
from pricer.evaluator.publishing.card import BEGIN, END
from pricer.evaluator.service import PricerService
from pricer.evaluator.store import Deliveries, Store
from tests.hubserver import point_hf_client_at, push_checkpoints
from tests.server import write_items
from tests.waiting import until

REPO = "pricer-tests/published-run"
USERS_CARD = "---\nlicense: mit\n---\n# My price model\n\nTrained on my own items.\n"


@pytest.fixture(scope="module")
def hub_repo(hub_server, tiny_run):
    """checkpoint-10, -20, -30 pushed as the Trainer does, after a model card its owner wrote."""
    api = HfApi(endpoint=hub_server.endpoint, token=False)
    api.create_repo(REPO)
    api.upload_file(path_or_fileobj=USERS_CARD.encode(), path_in_repo="README.md", repo_id=REPO, commit_message="card")
    return api, push_checkpoints(api, REPO, tiny_run)


@pytest.fixture
def items(tmp_path):
    return write_items(tmp_path / "heldout.jsonl", catalogue_split()[1].iloc[:48])


def hub_service(settings, hub_server, items, **changes) -> PricerService:
    return PricerService(settings.model_copy(update={
        "hf_endpoint": hub_server.endpoint, "data": str(items), "publish_hub": True, "device": "cpu", **changes
    }))


def test_the_hub_tag_and_card_name_the_choice_and_load_it(settings, hub_server, hub_repo, items, tiny_base, monkeypatch):
    api, shas = hub_repo
    point_hf_client_at(monkeypatch, hub_server.endpoint)
    service = hub_service(settings, hub_server, items)
    service.evaluate(REPO)
    choice = service.choice(REPO)
    chosen = choice.chosen.evaluation.revision

    done = service.publish(REPO)

    assert done.failed == {} and f"hub: {chosen.revision} chosen" in done.sent
    tags = {tag.name: tag.target_commit for tag in api.list_repo_refs(REPO).tags}
    assert tags["pricer-best"] == chosen.commit
    card = ModelCard(open(api.hf_hub_download(REPO, "README.md", revision="main")).read())
    assert "# My price model" in card.text and "Trained on my own items." in card.text  # the owner's words stay
    assert card.data.license == "mit" and "pricer" in card.data.tags
    assert f"`{chosen.revision}`" in card.text and chosen.commit[:10] in card.text and choice.statement in card.text
    results = {(r.dataset_split, r.metric_type): r.metric_value for r in card.data.eval_results}  # model-index, read back
    validation = choice.chosen.evaluation.metrics(choice.policy.estimator)
    assert results[("validation", "mae")] == pytest.approx(validation.mae, abs=1e-5)
    assert results[("test", "mae")] == pytest.approx(choice.test.mae, abs=1e-5)
    assert results[("test", "hit_rate")] == pytest.approx(choice.test.hit_rate, abs=1e-5)
    assert card.data.base_model == choice.chosen.evaluation.base_model

    # the card's commit is not another checkpoint: the run still has three, and main names the last of them
    source = service.source(REPO)
    assert [r.commit for r in source.revisions()] == shas
    assert source.latest().commit == shas[-1]

    # PeftModel.from_pretrained(base, repo, revision="pricer-best") loads the chosen adapter
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_base), REPO, revision="pricer-best")
    step = {sha: step for sha, step in zip(shas, (10, 20, 30), strict=True)}[chosen.commit]
    expected = load_file(service.source(REPO).fetch(chosen).adapter.path / "adapter_model.safetensors")
    loaded = {k: v for k, v in model.state_dict().items() if "lora_" in k}
    assert step and len(loaded) == len(expected)
    for name, tensor in expected.items():
        assert next(v for k, v in loaded.items() if k.replace(".default", "") == name).equal(tensor)

    # another rule chooses another checkpoint: the tag moves, the card is rewritten in place, once
    earliest = hub_service(settings, hub_server, items, rule="earliest", metric="hit_rate", confidence=0.5)
    other = earliest.choice(REPO).chosen.evaluation.revision
    earliest.publish(REPO)
    assert {tag.name: tag.target_commit for tag in api.list_repo_refs(REPO).tags}["pricer-best"] == other.commit
    text = open(api.hf_hub_download(REPO, "README.md", revision="main")).read()
    assert text.count(BEGIN) == 1 and text.count(END) == 1 and f"`{other.revision}`" in text
    assert "Trained on my own items." in text


def test_a_refused_delivery_is_tried_again(settings, hub_server, hub_repo, items, monkeypatch):
    service = hub_service(settings, hub_server, items, hub_tag="refused")
    service.evaluate(REPO)
    chosen = service.choice(REPO).chosen.evaluation.revision
    hub_server.token = "the-right-one"  # the service's token (none) cannot write
    try:
        done = service.publish(REPO, again=False)
    finally:
        hub_server.token = None
    assert "hub" in done.failed and not done.sent
    deliveries = Deliveries(Store(service.settings.store_url))
    assert deliveries.value("hub", REPO, "choice") is None  # released: nothing counts as delivered
    done = service.publish(REPO, again=False)
    assert done.sent == [f"hub: {chosen.revision} chosen"]
    assert deliveries.value("hub", REPO, "choice") == f"{chosen.commit} of 3"
    assert service.publish(REPO, again=False).sent == []  # delivered: not again


@pytest.fixture
def run_folder(tiny_run, tmp_path):
    folder = tmp_path / "runs" / "my-run"
    for name in ("checkpoint-10", "checkpoint-20", "checkpoint-30"):
        shutil.copytree(tiny_run / name, folder / name)
    return folder


def test_a_local_run_gets_its_card_and_record_from_the_running_service(settings, run_folder, items):
    (run_folder / "README.md").write_text(USERS_CARD)
    service = PricerService(settings.model_copy(update={
        "checkpoint_root": run_folder.parent, "data": str(items), "run_card": True, "device": "cpu"
    }))
    service.start()
    try:
        for revision in ("checkpoint-10", "checkpoint-20", "checkpoint-30"):
            service.submit("local/my-run", revision)
        until(lambda: service.idle(), "the three jobs", timeout=600)  # generous: a loaded machine prices slowly
        record = until(lambda: _record(run_folder, 3), "the choice over the three checkpoints in the run folder", timeout=300)
    finally:
        service.stop()
    choice = service.choice("local/my-run")
    chosen = choice.chosen.evaluation
    assert record["choice"]["revision"] == chosen.revision.revision and record["choice"]["commit"] == chosen.revision.commit
    assert record["path"] == str(run_folder.resolve() / chosen.revision.revision)
    assert record["choice"]["test"]["mae"] == pytest.approx(choice.test.mae)
    assert record["data"]["fingerprint"] == service.dataset().fingerprint
    card = ModelCard((run_folder / "README.md").read_text())
    assert "Trained on my own items." in card.text and f"`{chosen.revision.revision}`" in card.text
    assert {(r.dataset_split, r.metric_type) for r in card.data.eval_results} >= {("validation", "mae"), ("test", "rmsle")}
    assert service.source("local/my-run").revisions()[-1].revision == "checkpoint-30"  # the card is no checkpoint


def _record(folder, checkpoints):
    path = folder / "pricer-choice.json"
    if path.exists():
        record = json.loads(path.read_text())
        return record if f"among {checkpoints} evaluated" in (folder / "README.md").read_text() else None
    return None


def test_replicas_publish_a_choice_once(settings, run_folder, items, tmp_path):
    common = {"checkpoint_root": run_folder.parent, "data": str(items), "run_card": True, "device": "cpu",
              "db_url": f"sqlite:///{tmp_path / 'shared.db'}"}
    first, second = (PricerService(settings.model_copy(update=common)) for _ in range(2))
    first.evaluate("local/my-run")
    sent = [first.publish("local/my-run", again=False).sent, second.publish("local/my-run", again=False).sent]
    chosen = first.choice("local/my-run").chosen.evaluation.revision.revision
    assert sorted(sent, key=len) == [[], [f"card: {chosen} chosen"]]


def test_a_card_that_links_out_of_the_run_is_replaced_not_followed(settings, run_folder, items, tmp_path):
    outside = tmp_path / "outside.md"
    outside.write_text("not pricer's to read or write\n")
    (run_folder / "README.md").symlink_to(outside)
    service = PricerService(settings.model_copy(update={"checkpoint_root": run_folder.parent, "data": str(items), "run_card": True}))
    service.evaluate("local/my-run")
    assert service.publish("local/my-run").failed == {}
    assert outside.read_text() == "not pricer's to read or write\n"
    assert not (run_folder / "README.md").is_symlink() and "not pricer's" not in (run_folder / "README.md").read_text()


def test_pricer_publish_writes_a_local_runs_card_and_says_what_a_hub_repo_lacks(settings, run_folder, items, capsys, monkeypatch):
    from pricer.evaluator.cli.main import main

    monkeypatch.setenv("PRICER_DB_URL", f"sqlite:///{run_folder.parent / 'cli.db'}")
    assert main(["evaluate", str(run_folder), "--data", str(items), "-q"]) == 0
    capsys.readouterr()
    assert main(["publish", str(run_folder), "--data", str(items), "--json"]) == 0
    sent = json.loads(capsys.readouterr().out)
    chosen = json.loads((run_folder / "pricer-choice.json").read_text())["choice"]["revision"]
    assert sent == {"sent": [f"card: {chosen} chosen"], "failed": {}}
    assert main(["publish", str(run_folder), "--data", str(items)]) == 0  # again: the card is written anew
    assert capsys.readouterr().out == f"card: {chosen} chosen\n"

    assert main(["publish", "pricer-tests/no-target", "--data", str(items)]) == 1  # a Hub repo without --hub
    assert "--hub" in capsys.readouterr().err
