"""What every group of subcommands shares: settings from flags, the service a source names, output."""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from pricer.evaluator.errors import InvalidRequest, RepoNotFound
from pricer.evaluator.stats.metrics import METRICS, Metric, Metrics, spec
from pricer.evaluator.stats.selection import Choice, EstimatorChoice, Rule


def settings_from(args: argparse.Namespace):
    """The settings: the environment's, with each flag that was given (argparse defaults are None) winning."""
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from pricer.evaluator.settings import Settings

    flags = {
        "db_url": "db",
        "device": "device",
        "batch_size": "batch_size",
        "base_model": "base",
        "load_in_4bit": "load_in_4bit",
        "host": "host",
        "port": "port",
        "checkpoint_root": "checkpoint_root",
        "data": "data",
        "repo": "repo",
        "metric": "metric",
        "rule": "rule",
        "estimator": "estimator",
        "overfit_patience": "patience",
        "race": "race",
        "executor": "executor",
        "ray_address": "ray_address",
        "ray_actors": "ray_actors",
        "publish_hub": "hub",
        "run_card": "card",
        "hub_tag": "tag",
        "mlflow_tracking_uri": "mlflow",
        "wandb_project": "wandb",
    }
    given = {field: getattr(args, flag, None) for field, flag in flags.items()}
    try:
        return Settings(**{field: value for field, value in given.items() if value not in (None, False)})
    except ValidationError as exc:  # a PRICER_* variable out of range: one line, not pydantic's table (nor the value)
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise InvalidRequest(f"invalid setting (a flag or a PRICER_* variable): {problems}") from exc
    except SettingsError as exc:  # a variable that holds no JSON where a list is expected
        raise InvalidRequest(f"invalid setting: {exc}") from exc


def service_for(args: argparse.Namespace):
    """(the service, the repo it names `args.source` by): a local run folder is served as local/<name> from its
    parent, so the CLI asks the same facade, with the same policy and held-out set, as the API and the dashboard."""
    from pricer.evaluator.service import PricerService

    settings = settings_from(args)
    source: str = args.source
    folder = local_folder(source)
    if folder is not None:
        settings, repo = settings.model_copy(update={"checkpoint_root": folder.parent}), f"local/{folder.name}"
    else:
        repo = source
    return PricerService(settings.model_copy(update={"repo": repo})), repo


def local_folder(source: str) -> Path | None:
    """The run folder `source` names (a path, or a folder that exists), or None: a Hub repo id."""
    try:
        local = source.startswith((".", "/", "~")) or Path(source).expanduser().is_dir()
        return Path(source).expanduser().resolve() if local else None
    except RuntimeError as exc:  # ~user/run with no such user
        raise RepoNotFound(f"{source}: no such run folder ({exc})") from exc


