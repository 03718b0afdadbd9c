"""`pricer compare`: several runs evaluated on the same items, every checkpoint of every run chosen among together."""

from __future__ import annotations

import argparse

import pandas as pd

from pricer.evaluator.cli.common import (
    add_data_option,
    add_db_option,
    add_policy_options,
    local_folder,
    metric_cells,
    metric_line,
    print_json,
    service_for,
)
from pricer.evaluator.errors import InvalidRequest
from pricer.evaluator.stats.comparison import Comparison
from pricer.evaluator.stats.metrics import spec


def cmd_compare(args: argparse.Namespace) -> None:
    from pricer.app.schemas import ComparisonPublic

    service, repos = services_for_runs(args)
    comparison = service.compare(repos)
    if args.json:  # what `GET /projects/compare` gives: the same schema, so they never drift
        print_json(ComparisonPublic.of(comparison).model_dump(mode="json"))
    else:
        print_comparison(comparison)


def services_for_runs(args: argparse.Namespace):
    """(the service, the repos it names the runs by): local run folders as local/<name> from the one folder that
    holds them all (the service reads runs under one checkpoint root), Hub repo ids as they are."""
    folders = {source: local_folder(source) for source in args.sources}
    parents = {folder.parent for folder in folders.values() if folder is not None}
    if len(parents) > 1:
        raise InvalidRequest("local runs compared must lie in one folder (move or link them side by side), or be Hub repos")
    first = next((source for source, folder in folders.items() if folder is not None), args.sources[0])
    service, _ = service_for(argparse.Namespace(**{**vars(args), "source": first}))
    return service, [f"local/{folder.name}" if folder is not None else source for source, folder in folders.items()]


def print_comparison(comparison: Comparison) -> None:
    metric, chosen = spec(comparison.metric), comparison.chosen
    rev = chosen.evaluation.revision
    n = comparison.ranking[0].candidate.validation.n
    print(
        f"{len(comparison.runs)} runs, {len(comparison.ranking)} checkpoints on {chosen.evaluation.dataset_name} ({n} validation items)"
    )
    print(f"rule: {comparison.statement}")
    print(f"chosen: {chosen.run} {rev.revision} (commit {rev.commit[:10]}, step {rev.step}, epoch {rev.epoch})")
    print(f"  validation ({n} items), P(best) among all {len(comparison.ranking)} checkpoints {chosen.candidate.p_best:.0%}")
    for name, cell in metric_cells(chosen.candidate.validation).items():
        print(f"    {name:<10} {cell}")
    if chosen is not comparison.best:
        d, best = chosen.candidate.versus_best, comparison.best
        print(
            f"  minus the best, {best.run} {best.evaluation.revision.revision}: {metric.show_paired(d.difference, d.low, d.high)} "
            f"({'significant' if d.significant else 'not significant'}, paired)"
        )
    if comparison.test:
        print(f"  test ({comparison.test.n} items, never used to choose): the error to expect in use")
        for name, cell in metric_cells(comparison.test).items():
            print(f"    {name:<10} {cell}")
    if comparison.cross_fitted:
        cf = comparison.cross_fitted
        print(f"  out of sample, cross-fitted: {metric.short} {metric.show(cf.value)} {metric.show_interval(cf.low, cf.high)}")
    print(f"  a constant guess (every validation item at the median price) scores {metric_line(comparison.baseline)}")
    print("each run's own choice:")
    for run, choice in comparison.runs.items():
        own = choice.chosen
        alarm = ", overfitting" if choice.overfitting else ""
        print(
            f"  {run}: {own.evaluation.revision.revision} of {len(choice.candidates)}, {metric.short} "
            f"{metric.show(own.validation.value(metric.name))}, P(best) within the run {own.p_best:.0%}{alarm}"
        )
    print(f"every checkpoint of every run, best first by {metric.words} (P(best) and vs best: over them all)")
    print(comparison_table(comparison))


def comparison_table(comparison: Comparison) -> str:
    metric = spec(comparison.metric)
    picks = {choice.chosen.evaluation.id for choice in comparison.runs.values()}
    rows = [
        {
            "#": k,
            "run": entry.run,
            "revision": entry.evaluation.revision.revision,
            "step": entry.evaluation.revision.step,
            "epoch": None if entry.evaluation.revision.epoch is None else round(entry.evaluation.revision.epoch, 2),
            **metric_cells(entry.candidate.validation),
            "P(best)": f"{entry.candidate.p_best:.0%}",
            "vs best": metric.show_paired(
                entry.candidate.versus_best.difference, entry.candidate.versus_best.low, entry.candidate.versus_best.high
            ),
            "choice": "chosen" if entry is comparison.chosen else "its run's" if entry.evaluation.id in picks else "-",
        }
        for k, entry in enumerate(comparison.ranking, start=1)
    ]
    return pd.DataFrame(rows).to_string(index=False, na_rep="-")


def add_commands(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "compare",
        help="several runs evaluated on the same items: each run's choice, every checkpoint ranked together, and which "
        "run's checkpoint the rule takes",
    )
    p.add_argument(
        "sources",
        nargs="+",
        metavar="source",
        help="a run: a local run folder (the runs' folders side by side in one folder) or a Hub repo id namespace/name; "
        "two or more, each evaluated on the held-out data first (`pricer evaluate`)",
    )
    add_data_option(p)
    add_db_option(p)
    add_policy_options(p)
    p.set_defaults(run=cmd_compare)
