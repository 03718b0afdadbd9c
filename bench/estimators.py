"""Every estimate from the one pass: which price to read from the model, and whether its 80% interval holds 80%.

A real training sweep of the tiny model (by default `bench/tiny_sweeps.py`'s 800 items x 12
epochs, trained here if it is not cached) prices a large set of fresh catalogue items. Each
checkpoint's evaluation holds every estimate: argmax, mean, median, log (best for RMSLE) and
hit, and the central 80% interval. Half of the items validate and half test. For each
metric, the table gives each estimator's validation and test figure for the checkpoint the
default rule chooses under it, and which estimator `auto` takes (on validation only). The
last column is the interval's coverage on the test items.

    python -m bench.estimators
"""

from __future__ import annotations

import argparse
import tempfile
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bench.tiny_sweeps import SWEEPS
from pricer.evaluator.checkpoints.adapters import read_adapter
from pricer.evaluator.checkpoints.sources import LocalRun
from pricer.evaluator.data import catalogue_split, heldout_from_frame
from pricer.evaluator.embedded.catalogue import catalogue_frame
from pricer.evaluator.embedded.tiny import make_tiny_base
from pricer.evaluator.records import Estimator, Evaluation
from pricer.evaluator.scoring import PriceModel
from pricer.evaluator.stats.metrics import METRICS
from pricer.evaluator.stats.selection import Policy, choose
from pricer.trainer import preset, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=3000)
    parser.add_argument("--sweep", type=int, default=2, help="which of bench/tiny_sweeps.py's sweeps (0, 1, 2)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "pricer-bench-sweeps")
    args = parser.parse_args()
    torch.set_num_threads(2)

    base = make_tiny_base(args.work / "tiny-llama")
    items, epochs = SWEEPS[args.sweep]
    run = args.work / f"run-{items}x{epochs}"
    steps_per_epoch = -(-items // 8)
    if not (run / f"checkpoint-{steps_per_epoch * epochs}").is_dir():
        data = heldout_from_frame(catalogue_split()[0].iloc[:items], name="catalogue-train")
        train(base, data, run, preset("tiny", epochs=epochs, save_steps=steps_per_epoch), resume=run.is_dir())
    heldout = heldout_from_frame(catalogue_frame(args.items, seed=7), name="catalogue-fresh")  # half test, by hash
    model = PriceModel(str(base), device="cpu")
    evaluations = []
    for k, revision in enumerate(LocalRun(run).revisions()):
        name = model.load_adapter(read_adapter(run / revision.revision), f"estimators_{k}")
        prices = model.price(heldout.prompts, adapter=name, batch_size=32)
        model.release_adapter(name)
        evaluations.append(
            Evaluation(k, revision, "tiny", heldout.name, "fp", "cfg", heldout.prices, prices, heldout.test, 0.0, datetime.now())
        )
    print(f"{run.name}: {len(evaluations)} checkpoints, {int((~heldout.test).sum())} validation and "
          f"{int(heldout.test.sum())} test items, rule min")
    for metric, spec in METRICS.items():
        rows = {}
        for estimator in Estimator:
            choice = choose(evaluations, Policy(metric=metric, estimator=estimator), test_mask=heldout.test)
            rows[estimator.value] = {
                "chosen": choice.chosen.evaluation.revision.revision,
                "validation": spec.show(choice.chosen.validation.value(metric)),
                "test": spec.show(choice.test.value(metric)),
                "80% coverage (test)": f"{choice.coverage:.1%}",
            }
        auto = choose(evaluations, Policy(metric=metric, estimator="auto"), test_mask=heldout.test)
        print(f"\n{spec.label}: auto takes {auto.policy.estimator} ({auto.chosen.evaluation.revision.revision}), "
              f"test {spec.show(auto.test.value(metric))}")
        print(pd.DataFrame(rows).T.to_string())
    covered = np.mean([choose([e], test_mask=heldout.test).coverage for e in evaluations])
    print(f"\n80% interval coverage on the test items, mean over every checkpoint: {covered:.1%}")


if __name__ == "__main__":
    main()
