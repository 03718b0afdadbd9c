"""The training worker: completion-only labels, presets, checkpoints as local and Hub revisions, resume, bad input."""

from __future__ import annotations

import json
import time

import pandas as pd
import pytest
from transformers import AutoTokenizer, TrainerCallback

from pricer.evaluator.checkpoints.sources import HubRepo, LocalRun
from pricer.evaluator.cli.main import main
from pricer.evaluator.data import PRICE_PREFIX, catalogue_split, heldout_from_frame, load_heldout
from pricer.evaluator.errors import RunFolderInUse
from pricer.evaluator.evaluate import Evaluator
from pricer.evaluator.settings import Settings
from pricer.trainer import PricerCallback, preset, train
from pricer.trainer.dataset import IGNORE, CompletionOnly
from tests.conftest import REAL_DATA
from tests.server import API_TOKEN, free_port
from tests.waiting import until

APPLIANCES = REAL_DATA / "appliances_lite_2000.jsonl"


@pytest.fixture(scope="module")
def appliances(tmp_path_factory):
    """Real items: 120 to train on, 40 held out."""
    frame = pd.read_json(APPLIANCES, lines=True)
    folder = tmp_path_factory.mktemp("appliances-items")
    frame.iloc[:120].to_json(folder / "train.jsonl", orient="records", lines=True)
    frame.iloc[1960:].to_json(folder / "heldout.jsonl", orient="records", lines=True)
    return load_heldout(folder / "train.jsonl"), load_heldout(folder / "heldout.jsonl")


def test_labels_cover_only_the_price_and_end_of_sequence(tiny_base, appliances):
    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    items = appliances[0]
    dataset = CompletionOnly(tokenizer, items, max_length=64)
    for row, price in zip(dataset.rows[:20], items.prices[:20], strict=False):
        ids, labels = row
        answer = [label for label in labels if label != IGNORE]
        assert tokenizer.decode(answer) == f"{round(price)}.00{tokenizer.eos_token}"
        assert labels[: len(ids) - len(answer)] == [IGNORE] * (len(ids) - len(answer))  # the whole prompt is masked
        assert ids[-len(answer) :] == answer and len(ids) <= 64
        assert tokenizer.decode(ids[: len(ids) - len(answer)]).endswith(PRICE_PREFIX)  # cut descriptions keep "Price is $"


def test_the_course_preset_holds_the_course_settings():
    course = preset("course-qlora")
    assert (course.lora_r, course.lora_alpha, course.lora_dropout) == (32, 64, 0.1)
    assert course.target_modules == ("q_proj", "k_proj", "v_proj", "o_proj")
    assert (course.learning_rate, course.scheduler, course.warmup_ratio) == (1e-4, "cosine", 0.03)
    assert (course.optimizer, course.weight_decay, course.max_grad_norm) == ("paged_adamw_32bit", 0.001, 0.3)
    assert (course.max_length, course.batch_size, course.quantization) == (182, 16, "auto")
    assert preset("tiny", save_steps=7).save_steps == 7 and preset("tiny").quantization == "none"


def test_real_items_train_into_local_and_hub_revisions_with_their_step_and_epoch(
    tiny_base, appliances, hub_server, tmp_path, monkeypatch
):
    train_items, heldout = appliances
    repo = "pricer-tests/appliances-run"
    config = preset("tiny", max_steps=30, save_steps=10, batch_size=8)
    result = train(tiny_base, train_items, tmp_path / "run", config, push_to=repo, endpoint=hub_server.endpoint)
    assert result.steps == 30 and result.checkpoints == [10, 20, 30]

    local = LocalRun(tmp_path / "run").revisions()
    assert [r.step for r in local] == [10, 20, 30]
    assert [r.epoch for r in local] == pytest.approx([10 * 8 / 120, 20 * 8 / 120, 30 * 8 / 120], abs=0.01)
    state = json.loads((tmp_path / "run" / "checkpoint-20" / "trainer_state.json").read_text())
    assert {"loss", "learning_rate"} <= set(state["log_history"][-1]) and state["log_history"][-1]["step"] == 20

    hub = HubRepo(repo, endpoint=hub_server.endpoint).revisions()
    assert [p.commit for p in result.pushed] == [r.commit for r in hub]  # every checkpoint, in order
    assert [(r.step, r.epoch) for r in hub] == [(r.step, pytest.approx(r.epoch, abs=0.01)) for r in local]
    assert all(f"step {r.step}" in r.message and "epoch" in r.message for r in hub)

    monkeypatch.setenv("HF_ENDPOINT", hub_server.endpoint)
    evaluator = Evaluator(Settings(batch_size=8))
    evaluations = evaluator.evaluate(evaluator.source(repo), None, heldout)
    assert [e.revision.step for e in evaluations] == [10, 20, 30] and all(e.n == 40 for e in evaluations)
    local_prices = evaluator.evaluate(evaluator.source(str(tmp_path / "run")), ["checkpoint-30"], heldout)[0].prices.argmax
    assert (local_prices == evaluations[-1].prices.argmax).all()  # the pushed adapter is the saved one


