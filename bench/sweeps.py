"""Selection rules judged on many sweeps with an oracle: which rule lands nearest the truly best checkpoint?

A sweep is one training run's checkpoints, each with a price for every item. The sweeps
here are built from the real items of `../shared/data/pricer/` (their true prices, so the
heavy tails that drive the average error are real) and a model of how a fine-tune's
predictions evolve, in log-price space:

    log1p(guess[k, i]) = (1 - w[k]) * m + w[k] * log1p(price[i]) + s[k] * (sqrt(c) * u[i] + sqrt(1 - c) * z[k, i])

- w[k] = 1 - exp(-(k + 1) / learn): the model learns from "every item at the median m" to the truth;
- s[k] = noise + overfit * max(0, k - turn) / K: past the turn, the error grows (overfitting);
- u[i] is an item's lasting difficulty (shared by every checkpoint), z[., i] an AR(1) walk over
  checkpoints with correlation `rho`, so neighbouring checkpoints are strongly correlated, as real
  ones are; guesses are whole dollars in 0..999, as the model's number tokens are.

Each sweep's items are split once into a pool and an oracle part (all the other items, at
least 1,500): the oracle error of each checkpoint is its error there, on items no choice
sees. Each draw takes `n` validation items at random from the pool, lets every rule choose
on them, and scores the choice by its regret: how much worse the chosen checkpoint's oracle
error is than the oracle best's, in percent.

    python -m bench.sweeps                     # every family, 300 draws of 150 and 300 items
    python -m bench.sweeps --draws 100 --metric hit_rate
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pricer.evaluator.stats.metrics import spec
from pricer.evaluator.stats.selection import Rule, paired_resamples, pick

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "pricer"
FILES = ("appliances_lite_2000.jsonl", "musical_appliances_2000.jsonl", "software_2927.jsonl")
POOL = 500  # items a validation set is drawn from; the rest are the oracle's


@dataclass(frozen=True)
class Shape:
    """How a family of sweeps evolves over its checkpoints (see the module's docstring)."""

    name: str
    checkpoints: int
    learn: float  # checkpoints to learn most of the signal
    turn: int  # the checkpoint after which the error grows
    overfit: float  # how much the noise grows from the turn to the end
    noise: float = 0.55
    rho: float = 0.9
    shared: float = 0.5  # the share of an item's noise that lasts (its difficulty)


SHAPES = (
    Shape("U: a clear turn, 30 checkpoints", 30, learn=2.0, turn=6, overfit=0.4),
    Shape("U: a mild turn, 20 checkpoints", 20, learn=3.0, turn=10, overfit=0.15),
    Shape("plateau: 25 near-equal", 25, learn=1.0, turn=24, overfit=0.0),
    Shape("late: still improving at 12", 12, learn=6.0, turn=11, overfit=0.0),
    Shape("early: best at 2 of 16", 16, learn=0.7, turn=1, overfit=0.3),
)


def sweep(prices: np.ndarray, shape: Shape, seed: int) -> np.ndarray:
    """(K, n) whole-dollar guesses of the shape's K checkpoints for every item."""
    rng = np.random.default_rng(seed)
    K, n = shape.checkpoints, prices.size
    truth = np.log1p(prices)
    k = np.arange(K)[:, None]
    learned = 1 - np.exp(-(k + 1) / shape.learn)
    scale = shape.noise + shape.overfit * np.maximum(0, k - shape.turn) / K
    walk = np.empty((K, n))
    walk[0] = rng.standard_normal(n)
    for step in range(1, K):
        walk[step] = shape.rho * walk[step - 1] + np.sqrt(1 - shape.rho**2) * rng.standard_normal(n)
    lasting = rng.standard_normal(n)
    noise = scale * (np.sqrt(shape.shared) * lasting + np.sqrt(1 - shape.shared) * walk)
    log_guess = (1 - learned) * np.median(truth) + learned * truth + noise
    return np.clip(np.round(np.expm1(log_guess)), 0, 999)


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Each checkpoint's value averaged with its neighbours, `window` in all (fewer at the ends): the smoothing the
    issue measured, kept here for comparison."""
    half, k = window // 2, np.arange(values.size)
    low, high = np.maximum(k - half, 0), np.minimum(k + half + 1, k.size)
    sums = np.concatenate([[0.0], np.cumsum(values)])
    return (sums[high] - sums[low]) / (high - low)


def rules(window: int) -> dict[str, object]:
    """Every rule compared: pricer's (through `selection.pick`, the product's code), the minimum of a moving
    average, and a random pick. Each takes one draw's paired point values (K,) and resamples (B, K)."""

    def product(rule: Rule):
        return lambda point, resampled, metric, rng: pick(point, resampled, metric=metric, rule=rule)[0]

    return {
        "earliest": product(Rule.EARLIEST),
        "min": product(Rule.MIN),
        "curve": product(Rule.CURVE),
        f"moving average of {window}": lambda point, resampled, metric, rng: int(
            np.argmin(moving_average(spec(metric).sign * point, window))
        ),
        "random": lambda point, resampled, metric, rng: int(rng.integers(point.size)),
    }


