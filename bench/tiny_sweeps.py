"""Selection rules on real training sweeps: the tiny Llama fine-tuned on the catalogue until it overfits.

`bench/sweeps.py` models how predictions evolve over checkpoints; this benchmark trains for
real. Each sweep fine-tunes the tiny model (the `tiny` preset) on a few catalogue items for
many epochs, a checkpoint per epoch, then prices a large set of fresh catalogue items (drawn
with another seed, so none was trained on) with every checkpoint. As in `bench/sweeps.py`,
the items are split once into a pool (validation sets are drawn from it) and an oracle
part, and every rule chooses on many validation draws; a rule's regret is how much worse its
checkpoint is than the oracle best on the oracle items.

Training and pricing are cached under `--work`, so a second run replays at once.

    python -m bench.tiny_sweeps                    # 3 sweeps, 3,500 priced items each
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bench.sweeps import replay, summary
from pricer.evaluator.checkpoints.adapters import read_adapter
from pricer.evaluator.checkpoints.sources import LocalRun
from pricer.evaluator.data import catalogue_split, heldout_from_frame
from pricer.evaluator.embedded.catalogue import catalogue_frame
from pricer.evaluator.embedded.tiny import make_tiny_base
from pricer.evaluator.scoring import PriceModel
from pricer.trainer import preset, train

SWEEPS = (  # (training items, epochs): fewer items overfit sooner
    (200, 30),
    (400, 20),
    (800, 12),
)


def priced(work: Path, base: Path, items: int, epochs: int, heldout, batch_size: int) -> tuple[np.ndarray, list[str]]:
    """(K, n) argmax prices of every checkpoint of one sweep on the held-out items, cached."""
    run = work / f"run-{items}x{epochs}"
    cache = work / f"prices-{items}x{epochs}-{len(heldout)}.npz"
    if cache.exists():
        saved = np.load(cache)
        return saved["prices"], list(saved["names"])
    steps_per_epoch = -(-items // 8)  # the tiny preset's batch of 8
    if not (run / f"checkpoint-{steps_per_epoch * epochs}").is_dir():
        started = time.perf_counter()
        data = heldout_from_frame(catalogue_split()[0].iloc[:items], name="catalogue-train")
        train(base, data, run, preset("tiny", epochs=epochs, save_steps=steps_per_epoch), resume=run.is_dir())
        print(f"  trained {items} items x {epochs} epochs in {time.perf_counter() - started:.0f} s")
    folders = [run / r.revision for r in LocalRun(run).revisions()]
    model = PriceModel(str(base), device="cpu")
    started, rows = time.perf_counter(), []
    for k, folder in enumerate(folders):
        name = model.load_adapter(read_adapter(folder), f"sweep_{k}")
        rows.append(model.price(heldout.prompts, adapter=name, batch_size=batch_size).argmax)
        model.release_adapter(name)
    print(f"  priced {len(heldout)} items x {len(folders)} checkpoints in {time.perf_counter() - started:.0f} s")
    prices, names = np.stack(rows), [f.name for f in folders]
    np.savez(cache, prices=prices, names=np.array(names))
    return prices, names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=3500, help="fresh catalogue items priced by every checkpoint")
    parser.add_argument("--draws", type=int, default=300)
    parser.add_argument("--sizes", type=int, nargs="+", default=[150, 300])
    parser.add_argument("--window", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "pricer-bench-sweeps")
    args = parser.parse_args()
    torch.set_num_threads(2)

    base = make_tiny_base(args.work / "tiny-llama")
    fresh = catalogue_frame(args.items, seed=7)  # another seed: items the runs never trained on
    heldout = heldout_from_frame(fresh, name="catalogue-fresh")
    pooled: dict[int, dict[str, list[float]]] = {n: {} for n in args.sizes}
    for items, epochs in SWEEPS:
        print(f"sweep: {items} training items x {epochs} epochs")
        guesses, names = priced(args.work, base, items, epochs, heldout, args.batch_size)
        curve = np.abs(guesses - heldout.prices).mean(axis=1)
        print("  oracle-part error per checkpoint (all fresh items): " + " ".join(f"{x:.1f}" for x in curve))
        for n in args.sizes:
            result = replay(heldout.prices, guesses, metric="mae", n=n, draws=args.draws, window=args.window, seed=0)
            print(f"\n  {n} validation items")
            print("  " + pd.DataFrame({k: summary(v) for k, v in result["regrets"].items()}).T.round(3).to_string().replace("\n", "\n  "))
            for name, values in result["regrets"].items():
                pooled[n].setdefault(name, []).extend(values)
    for n, by_rule in pooled.items():
        print(f"\nall sweeps, {n} validation items")
        print(pd.DataFrame({k: summary(v) for k, v in by_rule.items()}).T.round(3).to_string())


if __name__ == "__main__":
    main()