class _Interrupt(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 25:
            raise KeyboardInterrupt


def test_resume_after_an_interruption_continues_the_step_count(tiny_base, tmp_path, catalogue_heldout):
    items = heldout_from_frame(catalogue_split()[0].iloc[:80], name="train")
    config = preset("tiny", max_steps=40, save_steps=10)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_base, items, tmp_path / "run", config, callbacks=[_Interrupt()])
    assert sorted(p.name for p in (tmp_path / "run").glob("checkpoint-*")) == ["checkpoint-10", "checkpoint-20"]
    with pytest.raises(RunFolderInUse, match="--resume"):
        train(tiny_base, items, tmp_path / "run", config)

    result = train(tiny_base, items, tmp_path / "run", config, resume=True)
    assert result.steps == 40 and result.checkpoints == [10, 20, 30, 40]
    state = json.loads((tmp_path / "run" / "checkpoint-40" / "trainer_state.json").read_text())
    assert state["global_step"] == 40 and [e["step"] for e in state["log_history"] if "loss" in e] == [10, 20, 30, 40]
    evaluator = Evaluator(Settings(batch_size=16))
    before, after = evaluator.evaluate(evaluator.source(str(tmp_path / "run")), ["checkpoint-20", "checkpoint-40"], catalogue_heldout)
    assert (before.revision.step, after.revision.step) == (20, 40) and before.n == after.n == 64


def test_bad_input_is_refused_before_any_work(tiny_base, tmp_path, capsys):
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"title": "a", "price": -3}\n')
    other = tmp_path / "other-run"
    other.mkdir()
    (other / "notes.txt").write_text("someone else's files")
    cases = [
        (["--base", str(tiny_base), "--data", str(broken)], "must be positive"),
        (["--base", str(tmp_path / "no-such-model")], "base model"),
        (["--base", str(tiny_base), "--output", str(other)], "holds no pricer run"),
        (["--base", str(tiny_base), "--save-steps", "0"], "save_steps must be positive"),
        ([], "give --base"),
    ]
    for extra, message in cases:
        argv = ["train", "--preset", "course-qlora" if not extra else "tiny", "--output", str(tmp_path / "new-run"), *extra]
        assert main(argv) == 1, extra
        assert message in capsys.readouterr().err, extra
    assert not (tmp_path / "new-run").exists()  # nothing written
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]


def test_pricer_callback_survives_a_down_service_and_queues_each_checkpoint_on_a_live_one(make_server, tiny_base, tmp_path):
    items = heldout_from_frame(catalogue_split()[0].iloc[:40], name="train")
    config = preset("tiny", max_steps=10, save_steps=5)

    down = PricerCallback(f"http://127.0.0.1:{free_port()}", timeout=1)
    started = time.monotonic()
    train(tiny_base, items, tmp_path / "runs" / "unnoticed", config, callbacks=[down])
    assert down.accepted == [] and time.monotonic() - started < 60

    with make_server(PRICER_CHECKPOINT_ROOT=str(tmp_path / "runs")).start() as server:
        live = PricerCallback(f"http://127.0.0.1:{server.port}", api_token=API_TOKEN)
        train(tiny_base, items, tmp_path / "runs" / "watched", config, callbacks=[live])
        assert [job["revision"] for job in live.accepted] == ["checkpoint-5", "checkpoint-10"]
        done = [server.wait_for(job["id"]) for job in live.accepted]
        assert all(job["status"] == "done" and job["repo"] == "local/watched" for job in done)


