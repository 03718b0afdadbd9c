"""Scale-out against real components: PostgreSQL on loopback, `pricer serve` replicas and `pricer worker` processes.

Every process is real and shares one PostgreSQL database; the tests wait on what the store and the API say.
"""

from __future__ import annotations

import json
import shutil
import signal
import threading
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file, save_file

from pricer.evaluator.data import catalogue_split
from pricer.evaluator.service import PricerService
from pricer.evaluator.settings import Settings
from pricer.evaluator.store import JobQueue, Store
from tests.server import API_TOKEN, ServerProcess, WorkerProcess, write_items
from tests.waiting import until

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
CHECKPOINTS = 20


@pytest.fixture(scope="module")
def twenty_run(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 distinct checkpoints: the tiny run's three, their LoRA weights scaled by a different factor each."""
    folder = tmp_path_factory.mktemp("runs") / "twenty-run"
    for i in range(1, CHECKPOINTS + 1):
        target = folder / f"checkpoint-{10 * i}"
        shutil.copytree(tiny_run / f"checkpoint-{10 * (1 + i % 3)}", target)
        weights = target / "adapter_model.safetensors"
        save_file({k: v * (0.5 + 0.05 * i) for k, v in load_file(weights).items()}, weights)
        state = json.loads((target / "trainer_state.json").read_text())
        (target / "trainer_state.json").write_text(json.dumps({**state, "global_step": 10 * i}))
    return folder


@pytest.fixture
def cluster(postgres_url: str, tmp_path: Path):
    """Start replicas and workers on one PostgreSQL store; all are stopped at the end."""
    processes: list[ServerProcess | WorkerProcess] = []
    items = write_items(tmp_path / "heldout.jsonl", catalogue_split()[1].iloc[:48])

    def env(root: Path, **extra: str) -> dict[str, str]:
        return {
            "PRICER_HOME": str(tmp_path / "home"),
            "PRICER_DB_URL": postgres_url,
            "PRICER_CHECKPOINT_ROOT": str(root),
            "PRICER_DATA": str(items),
            "PRICER_API_TOKEN": API_TOKEN,
            "PRICER_DEVICE": "cpu",
            "PRICER_BATCH_SIZE": "16",
            "PRICER_REFRESH_SECONDS": "0.5",
            **extra,
        }

    class Cluster:
        store = postgres_url
        data = items

        def replica(self, root: Path, **extra: str) -> ServerProcess:
            server = ServerProcess(env(root, PRICER_EXECUTOR="none", **extra), tmp_path / f"replica-{len(processes)}.log")
            processes.append(server)
            return server.start()

        def worker(self, root: Path, **extra: str) -> WorkerProcess:
            worker = WorkerProcess(env(root, **extra), tmp_path / f"worker-{len(processes)}.log")
            processes.append(worker)
            return worker.start()

    yield Cluster()
    for process in processes:
        process.stop()


def _prices(evaluation) -> np.ndarray:
    return np.column_stack([evaluation.truth, evaluation.prices.argmax, evaluation.prices.mean])


def test_two_replicas_and_two_workers_evaluate_twenty_checkpoints_once_each_as_one_process_would(cluster, twenty_run, tmp_path):
    replicas = [cluster.replica(twenty_run.parent) for _ in range(2)]
    workers = [cluster.worker(twenty_run.parent) for _ in range(2)]
    answers: list[dict] = []

    def submit(replica: ServerProcess) -> None:
        for i in range(1, CHECKPOINTS + 1):
            body = {"repo": "local/twenty-run", "revision": f"checkpoint-{10 * i}"}
            response = replica.client.post("/evaluate", json=body, headers=AUTH)
            assert response.status_code in (200, 202), response.text
            answers.append(response.json())

    submitting = [threading.Thread(target=submit, args=(replica,)) for replica in replicas]
    for thread in submitting:
        thread.start()
    for thread in submitting:
        thread.join()
    ids = {answer["id"] for answer in answers}
    assert len(answers) == 2 * CHECKPOINTS and len(ids) == CHECKPOINTS  # both replicas named the one job per checkpoint

    for job_id in ids:
        assert replicas[job_id % 2].wait_for(job_id, timeout=600)["status"] == "done"
    store = Store(cluster.store)
    jobs = JobQueue(store).jobs()
    assert len(jobs) == CHECKPOINTS and all(job.status == "done" and job.attempts == 1 for job in jobs)
    assert {job.worker.split(":")[1] for job in jobs} == {str(w.process.pid) for w in workers}  # both took a share
    stored = {e.revision.commit: e for e in store.evaluations(str(twenty_run.resolve()))}
    assert len(stored) == CHECKPOINTS  # each evaluated exactly once

    alone = PricerService(Settings(
        home=tmp_path / "alone", checkpoint_root=twenty_run.parent, data=str(cluster.data), device="cpu", batch_size=16
    ))
    for evaluation in alone.evaluate("local/twenty-run"):
        np.testing.assert_allclose(_prices(stored[evaluation.revision.commit]), _prices(evaluation), rtol=1e-6)
    ranked = [r["revision"] for r in replicas[1].client.get("/evaluations", params={"repo": "local/twenty-run"}).json()["ranking"]]
    assert ranked == [r.evaluation.revision.revision for r in alone.ranking("local/twenty-run")]


def test_a_worker_killed_mid_job_leaves_it_to_another_and_it_completes_once(cluster, tiny_run, tmp_path):
    many = write_items(tmp_path / "many.jsonl", catalogue_split()[0].iloc[:600])
    slow = {"PRICER_DATA": str(many), "PRICER_BATCH_SIZE": "1"}  # one item per pass: a job long enough to kill
    replica = cluster.replica(tiny_run.parent, **slow)
    workers = [cluster.worker(tiny_run.parent, **slow) for _ in range(2)]
    job = replica.client.post("/evaluate", json={"repo": "local/tiny-run", "revision": "checkpoint-20"}, headers=AUTH).json()
    def progress() -> dict | None:  # the worker's progress, as the replica (another process) shows it
        return replica.client.get(f"/evaluations/{job['id']}").json().get("progress")

    assert until(lambda: (p := progress()) and p["items_done"] > 0 and p, "the first items priced")["items_total"] == 600
    queue = JobQueue(Store(cluster.store))
    holder = queue.get(job["id"]).worker
    victim = next(w for w in workers if f":{w.process.pid}:" in holder)
    victim.signal(signal.SIGKILL)

    done = replica.wait_for(job["id"], timeout=600)
    assert done["status"] == "done"
    finished = queue.get(job["id"])
    assert finished.attempts == 2 and f":{victim.process.pid}:" not in finished.worker
    assert len(Store(cluster.store).evaluations(str(tiny_run.resolve()))) == 1


def test_a_frozen_worker_loses_its_lease_another_completes_the_job_and_the_late_outcome_is_refused(cluster, tiny_run, tmp_path):
    """SIGSTOP: the process lives but renews nothing (a machine cut off from the database); only its lease can tell."""
    many = write_items(tmp_path / "many.jsonl", catalogue_split()[0].iloc[:600])
    slow = {"PRICER_DATA": str(many), "PRICER_BATCH_SIZE": "1", "PRICER_LEASE_SECONDS": "3"}
    replica = cluster.replica(tiny_run.parent, **slow)
    frozen = cluster.worker(tiny_run.parent, **slow)
    job = replica.client.post("/evaluate", json={"repo": "local/tiny-run", "revision": "checkpoint-30"}, headers=AUTH).json()
    queue = JobQueue(Store(cluster.store))
    until(lambda: queue.get(job["id"]).status == "running", "the claim")
    frozen.signal(signal.SIGSTOP)
    other = cluster.worker(tiny_run.parent, **slow)
    assert replica.wait_for(job["id"], timeout=600)["status"] == "done"
    done = queue.get(job["id"])
    assert f":{other.process.pid}:" in done.worker

    frozen.signal(signal.SIGCONT)  # it wakes, finishes its copy, and finds the job no longer its own
    until(lambda: "lease was lost" in frozen.log.read_text(), "the woken worker to see its lease lost", timeout=600)
    again = queue.get(job["id"])
    assert again.status == "done" and again.worker == done.worker and again.evaluation_id == done.evaluation_id
    assert len(Store(cluster.store).evaluations(str(tiny_run.resolve()))) == 1


def test_both_replicas_serve_the_new_choice_once_a_worker_changes_it(cluster, broken_run):
    replicas = [cluster.replica(broken_run.parent, PRICER_REPO="local/broken-run") for _ in range(2)]
    cluster.worker(broken_run.parent)
    client = replicas[0].client

    def evaluate(revision: str) -> dict:
        job = client.post("/evaluate", json={"repo": "local/broken-run", "revision": revision}, headers=AUTH).json()
        return replicas[0].wait_for(job["id"])

    def answered_by(replica: ServerProcess) -> str | None:
        response = replica.client.post("/predict", json={"description": "Cordless drill, 20V, two batteries"})
        return response.json()["revision"] if response.status_code == 200 else None

    evaluate("checkpoint-40")  # far worse than the others, but the only one: the choice
    for replica in replicas:
        until(lambda r=replica: answered_by(r) == "checkpoint-40", "each replica to serve checkpoint-40", timeout=300)
    evaluate("checkpoint-30")
    assert client.get("/best-checkpoint", params={"repo": "local/broken-run"}).json()["revision"] == "checkpoint-30"
    for replica in replicas:
        until(lambda r=replica: answered_by(r) == "checkpoint-30", "each replica to serve the new choice", timeout=300)


def test_the_compose_file_runs_pricer_commands_on_postgresql_with_a_gpu_per_worker():
    """docker cannot run here: the compose file is checked by reading it, as the Dockerfile is by hadolint."""
    import yaml

    from pricer.evaluator.cli.main import build_parser

    compose = yaml.safe_load((Path(__file__).resolve().parents[1] / "compose.yaml").read_text())
    pricer = {name: service for name, service in compose["services"].items() if service.get("image") == "pricer"}
    assert set(pricer) == {"api", "worker-0", "worker-1"}
    for service in pricer.values():
        build_parser().parse_args(service["command"])  # a command the CLI takes (a typo exits here)
        assert service["environment"]["PRICER_DB_URL"].startswith("postgresql+psycopg://")
        assert service["depends_on"]["db"]["condition"] == "service_healthy"
    assert pricer["api"]["command"][:1] == ["serve"] and pricer["api"]["ports"] == ["8000:8000"]
    gpus = [pricer[name]["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"] for name in ("worker-0", "worker-1")]
    assert [pricer[name]["command"] for name in ("worker-0", "worker-1")] == [["worker"]] * 2 and gpus == [["0"], ["1"]]
