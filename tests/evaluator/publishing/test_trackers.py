"""The trackers, offline: MLflow on a SQLite store, W&B in offline mode, each told of the tiny run's real evaluations
and its choice, then read back: the figures at each checkpoint's step, the predictions, the chosen adapter under the
alias (moved by a later choice), and the choice as the run's summary."""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from pydantic import SecretStr

from pricer.evaluator.data import catalogue_split
from pricer.evaluator.exports import COLUMNS
from pricer.evaluator.publishing import Run, publishers
from pricer.evaluator.publishing.tracking import TrackerNotInstalled, run_key, slug
from pricer.evaluator.service import PricerService
from pricer.evaluator.settings import Settings
from tests.server import write_items

REPO = "local/tiny-run"
TOKEN = "hf_trackers_never_log_this_token"
METRICS = ("mae", "rmsle", "hit_rate")


@pytest.fixture(scope="module")
def published(tiny_run, tiny_base, tmp_path_factory) -> tuple[Settings, Run]:
    """The tiny run's three checkpoints evaluated once for the module, on 32 held-out items; what publishers are told."""
    folder = tmp_path_factory.mktemp("trackers")
    items = write_items(folder / "heldout.jsonl", catalogue_split()[1].iloc[:32])
    with pytest.MonkeyPatch.context() as env:  # module scope: the autouse isolation has not run yet
        env.setenv("HF_HOME", str(folder / "hf-home"))
        env.delenv("HF_TOKEN", raising=False)
        settings = Settings(
            home=folder / "home", batch_size=8, device="cpu", checkpoint_root=tiny_run.parent, data=str(items),
            base_models=["*/*", str(tmp_path_factory.getbasetemp())], run_card=False,
        )
        service = PricerService(settings)
        service.evaluate(REPO)
        run = service.published_run(REPO)
    assert [e.revision.step for e in run.evaluations] == [10, 20, 30]
    return settings.model_copy(update={"hf_token": SecretStr(TOKEN)}), run


def another_choice(run: Run) -> Run:
    """The same run with another checkpoint chosen (as a later evaluation or a changed rule would choose)."""
    choice = run.choice
    other = next(c for c in choice.candidates if c is not choice.chosen)
    return replace(run, choice=replace(choice, chosen=other, test=other.evaluation.metrics(run.estimator, "test")))


def out_of_order(run: Run) -> list:
    return sorted(run.evaluations, key=lambda e: {30: 0, 10: 1, 20: 2}[e.revision.step])


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def adapter_weights(run: Run) -> Path:
    return run.source.fetch(run.choice.chosen.evaluation.revision).adapter.path / "adapter_model.safetensors"


def nothing_holds_the_token(folder: Path) -> None:
    leaked = [p for p in folder.rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()]
    assert not leaked, f"the HF token was written to {leaked}"


# ---- MLflow


@pytest.fixture
def mlflow_uri(tmp_path, monkeypatch) -> str:
    """A SQLite store whose experiment keeps its artifacts under tmp_path; no telemetry, no server."""
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("DO_NOT_TRACK", "true")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # what mlflow's own functions (`models:/` downloads) default to
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    MlflowClient(tracking_uri=uri).create_experiment("pricer", artifact_location=(tmp_path / "artifacts").as_uri())
    return uri


