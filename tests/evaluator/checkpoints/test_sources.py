import json
import shutil

import pytest
import torch
from safetensors.torch import save_file

from pricer.evaluator.checkpoints.adapters import content_hash
from pricer.evaluator.checkpoints.sources import HubRepo, LocalRun, open_source, parse_training_message
from pricer.evaluator.errors import InvalidAdapter, InvalidRepoId, PickledWeightsRefused, RepoNotFound, RevisionNotFound


def _adapter(folder, *, value: float = 0.0, state: dict | None = None):
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "base_model_name_or_path": "tiny"}))
    save_file({"base_model.model.x.lora_A.weight": torch.full((2, 2), value)}, str(folder / "adapter_model.safetensors"))
    if state:
        (folder / "trainer_state.json").write_text(json.dumps(state))
    return folder


def test_local_run_lists_checkpoints_in_step_order_with_trainer_state(tmp_path):
    _adapter(tmp_path / "checkpoint-100", value=1, state={"global_step": 100, "epoch": 2.0})
    _adapter(tmp_path / "checkpoint-20", value=2)
    (tmp_path / "runs").mkdir()  # other folders are ignored
    revisions = LocalRun(tmp_path).revisions()
    assert [(r.revision, r.step, r.epoch) for r in revisions] == [("checkpoint-20", 20, None), ("checkpoint-100", 100, 2.0)]
    assert revisions[0].commit == content_hash(tmp_path / "checkpoint-20") != revisions[1].commit


def test_local_commit_is_a_content_hash(tmp_path):
    _adapter(tmp_path / "a" / "checkpoint-1", value=1)
    _adapter(tmp_path / "b" / "checkpoint-1", value=1)
    _adapter(tmp_path / "c" / "checkpoint-1", value=3)
    commits = [LocalRun(tmp_path / run).resolve("checkpoint-1").commit for run in "abc"]
    assert commits[0] == commits[1] != commits[2]


def test_fetch_notices_a_checkpoint_changed_since_resolved(tmp_path):
    _adapter(tmp_path / "checkpoint-1", value=1)
    run = LocalRun(tmp_path)
    revision = run.resolve("checkpoint-1")
    shutil.rmtree(tmp_path / "checkpoint-1")
    _adapter(tmp_path / "checkpoint-1", value=9)
    with pytest.raises(RevisionNotFound, match="changed on disk"):
        run.fetch(revision)


@pytest.mark.parametrize("name", ["../x", "checkpoint-9", "..", "a/b", ""])
def test_local_unknown_or_unsafe_revisions(tmp_path, name):
    _adapter(tmp_path / "run" / "checkpoint-1")
    with pytest.raises(RevisionNotFound):
        LocalRun(tmp_path / "run").resolve(name)


def test_adapter_file_checks(tmp_path):
    pickled = tmp_path / "pickled" / "checkpoint-1"
    pickled.mkdir(parents=True)
    (pickled / "adapter_config.json").write_text('{"peft_type": "LORA"}')
    (pickled / "adapter_model.bin").write_bytes(b"\x80\x04pickle")
    with pytest.raises(PickledWeightsRefused, match="safetensors only"):
        LocalRun(tmp_path / "pickled").resolve("checkpoint-1")
    corrupt = _adapter(tmp_path / "corrupt" / "checkpoint-1")
    (corrupt / "adapter_model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}xxxxxx")
    with pytest.raises(InvalidAdapter, match="corrupt"):
        LocalRun(tmp_path / "corrupt").resolve("checkpoint-1")
    noconfig = _adapter(tmp_path / "noconfig" / "checkpoint-1")
    (noconfig / "adapter_config.json").write_text("{")
    with pytest.raises(InvalidAdapter, match="not valid JSON"):
        LocalRun(tmp_path / "noconfig").resolve("checkpoint-1")


def test_missing_run_and_empty_run(tmp_path):
    with pytest.raises(RepoNotFound):
        LocalRun(tmp_path / "nope")
    with pytest.raises(RevisionNotFound, match="no checkpoint-N"):
        LocalRun(tmp_path).revisions()


def test_open_source_routes_paths_and_hub_ids(tmp_path):
    _adapter(tmp_path / "run" / "checkpoint-1")
    assert isinstance(open_source(str(tmp_path / "run")), LocalRun)
    assert isinstance(open_source("org/pricer-run"), HubRepo)
    for bad in ("org/name/extra", "-bad/name", "no-namespace", "org/na me", "a/" + "x" * 100):
        with pytest.raises(InvalidRepoId):
            open_source(bad)


def test_configured_root_confines_local_runs(tmp_path):
    root = tmp_path / "root"
    _adapter(root / "run" / "checkpoint-1")
    _adapter(tmp_path / "outside" / "checkpoint-1")
    assert open_source("local/run", root=root).revisions()[0].revision == "checkpoint-1"
    for bad in ("local/..", "local/../outside", "local/"):
        with pytest.raises(InvalidRepoId):
            open_source(bad, root=root)
    with pytest.raises(InvalidRepoId):
        LocalRun(tmp_path / "outside", root=root)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("Training in progress, step 5000", (5000, None)),
        ("Training in progress, epoch 2", (None, 2.0)),
        ("Training in progress, epoch 1.5, step 30", (30, 1.5)),
        ("initial commit", (None, None)),
        (None, (None, None)),
    ],
)
def test_trainer_commit_messages(message, expected):
    assert parse_training_message(message) == expected
