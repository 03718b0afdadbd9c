"""`pricer evaluate | revisions | best | predict | score | export | publish`: evaluate checkpoints and use the choice."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from pricer.evaluator.cli.common import (
    add_data_option,
    add_db_option,
    add_model_options,
    add_policy_options,
    metric_cells,
    print_json,
    progress,
    ranking_table,
    service_for,
    show_choice,
)
from pricer.evaluator.data import MAX_DESCRIPTIONS
from pricer.evaluator.errors import InvalidPredictionInput, ModelNotReady, PublishFailed
from pricer.evaluator.exports import FORMATS
from pricer.evaluator.stats.selection import EstimatorChoice


def cmd_evaluate(args: argparse.Namespace) -> None:
    from pricer.evaluator.stats.ranking import rank

    service, repo = service_for(args)  # the held-out data is read and checked before any model or network work
    revisions = None if args.all or not args.revision else args.revision
    raced = service.race(repo, revisions, progress=progress(args)) if args.race else None
    evaluations = raced.evaluations if raced else service.evaluate(repo, revisions, progress=progress(args))
    unique = list({e.id: e for e in evaluations}.values())  # "main" and its sha are one checkpoint
    estimator = service.policy.estimator
    if estimator == EstimatorChoice.AUTO:  # the estimator the choice takes, asked of the core
        estimator = service.choice(repo).policy.estimator
    ranked = rank(unique, metric=service.policy.metric, estimator=estimator)
    if args.json:
        ranking = [r.to_dict() for r in ranked]
        print_json(ranking if raced is None else {"ranking": ranking, **raced.to_dict()})
        return
    data = service.dataset()
    print(f"{repo}: {len(ranked)} checkpoint(s) on {data.name} ({len(data)} items), best first by {service.policy.metric}")
    print(ranking_table(ranked))
    if raced is not None:
        summary = raced.to_dict()
        for dropped in summary["dropped"]:
            print(f"dropped after round {dropped['after_round']}: {dropped['revision']} (scored on {dropped['items_scored']} "
                  "validation items; significantly worse than the leader then; `pricer evaluate` without --race completes it)")
        print(f"racing scored {summary['scorings']:,} of the {summary['full_scorings']:,} validation-item scorings a full "
              f"evaluation makes ({summary['saved']:.0%} saved)")


def cmd_revisions(args: argparse.Namespace) -> None:
    service, repo = service_for(args)
    source = service.source(repo)
    names: dict[str, list[str]] = {}
    for name, commit in source.refs().items():
        names.setdefault(commit, []).append(name)
    rows = [{**r.fields(), "refs": names.get(r.commit, []), "message": r.message} for r in source.revisions()]
    if args.json:
        print_json(rows)
        return
    table = pd.DataFrame(rows).assign(commit=lambda f: f.commit.str[:10], refs=lambda f: f.refs.str.join(", "))
    print(table.drop(columns="message").to_string(index=False, na_rep="-"))


def cmd_best(args: argparse.Namespace) -> None:
    service, repo = service_for(args)
    show_choice(args, repo, service.choice(repo))


def cmd_predict(args: argparse.Namespace) -> None:
    from pricer.evaluator.data import read_descriptions

    descriptions = [*args.description, *(read_descriptions(Path(args.file)) if args.file else [])]
    if not descriptions:
        raise InvalidPredictionInput("give descriptions, or --file with one per line (or a JSONL / CSV / Parquet table)")
    service, repo = service_for(args)
    answers = []
    for batch in _batches(descriptions, chars=service.settings.predict_max_chars):
        try:
            prediction = service.predict(batch, repo=repo)
        except ModelNotReady:  # no worker serves here: load the policy's choice now, as the service's worker would
            service.serve(repo)
            prediction = service.predict(batch, repo=repo)
        rev = prediction.revision
        answers += [
            {"price": p, "interval": interval, "revision": rev.revision, "commit": rev.commit}
            for p, interval in zip(prediction.prices, prediction.intervals, strict=True)
        ]
    if args.json:
        print_json(answers[0] if len(answers) == 1 and not args.file else answers)
        return
    for description, answer in zip(descriptions, answers, strict=True):
        low, high = answer["interval"]
        print(f"${answer['price']:,.2f} (80%: ${low:,.0f}-${high:,.0f})  {' '.join(description.split())[:70]}")
    for revision, commit in dict.fromkeys((a["revision"], a["commit"]) for a in answers):
        print(f"(from {revision}, commit {commit[:10]})")


def _batches(descriptions: list[str], *, chars: int) -> list[list[str]]:
    """The descriptions in requests the service takes: at most MAX_DESCRIPTIONS, and `chars` characters, each."""
    batches: list[list[str]] = [[]]
    for description in descriptions:
        batch = batches[-1]
        if batch and (len(batch) == MAX_DESCRIPTIONS or sum(map(len, batch)) + len(description) > chars):
            batches.append(batch := [])
        batch.append(description)
    return batches


def cmd_score(args: argparse.Namespace) -> None:
    from pricer.evaluator.data import positive_prices, read_table
    from pricer.evaluator.errors import InvalidDataset
    from pricer.evaluator.stats.metrics import score

    frame = read_table(args.file)
    truth = positive_prices(frame, args.truth_field, where=args.file)
    if args.guess_field not in frame.columns:
        raise InvalidDataset(f"{args.file}: no field {args.guess_field!r} (fields: {', '.join(map(str, frame.columns))})")
    guess = pd.to_numeric(frame[args.guess_field], errors="coerce")
    if guess.isna().any():
        raise InvalidDataset(f"{args.file}: {args.guess_field!r} is missing or not a number in {int(guess.isna().sum())} row(s)")
    metrics = score(truth, guess.to_numpy(dtype=float))
    if args.json:
        print_json(metrics.to_dict())
        return
    print(f"{args.guess_field} on {args.file}: {metrics.n} items")
    for name, cell in metric_cells(metrics).items():
        print(f"  {name:<10} {cell}")


def cmd_export(args: argparse.Namespace) -> None:
    from pricer.evaluator.exports import write_table

    service, repo = service_for(args)
    table, record = service.export(repo)
    name = repo.split("/")[-1]
    predictions = write_table(table, Path(args.output or f"{name}-predictions.{args.format}"), args.format)
    results = Path(args.results or f"{name}-results.json")
    results.write_text(json.dumps(record, indent=2, default=str) + "\n")
    if args.json:
        print_json({"predictions": str(predictions), "results": str(results), "rows": len(table)})
        return
    print(f"{len(table)} predictions ({table['commit'].nunique()} checkpoints x their items): {predictions}")
    print(f"results record: {results}")


def cmd_publish(args: argparse.Namespace) -> None:
    args.card = True  # a local run's card: what publishing a local run means
    service, repo = service_for(args)
    done = service.publish(repo)
    if args.json:
        print_json({"sent": done.sent, "failed": done.failed})
    else:
        for line in done.sent:
            print(line)
    if done.failed:
        raise PublishFailed("; ".join(f"{target}: {why}" for target, why in done.failed.items()))


def add_commands(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("evaluate", help="price held-out items under checkpoints and rank them")
    p.add_argument("source", help="a local run folder (with checkpoint-N/) or a Hub repo id namespace/name")
    p.add_argument("--revision", action="append", help="a revision: checkpoint-N, commit sha, branch or tag (repeatable)")
    p.add_argument("--all", action="store_true", help="every checkpoint of the run (the default without --revision)")
    p.add_argument(
        "--race", action="store_true",
        help="score in rounds on growing subsets of the validation items and stop scoring checkpoints significantly worse "
        "than the leader; the rest are evaluated in full (the same choice for less compute)",
    )
    add_data_option(p)
    add_model_options(p)
    add_policy_options(p)
    p.set_defaults(run=cmd_evaluate)

    p = commands.add_parser("revisions", help="list a run's checkpoints: step, epoch, commit, branches and tags")
    p.add_argument("source", help="a local run folder (with checkpoint-N/) or a Hub repo id namespace/name")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(run=cmd_revisions)

    p = commands.add_parser("best", help="the checkpoint the rule chooses on validation items, its evidence and test figure")
    p.add_argument("source", help="a local run folder (with checkpoint-N/) or a Hub repo id namespace/name")
    add_data_option(p)
    add_db_option(p)
    add_policy_options(p)
    p.set_defaults(run=cmd_best)

    p = commands.add_parser("predict", help="price descriptions with the checkpoint the rule chooses")
    p.add_argument("source", help="a local run folder (with checkpoint-N/) or a Hub repo id namespace/name")
    p.add_argument("description", nargs="*", help="product description(s)")
    p.add_argument(
        "--file", help="descriptions to price: one per line of a .txt file, or a JSONL / CSV / Parquet table's "
        "'description' or 'title' + 'details' (a held-out file works)"
    )
    add_data_option(p)
    add_model_options(p)
    add_policy_options(p)
    p.set_defaults(run=cmd_predict)

    p = commands.add_parser("score", help="score an existing predictions file with the course's metrics")
    p.add_argument("file", help="JSONL / CSV / Parquet with true prices and guesses (nested fields as a.b)")
    p.add_argument("--guess-field", required=True, help="the field holding the guesses, e.g. predictions.gpt_4o_frontier")
    p.add_argument("--truth-field", default="price", help="the field holding true prices (default: price)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(run=cmd_score)

    p = commands.add_parser("export", help="every stored prediction of a run as a table, and the run's results record")
    p.add_argument("source", help="a local run folder, local/<name> under PRICER_CHECKPOINT_ROOT, or a Hub repo id")
    p.add_argument("--format", choices=FORMATS, default="parquet", help="of the predictions table (default: parquet)")
    p.add_argument("--output", help="the predictions table to write (default: <run>-predictions.<format>)")
    p.add_argument("--results", help="the results record to write, JSON (default: <run>-results.json)")
    add_data_option(p)
    add_db_option(p)
    add_policy_options(p)
    p.set_defaults(run=cmd_export)

    p = commands.add_parser(
        "publish", help="write the choice back: a Hub tag and model card, the run folder's card, MLflow, W&B"
    )
    p.add_argument("source", help="a local run folder, local/<name> under PRICER_CHECKPOINT_ROOT, or a Hub repo id")
    p.add_argument(
        "--hub", action="store_true",
        help="move the tag (--tag) to the chosen commit and write the repo's model card (needs a write token: HF_TOKEN)",
    )
    p.add_argument("--tag", help="the Hub tag to move (default: PRICER_HUB_TAG, else pricer-best)")
    p.add_argument("--mlflow", metavar="URI", help="log the evaluations and register the choice in this MLflow tracking URI")
    p.add_argument("--wandb", metavar="PROJECT", help="log the evaluations and the chosen adapter to this W&B project")
    add_data_option(p)
    add_db_option(p)
    add_policy_options(p)
    p.set_defaults(run=cmd_publish)
