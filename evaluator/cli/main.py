"""`pricer`: evaluate, rank and use a fine-tuned pricer's checkpoints from the command line."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from collections.abc import Sequence

import pandas as pd

from pricer.evaluator.errors import InvalidRepoId, ModelLoadError, PricerError
from pricer.evaluator.stats.metrics import METRICS, Metrics

log = logging.getLogger("pricer")


def _settings(args: argparse.Namespace):
    from pricer.evaluator.settings import Settings

    overrides = {
        "db_url": getattr(args, "db", None),
        "device": getattr(args, "device", None),
        "batch_size": getattr(args, "batch_size", None),
        "base_model": getattr(args, "base", None),
        "load_in_4bit": getattr(args, "load_in_4bit", None) or None,
        "host": getattr(args, "host", None),
        "port": getattr(args, "port", None),
        "checkpoint_root": getattr(args, "checkpoint_root", None),
        "data": getattr(args, "serve_data", None),
        "repo": getattr(args, "repo", None),
    }
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def _evaluator(args: argparse.Namespace):
    from pricer.evaluator.evaluate import Evaluator

    return Evaluator(_settings(args))


def _print_json(value: object) -> None:
    print(json.dumps(value, indent=2, default=str))


def _metric_cells(m: Metrics) -> dict[str, str]:
    lo, hi = m.intervals["mae"]
    rl, rh = m.intervals["rmsle"]
    hl, hh = m.intervals["hit_rate"]
    return {
        "avg error": f"${m.mae:,.2f} [{lo:,.2f}, {hi:,.2f}]",
        "RMSLE": f"{m.rmsle:.2f} [{rl:.2f}, {rh:.2f}]",
        "hits": f"{m.hit_rate:.1%} [{hl:.1%}, {hh:.1%}]",
    }


def ranking_table(ranked: list) -> str:
    rows = [
        {
            "#": r.rank,
            "revision": r.evaluation.revision.revision,
            "commit": r.evaluation.revision.commit[:10],
            "step": r.evaluation.revision.step,
            "epoch": None if r.evaluation.revision.epoch is None else round(r.evaluation.revision.epoch, 2),
            "n": r.metrics.n,
            **_metric_cells(r.metrics),
        }
        for r in ranked
    ]
    return pd.DataFrame(rows).to_string(index=False, na_rep="-")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from pricer.evaluator.data import load_heldout
    from pricer.evaluator.stats.ranking import rank

    dataset = load_heldout(args.data)  # checked before any model or network work
    evaluator = _evaluator(args)
    source = evaluator.source(args.source)
    revisions = None if args.all or not args.revision else args.revision
    evaluations = evaluator.evaluate(source, revisions, dataset, progress=not args.json)
    unique = list({e.id: e for e in evaluations}.values())  # "main" and its sha are one checkpoint
    ranked = rank(unique, metric=args.metric, estimator=args.estimator)
    if args.json:
        _print_json([r.to_dict() for r in ranked])
        return
    print(f"{source.name}: {len(ranked)} checkpoint(s) on {dataset.name} ({len(dataset)} items), best first by {args.metric}")
    print(ranking_table(ranked))


def cmd_revisions(args: argparse.Namespace) -> None:
    source = _evaluator(args).source(args.source)
    names: dict[str, list[str]] = {}
    for name, commit in source.refs().items():
        names.setdefault(commit, []).append(name)
    rows = [{**r.fields(), "refs": names.get(r.commit, []), "message": r.message} for r in source.revisions()]
    if args.json:
        _print_json(rows)
        return
    table = pd.DataFrame(rows).assign(commit=lambda f: f.commit.str[:10], refs=lambda f: f.refs.str.join(", "))
    print(table.drop(columns="message").to_string(index=False, na_rep="-"))


def _choice_dict(choice) -> dict:
    def candidate(c) -> dict:
        return {
            **c.evaluation.revision.fields(),
            **c.validation.to_dict(),
            "p_best": c.p_best,
            "versus_best": c.versus_best.to_dict(),
        }

    return {
        "rule": choice.statement,
        "metric": choice.metric,
        "best": candidate(choice.chosen),
        "test": choice.test.to_dict() if choice.test else None,
        "runner_up": candidate(choice.runner_up) if choice.runner_up else None,
        "versus_runner_up": choice.versus_runner_up.to_dict() if choice.versus_runner_up else None,
        "overfitting": choice.overfitting.to_dict() if choice.overfitting else None,
        "evaluated": len(choice.candidates),
        "candidates": [candidate(c) for c in choice.candidates],
    }


def _print_choice(choice) -> None:
    chosen = choice.chosen
    rev = chosen.evaluation.revision
    print(f"rule: {choice.statement}")
    print(f"chosen of {len(choice.candidates)}: {rev.revision} (commit {rev.commit[:10]}, step {rev.step}, epoch {rev.epoch})")
    print(f"  validation ({chosen.validation.n} items), P(best) {chosen.p_best:.0%}")
    for name, cell in _metric_cells(chosen.validation).items():
        print(f"    {name:<10} {cell}")
    if choice.test:
        print(f"  test ({choice.test.n} items, never used to choose): the error to expect in use")
        for name, cell in _metric_cells(choice.test).items():
            print(f"    {name:<10} {cell}")
    if choice.runner_up:
        d = choice.versus_runner_up
        print(
            f"runner-up: {choice.runner_up.evaluation.revision.revision}, P(best) {choice.runner_up.p_best:.0%}; "
            f"chosen minus runner-up {choice.metric}: {d.difference:+.3f} [{d.low:+.3f}, {d.high:+.3f}]"
        )
    if choice.overfitting:
        o = choice.overfitting
        print(f"overfitting: validation {choice.metric} rose for {o.checkpoints} checkpoints past step {o.since_step}")


def cmd_best(args: argparse.Namespace) -> None:
    from pricer.evaluator.data import load_heldout

    dataset = load_heldout(args.data) if args.data else None
    evaluator = _evaluator(args)
    name = evaluator.source(args.source).name
    choice = evaluator.choice(name, dataset=dataset, metric=args.metric, rule=args.rule, estimator=args.estimator)
    if args.json:
        _print_json({"estimator": args.estimator, **_choice_dict(choice)})
    else:
        _print_choice(choice)


def _service_for(args: argparse.Namespace):
    """(a service, the repo it names `args.source` by): a local run folder is served as local/<name> from its parent."""
    from pathlib import Path

    from pricer.evaluator.service.facade import PricerService

    settings = _settings(args)
    if Path(args.source).expanduser().is_dir():
        folder = Path(args.source).expanduser().resolve()
        settings, repo = settings.model_copy(update={"checkpoint_root": folder.parent}), f"local/{folder.name}"
    else:
        repo = args.source
    update = {"repo": repo} | ({"data": args.data} if args.data else {})
    return PricerService(settings.model_copy(update=update)), repo


def cmd_watch(args: argparse.Namespace) -> None:
    import time

    from pricer.evaluator.store.jobs import QUEUED, RUNNING

    service, repo = _service_for(args)
    service.start()
    service.watch(repo, interval=args.interval)
    seen: set[int] = set()
    try:
        while True:
            time.sleep(0.5)
            counts, watch = service.queue.counts(), service.watches.get(repo)
            for result in service.jobs(repo):
                if result.job.id not in seen and result.job.status in ("done", "failed"):
                    seen.add(result.job.id)
                    if not args.json:
                        what = f"{result.evaluation.metrics().mae:,.2f} MAE" if result.evaluation else result.job.error
                        print(f"{result.job.revision.revision}: {result.job.status} ({what})")
            idle = watch.last_polled is not None and not counts[QUEUED] and not counts[RUNNING]
            if args.once and idle:
                break
    except KeyboardInterrupt:
        pass
    finally:
        service.stop()
    choice = service.choice(repo, metric=args.metric, rule=args.rule, estimator=args.estimator)
    if args.json:
        _print_json({"repo": repo, **_choice_dict(choice)})
    else:
        _print_choice(choice)


def cmd_report(args: argparse.Namespace) -> None:
    from pathlib import Path

    from pricer.evaluator.views.report import Views, write_report

    service, repo = _service_for(args)  # not started: the report reads what the store holds
    for path in write_report(Views(service), repo, Path(args.output), metric=args.metric, png=args.png):
        print(path)


def cmd_predict(args: argparse.Namespace) -> None:
    evaluator = _evaluator(args)
    prediction = evaluator.predict(
        evaluator.source(args.source), args.description, metric=args.metric, rule=args.rule, estimator=args.estimator
    )
    rev = prediction.revision
    if args.json:
        answers = [{"price": p, "revision": rev.revision, "commit": rev.commit} for p in prediction.prices]
        _print_json(answers[0] if len(answers) == 1 else answers)
        return
    for description, price in zip(args.description, prediction.prices, strict=True):
        print(f"${price:,.2f}  {description[:70]}")
    print(f"(from {rev.revision}, commit {rev.commit[:10]})")


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
        _print_json(metrics.to_dict())
        return
    print(f"{args.guess_field} on {args.file}: {metrics.n} items")
    for name, cell in _metric_cells(metrics).items():
        print(f"  {name:<10} {cell}")


def cmd_train(args: argparse.Namespace) -> None:
    from pricer.evaluator.data import catalogue_split, heldout_from_frame, load_heldout
    from pricer.trainer import PricerCallback, preset, train

    settings = _settings(args)
    config = preset(
        args.preset,
        epochs=args.epochs,
        max_steps=args.max_steps,
        save_steps=args.save_steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        lora_r=args.lora_r,
    )
    if args.data:
        data = load_heldout(args.data, token=settings.token)
    else:
        data = heldout_from_frame(catalogue_split()[0], name="catalogue-train")
    base = args.base
    if base is None:
        if args.preset != "tiny":
            raise ModelLoadError("give --base (a model id or folder); only --preset tiny has a default base")
        from pricer.evaluator.embedded.tiny import make_tiny_base

        base = str(make_tiny_base(settings.home / "tiny-llama"))
    callbacks = [PricerCallback(args.notify, api_token=args.notify_token)] if args.notify else []
    result = train(
        base,
        data,
        args.output,
        config,
        resume=args.resume,
        push_to=args.push_to,
        token=settings.token,
        endpoint=settings.hf_endpoint,
        callbacks=callbacks,
        progress=not args.json,
    )
    summary = {
        "output": str(result.output),
        "steps": result.steps,
        "checkpoints": result.checkpoints,
        "pushed": [{"step": p.step, "commit": p.commit, "message": p.message} for p in result.pushed],
    }
    if args.json:
        _print_json(summary)
        return
    print(f"trained {result.steps} steps on {len(data)} items; checkpoints at steps {result.checkpoints} in {result.output}")
    for pushed in result.pushed:
        print(f"  pushed step {pushed.step} to {args.push_to}@{pushed.commit[:10]}")
    print(f"next: pricer evaluate {args.push_to or result.output} --all --data heldout.jsonl")


def cmd_serve(args: argparse.Namespace) -> None:
    import uvicorn

    from pricer.app.main import create_app

    settings = _settings(args)
    if settings.checkpoint_root is not None and not settings.checkpoint_root.is_dir():
        raise InvalidRepoId(f"checkpoint root {settings.checkpoint_root} is not a folder")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info" if args.verbose else "warning")


def cmd_demo(args: argparse.Namespace) -> None:
    from pricer.evaluator.cli.demo import run_demo

    settings = _settings(args)
    demo = run_demo(settings, items=args.items, epochs=args.epochs, save_steps=args.save_steps)
    print(f"validation ranking of {demo.repo} (best first):")
    print(ranking_table(demo.ranked))
    print()
    _print_choice(demo.choice)
    print("charts and report:\n" + "\n".join(f"  {path}" for path in demo.charts))
    if args.no_serve:
        demo.service.stop()
        print(f'next:\n  pricer best {demo.run_dir}\n  pricer predict {demo.run_dir} "..."')
        return
    import uvicorn

    from pricer.app.main import create_app

    url = f"http://{settings.host}:{settings.port}"
    print(
        f"\nserving {demo.repo} at {url}: the dashboard is {url}/ (API docs: {url}/docs); try:\n"
        f"  curl -s {url}/best-checkpoint\n"
        f"  curl -s -X POST {url}/predict -H 'Content-Type: application/json' "
        """-d '{"description": "Stainless steel 5-quart stand mixer, 10 speeds"}'\n"""
        f"  curl -s {url}/evaluations\n"
        "Ctrl-C stops."
    )
    uvicorn.run(create_app(service=demo.service), host=settings.host, port=settings.port, log_level="warning")


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", help="store URL (SQLAlchemy); default: SQLite in pricer's data folder, or PRICER_DB_URL")
    parser.add_argument("--base", help="base model for every adapter (default: the one each adapter names)")
    parser.add_argument("--device", help="auto (default), cpu, cuda, cuda:N")
    parser.add_argument("--batch-size", type=int, help="items per forward pass (default 16)")
    parser.add_argument("--4bit", dest="load_in_4bit", action="store_true", help="load the base in 4-bit nf4 (CUDA only)")


def _add_ranking_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--metric", choices=METRICS, default="mae", help="what to rank by (default: mae)")
    parser.add_argument(
        "--estimator",
        choices=("argmax", "mean"),
        default="argmax",
        help="the price read from the model: most likely number or probability-weighted mean",
    )
    parser.add_argument(
        "--rule",
        choices=("earliest", "min"),
        default="earliest",
        help="earliest: the earliest checkpoint not significantly worse than the best (default); min: the lowest error",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pricer", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("evaluate", help="price held-out items under checkpoints and rank them")
    p.add_argument("source", help="a local run folder (with checkpoint-N/) or a Hub repo id namespace/name")
    p.add_argument("--revision", action="append", help="a revision: checkpoint-N, commit sha, branch or tag (repeatable)")
    p.add_argument("--all", action="store_true", help="every checkpoint of the run (the default without --revision)")
    p.add_argument("--data", help="held-out JSONL / CSV / Parquet (default: the generated catalogue's held-out part)")
    _add_model_options(p)
    _add_ranking_options(p)
    p.set_defaults(run=cmd_evaluate)

    p = commands.add_parser("revisions", help="list a run's checkpoints: step, epoch, commit, branches and tags")
    p.add_argument("source")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(run=cmd_revisions)

    p = commands.add_parser("best", help="the checkpoint the rule chooses on validation items, its evidence and test figure")
    p.add_argument("source")
    p.add_argument("--data", help="rank evaluations on this data (default: the most recently used data)")
    p.add_argument("--db")
    _add_ranking_options(p)
    p.set_defaults(run=cmd_best)

    p = commands.add_parser("watch", help="evaluate every checkpoint of a run, and each new one as training writes it")
    p.add_argument("source", help="a local run folder or a Hub repo id")
    p.add_argument("--interval", type=float, default=30.0, help="seconds between polls (default 30)")
    p.add_argument("--once", action="store_true", help="stop when what is there now is evaluated")
    p.add_argument("--data", help="held-out data (default: the generated catalogue's held-out part)")
    _add_model_options(p)
    _add_ranking_options(p)
    p.set_defaults(run=cmd_watch)

    p = commands.add_parser("report", help="a self-contained HTML report of a repo's checkpoints, curve, choice and jobs")
    p.add_argument("source", help="a local run folder, local/<name> under PRICER_CHECKPOINT_ROOT, or a Hub repo id")
    p.add_argument("--output", default="report.html", help="the HTML file to write (default: report.html)")
    p.add_argument("--png", action="store_true", help="also write the two charts as PNG files beside it")
    p.add_argument("--metric", choices=METRICS, default="mae", help="what chooses the checkpoint (default: mae)")
    p.add_argument("--data", help="the held-out data the service evaluated on (default: PRICER_DATA or the catalogue)")
    p.add_argument("--db")
    p.set_defaults(run=cmd_report)

    p = commands.add_parser("predict", help="price descriptions with the best evaluated checkpoint")
    p.add_argument("source")
    p.add_argument("description", nargs="+", help="product description(s)")
    _add_model_options(p)
    _add_ranking_options(p)
    p.set_defaults(run=cmd_predict)

    p = commands.add_parser("score", help="score an existing predictions file with the course's metrics")
    p.add_argument("file", help="JSONL / CSV / Parquet with true prices and guesses (nested fields as a.b)")
    p.add_argument("--guess-field", required=True, help="the field holding the guesses, e.g. predictions.gpt_4o_frontier")
    p.add_argument("--truth-field", default="price", help="the field holding true prices (default: price)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(run=cmd_score)

    p = commands.add_parser("train", help="fine-tune a LoRA (QLoRA on CUDA) that writes a checkpoint every N steps")
    p.add_argument("--base", help="base model id or folder (default with --preset tiny: the embedded tiny Llama)")
    p.add_argument(
        "--data", help="training items: JSONL / CSV / Parquet, or hf://datasets/<id>[@rev]/<file> (default: the catalogue's)"
    )
    p.add_argument("--output", required=True, help="run folder: checkpoint-N/ land here")
    p.add_argument("--preset", choices=("course-qlora", "tiny"), default="course-qlora", help="settings to start from")
    p.add_argument("--epochs", type=float, help="passes over the items")
    p.add_argument("--max-steps", type=int, help="stop after N steps (overrides --epochs)")
    p.add_argument("--save-steps", type=int, help="a checkpoint every N steps")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--learning-rate", type=float)
    p.add_argument("--lora-r", type=int, help="LoRA rank")
    p.add_argument("--push-to", help="Hub repo id: every checkpoint becomes a commit of it, in order")
    p.add_argument("--resume", action="store_true", help="continue from the output folder's last checkpoint")
    p.add_argument("--notify", metavar="URL", help="a pricer service to POST /evaluate each checkpoint to")
    p.add_argument("--notify-token", help="that service's API token")
    p.add_argument("--json", action="store_true", help="machine-readable summary")
    p.set_defaults(run=cmd_train)

    p = commands.add_parser("serve", help="run the HTTP service: evaluation jobs, best checkpoint, predictions")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1, or PRICER_HOST)")
    p.add_argument("--port", type=int, help="port (default 8000, or PRICER_PORT)")
    p.add_argument("--checkpoint-root", help="folder whose run folders are served as local/<name> (or PRICER_CHECKPOINT_ROOT)")
    p.add_argument("--data", dest="serve_data", help="held-out data file (default: the generated catalogue, or PRICER_DATA)")
    p.add_argument("--repo", help="the repo whose best adapter /predict serves (default: the latest evaluated)")
    _add_model_options(p)
    p.set_defaults(run=cmd_serve)

    p = commands.add_parser("demo", help="the whole loop on the embedded default: tiny model, training, evaluation")
    p.add_argument("--db")
    p.add_argument("--items", type=int, default=800, help="catalogue items to train on (default 800)")
    p.add_argument("--epochs", type=float, default=12, help="passes over them (default 12)")
    p.add_argument("--save-steps", type=int, default=100, help="a checkpoint every N steps (default 100: one per epoch)")
    p.add_argument("--no-serve", action="store_true", help="stop after the ranking and charts instead of serving")
    p.add_argument("--host", help="address to serve on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to serve on (default 8000)")
    p.set_defaults(run=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:  # keep the output to pricer's own table and progress bar
        import transformers

        transformers.utils.logging.disable_progress_bar()
        warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        args.run(args)
    except PricerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
