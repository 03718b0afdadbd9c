"""Runs compared: several runs evaluated on the same items, their checkpoints chosen among together.

The course's "3 epochs or 4?" is a choice across training runs, not within one. When every run's checkpoints
priced the same held-out items, a checkpoint of one run and a checkpoint of another are compared pair by pair
exactly as two checkpoints of one run are: one bootstrap resample of the items serves all of them.

How the policy's rule applies to several runs:

- Within each run the rule runs as it does alone (`choose` over the run's checkpoints): a fitted curve, "the
  earliest" and the overfitting alarm follow one run's training, step by step. Each run's pick is what
  `PricerService.choice(run)` gives.
- Over the pool, every checkpoint of every run is a candidate of its own. `choose(pool, rule=min)` gives each its
  P(best) and its paired difference to the pool's best. The `curve` and `earliest` rules are not run over the pool
  as one sequence: sorted by step, it would interleave the runs, so a curve would smooth one run's error with
  another's, and "the earliest" would compare training steps of different runs.
- Across runs, the rule takes one of the runs' picks:
  - `min`: the lowest validation error of the pool, which is `choose(pool)`'s choice;
  - `curve`: the pick whose run's fitted curve is lowest there;
  - `earliest`: of the picks not significantly worse than the pool's best (paired, at the policy's
    confidence), the one at the fewest training steps; ties go to the better one. Steps compare runs trained
    with the same batch size on the same items, which is the case of "3 epochs or 4?".

The chosen checkpoint's test items give the out-of-sample figure, as for one run. The `auto` estimator is chosen
once, on the pool's validation items, and every run's pick is made under it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pricer.evaluator.errors import InvalidRequest, NotEvaluated
from pricer.evaluator.records import Evaluation
from pricer.evaluator.stats.metrics import Metrics, spec
from pricer.evaluator.stats.selection import (
    Candidate,
    Choice,
    CrossFitted,
    Policy,
    Rule,
    choose,
    significantly_worse,
)

NO_STEP = 10**12  # a checkpoint without a step counts as the most trained, as `choose` orders it


@dataclass(frozen=True)
class Entry:
    """One checkpoint of one run, with its evidence over the pool of every run's checkpoints."""

    run: str
    candidate: Candidate  # validation metrics; P(best) and the paired difference to the best, over the pool

    @property
    def evaluation(self) -> Evaluation:
        return self.candidate.evaluation


@dataclass(frozen=True)
class Comparison:
    """Several runs' checkpoints on the same validation items: each run's choice, and the one the rule takes."""

    policy: Policy  # its estimator resolved on the pool
    runs: dict[str, Choice]  # each run's own choice, in the order the runs were named
    ranking: list[Entry]  # every checkpoint of every run, best first (ties: the fewer steps)
    chosen: Entry  # the checkpoint the rule takes across runs
    test: Metrics | None  # the chosen checkpoint on the test items: the out-of-sample figure
    coverage: float | None  # the share of test prices inside the chosen checkpoint's 80% intervals
    cross_fitted: CrossFitted | None  # rule `min` without test items: the pool's choice cross-fitted
    baseline: Metrics  # every validation item priced at their median

    @property
    def metric(self) -> str:
        return self.policy.metric

    @property
    def best(self) -> Entry:
        return self.ranking[0]

    @property
    def statement(self) -> str:
        """The rule across runs, in words."""
        better = "highest" if spec(self.metric).higher_is_better else "lowest"
        if self.policy.rule is Rule.MIN:
            return f"of every checkpoint of every run, the one with the {better} validation {spec(self.metric).words}"
        across = {
            Rule.CURVE: f"the run whose curve is {better} there",
            Rule.EARLIEST: "of those not significantly worse than the best checkpoint of every run, the one at the "
            "fewest training steps",
        }[self.policy.rule]
        return f"within each run, {self.policy.statement}; across runs, {across}"


