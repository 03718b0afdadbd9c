"""Cost as the work grows: evaluating K checkpoints is one base load plus K x (adapter swap + scoring).

For K = 1, 5, 20 checkpoints of one run (the tiny Llama at 4 x 256, `bench/eval_common.py`),
each K in a fresh Python process, `Evaluator.evaluate` prices the same items with a fresh
store. The process times `PriceModel`'s base load, its adapter loads and releases (swaps) and
its pricing (scoring); the rest (resolving and fetching checkpoints, storing predictions) is
"other"; each part also in CPU time (all threads), which other jobs on a shared machine
disturb less than wall time. It reports the peak resident memory of the process
(`ru_maxrss`), the resident memory after each adapter is released, and, on CUDA,
`torch.cuda.max_memory_allocated`: none should grow with K, since each adapter is released
after use.

    python -m bench.eval_scaling
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

from bench.eval_common import WORK, base_and_run, checkpoints, items

KS = (1, 5, 20)


def child(args) -> dict:
    """Evaluate `args.child` checkpoints in this (fresh) process; the split of the wall time and peak memory."""
    from pricer.evaluator.checkpoints.sources import LocalRun
    from pricer.evaluator.evaluate import Evaluator
    from pricer.evaluator.scoring import PriceModel
    from pricer.evaluator.settings import Settings

    torch.set_num_threads(args.threads)
    base, run = base_and_run(args.work)
    revisions, dataset = checkpoints(run, args.child), items(args.items)
    seconds: dict[str, float] = defaultdict(float)
    cpu: dict[str, float] = defaultdict(float)
    rss_after: list[int] = []  # resident memory now (not the peak) after each adapter is released

    def timed(part: str, method):
        def wrapper(*a, **kw):
            started, cpu_started = time.perf_counter(), time.process_time()
            try:
                return method(*a, **kw)
            finally:
                seconds[part] += time.perf_counter() - started
                cpu[part] += time.process_time() - cpu_started
                if method.__name__ == "release_adapter":
                    rss_after.append(current_rss())

        return wrapper

    PriceModel.__init__ = timed("base load", PriceModel.__init__)
    PriceModel.load_adapter = timed("adapter swaps", PriceModel.load_adapter)
    PriceModel.release_adapter = timed("adapter swaps", PriceModel.release_adapter)
    PriceModel.price = timed("scoring", PriceModel.price)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with tempfile.TemporaryDirectory() as home:
        settings = Settings(home=Path(home), device=args.device, base_models=[str(run.parent)], **({"batch_size": args.batch_size} if args.batch_size else {}))
        evaluator = Evaluator(settings)
        started, cpu_started = time.perf_counter(), time.process_time()
        evaluations = evaluator.evaluate(LocalRun(run), revisions, dataset)
        wall, cpu_total = time.perf_counter() - started, time.process_time() - cpu_started
        left = sum(len(model.adapters) for model in evaluator._models.values())
    cuda = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None
    return {
        "k": len(evaluations),
        "items": len(dataset),
        "wall": wall,
        **seconds,
        "other": wall - sum(seconds.values()),
        "cpu": {**cpu, "total": cpu_total},
        "rss_after": rss_after,
        "rss_before": rss_before * 1024,  # ru_maxrss is in KiB on Linux
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "cuda_peak": cuda,
        "adapters_left": left,
    }


def current_rss() -> int:
    """This process's resident memory now, in bytes."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", type=int, nargs="+", default=list(KS))
    parser.add_argument("--items", type=int, default=100, help="items priced per checkpoint")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, default=WORK)
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args)))
        return

    base_and_run(args.work)  # build once, outside the measured processes
    results = []
    for k in args.ks:
        command = [sys.executable, "-m", "bench.eval_scaling", "--child", str(k), "--items", str(args.items),
                   "--device", args.device, "--threads", str(args.threads), "--work", str(args.work)]
        if args.batch_size:
            command += ["--batch-size", str(args.batch_size)]
        out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        results.append(r := json.loads(out.strip().splitlines()[-1]))
        cuda = f", CUDA peak {r['cuda_peak'] / 2**20:.0f} MiB" if r["cuda_peak"] is not None else ""
        print(f"K={r['k']:>2}: {r['wall']:6.1f} s = base load {r['base load']:.2f} s + adapter swaps {r['adapter swaps']:.2f} s "
              f"({r['adapter swaps'] / r['k'] * 1000:.0f} ms each) + scoring {r['scoring']:.1f} s "
              f"({r['scoring'] / r['k']:.2f} s each) + other {r['other']:.2f} s; "
              f"peak RSS {r['peak_rss'] / 2**20:.0f} MiB (before evaluating {r['rss_before'] / 2**20:.0f} MiB){cuda}; "
              f"adapters left loaded {r['adapters_left']}", flush=True)
        c, mib = r["cpu"], [m / 2**20 for m in r["rss_after"]]
        print(f"      CPU time {c['total']:.1f} s: scoring {c['scoring'] / r['k']:.2f} s per checkpoint, adapter swaps "
              f"{c['adapter swaps'] / r['k'] * 1000:.0f} ms per checkpoint; resident memory after each release "
              f"{mib[0]:.0f} .. {max(mib):.0f} MiB (last {mib[-1]:.0f})", flush=True)
    first, last = results[0], results[-1]
    per_first, per_last = first["wall"] / first["k"], last["wall"] / last["k"]
    marginal = [(r["wall"] - r["base load"]) / r["k"] for r in (first, last)]
    print(f"per checkpoint: {per_first:.2f} s at K={first['k']}, {per_last:.2f} s at K={last['k']} "
          f"(ratio {per_last / per_first:.2f}); without the base load {marginal[0]:.2f} s vs {marginal[1]:.2f} s "
          f"(ratio {marginal[1] / marginal[0]:.2f}); items: {first['items']}")
    cpu_per = [(r["cpu"]["total"] - r["cpu"]["base load"]) / r["k"] for r in (first, last)]
    print(f"in CPU time, without the base load: {cpu_per[0]:.2f} s vs {cpu_per[1]:.2f} s per checkpoint "
          f"(ratio {cpu_per[1] / cpu_per[0]:.2f})")
    print(f"peak RSS K={last['k']} / K={first['k']}: {last['peak_rss'] / first['peak_rss']:.3f}")


if __name__ == "__main__":
    main()