def test_mlflow_logs_each_checkpoint_at_its_step_and_registers_the_choice_under_the_alias(published, mlflow_uri, tmp_path):
    import mlflow
    from mlflow import MlflowClient

    settings, run = published
    settings = settings.model_copy(update={"mlflow_tracking_uri": mlflow_uri})
    [publisher] = publishers(settings)
    assert publisher.name == "mlflow" and publisher.records_evaluations and publisher.accepts(run.source)
    for evaluation in out_of_order(run):
        publisher.evaluated(run, evaluation)
    publisher.evaluated(run, run.evaluations[0])  # a delivery tried again after a failure: the same points, the same file
    publisher.chose(run)

    client = MlflowClient(tracking_uri=mlflow_uri)
    experiment = client.get_experiment_by_name("pricer").experiment_id
    [tracked] = client.search_runs([experiment], filter_string=f"tags.`pricer.repo` = '{REPO}'")  # one run, found again
    assert tracked.info.run_name == REPO and tracked.info.status == "FINISHED"
    assert tracked.data.params["data_fingerprint"] == run.data.fingerprint
    for name in METRICS:
        history = {m.step: m.value for m in client.get_metric_history(tracked.info.run_id, f"validation/{name}")}
        assert len(client.get_metric_history(tracked.info.run_id, f"validation/{name}")) == 3
        assert history == {e.revision.step: pytest.approx(e.metrics(run.estimator).values[name]) for e in run.evaluations}

    tables = Path(client.download_artifacts(tracked.info.run_id, "predictions", str(tmp_path / "predictions")))
    assert len(list(tables.glob("*.json"))) == 3
    for evaluation in run.evaluations:
        [table] = tables.glob(f"checkpoint-{evaluation.revision.step}-*.json")
        rows = json.loads(table.read_text())
        assert rows["columns"] == COLUMNS and len(rows["data"]) == evaluation.n
        assert [row[COLUMNS.index("argmax")] for row in rows["data"]] == pytest.approx(evaluation.prices.argmax.tolist())

    chosen, model = run.choice.chosen.evaluation, slug(REPO)
    champion = client.get_model_version_by_alias(model, "champion")
    assert champion.tags["pricer.commit"] == chosen.revision.commit and champion.run_id == tracked.info.run_id
    files = Path(mlflow.artifacts.download_artifacts(f"models:/{model}@champion", dst_path=str(tmp_path / "v1"), tracking_uri=mlflow_uri))
    assert sorted(p.name for p in files.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    assert sha256(files / "adapter_model.safetensors") == sha256(adapter_weights(run))

    # what search_runs shows: the chosen checkpoint's figures, not the last checkpoint's
    summary = client.search_runs([experiment], filter_string=f"tags.`pricer.key` = '{run_key(run)}'")[0].data
    assert summary.metrics["chosen/mae"] == pytest.approx(chosen.metrics(run.estimator).mae)
    assert summary.metrics["chosen/step"] == chosen.revision.step and summary.tags["pricer.chosen.commit"] == chosen.revision.commit
    assert summary.metrics["test/mae"] == pytest.approx(run.choice.test.mae)
    assert summary.metrics["validation/mae"] == pytest.approx(run.evaluations[-1].metrics(run.estimator).mae)  # the latest step's

    # a later, different choice (from another process: a new publisher) moves the alias; choosing back reuses the version
    later = another_choice(run)
    type(publisher)(settings).chose(later)
    moved = client.get_model_version_by_alias(model, "champion")
    assert moved.version != champion.version and moved.tags["pricer.commit"] == later.choice.chosen.evaluation.revision.commit
    files = Path(mlflow.artifacts.download_artifacts(f"models:/{model}@champion", dst_path=str(tmp_path / "v2"), tracking_uri=mlflow_uri))
    assert sha256(files / "adapter_model.safetensors") == sha256(adapter_weights(later))
    summary = client.get_run(tracked.info.run_id).data
    assert summary.metrics["chosen/mae"] == pytest.approx(later.choice.chosen.evaluation.metrics(run.estimator).mae)
    publisher.chose(run)
    assert client.get_model_version_by_alias(model, "champion").version == champion.version
    assert len(client.search_model_versions(f"name = '{model}'")) == 2
    assert client.get_run(tracked.info.run_id).data.metrics["chosen/mae"] == pytest.approx(chosen.metrics(run.estimator).mae)
    nothing_holds_the_token(tmp_path)


def test_mlflow_leaves_a_users_own_active_run_alone(published, mlflow_uri, tmp_path, monkeypatch):
    import mlflow

    settings, run = published
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'users.db'}")
    mine = mlflow.start_run()
    try:
        publisher = publishers(settings.model_copy(update={"mlflow_tracking_uri": mlflow_uri}))[0]
        publisher.evaluated(run, run.evaluations[0])
        assert mlflow.active_run().info.run_id == mine.info.run_id
        assert mlflow.get_run(mine.info.run_id).data.metrics == {}
    finally:
        mlflow.end_run()


# ---- W&B