def replay(prices: np.ndarray, guesses: np.ndarray, *, metric: str, n: int, draws: int, window: int, seed: int) -> dict:
    """Each rule's regrets (%, one per draw) on one sweep."""
    m = spec(metric)
    rng = np.random.default_rng(seed)
    order = rng.permutation(prices.size)
    pool, oracle = order[:POOL], order[POOL:]
    per_item = np.stack([m.per_item(prices, g) for g in guesses])  # (K, items)
    truth_curve = m.of_means(per_item[:, oracle].mean(axis=1))
    best = (m.sign * truth_curve).min() * m.sign
    regret = lambda k: 100 * m.sign * (truth_curve[k] - best) / abs(best)  # noqa: E731
    compared = rules(window)
    out: dict[str, list[float]] = {name: [] for name in compared}
    for draw in range(draws):
        items = rng.choice(pool, size=n, replace=False)
        point, resampled = paired_resamples(per_item[:, items], metric, samples=1000, seed=draw)
        for name, rule in compared.items():
            out[name].append(regret(rule(point, resampled, metric, rng)))
    return {"curve": truth_curve.tolist(), "regrets": out}


def summary(regrets: list[float]) -> dict:
    r = np.asarray(regrets)
    return {
        "within 1%": float((r <= 1).mean()),
        "within 3%": float((r <= 3).mean()),
        "mean regret %": float(r.mean()),
        "median %": float(np.median(r)),
        "90th %": float(np.percentile(r, 90)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metric", default="mae")
    parser.add_argument("--draws", type=int, default=300)
    parser.add_argument("--sizes", type=int, nargs="+", default=[150, 300])
    parser.add_argument("--seeds", type=int, default=2, help="sweeps per file and shape")
    parser.add_argument("--window", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write every figure here")
    args = parser.parse_args()

    tables, everything = [], []
    for n in args.sizes:
        pooled: dict[str, list[float]] = {}
        for shape in SHAPES:
            by_shape: dict[str, list[float]] = {}
            for file in FILES:
                prices = pd.read_json(SHARED / file, lines=True)["price"].to_numpy(dtype=float)
                for seed in range(args.seeds):
                    guesses = sweep(prices, shape, seed)
                    result = replay(prices, guesses, metric=args.metric, n=n, draws=args.draws, window=args.window, seed=seed)
                    everything.append({"n": n, "shape": shape.name, "file": file, "seed": seed, **result})
                    for name, values in result["regrets"].items():
                        by_shape.setdefault(name, []).extend(values)
                        pooled.setdefault(name, []).extend(values)
            rows = {name: summary(values) for name, values in by_shape.items()}
            tables.append((n, shape.name, rows))
        tables.append((n, "all sweeps", {name: summary(values) for name, values in pooled.items()}))

    print(f"metric {args.metric}; {args.draws} validation draws per sweep; {args.seeds} sweeps per shape and file, "
          f"{len(FILES)} files")
    for n, name, rows in tables:
        print(f"\n{n} validation items, {name}")
        frame = pd.DataFrame(rows).T
        frame["within 1%"] = (100 * frame["within 1%"]).map("{:.0f}%".format)
        frame["within 3%"] = (100 * frame["within 3%"]).map("{:.0f}%".format)
        for column in ("mean regret %", "median %", "90th %"):
            frame[column] = frame[column].map("{:.1f}".format)
        print(frame.to_string())
    if args.json:
        args.json.write_text(json.dumps(everything))


if __name__ == "__main__":
    main()
