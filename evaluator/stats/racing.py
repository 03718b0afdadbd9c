"""Racing: choose a checkpoint as `selection.choose` would, while scoring most checkpoints on few items.

Scoring every checkpoint on every validation item is most of an evaluation's cost, yet a
checkpoint far worse than the leader is plainly worse after a few dozen items. So the items
are shuffled once and checkpoints are scored in rounds on growing prefixes of that order
(by default 1/8, 1/4, 1/2, then all); after each round but the last, every survivor is
compared with the current leader on the items all survivors share (the same paired
bootstrap as `choose`) and those significantly worse are dropped. The survivors, the
winner among them, are scored on every validation item, where `choose`'s rule decides.

Only a candidate that is significantly worse than another on a random sample is dropped, so
the pick is `choose`'s pick, or one the full evaluation cannot tell from it (the rule's tolerance).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from pricer.evaluator.stats.metrics import spec
from pricer.evaluator.stats.selection import SAMPLES, Paired, Rule, paired, paired_resamples, pick, significantly_worse

ROUNDS = (1 / 8, 1 / 4, 1 / 2, 1.0)
MIN_ITEMS = 30  # no candidate is dropped on fewer shared items: a percentile bootstrap of a handful is too narrow

# (candidate index, item indices) -> that candidate's per-item values of the metric on those items,
# e.g. `item_errors(truth, guesses)[metric]`
ScoreItems = Callable[[int, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class RaceResult:
    """The chosen candidate and what the race cost."""

    chosen: int
    best: int  # lowest full-validation error among the survivors (highest for hit rate)
    scored: tuple[int, ...]  # items scored per candidate
    dropped_after: tuple[int | None, ...]  # the round (0-based) after which each was dropped; None: it ran to the end
    n_items: int
    gaps: tuple[Paired | None, ...] = ()  # each dropped one's difference to the leader then (metric(it) - metric(leader))

    @property
    def scorings(self) -> int:
        return sum(self.scored)

    @property
    def full(self) -> int:
        """Item scorings of a full evaluation: every candidate on every item."""
        return len(self.scored) * self.n_items

    @property
    def share(self) -> float:
        return self.scorings / self.full


def race(
    candidates: int,
    score_items: ScoreItems,
    n_items: int,
    *,
    metric: str = "mae",
    rule: str = Rule.MIN,
    rounds: Sequence[float] = ROUNDS,
    confidence: float = 0.95,
    samples: int = SAMPLES,
    seed: int = 0,
    shuffle_seed: int = 0,
) -> RaceResult:
    """Race `candidates` checkpoints (in training order, earliest first) over `n_items` validation items.

    `score_items` is called once per surviving candidate and round, only with items it has not
    scored for that candidate. `seed` seeds the bootstraps (as in `choose`); `shuffle_seed` the item order.
    """
    sign, rule = spec(metric).sign, Rule(rule)  # a clear error for an unknown metric or rule
    if candidates < 1 or n_items < 1:
        raise ValueError("racing needs at least one candidate and one item")
    if not rounds or rounds[-1] != 1 or any(b <= a for a, b in zip(rounds, rounds[1:], strict=False)) or rounds[0] <= 0:
        raise ValueError(f"rounds must be growing fractions of the items ending at 1, not {tuple(rounds)}")
    order = np.random.default_rng(shuffle_seed).permutation(n_items)
    values = np.full((candidates, n_items), np.nan)  # by item, so the last round resamples as `choose` does
    scored = [0] * candidates
    dropped: list[int | None] = [None] * candidates
    gaps: list[Paired | None] = [None] * candidates
    alive = list(range(candidates))
    for number, fraction in enumerate(rounds):
        upto = n_items if fraction == 1 else max(1, math.ceil(fraction * n_items))
        for k in alive:
            if upto > scored[k]:
                fresh = np.asarray(score_items(k, order[scored[k] : upto]), dtype=np.float64)
                if fresh.shape != (upto - scored[k],):
                    raise ValueError(f"score_items gave {fresh.shape} values for {upto - scored[k]} items")
                values[k, order[scored[k] : upto]], scored[k] = fresh, upto
        if upto == n_items or upto < MIN_ITEMS or len(alive) == 1:
            continue
        shared = values[alive][:, order[:upto]]
        point, resampled = paired_resamples(shared, metric, samples=samples, seed=seed)
        leader = int(np.argmin(sign * point))
        differences = [paired(point, resampled, i, leader, confidence) for i in range(len(alive))]
        keep = [i for i in range(len(alive)) if not significantly_worse(differences[i], metric)]
        for i in set(range(len(alive))) - set(keep):
            dropped[alive[i]], gaps[alive[i]] = number, differences[i]
        alive = [alive[i] for i in keep]
    point, resampled = paired_resamples(values[alive], metric, samples=samples, seed=seed)
    chosen, best = (alive[i] for i in pick(point, resampled, metric=metric, rule=rule, confidence=confidence))
    return RaceResult(chosen, best, tuple(scored), tuple(dropped), n_items, tuple(gaps))