@pytest.fixture
def wandb_dir(tmp_path, monkeypatch) -> Path:
    """W&B offline, every folder it writes under tmp_path; its process-wide setup torn down before and after."""
    import wandb

    folder = tmp_path / "wandb-dir"
    folder.mkdir()
    for name, value in {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DIR": str(folder), "WANDB_DATA_DIR": str(tmp_path / "wandb-data"),
                        "WANDB_CACHE_DIR": str(tmp_path / "wandb-cache"), "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config"),
                        "WANDB_ARTIFACT_DIR": str(tmp_path / "wandb-artifacts"), "HF_TOKEN": TOKEN}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    wandb.teardown()  # its settings are read from the environment once per setup
    yield folder
    wandb.teardown()


def wandb_records(path: Path):
    """The protobuf records of an offline run's `.wandb` file (LevelDB's log format: 32 KiB blocks of chunks)."""
    from wandb.proto import wandb_internal_pb2

    data, block, header = path.read_bytes(), 32768, 7
    assert data[:4] == b":W&B"
    position, pending = 7, b""
    while position + header <= len(data):
        left = block - position % block
        _, length, kind = struct.unpack("<IHB", data[position:position + header]) if left >= header else (0, 0, 0)
        if left < header or (kind == 0 and length == 0):
            position += left  # the block's padding
            continue
        chunk, position = data[position + header:position + header + length], position + header + length
        pending = chunk if kind in (1, 2) else pending + chunk  # FULL, FIRST / MIDDLE, LAST
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


def wandb_sessions(folder: Path, run: Run) -> list[tuple[Path, list]]:
    """Each call's offline run folder and records, in the order the calls ran."""
    import wandb

    wandb.teardown()  # W&B's own process writes the records: stopped, it has written them all
    run_id = f"pricer-{run_key(run)}"

    def started(path: Path) -> tuple[str, int]:  # offline-run-<YYYYmmdd_HHMMSS>-<run id>[-<n>]: n counts within a second
        stamp, rest = path.parent.name.removeprefix("offline-run-").split("-", 1)
        return stamp, int(rest.removeprefix(run_id).lstrip("-") or 0)

    files = sorted((folder / "wandb").glob(f"offline-run-*-{run_id}*/run-{run_id}.wandb"), key=started)
    return [(path.parent, list(wandb_records(path))) for path in files]


def items(update) -> dict:
    return {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in update}


