"""What `eval_throughput.py` and `eval_scaling.py` share: a bigger tiny base, a run of real checkpoints, 500 items.

The tiny Llama is made 4 layers x 256 hidden (the tests' default is 2 x 128), so that a
forward pass costs more than the Python around it. It is fine-tuned with the `tiny` preset
on the catalogue's training items, a checkpoint every `save_steps` steps; everything is
cached under `$TMPDIR/pricer-bench-eval`. The items priced are a fresh catalogue sample
(another seed), so no item was trained on.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from pricer.evaluator.checkpoints.sources import LocalRun
from pricer.evaluator.data import HeldOutSet, catalogue_split, heldout_from_frame
from pricer.evaluator.embedded.catalogue import catalogue_frame
from pricer.evaluator.embedded.tiny import make_tiny_base
from pricer.trainer import preset, train

WORK = Path(tempfile.gettempdir()) / "pricer-bench-eval"
HIDDEN, LAYERS = 256, 4
STEPS, SAVE_STEPS = 100, 5  # 20 checkpoints; eval_throughput uses every 4th


def base_and_run(work: Path = WORK, *, log=print) -> tuple[Path, Path]:
    """The 4 x 256 tiny base and a run folder of 20 checkpoints (built once, then cached)."""
    started = time.perf_counter()
    base = make_tiny_base(work / f"tiny-llama-{LAYERS}x{HIDDEN}", hidden=HIDDEN, layers=LAYERS)
    run = work / f"run-{LAYERS}x{HIDDEN}-{STEPS}-{SAVE_STEPS}"
    if not (run / f"checkpoint-{STEPS}").is_dir():
        training = heldout_from_frame(catalogue_split()[0], name="catalogue-train")
        train(base, training, run, preset("tiny", max_steps=STEPS, save_steps=SAVE_STEPS), resume=run.is_dir())
    if (seconds := time.perf_counter() - started) > 5:
        log(f"built the base and {STEPS // SAVE_STEPS} checkpoints in {seconds:.0f} s (cached in {work})")
    return base, run


def checkpoints(run: Path, k: int) -> list[str]:
    """`k` revision names spread evenly over the run, ending with the last one."""
    names = [r.revision for r in LocalRun(run).revisions()]
    k = min(k, len(names))
    return [names[round((i + 1) * len(names) / k) - 1] for i in range(k)]


def items(n: int = 500) -> HeldOutSet:
    """`n` catalogue items never trained on (the catalogue generated with another seed)."""
    return heldout_from_frame(catalogue_frame(n, seed=1), name=f"catalogue-seed1-{n}")
