"""`pricer demo`: the whole loop on the embedded default, on a fresh machine.

Makes the tiny base model and the generated catalogue, fine-tunes a LoRA adapter that
writes several checkpoints, evaluates them all on the held-out part, and ranks them.
"""

from __future__ import annotations

from pathlib import Path

from evaluator.data import catalogue_split, heldout_from_frame, load_heldout
from evaluator.evaluate import Evaluator
from evaluator.ranking import Ranked
from evaluator.settings import Settings
from evaluator.tiny import make_tiny_base


def run_demo(settings: Settings, *, steps: int = 400, save_steps: int = 50) -> tuple[Path, list[Ranked]]:
    """Train (once) and evaluate the demo run; return its folder and ranking."""
    from trainer.lora import LoraRun, train_lora

    base = make_tiny_base(settings.home / "tiny-llama")
    run_dir = settings.home / "runs" / f"demo-{steps}-{save_steps}"
    if not any(run_dir.glob("checkpoint-*")):
        print(f"training a LoRA adapter on the tiny model: {steps} steps, a checkpoint every {save_steps} -> {run_dir}")
        train = heldout_from_frame(catalogue_split()[0], name="catalogue-train")
        train_lora(base, train, run_dir, LoraRun(max_steps=steps, save_steps=save_steps))
    evaluator = Evaluator(settings)
    source = evaluator.source(str(run_dir))
    heldout = load_heldout()
    print(f"evaluating every checkpoint of {run_dir} on {len(heldout)} held-out items")
    evaluator.evaluate(source, None, heldout, progress=True)
    return run_dir, evaluator.ranking(source.name, dataset=heldout)
