"""Scale-out: evaluation throughput of 1, 2 and 4 `pricer worker` processes on one store, against 1, in one run.

The same checkpoints (the tiny Llama at 4 layers x 256 hidden, `bench/eval_common.py`) and items every time;
each configuration gets a fresh store, so nothing is reused. The workers are real `pricer worker` processes
(`--threads 1`: one CPU thread each, as one GPU each would be), the jobs are queued through the service's
facade, and the clock runs from the first job queued to the last one done: loading the base in each worker
is part of it, as it is for a user. The store is PostgreSQL when one answers (`--db`, default the machine's
on 127.0.0.1:5432, a fresh database per configuration), else a SQLite file.

    python -m bench.workers                          # 1, 2, 4 workers x 16 checkpoints x 500 items, on the CPU
    python -m bench.workers --executor ray --device cuda --workers 1   # the Ray executor, one actor, on a GPU

With `--executor ray`, each configuration is one `PricerService` with that many Ray actors (a local Ray cluster)
instead of worker processes, and a worker thread in one process is measured beside it on the same checkpoints.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bench.eval_common import base_and_run, checkpoints
from pricer.evaluator.embedded.catalogue import catalogue_frame
from pricer.evaluator.service import PricerService
from pricer.evaluator.settings import Settings

POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def fresh_store(db: str | None, work: Path, name: str) -> str:
    """A store no run has used: a new PostgreSQL database on `db`'s server, or a new SQLite file."""
    if db:
        database = f"pricer_bench_{name}_{uuid.uuid4().hex[:8]}"
        with create_engine(db, isolation_level="AUTOCOMMIT").connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{database}"'))
        return make_url(db).set(database=database).render_as_string(hide_password=False)
    return f"sqlite:///{work / f'{name}-{uuid.uuid4().hex[:8]}.db'}"


def postgres_answers(url: str) -> bool:
    try:
        with create_engine(url).connect():
            return True
    except Exception:
        return False


def timed(service: PricerService, repo: str, revisions: list[str]) -> float:
    """Queue every revision, then wait until every job is done; seconds from the first queued to the last done."""
    started = time.perf_counter()
    jobs = [service.submit(repo, revision)[0].job.id for revision in revisions]
    while not service.idle():  # one count query a tenth of a second: the workers keep the cores
        time.sleep(0.1)
    seconds = time.perf_counter() - started
    failed = [service.job(job_id).job for job_id in jobs if service.job(job_id).job.status != "done"]
    if failed:
        raise SystemExit(f"{len(failed)} job(s) failed: {failed[0].error}")
    return seconds


def with_processes(settings: Settings, workers: int, repo: str, revisions: list[str], log: Path) -> float:
    env = {
        **os.environ,
        "PRICER_HOME": str(settings.home), "PRICER_DB_URL": settings.db_url, "PRICER_CHECKPOINT_ROOT": str(settings.checkpoint_root),
        "PRICER_DATA": settings.data, "PRICER_DEVICE": settings.device, "PRICER_BASE_MODELS": f'["{settings.checkpoint_root}"]',
    }
    processes = []
    with open(log, "ab") as out:
        for _ in range(workers):
            command = [sys.executable, "-m", "pricer.evaluator.cli.main", "worker", "--threads", "1"]
            processes.append(subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT))
    try:
        while log.read_text().count("evaluating the jobs queued") < workers:
            if any(p.poll() is not None for p in processes):
                raise SystemExit(f"a worker exited:\n{log.read_text()[-2000:]}")
            time.sleep(0.1)
        service = PricerService(settings.model_copy(update={"executor": "none"}))
        return timed(service, repo, revisions)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(60)


def with_ray(settings: Settings, actors: int, repo: str, revisions: list[str]) -> float:
    service = PricerService(settings.model_copy(update={"executor": "ray", "ray_actors": actors}))
    service.start()
    try:
        return timed(service, repo, revisions)
    finally:
        service.stop()


def with_thread(settings: Settings, repo: str, revisions: list[str]) -> float:
    service = PricerService(settings.model_copy(update={"executor": "thread"}))
    service.start()
    try:
        return timed(service, repo, revisions)
    finally:
        service.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4], help="configurations to measure (default 1 2 4)")
    parser.add_argument("--checkpoints", type=int, default=16, help="checkpoints evaluated per configuration (default 16)")
    parser.add_argument("--items", type=int, default=500, help="held-out items each is priced on (default 500)")
    parser.add_argument("--db", help=f"a PostgreSQL server URL (default {POSTGRES} when it answers, else SQLite files)")
    parser.add_argument("--executor", choices=["processes", "ray"], default="processes")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="pricer-bench-workers-"))
    base, run = base_and_run()
    revisions = checkpoints(run, args.checkpoints)
    data = work / "items.jsonl"
    catalogue_frame(args.items, seed=1)[["title", "details", "price"]].to_json(data, orient="records", lines=True)
    db = args.db or (POSTGRES if postgres_answers(POSTGRES) else None)
    repo = f"local/{run.name}"
    print(f"{len(revisions)} checkpoints x {args.items} items; store: {'PostgreSQL' if db else 'SQLite'}; "
          f"{args.executor} on {args.device}; {os.cpu_count()} CPU cores")

    def settings(name: str) -> Settings:
        return Settings(home=work / "home", db_url=fresh_store(db, work, name), checkpoint_root=run.parent, data=str(data),
                        device=args.device, base_models=[str(base.parent)])

    results: dict[str, float] = {}
    if args.executor == "ray":
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        results["1 worker thread"] = with_thread(settings("thread"), repo, revisions)
    for n in args.workers:
        if args.executor == "ray":
            results[f"{n} Ray actor(s)"] = with_ray(settings(f"ray{n}"), n, repo, revisions)
        else:
            results[f"{n} worker process(es)"] = with_processes(settings(f"w{n}"), n, repo, revisions, work / f"workers-{n}.log")
    reference = next(iter(results.values()))
    scored = len(revisions) * args.items
    print(f"{'configuration':<22} {'seconds':>8} {'items/s':>8} {'vs first':>9}")
    for label, seconds in results.items():
        print(f"{label:<22} {seconds:8.1f} {scored / seconds:8.1f} {reference / seconds:8.2f}x")


if __name__ == "__main__":
    main()
