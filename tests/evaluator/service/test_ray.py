"""The Ray executor on a real local Ray cluster (CPU actors) and a real PostgreSQL store."""

from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np
import pytest

from pricer.evaluator.data import catalogue_split
from pricer.evaluator.records import JobStatus
from pricer.evaluator.service import PricerService
from pricer.evaluator.store import JobQueue, Store
from tests.server import write_items
from tests.waiting import until

ray = pytest.importorskip("ray")  # installed with pricer[ray], which the dev extra holds: CI runs these
REPO = "local/tiny-run"


@pytest.fixture(scope="module")
def ray_cluster():
    os.environ["RAY_AUTH_MODE"] = "disabled"
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths live under it
    ray.init(num_cpus=2, _temp_dir=temp, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
    shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture
def ray_service(ray_cluster, settings, tiny_run, postgres_url, tmp_path):
    services: list[PricerService] = []

    def make(items: int = 24, **update) -> PricerService:
        data = write_items(tmp_path / f"items-{items}.jsonl", catalogue_split()[0].iloc[:items])
        service = PricerService(settings.model_copy(update={
            "checkpoint_root": tiny_run.parent, "data": str(data), "db_url": postgres_url, "device": "cpu",
            "executor": "ray", "ray_actors": 2, "refresh_seconds": 0.5, **update,
        }))
        services.append(service)
        service.start()
        return service

    yield make
    for service in services:
        service.stop()


def _done(service: PricerService, job_id: int):
    job = service.job(job_id)
    return job if job.job.finished else None


def test_ray_actors_evaluate_the_queued_jobs_as_a_worker_thread_would(ray_service, settings, tiny_run):
    service = ray_service()
    jobs = [service.submit(REPO, f"checkpoint-{step}")[0].job.id for step in (10, 20, 30)]
    results = [until(lambda j=job_id: _done(service, j), f"job {job_id}", timeout=300) for job_id in jobs]
    assert [r.job.status for r in results] == [JobStatus.DONE] * 3
    assert {r.job.worker.rsplit(":", 1)[1] for r in results} <= {"ray-actor-0", "ray-actor-1"}
    assert ray.get([actor.device.remote() for actor in service._executor.actors()]) == ["cpu", "cpu"]

    alone = PricerService(settings.model_copy(update={"checkpoint_root": tiny_run.parent, "data": service.settings.data}))
    for result, evaluation in zip(results, alone.evaluate(REPO, ["checkpoint-10", "checkpoint-20", "checkpoint-30"]), strict=True):
        np.testing.assert_allclose(result.evaluation.prices.mean, evaluation.prices.mean, rtol=1e-6)
        assert result.evaluation.prices.argmax.tolist() == evaluation.prices.argmax.tolist()
    until(lambda: service.served(REPO) is not None, "the replica to serve the choice")
    assert service.served(REPO).revision.commit == service.choice(REPO).chosen.evaluation.revision.commit


def test_an_actor_that_dies_mid_job_is_restarted_and_its_job_runs_again_to_completion(ray_service):
    service = ray_service(items=1600, batch_size=1, lease_seconds=4)  # one item per pass: a job long enough to kill
    job_id = service.submit(REPO, "checkpoint-20")[0].job.id
    queue = JobQueue(Store(service.settings.store_url))
    pricing = until(lambda: (job := queue.get(job_id)).items_done and job, "the job's first items to be priced")
    names = [name for name, _ in service._executor._actors]
    ray.kill(service._executor.actors()[names.index(pricing.worker)], no_restart=False)

    done = until(lambda: _done(service, job_id), "the job to run again", timeout=600)
    assert done.job.status == JobStatus.DONE and done.job.attempts == 2, (done.job.error, done.job.attempts)
    assert len(Store(service.settings.store_url).evaluations(str(service.source(REPO).name))) == 1