def positive(kind: type) -> Callable[[str], int | float]:
    """An argparse type: a finite number above zero, so a bad value is a usage error that names its flag."""

    def parse(text: str) -> int | float:
        value = kind(text)
        if not (value > 0 and math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"must be above zero, not {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names it in "invalid int value: 'x'"
    return parse


def progress(args: argparse.Namespace) -> bool:
    """Whether to draw progress bars (on stderr): not for a script (--json), nor under --quiet."""
    return not (getattr(args, "json", False) or getattr(args, "quiet", False))


def print_json(value: object) -> None:
    print(json.dumps(value, indent=2, default=str))


def metric_cells(m: Metrics) -> dict[str, str]:
    """Each metric with its interval, as people read it: "$52.29 [$44.10, $60.87]"."""
    return {spec.short: f"{spec.show(m.value(name))} {spec.show_interval(*m.intervals[name])}" for name, spec in METRICS.items()}


def metric_line(m: Metrics) -> str:
    """Every metric's value on one line: "avg error $99.00, RMSLE 0.812, hits 31.0%"."""
    return ", ".join(f"{spec.short} {spec.show(m.value(name))}" for name, spec in METRICS.items())


def ranking_table(ranked: list) -> str:
    rows = [
        {
            "#": r.rank,
            "revision": r.evaluation.revision.revision,
            "commit": r.evaluation.revision.commit[:10],
            "step": r.evaluation.revision.step,
            "epoch": None if r.evaluation.revision.epoch is None else round(r.evaluation.revision.epoch, 2),
            "n": r.metrics.n,
            **metric_cells(r.metrics),
        }
        for r in ranked
    ]
    return pd.DataFrame(rows).to_string(index=False, na_rep="-")


def show_choice(args: argparse.Namespace, repo: str, choice: Choice) -> None:
    """The choice as text, or with --json as `GET /best-checkpoint` gives it (the same schema, so they never drift)."""
    from pricer.app.schemas import BestCheckpoint

    if getattr(args, "json", False):
        print_json(BestCheckpoint.of(repo, choice, served=False).model_dump(mode="json"))
    else:
        print_choice(choice)


def print_choice(choice: Choice) -> None:
    chosen = choice.chosen
    rev = chosen.evaluation.revision
    print(f"rule: {choice.statement}")
    print(f"chosen of {len(choice.candidates)}: {rev.revision} (commit {rev.commit[:10]}, step {rev.step}, epoch {rev.epoch})")
    print(f"  validation ({chosen.validation.n} items), P(best) {chosen.p_best:.0%}")
    for name, cell in metric_cells(chosen.validation).items():
        print(f"    {name:<10} {cell}")
    print(f"  a constant guess (every validation item at the median price) scores {metric_line(choice.baseline)}")
    if choice.test:
        print(f"  test ({choice.test.n} items, never used to choose): the error to expect in use")
        for name, cell in metric_cells(choice.test).items():
            print(f"    {name:<10} {cell}")
        if choice.coverage is not None:
            print(f"    80% intervals hold {choice.coverage:.1%} of the test prices")
    if choice.cross_fitted:
        cf = choice.cross_fitted
        print(
            f"  out of sample, cross-fitted (no test items: the rule on random halves, scored on the other halves): "
            f"{spec(choice.metric).short} {spec(choice.metric).show(cf.value)} {spec(choice.metric).show_interval(cf.low, cf.high)} "
            f"over {cf.folds} folds"
        )
    if choice.estimators:
        shown = ", ".join(f"{name} {spec(choice.metric).show(value)}" for name, value in choice.estimators.items())
        print(f"  estimator {choice.policy.estimator}, chosen on validation among: {shown}")
    metric = spec(choice.metric)
    if choice.runner_up:
        d = choice.versus_runner_up
        print(
            f"{choice.compared_with}: {choice.runner_up.evaluation.revision.revision}, P(best) {choice.runner_up.p_best:.0%}; "
            f"chosen minus {choice.compared_with}: {metric.show_paired(d.difference, d.low, d.high)} "
            f"({'significant' if d.significant else 'not significant'}, paired)"
        )
    if choice.overfitting:
        o = choice.overfitting
        print(f"overfitting: validation {metric.words} rose for {o.checkpoints} checkpoints past step {o.since_step}")


def add_data_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        help="held-out data: a JSONL / JSON / CSV / Parquet file, hf://datasets/<id>[@rev]/<file>, or 'catalogue' "
        "(default: PRICER_DATA, else the catalogue: what the service uses)",
    )


def add_db_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", help="store URL (SQLAlchemy); default: SQLite in pricer's data folder, or PRICER_DB_URL")


def add_model_options(parser: argparse.ArgumentParser) -> None:
    add_db_option(parser)
    parser.add_argument("--base", help="base model for every adapter (default: the one each adapter names)")
    parser.add_argument("--device", help="auto (default), cpu, cuda, cuda:N")
    parser.add_argument("--batch-size", type=positive(int), help="items per forward pass (default 16)")
    parser.add_argument("--4bit", dest="load_in_4bit", action="store_true", help="load the base in 4-bit nf4 (CUDA only)")


def add_policy_options(parser: argparse.ArgumentParser) -> None:
    """How the checkpoint is chosen; each flag left out keeps the setting (PRICER_METRIC, PRICER_RULE, ...)."""
    parser.add_argument("--metric", choices=list(Metric), help="what chooses and ranks (default: PRICER_METRIC, mae)")
    parser.add_argument(
        "--rule",
        choices=list(Rule),
        help="min: the lowest validation error; curve: the lowest point of a curve fitted through every checkpoint; "
        "earliest: the earliest checkpoint not significantly worse than the best (default: PRICER_RULE, min)",
    )
    parser.add_argument(
        "--estimator",
        choices=list(EstimatorChoice),
        help="the price read from the model's distribution: argmax, mean, median (best for the average error), log "
        "(best for RMSLE), hit (best for the hit rate), or auto: the one that scores best on validation (default: PRICER_ESTIMATOR, argmax)",
    )
    parser.add_argument("--patience", type=positive(int), help="rising checkpoints that raise the overfitting alarm (default: 3)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
