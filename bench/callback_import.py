"""What importing `PricerCallback` costs a training script, against importing `transformers.TrainerCallback` alone.

Every import runs in a fresh interpreter (nothing cached in-process), timed inside it, the cases taking turns in
each repetition after one warm-up round each; the figure is the median, and the ratio is against the baseline
measured in the same run. `pricer.trainer.train` (what the callback brought in when the trainer package imported
everything at once: pandas, the evaluator) is shown for comparison.

    python -m bench.callback_import --repeat 7
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

CASES = {
    "from transformers import TrainerCallback (baseline)": "from transformers import TrainerCallback",
    "from pricer import PricerCallback": "from pricer import PricerCallback",
    "import pricer.trainer.callback": "import pricer.trainer.callback",
    "from pricer.trainer.train import train (for comparison)": "from pricer.trainer.train import train",
}
HEAVY = ("pandas", "fastapi", "sqlalchemy", "pricer.evaluator.service", "pricer.evaluator.store", "pricer.app")


def timed(statement: str) -> tuple[float, list[str]]:
    """(seconds the import took in a fresh interpreter, the heavy modules it loaded)."""
    code = (
        "import sys, time, json\n"
        "started = time.perf_counter()\n"
        f"{statement}\n"
        "seconds = time.perf_counter() - started\n"
        f"print(json.dumps([seconds, [m for m in {HEAVY!r} if m in sys.modules]]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    seconds, heavy = json.loads(out.strip().splitlines()[-1])
    return seconds, heavy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="fresh interpreters per case (default 7)")
    args = parser.parse_args()
    for statement in CASES.values():  # warm-up: the first import after a while reads files from disk
        timed(statement)
    times: dict[str, list[float]] = {name: [] for name in CASES}
    heavy: dict[str, list[str]] = {}
    for _ in range(args.repeat):
        for name, statement in CASES.items():
            seconds, heavy[name] = timed(statement)
            times[name].append(seconds)
    baseline = statistics.median(next(iter(times.values())))
    print(f"median of {args.repeat} fresh interpreters each")
    for name, found in times.items():
        median = statistics.median(found)
        print(f"  {name:<58} {median:6.2f} s  {median / baseline:5.2f}x  heavy: {', '.join(heavy[name]) or '-'}")


if __name__ == "__main__":
    main()
