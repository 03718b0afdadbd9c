"""Hostile and broken checkpoint folders: each is refused or skipped with a reason, and nothing blocks or reads
outside the checkpoint root."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from pricer.evaluator.checkpoints.adapters import STATE_FILE, read_trainer_state
from pricer.evaluator.checkpoints.sources import LocalRun, open_source
from pricer.evaluator.errors import HubUnavailable, IncompatibleAdapter, InvalidAdapter, RevisionNotFound
from pricer.evaluator.evaluate import Evaluator
from pricer.evaluator.scoring import PriceModel
from pricer.evaluator.settings import Settings
from tests.server import free_port

SETTLED = 1_000_000_000  # a modification time long past: not a folder being written now


def _adapter(folder: Path, base: str = "org/base") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "base_model_name_or_path": base}))
    save_file({"base_model.model.x.lora_A.weight": torch.zeros(2, 4)}, str(folder / "adapter_model.safetensors"))
    return folder


def _settled(folder: Path) -> Path:
    os.utime(folder, (SETTLED, SETTLED))
    return folder


def _within(call, timeout: float = 60):
    """Run `call` on a thread; a call that blocks (a FIFO read) would never end: fail instead of hanging."""
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:  # noqa: BLE001  (handed to the test)
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "the call blocked"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def test_a_fifo_or_a_device_in_place_of_an_adapter_file_is_refused_without_blocking(tmp_path):
    run = tmp_path / "root" / "run"
    fifo = _adapter(run / "checkpoint-1")
    (fifo / "adapter_model.safetensors").unlink()
    os.mkfifo(fifo / "adapter_model.safetensors")
    with pytest.raises(InvalidAdapter, match="not a regular file"):
        _within(lambda: LocalRun(run, root=tmp_path / "root").resolve("checkpoint-1"))
    config_fifo = _adapter(run / "checkpoint-2")
    (config_fifo / "adapter_config.json").unlink()
    os.mkfifo(config_fifo / "adapter_config.json")
    with pytest.raises(InvalidAdapter, match="not a regular file"):
        _within(lambda: LocalRun(run, root=tmp_path / "root").resolve("checkpoint-2"))
    zero = _adapter(run / "checkpoint-3")
    (zero / "adapter_config.json").unlink()
    (zero / "adapter_config.json").symlink_to("/dev/zero")
    with pytest.raises(InvalidAdapter, match="outside"):
        _within(lambda: LocalRun(run, root=tmp_path / "root").resolve("checkpoint-3"))
    state_fifo = _adapter(run / "checkpoint-4")
    os.mkfifo(state_fifo / STATE_FILE)
    assert _within(lambda: read_trainer_state(state_fifo)) == (None, None, None)


def test_links_out_of_the_root_are_refused_and_links_inside_it_are_followed(tmp_path):
    root, outside = tmp_path / "root", _adapter(tmp_path / "elsewhere" / "checkpoint-1")
    run = root / "run"
    _adapter(run / "checkpoint-1")
    (run / "checkpoint-2").symlink_to(outside)  # the folder is a link out
    linked_files = run / "checkpoint-3"
    linked_files.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):  # its files are links out
        (linked_files / name).symlink_to(outside / name)
    inside = run / "checkpoint-4"
    inside.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):  # links to another checkpoint of the root
        (inside / name).symlink_to(run / "checkpoint-1" / name)
    source = open_source("local/run", root=root)
    for name in ("checkpoint-2", "checkpoint-3"):
        with pytest.raises(InvalidAdapter, match="outside"):
            source.resolve(name)
    assert source.resolve("checkpoint-4").commit == source.resolve("checkpoint-1").commit
    (root / "escape").symlink_to(tmp_path / "elsewhere")  # a run folder that is itself a link out
    with pytest.raises(Exception, match="outside the checkpoint root"):
        open_source("local/escape", root=root)


def test_oversized_configs_and_states_are_not_read(tmp_path):
    big = _adapter(tmp_path / "run" / "checkpoint-1")
    (big / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "pad": "x" * (2 << 20)}))
    with pytest.raises(InvalidAdapter, match="at most"):
        LocalRun(tmp_path / "run").resolve("checkpoint-1")
    state = _adapter(tmp_path / "run" / "checkpoint-2")
    with open(state / STATE_FILE, "wb") as handle:  # a sparse 100 MB file: refused by its size, never read
        handle.truncate(100 << 20)
    assert read_trainer_state(state) == (None, None, None)


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ('{"global_step": 30, "epoch": 1.5}', (30, 1.5, None)),
        ('{"global_step": 30, "epoch": Infinity}', (30, None, None)),
        ('{"global_step": 30, "epoch": NaN}', (30, None, None)),
        ('{"global_step": 99999999999999999999999, "epoch": -1}', (None, None, None)),
        ('{"global_step": true, "epoch": "2"}', (None, None, None)),
        ("[1, 2]", (None, None, None)),
        ("[" * 100_000, (None, None, None)),
        ("\xff\xfe", (None, None, None)),
        # the loss: the last logged training loss at or before the step; evaluation entries and junk are passed over
        (
            '{"global_step": 30, "log_history": [{"loss": 2.5, "step": 10}, {"loss": 1.25, "step": 30},'
            ' {"eval_loss": 0.1, "step": 30}, {"loss": 0.5, "step": 40}]}',
            (30, None, 1.25),
        ),
        ('{"global_step": 30, "log_history": [{"loss": 2.5, "step": 10}, {"loss": NaN, "step": 20}, 7]}', (30, None, 2.5)),
        ('{"global_step": 30, "log_history": [{"loss": -1}, {"loss": true}, {"loss": "1"}]}', (30, None, None)),
        ('{"global_step": 30, "log_history": {"loss": 1}}', (30, None, None)),
    ],
)
def test_a_trainer_state_gives_only_values_the_store_and_charts_can_take(tmp_path, state, expected):
    folder = _adapter(tmp_path / "checkpoint-1")
    (folder / STATE_FILE).write_bytes(state.encode("utf-8", errors="surrogateescape"))
    assert read_trainer_state(folder) == expected


def test_a_broken_checkpoint_is_skipped_with_its_reason_and_the_others_are_listed(tmp_path):
    run = tmp_path / "run"
    for step in (10, 20):
        _adapter(run / f"checkpoint-{step}")
    for broken in ("checkpoint-999", "checkpoint-99999999999999999999999"):  # an empty save; a step past 64 bits
        (run / broken).mkdir()
        _settled(run / broken)
    (run / "checkpoint-30").mkdir()  # being written now: neither listed nor reported yet
    scan = LocalRun(run).scan()
    assert [r.revision for r in scan.revisions] == ["checkpoint-10", "checkpoint-20"]
    skipped = {revision.revision: reason for revision, reason in scan.skipped}
    assert set(skipped) == {"checkpoint-999", "checkpoint-99999999999999999999999"}
    assert "no adapter_model.safetensors" in skipped["checkpoint-999"]
    assert "out of range" in skipped["checkpoint-99999999999999999999999"]
    assert LocalRun(run).latest().revision == "checkpoint-20"
    again = LocalRun(run).scan()  # a broken folder keeps one id while it is unchanged: reported once
    assert [r.commit for r, _ in again.skipped] == [r.commit for r, _ in scan.skipped]
    for name in ("x" * 256, "checkpoint-1/../../etc"):
        with pytest.raises(RevisionNotFound):
            LocalRun(run).resolve(name)


def test_only_allowed_bases_may_be_named_by_an_adapter(tmp_path):
    settings = Settings(home=tmp_path / "home", checkpoint_root=tmp_path / "root", base_models=["meta-llama/*"])
    evaluator = Evaluator(settings)
    assert evaluator.base_allowed("meta-llama/Llama-3.1-8B")
    assert not evaluator.base_allowed("someone/huge-model")
    assert evaluator.base_allowed(str((tmp_path / "home" / "models" / "tiny").resolve()))  # pricer's own home
    (tmp_path / "elsewhere").mkdir()
    for named in ("/etc", str(tmp_path / "elsewhere"), "someone/huge-model", "../../etc"):
        with pytest.raises(InvalidAdapter, match="does not allow"):
            evaluator._base(named)
    explicit = Evaluator(settings.model_copy(update={"base_model": str(tmp_path / "elsewhere")}))
    assert explicit._base("/etc") == str((tmp_path / "elsewhere").resolve())  # the operator's --base beats the adapter


def test_an_adapter_tensor_of_the_wrong_rank_is_an_incompatible_adapter(tiny_base, tmp_path):
    folder = tmp_path / "checkpoint-1"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "base_model_name_or_path": str(tiny_base)}))
    key = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
    save_file({key: torch.zeros(8)}, str(folder / "adapter_model.safetensors"))
    model = PriceModel(str(tiny_base), device="cpu")
    with pytest.raises(IncompatibleAdapter, match="fits no module"):
        model.load_adapter(LocalRun(tmp_path).fetch(LocalRun(tmp_path).resolve("checkpoint-1")).adapter, "bad")
    assert model.adapters == []


def test_an_uncached_hub_base_while_the_hub_is_unreachable_fails_at_once_as_hub_unavailable(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    with pytest.raises(HubUnavailable, match="not cached and the Hub cannot be reached"):  # not a minute of retries
        PriceModel("someone/not-cached-anywhere", device="cpu")