def test_wandb_logs_each_checkpoint_against_its_step_and_aliases_the_chosen_adapter(published, wandb_dir):
    settings, run = published
    settings = settings.model_copy(update={"wandb_project": "pricer-tests"})
    [publisher] = publishers(settings)
    assert publisher.name == "wandb" and publisher.records_evaluations and publisher.accepts(run.source)
    for evaluation in out_of_order(run):
        publisher.evaluated(run, evaluation)
    publisher.chose(run)

    sessions = wandb_sessions(wandb_dir, run)
    assert len(sessions) == 4  # one per call, each finished
    runs = [r.run for _, records in sessions for r in records if r.WhichOneof("record_type") == "run"]
    assert {(r.run_id, r.display_name) for r in runs} == {(f"pricer-{run_key(run)}", REPO)}
    assert all(any(r.WhichOneof("record_type") == "exit" for r in records) for _, records in sessions)

    rows = [items(r.history.item) for _, records in sessions for r in records if r.WhichOneof("record_type") == "history"]
    assert [row["checkpoint/step"] for row in rows] == [30, 10, 20]
    for evaluation in run.evaluations:
        [row] = [row for row in rows if row["checkpoint/step"] == evaluation.revision.step]
        for name in METRICS:
            assert row[f"validation/{name}"] == pytest.approx(evaluation.metrics(run.estimator).values[name])
    defined = {r.metric.glob_name: r.metric.step_metric for _, records in sessions for r in records if r.WhichOneof("record_type") == "metric"}
    assert defined["validation/*"] == "checkpoint/step"

    for folder, _ in sessions[:3]:  # each evaluation's predictions, one row per item
        [table] = (folder / "files" / "media" / "table").glob("predictions_*.table.json")
        table = json.loads(table.read_text())
        [evaluation] = [e for e in run.evaluations if e.revision.commit == table["data"][0][COLUMNS.index("commit")]]
        assert table["columns"] == COLUMNS and len(table["data"]) == evaluation.n

    chosen = run.choice.chosen.evaluation
    summary = {}
    for record in sessions[-1][1]:
        if record.WhichOneof("record_type") == "summary":
            summary |= items(record.summary.update)
    assert summary["chosen/mae"] == pytest.approx(chosen.metrics(run.estimator).mae) and summary["chosen/commit"] == chosen.revision.commit
    assert summary["validation/mae"] == pytest.approx(chosen.metrics(run.estimator).mae)  # the chosen one's, not the last logged
    assert summary["checkpoint/step"] == chosen.revision.step and summary["test/mae"] == pytest.approx(run.choice.test.mae)

    def champion(records) -> tuple[dict, dict]:
        [artifact] = [r.artifact for r in records if r.WhichOneof("record_type") == "artifact" and r.artifact.type == "model"]
        assert artifact.name == f"{slug(REPO)}-adapter" and "champion" in artifact.aliases
        return json.loads(artifact.metadata), {entry.path: entry.digest for entry in artifact.manifest.contents}

    metadata, files = champion(sessions[-1][1])
    md5 = base64.b64encode(hashlib.md5(adapter_weights(run).read_bytes()).digest()).decode()
    assert metadata["commit"] == chosen.revision.commit and set(files) == {"adapter_config.json", "adapter_model.safetensors"}
    assert files["adapter_model.safetensors"] == md5 and metadata["figures"]["chosen/mae"] == pytest.approx(summary["chosen/mae"])

    later = another_choice(run)  # a later choice: the alias goes with the other checkpoint's files
    publisher.chose(later)
    metadata, files = champion(wandb_sessions(wandb_dir, run)[-1][1])
    assert metadata["commit"] == later.choice.chosen.evaluation.revision.commit
    assert files["adapter_model.safetensors"] == base64.b64encode(hashlib.md5(adapter_weights(later).read_bytes()).digest()).decode()
    nothing_holds_the_token(wandb_dir)


def test_wandb_leaves_a_users_own_active_run_alone(published, wandb_dir, tmp_path, monkeypatch):
    import wandb

    settings, run = published
    mine = wandb.init(project="mine")
    monkeypatch.delenv("WANDB_DIR")  # then pricer's run folders go under its home
    try:
        publisher = publishers(settings.model_copy(update={"wandb_project": "pricer-tests", "home": tmp_path / "home"}))[0]
        publisher.evaluated(run, run.evaluations[0])
        assert len(list((tmp_path / "home" / "wandb").glob("offline-run-*"))) == 1
        assert wandb.run is mine
        mine.log({"mine": 1.0})  # still open: a finished run refuses this
    finally:
        mine.finish()


# ---- through the service


def test_the_service_delivers_each_evaluation_and_the_choice_to_both_trackers_once(published, mlflow_uri, wandb_dir):
    settings, run = published
    service = PricerService(settings.model_copy(update={"mlflow_tracking_uri": mlflow_uri, "wandb_project": "pricer-tests"}))
    done = service.publish(REPO, again=False)  # the store holds the module's evaluations: nothing is evaluated again
    chosen = run.choice.chosen.evaluation.revision.revision
    expected = [f"{target}: {e.revision.revision} evaluated" for target in ("mlflow", "wandb") for e in run.evaluations]
    assert done.failed == {} and sorted(done.sent) == sorted([*expected, f"mlflow: {chosen} chosen", f"wandb: {chosen} chosen"])
    assert service.publish(REPO, again=False).sent == []


# ---- without the library


@pytest.mark.parametrize(("setting", "module"), [("mlflow_tracking_uri", "mlflow"), ("wandb_project", "wandb")])
def test_a_tracker_turned_on_without_its_library_names_the_extra(settings, monkeypatch, setting, module):
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    with pytest.raises(TrackerNotInstalled, match=rf"pip install 'pricer\[{module}\]'"):
        publishers(settings.model_copy(update={setting: "sqlite:///x.db" if module == "mlflow" else "pricer"}))
