"""Racing against full evaluation on a sweep of real checkpoints: the same choice, for how many item scorings.

The tiny model is fine-tuned on real appliance items (the first 1,200 of
`appliances_lite_2000.jsonl`), a checkpoint every 15 steps (20 checkpoints); 600 other items
are held out and their validation part is used. Full evaluation scores every checkpoint on
every validation item and lets `selection.choose` pick; racing (`pricer.evaluator.stats.racing`) scores in
rounds on growing random subsets and drops checkpoints significantly worse than the leader.
Both run in the same process on the same checkpoints and items, so the ratios compare like with like.

Racing runs for real for a few item orders through `Evaluator.race` (what `pricer evaluate
--race` runs: wall time, adapter loads and the survivors' test items included, each with a
fresh store), then is replayed over many more item orders on the full evaluation's per-item errors (the
decision core needs no model), which gives how often it agrees and the spread of its cost;
the replays also cover the other metrics (RMSLE, hit rate), where near-ties are more common.

    python -m bench.racing
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pricer.evaluator.checkpoints.adapters import read_adapter
from pricer.evaluator.checkpoints.sources import LocalRun
from pricer.evaluator.data import heldout_from_frame
from pricer.evaluator.embedded.tiny import make_tiny_base
from pricer.evaluator.evaluate import Evaluator
from pricer.evaluator.records import Evaluation, ItemPrices
from pricer.evaluator.scoring import PriceModel
from pricer.evaluator.settings import Settings
from pricer.evaluator.stats.metrics import METRICS, item_errors, spec
from pricer.evaluator.stats.racing import ROUNDS, RaceResult, race
from pricer.evaluator.stats.selection import Policy, choose, paired, paired_resamples
from pricer.trainer import preset, train

REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "pricer" / "appliances_lite_2000.jsonl"


def full_evaluation(model: PriceModel, folders: list[Path], prompts: list[str], batch_size: int) -> list[ItemPrices]:
    """Every checkpoint on every item, one adapter loaded at a time, merged as `Evaluator` scores."""
    prices = []
    for k, folder in enumerate(folders):
        name = model.load_adapter(read_adapter(folder), f"full_{k}")
        prices.append(model.price(prompts, adapter=name, batch_size=batch_size, merged=True))
        model.release_adapter(name)
    return prices


def full_choice(folders: list[Path], truth: np.ndarray, prices: list[ItemPrices], metric: str, rule: str, estimator: str) -> int:
    """The index `selection.choose` picks from the full evaluation."""
    evaluations = [
        Evaluation(k, LocalRun(folder.parent).resolve(folder.name), "tiny", "heldout", "fp", "cfg", truth, p,
                   np.zeros(truth.size, bool), 0.0, datetime.now())
        for k, (folder, p) in enumerate(zip(folders, prices, strict=True))
    ]
    return choose(evaluations, Policy(metric, rule, estimator)).chosen.evaluation.id


def agrees(values: np.ndarray, picked: int, full: int, metric: str) -> bool:
    """Racing's pick is full evaluation's, or not significantly worse than it on every validation item (paired, 95%)."""
    point, resampled = paired_resamples(values, metric)
    difference = paired(point, resampled, picked, full, 0.95)
    return picked == full or (difference.high >= 0 if spec(metric).higher_is_better else difference.low <= 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REAL_DATA)
    parser.add_argument("--train-items", type=int, default=1200)
    parser.add_argument("--heldout-items", type=int, default=600)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--save-steps", type=int, default=15)
    parser.add_argument("--max-length", type=int, default=512, help="training tokens per item: the tiny tokenizer's prompts are ~390")
    parser.add_argument("--metric", default="mae")
    parser.add_argument("--rule", default=Policy().rule, help="default: pricer's")
    parser.add_argument("--estimators", nargs="+", default=["argmax", "mean"], choices=["argmax", "mean"])
    parser.add_argument("--seeds", type=int, default=3, help="item orders raced for real, with the model")
    parser.add_argument("--replays", type=int, default=200, help="item orders replayed on the full evaluation's errors")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "pricer-bench-racing")
    args = parser.parse_args()
    torch.set_num_threads(1)  # 2 shared cores

    base = make_tiny_base(args.work / "tiny-llama")
    frame = pd.read_json(args.data, lines=True)
    training = heldout_from_frame(frame.iloc[: args.train_items], name="appliances-train")
    heldout = heldout_from_frame(frame.iloc[args.train_items : args.train_items + args.heldout_items], name="appliances-heldout")
    run = args.work / f"run-{args.train_items}-{args.steps}-{args.save_steps}-{args.max_length}"
    if not (run / f"checkpoint-{args.steps}").is_dir():
        started = time.perf_counter()
        config = preset("tiny", max_steps=args.steps, save_steps=args.save_steps, max_length=args.max_length)
        train(base, training, run, config, resume=run.is_dir())
        print(f"trained {args.steps} steps in {time.perf_counter() - started:.0f} s")
    folders = [run / r.revision for r in LocalRun(run).revisions()]  # in training order
    validation = np.flatnonzero(~heldout.test)
    prompts, truth = [heldout.prompts[i] for i in validation], heldout.prices[validation]
    model = PriceModel(str(base), device="cpu")
    model.price(prompts[:8])  # warm-up

    started = time.perf_counter()  # a full evaluation prices the test items too, as racing's survivors do
    prices = [p.take(validation) for p in full_evaluation(model, folders, heldout.prompts, args.batch_size)]
    full_s = time.perf_counter() - started
    print(f"checkpoints: {len(folders)} ({folders[0].name} .. {folders[-1].name}), validation items: {len(prompts)}, "
          f"test items: {int(heldout.test.sum())}, rounds: {', '.join(f'{f:.3g}' for f in ROUNDS)}, rule: {args.rule}, "
          f"metric: {args.metric}")
    print(f"full evaluation: {len(folders) * len(heldout)} item scorings in {full_s:.1f} s (both estimators in one pass)")
    for estimator in args.estimators:
        compare(args, model, folders, heldout, truth, prices, estimator, full_s)
    print(f"\nreplayed only ({args.replays} item orders each, rule {args.rule}): same checkpoint / within tolerance / share mean, max")
    for estimator in args.estimators:
        for metric in METRICS:
            full = full_choice(folders, truth, prices, metric, args.rule, estimator)
            values = item_errors(truth[None], np.stack([p.guesses(estimator) for p in prices]))[metric]
            replays = replay(values, metric, args.rule, args.replays)
            shares = np.array([r.share for r in replays])
            print(f"  {estimator:>6} {metric:<8} full picks {folders[full].name:<15} same {sum(r.chosen == full for r in replays)}"
                  f"/{len(replays)}  within {sum(agrees(values, r.chosen, full, metric) for r in replays)}/{len(replays)}  "
                  f"share {shares.mean():.1%}, {shares.max():.1%}")


def replay(values: np.ndarray, metric: str, rule: str, orders: int) -> list[RaceResult]:
    """Racing over `orders` item orders on per-item values already computed: the decision core alone."""
    return [race(len(values), lambda k, items: values[k, items], values.shape[1], metric=metric, rule=rule, shuffle_seed=seed)
            for seed in range(orders)]


def compare(args, model, folders, heldout, truth, prices, estimator: str, full_s: float) -> None:
    """Full evaluation's pick against racing's, for one estimator of the price."""
    full = full_choice(folders, truth, prices, args.metric, args.rule, estimator)
    values = item_errors(truth[None], np.stack([p.guesses(estimator) for p in prices]))[args.metric]
    live: list[tuple[RaceResult, float]] = []
    run = folders[0].parent
    for seed in range(args.seeds):
        with tempfile.TemporaryDirectory() as home:
            evaluator = Evaluator(Settings(home=Path(home), device="cpu", batch_size=args.batch_size, base_models=[str(run.parent)]))
            evaluator._models[str(Path(model.base).resolve())] = model  # the base loaded once, as a service keeps it
            started = time.perf_counter()
            raced = evaluator.race(LocalRun(run), None, heldout, policy=Policy(args.metric, args.rule, estimator), seed=seed)
            live.append((raced.result, time.perf_counter() - started))
    replays = replay(values, args.metric, args.rule, args.replays)

    tag = f"[{estimator:>6}]"
    print(f"\n{tag} step  " + "  ".join(f"{f.name.removeprefix('checkpoint-'):>5}" for f in folders))
    print(f"{tag} {args.metric:<5} " + "  ".join(f"{m:5.1f}" for m in values.mean(axis=1)))
    print(f"{tag} raced " + "  ".join(f"{n:5d}" for n in live[0][0].scored) + "   (items scored, item order 0)")
    print(f"{tag} full evaluation picks {folders[full].name}")
    for seed, (result, seconds) in enumerate(live):
        verdict = "same" if result.chosen == full else "not significantly worse" if agrees(values, result.chosen, full,
                                                                                           args.metric) else "WORSE"
        print(f"{tag} racing, item order {seed}: picks {folders[result.chosen].name} ({verdict}); {result.scorings} "
              f"item scorings ({result.share:.1%}) in {seconds:.1f} s ({seconds / full_s:.0%} of full's wall time)")
    same = sum(r.chosen == full for r in replays)
    within = sum(agrees(values, r.chosen, full, args.metric) for r in replays)
    shares = np.array([r.share for r in replays])
    print(f"{tag} replayed over {len(replays)} item orders: same checkpoint {same}/{len(replays)}, within the rule's "
          f"tolerance {within}/{len(replays)}; share of item scorings mean {shares.mean():.1%}, max {shares.max():.1%}")

if __name__ == "__main__":
    main()