def compare(runs: dict[str, list[Evaluation]], policy: Policy, *, test_mask: np.ndarray | None = None) -> Comparison:
    """Choose among the checkpoints of several runs evaluated on the same items (see the module's docstring).

    Args:
        runs: each run's complete evaluations (one run's: one base and scoring config), by the run's name.
        policy: the metric, rule, estimator, confidence and alarm patience, as for one run.
        test_mask: (n,) True for test items: left out of every choice, scored for the chosen checkpoint only.

    Raises:
        InvalidRequest: fewer than two runs, the same checkpoint evaluation under two names, or runs evaluated on
            different items.
        NotEvaluated: a run with nothing evaluated.
    """
    _check(runs)
    pool = [evaluation for evaluations in runs.values() for evaluation in evaluations]
    pooled = choose(pool, policy.but(rule=Rule.MIN), test_mask=test_mask)  # paired evidence over every checkpoint
    policy = policy.but(estimator=pooled.policy.estimator)  # `auto`: resolved once, on the pool
    choices = {run: choose(evaluations, policy, test_mask=test_mask) for run, evaluations in runs.items()}
    owner = {evaluation.id: run for run, evaluations in runs.items() for evaluation in evaluations}
    sign = spec(policy.metric).sign
    ranked = sorted(pooled.candidates, key=lambda c: (sign * c.validation.value(policy.metric), _step(c), c.evaluation.id))
    ranking = [Entry(owner[c.evaluation.id], c) for c in ranked]
    entries = {entry.evaluation.id: entry for entry in ranking}
    place = {entry.evaluation.id: k for k, entry in enumerate(ranking)}
    picks = {run: entries[choice.chosen.evaluation.id] for run, choice in choices.items()}
    if policy.rule is Rule.MIN:
        chosen = entries[pooled.chosen.evaluation.id]
    elif policy.rule is Rule.CURVE:
        chosen = min(picks.values(), key=lambda e: (choices[e.run].ranked, _step(e.candidate)))  # each run's own curve
    else:
        eligible = [e for e in picks.values() if not significantly_worse(e.candidate.versus_best, policy.metric)]
        chosen = min(eligible or [ranking[0]], key=lambda e: (_step(e.candidate), place[e.evaluation.id]))  # ties: the better
    own = choices[chosen.run]  # the chosen checkpoint is its run's pick: its test figure is the run's
    return Comparison(
        policy=policy,
        runs=choices,
        ranking=ranking,
        chosen=chosen,
        test=own.test,
        coverage=own.coverage,
        cross_fitted=pooled.cross_fitted if policy.rule is Rule.MIN else None,
        baseline=pooled.baseline,
    )


def _check(runs: dict[str, list[Evaluation]]) -> None:
    if len(runs) < 2:
        raise InvalidRequest(f"compare two runs or more, not {len(runs)}; one run's choice is `best`")
    for run, evaluations in runs.items():
        if not evaluations:
            raise NotEvaluated(f"{run}: nothing is evaluated yet")
    seen: dict[int, str] = {}
    for run, evaluations in runs.items():
        for evaluation in evaluations:
            if seen.setdefault(evaluation.id, run) != run:
                raise InvalidRequest(f"{seen[evaluation.id]} and {run} are the same run")
    (first_run, first), *others = [(run, evaluations[0]) for run, evaluations in runs.items()]
    for run, evaluation in others:
        same = evaluation.dataset_fingerprint == first.dataset_fingerprint and evaluation.n == first.n
        if not (same and np.array_equal(evaluation.truth, first.truth) and np.array_equal(evaluation.test, first.test)):
            raise InvalidRequest(
                f"runs evaluated on different items cannot be compared: {first_run} on {first.dataset_name}, "
                f"{run} on {evaluation.dataset_name}"
            )


def _step(candidate: Candidate) -> int:
    step = candidate.evaluation.revision.step
    return NO_STEP if step is None else step

