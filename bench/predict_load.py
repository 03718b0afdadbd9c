"""`POST /predict` under load: micro-batching on vs off, against real `pricer serve` processes.

Two servers serve the same adapter of the tiny model, one with micro-batching
(`PRICER_PREDICT_MAX_BATCH=32`) and one without (`=1`). An async client keeps 1, 8 and 32
requests in flight for a few seconds each and reports requests/s, p50 and p99 latency and
failures, and checks every answer against the unbatched answer for the same description.

    python -m bench.predict_load --seconds 8
    python -m bench.predict_load --device cuda --client-cores 8-15   # the servers get the other cores
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from pricer.evaluator.data import catalogue_split, heldout_from_frame
from pricer.evaluator.embedded.tiny import make_tiny_base
from pricer.trainer import preset, train
from tests.server import ServerProcess

LEVELS = (1, 8, 32)


def prepare(work: Path) -> Path:
    base = make_tiny_base(work / "tiny-llama")
    runs = work / "runs"
    if not (runs / "load" / "checkpoint-100").is_dir():
        items = heldout_from_frame(catalogue_split()[0].iloc[:400], name="train")
        train(base, items, runs / "load", preset("tiny", max_steps=100, save_steps=100))
    return runs


def start(work: Path, runs: Path, name: str, max_batch: int, device: str) -> ServerProcess:
    env = {
        "PRICER_HOME": str(work / name),
        "PRICER_CHECKPOINT_ROOT": str(runs),
        "PRICER_DEVICE": device,
        "PRICER_BASE_MODELS": json.dumps([str(work)]),  # the tiny base lives here
        "PRICER_PREDICT_MAX_BATCH": str(max_batch),
        "PRICER_PREDICT_MAX_WAIT_MS": "5",
    }
    server = ServerProcess(env, work / f"{name}.log").start(timeout=120)
    job = server.client.post("/evaluate", json={"repo": "local/load", "revision": "checkpoint-100"}).json()
    if (done := server.wait_for(job["id"]))["status"] != "done":
        server.stop()
        raise SystemExit(f"the {name} server could not evaluate the checkpoint: {done.get('error')}")
    deadline = time.monotonic() + 60
    while not server.client.get("/health").json()["served"] and time.monotonic() < deadline:
        time.sleep(0.1)
    return server


async def load(port: int, descriptions: list[str], clients: int, seconds: float) -> tuple[list[float], list[dict], int]:
    latencies, answers, failures = [], [], 0
    stop = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60, limits=limits) as client:

        async def worker(offset: int) -> None:
            nonlocal failures
            i = offset
            while time.monotonic() < stop:
                description = descriptions[i % len(descriptions)]
                started = time.perf_counter()
                response = await client.post("/predict", json={"description": description})
                latencies.append(time.perf_counter() - started)
                if response.status_code == 200:
                    answers.append({"description": description, **response.json()})
                else:
                    failures += 1
                i += clients

        await asyncio.gather(*(worker(k) for k in range(clients)))
    return latencies, answers, failures


def cores(spec: str) -> set[int]:
    """'8-15' or '0,2,4' -> a set of CPU numbers."""
    found = set()
    for part in spec.split(","):
        first, _, last = part.partition("-")
        found.update(range(int(first), int(last or first) + 1))
    return found


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="load time per concurrency level")
    parser.add_argument("--device", default="cpu", help="the servers' PRICER_DEVICE")
    parser.add_argument("--client-cores", type=cores, help="e.g. 8-15: the client runs there, the servers on the other cores")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "pricer-bench-load")
    args = parser.parse_args()
    runs = prepare(args.work)
    descriptions = [p.split("\n\n")[1] for p in heldout_from_frame(catalogue_split()[1].iloc[:64], name="d").prompts]

    if args.client_cores:  # the servers inherit this process's cores when they start; the client then moves off them
        os.sched_setaffinity(0, os.sched_getaffinity(0) - args.client_cores)
    servers = {"off": start(args.work, runs, "off", 1, args.device), "on": start(args.work, runs, "on", 32, args.device)}
    if args.client_cores:
        os.sched_setaffinity(0, args.client_cores)
        print(f"servers on cores {sorted(os.sched_getaffinity(servers['on'].process.pid))}, client on {sorted(args.client_cores)}")
    try:
        reference = {d: servers["off"].client.post("/predict", json={"description": d}).json()["price"] for d in descriptions}
        rows = {}
        for mode, server in servers.items():
            for clients in LEVELS:
                latencies, answers, failures = asyncio.run(load(server.port, descriptions, clients, args.seconds))
                wrong = sum(a["price"] != reference[a["description"]] for a in answers)
                rows[mode, clients] = (len(answers) / args.seconds, percentile(latencies, 50), percentile(latencies, 99))
                rps, p50, p99 = rows[mode, clients]
                print(
                    f"batching {mode:>3}, {clients:>2} clients: {rps:7.1f} req/s  p50 {p50 * 1000:7.1f} ms  "
                    f"p99 {p99 * 1000:7.1f} ms  failures {failures}  answers differing from unbatched {wrong}/{len(answers)}"
                )
        for clients in LEVELS:
            on, off = rows["on", clients], rows["off", clients]
            print(f"{clients:>2} clients: batching on/off throughput {on[0] / off[0]:.1f}x, p99 {on[2] / off[2]:.2f}x of off")
    finally:
        for server in servers.values():
            server.stop()


if __name__ == "__main__":
    main()