def test_training_data_from_a_hub_dataset(hub_server, monkeypatch, tmp_path, appliances):
    from huggingface_hub import HfApi

    from pricer.evaluator.errors import InvalidDataset
    from tests.hubserver import point_hf_client_at

    point_hf_client_at(monkeypatch, hub_server.endpoint)
    api = HfApi(endpoint=hub_server.endpoint, token=False)
    api.create_repo("pricer-tests/appliance-items", repo_type="dataset", exist_ok=True)
    local = tmp_path / "train.jsonl"
    pd.read_json(APPLIANCES, lines=True).iloc[:50].to_json(local, orient="records", lines=True)
    api.upload_file(path_or_fileobj=local, path_in_repo="data/train.jsonl", repo_id="pricer-tests/appliance-items", repo_type="dataset")

    fetched = load_heldout("hf://datasets/pricer-tests/appliance-items/data/train.jsonl")
    expected = load_heldout(local)
    assert fetched.fingerprint == expected.fingerprint and len(fetched) == 50
    assert load_heldout("hf://datasets/pricer-tests/appliance-items@main/data/train.jsonl").fingerprint == expected.fingerprint
    for bad in ("hf://datasets/pricer-tests/appliance-items/data/missing.jsonl", "hf://datasets/no-slash", "hf://models/a/b/c.jsonl"):
        with pytest.raises(InvalidDataset):
            load_heldout(bad)


class _WaitForEvaluations(TrainerCallback):
    """Training waits at each save until the service has evaluated it, so when the alarm rises depends on the
    checkpoints, not on how fast this machine trains next to how fast it evaluates."""

    def __init__(self, server, sender: PricerCallback) -> None:
        self.server, self.sender, self.saves = server, sender, 0

    def on_save(self, args, state, control, **kwargs):
        self.saves += 1
        def evaluated() -> bool:
            jobs = self.server.client.get("/health").json()["jobs"]
            return len(self.sender.accepted) >= self.saves and jobs["queued"] == jobs["running"] == 0

        until(evaluated, f"checkpoint {state.global_step} to be evaluated", timeout=300)


def test_the_alarm_rises_when_validation_error_rises_and_the_callback_stops_training(make_server, tiny_base, tmp_path):
    frame = catalogue_split()[0].iloc[:64]
    median = float(frame.price.median())
    # validation prices mirrored around the median on a log scale: the better the model learns the real
    # prices, the worse it does here, so validation error rises as training goes on
    mirrored = frame.assign(price=(median**2 / frame.price).clip(1, 999), split="validation")
    data = tmp_path / "mirrored.jsonl"
    mirrored[["title", "details", "price", "split"]].to_json(data, orient="records", lines=True)
    runs = tmp_path / "runs"
    runs.mkdir()
    env = {"PRICER_CHECKPOINT_ROOT": str(runs), "PRICER_DATA": str(data), "PRICER_OVERFIT_PATIENCE": "2"}
    with make_server(**env).start() as server:
        callback = PricerCallback(f"http://127.0.0.1:{server.port}", api_token=API_TOKEN, stop_on_overfit=True)
        config = preset("tiny", max_steps=240, save_steps=8)
        waiter = _WaitForEvaluations(server, callback)
        frame_items = heldout_from_frame(frame, name="train")
        result = train(tiny_base, frame_items, runs / "overfit", config, callbacks=[callback, waiter])
        assert callback.overfitting is not None and result.steps < 240  # stopped early
        # the alarm as /best-checkpoint gave it when the callback stopped training (checkpoints evaluated since,
        # queued before the stop, may end the strict rise, so the answer read now can differ)
        alarm = callback.overfitting
        assert alarm["rise"]["significant"] and alarm["checkpoints"] >= 2 and alarm["since_step"] % 8 == 0
        best = server.client.get("/best-checkpoint", params={"repo": "local/overfit"}).json()
        assert best["test"] is None  # every item is a validation item here
