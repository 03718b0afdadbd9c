"""`PricerCallback` tells the truth: a Hub checkpoint is named by the exact commit its push made, what a down service
missed waits in the run folder's outbox until the next training run or `pricer watch` sends it, and importing
the callback in a training script brings in neither the service nor pandas."""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest
from huggingface_hub import HfApi
from transformers import Trainer, TrainingArguments

from pricer.evaluator.cli.main import main
from pricer.evaluator.data import catalogue_split, heldout_from_frame, load_heldout
from pricer.trainer import PricerCallback, preset, train
from pricer.trainer.dataset import CompletionOnly, pad_batch
from pricer.trainer.outbox import OUTBOX_FILE, Outbox, resolve_pushes
from pricer.trainer.train import load_for_training
from tests.hubserver import point_hf_client_at
from tests.server import API_TOKEN, free_port, write_items

HEAVY = ("pandas", "fastapi", "sqlalchemy", "pricer.evaluator.service", "pricer.evaluator.store", "pricer.app")


@pytest.mark.parametrize("statement", ["from pricer import PricerCallback", "import pricer.trainer.callback"])
def test_importing_the_callback_brings_in_neither_the_service_nor_pandas(statement):
    code = f"import sys\n{statement}\nprint([name for name in {HEAVY!r} if name in sys.modules])"
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert found.strip() == "[]"


def test_the_outbox_holds_each_request_once_and_leaves_nothing_behind_when_empty(tmp_path):
    outbox = Outbox(tmp_path)
    local, pushed = {"repo": "local/run", "revision": "checkpoint-5"}, {"repo": "org/run", "step": 10, "after": "abc"}
    for body in (local, pushed, local):
        outbox.add(body)
    assert Outbox(tmp_path).items() == [local, pushed]
    outbox.replace(pushed, {"repo": "org/run", "revision": "def"})
    outbox.remove(local)
    assert outbox.items() == [{"repo": "org/run", "revision": "def"}]
    outbox.remove({"repo": "org/run", "revision": "def"})
    assert list(tmp_path.iterdir()) == []  # no file, no lock file, no temporary


def test_a_push_is_named_by_the_commit_it_made_never_by_an_earlier_runs_push_of_the_same_step(hub_server, tmp_path):
    api, repo = HfApi(endpoint=hub_server.endpoint, token=False), "pricer-tests/resolve-pushes"
    api.create_repo(repo, exist_ok=True)

    pushed = []

    def push(message: str) -> str:
        pushed.append(message)
        (tmp_path / "file.txt").write_text(f"push {len(pushed)}: {message}")  # new content: each push is a commit
        return api.upload_folder(repo_id=repo, folder_path=tmp_path, commit_message=message).oid

    push("Training in progress, step 10")  # an earlier run into the same repo
    head = api.model_info(repo).sha
    waiting = [{"repo": repo, "step": step, "after": head} for step in (10, 20)] + [{"repo": repo, "epoch": 2, "after": head}]
    assert resolve_pushes(waiting, api) == waiting  # this run's pushes have not landed yet
    ten = push("Training in progress, step 10")
    push("Training in progress, step 10, checkpoint")  # hub_strategy="checkpoint": the checkpoint folder's commit
    twenty = push("Training in progress, step 20, epoch 1.33 (loss 2.1000, lr 0.001)")  # `pricer train --push-to`
    epoch = push("Training in progress, epoch 2")  # the Trainer saving by epoch
    local = {"repo": "local/run", "revision": "checkpoint-5"}
    assert resolve_pushes([*waiting, local], api) == [{"repo": repo, "revision": sha} for sha in (ten, twenty, epoch)] + [local]


def test_a_save_the_trainer_skipped_pushing_is_reported_never_named_by_another_commit(tmp_path, caplog):
    callback = PricerCallback(f"http://127.0.0.1:{free_port()}", repo="org/run", timeout=1)
    args = SimpleNamespace(output_dir=str(tmp_path), push_to_hub=True, save_strategy="steps")
    control = SimpleNamespace(should_training_stop=False)
    callback.on_push_begin(args, SimpleNamespace(global_step=10), control)
    with caplog.at_level("WARNING"):  # step 20's push skipped: step 10's upload was still running
        callback.on_save(args, SimpleNamespace(global_step=20, epoch=1.0), control)
    callback.close(timeout=1)
    assert "did not push step 20" in caplog.text and "hub_always_push=True" in caplog.text
    assert callback.accepted == [] and not (tmp_path / OUTBOX_FILE).exists()


def _pushes(endpoint: str, repo: str) -> dict[int, str]:
    """Each step's commit, from the Trainer's commit messages."""
    commits = HfApi(endpoint=endpoint, token=False).list_repo_commits(repo)
    return {int(c.title.split("step ")[1].split(",")[0]): c.commit_id for c in commits if "step " in c.title}


def test_a_trainer_pushing_every_save_has_every_checkpoint_evaluated_at_the_commit_its_push_made(
    make_server, hub_server, tiny_base, tmp_path, monkeypatch
):
    """The issue's script: the transformers Trainer's own push_to_hub, every save, with the callback beside it."""
    repo = "pricer-tests/every-save"
    point_hf_client_at(monkeypatch, hub_server.endpoint)
    monkeypatch.setattr("transformers.utils.hub._hf_api", None)  # transformers' shared client: made anew, for this Hub
    config = preset("tiny", max_steps=30, save_steps=10)
    tokenizer, model = load_for_training(str(tiny_base), config)
    items = heldout_from_frame(catalogue_split()[0].iloc[:80], name="train")
    args = TrainingArguments(
        output_dir=str(tmp_path / "run"), max_steps=30, save_steps=10, per_device_train_batch_size=8, learning_rate=3e-3,
        logging_steps=10, report_to=[], use_cpu=True, disable_tqdm=True,
        push_to_hub=True, hub_model_id=repo, hub_strategy="every_save", hub_always_push=True,
    )
    with make_server(HF_ENDPOINT=hub_server.endpoint).start() as server:
        callback = PricerCallback(f"http://127.0.0.1:{server.port}", repo=repo, api_token=API_TOKEN, retry_seconds=0.5)
        trainer = Trainer(
            model=model, args=args, train_dataset=CompletionOnly(tokenizer, items, max_length=config.max_length),
            data_collator=pad_batch(tokenizer.pad_token_id), callbacks=[callback],
        )
        trainer.train()
        pushes = _pushes(hub_server.endpoint, repo)
        assert sorted(pushes) == [10, 20, 30]
        assert [job["revision"] for job in callback.accepted] == [pushes[10], pushes[20], pushes[30]]  # the last too
        done = [server.wait_for(job["id"]) for job in callback.accepted]
        assert [(job["status"], job["step"], job["commit"]) for job in done] == [("done", s, pushes[s]) for s in (10, 20, 30)]
    assert not (tmp_path / "run" / OUTBOX_FILE).exists()
    assert OUTBOX_FILE not in HfApi(endpoint=hub_server.endpoint, token=False).list_repo_files(repo)  # "_*" is not pushed


def _train_while_down(tiny_base, data, output, repo, endpoint):
    """`pricer train --push-to` with the callback pointed at a service that is not there."""
    down = PricerCallback(
        f"http://127.0.0.1:{free_port()}", repo=repo, api_token=API_TOKEN, hub_endpoint=endpoint, timeout=1, retry_seconds=0.5
    )
    result = train(tiny_base, load_heldout(data), output, preset("tiny", max_steps=10, save_steps=5), push_to=repo,
                   endpoint=endpoint, callbacks=[down])
    assert down.accepted == [] and [p.step for p in result.pushed] == [5, 10]
    # kept on disk by exact commit, so whoever sends them needs no Hub access; never with a token
    assert Outbox(output).items() == [{"repo": repo, "revision": p.commit} for p in result.pushed]
    assert API_TOKEN not in (output / OUTBOX_FILE).read_text()
    return [p.commit for p in result.pushed]


def test_what_a_down_service_missed_is_sent_by_the_next_training_run_with_each_pushed_commit(
    make_server, hub_server, tiny_base, tmp_path, monkeypatch, capsys
):
    repo, runs = "pricer-tests/outbox-run", tmp_path / "runs"
    monkeypatch.setenv("HF_ENDPOINT", hub_server.endpoint)  # for `pricer train`
    data = write_items(tmp_path / "train.jsonl", catalogue_split()[0].iloc[:40])
    commits = _train_while_down(tiny_base, data, runs / "run", repo, hub_server.endpoint)

    with make_server(PRICER_CHECKPOINT_ROOT=str(runs), HF_ENDPOINT=hub_server.endpoint).start() as server:
        argv = ["train", "--preset", "tiny", "--base", str(tiny_base), "--data", str(data), "--output", str(runs / "run"),
                "--max-steps", "15", "--save-steps", "5", "--resume", "--push-to", repo,
                "--notify", f"http://127.0.0.1:{server.port}", "--notify-token", API_TOKEN, "--json"]
        assert main(argv) == 0
        pushed = json.loads(capsys.readouterr().out)["pushed"]
        assert [p["step"] for p in pushed] == [15]
        commits.append(pushed[0]["commit"])
        jobs = server.client.get("/evaluations", params={"repo": repo}).json()["jobs"]
        done = [server.wait_for(job["id"]) for job in jobs]
        assert sorted((job["status"], job["step"], job["commit"]) for job in done) == [
            ("done", step, commit) for step, commit in zip((5, 10, 15), commits, strict=True)
        ]
    assert not (runs / "run" / OUTBOX_FILE).exists()


def test_pricer_watch_on_the_run_folder_sends_what_its_outbox_holds(hub_server, tiny_base, tmp_path, monkeypatch, capsys):
    repo, run = "pricer-tests/outbox-watch", tmp_path / "runs" / "run"
    point_hf_client_at(monkeypatch, hub_server.endpoint)
    data = write_items(tmp_path / "train.jsonl", catalogue_split()[0].iloc[:40])
    commits = _train_while_down(tiny_base, data, run, repo, hub_server.endpoint)

    heldout = write_items(tmp_path / "heldout.jsonl", catalogue_split()[1].iloc[:16])
    assert main(["watch", str(run), "--once", "--interval", "0.2", "--data", str(heldout)]) == 0
    out = capsys.readouterr().out
    assert all(f"{repo}@{commit}: done" in out for commit in commits), out
    assert not (run / OUTBOX_FILE).exists()
