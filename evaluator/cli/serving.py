"""`pricer serve | worker | watch | report | demo`: the long-running service, its workers, its watches, what it shows."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path

from pricer.evaluator.cli.common import (
    add_data_option,
    add_db_option,
    add_model_options,
    add_policy_options,
    metric_line,
    positive,
    print_choice,
    progress,
    ranking_table,
    service_for,
    settings_from,
    show_choice,
)
from pricer.evaluator.errors import InvalidRepoId
from pricer.evaluator.stats.metrics import Metric


def _run_app(args: argparse.Namespace, settings, service=None) -> None:
    import uvicorn

    from pricer.app.main import create_app

    app = create_app(settings, service=service)
    level = "info" if args.verbose else "error" if args.quiet else "warning"
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=level)


def cmd_serve(args: argparse.Namespace) -> None:
    settings = settings_from(args)
    if settings.checkpoint_root is not None and not settings.checkpoint_root.is_dir():
        raise InvalidRepoId(f"checkpoint root {settings.checkpoint_root} is not a folder")
    _run_app(args, settings)


def cmd_worker(args: argparse.Namespace) -> None:
    """Run the store's queued jobs in this process until SIGTERM or Ctrl-C (the running job is finished first, or, cut
    off, runs again elsewhere)."""
    from pricer.evaluator.service import PricerService

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    settings = settings_from(args).model_copy(update={"executor": "thread"})  # this process runs them
    service = PricerService(settings, serving=False)
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    service.start()
    print(f"evaluating the jobs queued in {service.store_name()}; Ctrl-C stops", flush=True)
    stopping.wait()
    service.stop(timeout=settings.lease_seconds)


def cmd_watch(args: argparse.Namespace) -> None:

    service, repo = service_for(args)
    service.start()
    others = _send_outbox(args, service) - {repo}
    service.watch(repo, interval=args.interval)
    seen: set[int] = set()
    try:
        while True:
            time.sleep(0.5)
            watch = service.watched(repo)
            for result in [job for name in (repo, *sorted(others)) for job in service.jobs(name)]:
                if result.job.id not in seen and result.job.finished:
                    seen.add(result.job.id)
                    if not args.json:
                        what = _outcome(result)
                        where = "" if result.job.repo == repo else f"{result.job.repo}@"
                        print(f"{where}{result.job.revision.revision}: {result.job.status} ({what})")
            if args.once and watch.last_polled is not None and service.idle():
                break
    except KeyboardInterrupt:
        pass
    finally:
        service.stop()
    show_choice(args, repo, service.choice(repo))


def _send_outbox(args: argparse.Namespace, service) -> set[str]:
    """Enqueue what a training run's PricerCallback could not send (the run folder's outbox: the service was down,
    or training ended first), and take it out of the outbox; the repos it names."""
    from huggingface_hub import HfApi

    from pricer.evaluator.errors import PricerError
    from pricer.trainer.outbox import Outbox, resolve_pushes

    outbox, repos = Outbox(Path(args.source).expanduser()), set()
    items = outbox.items() if outbox.folder.is_dir() else []  # a Hub repo id has no outbox
    if not items:
        return repos
    api = HfApi(endpoint=service.settings.hf_endpoint, token=service.settings.token or False)
    for item, named in zip(items, resolve_pushes(items, api), strict=True):
        try:
            if "revision" not in named:
                raise PricerError(f"the push of {item} is not on the Hub yet")
            service.submit(named["repo"], named["revision"])
        except PricerError as exc:
            print(f"left in {outbox.path}: {exc}", file=sys.stderr)
            outbox.replace(item, named)
            continue
        outbox.remove(item)
        repos.add(named["repo"])
    return repos


def _outcome(result) -> str:
    """A finished job in a few words: its metrics, where racing stopped it, or why it failed."""
    evaluation = result.evaluation
    if evaluation is None:
        return result.job.error or ""
    if evaluation.stopped:
        stop = evaluation.stopped
        return (f"stopped by racing after round {stop.after_round + 1} on {evaluation.n} items: {stop.metric} "
                f"{stop.difference:+.4g} [{stop.low:+.4g}, {stop.high:+.4g}] against the leader; evaluate it to complete it")
    return metric_line(evaluation.metrics())


def cmd_report(args: argparse.Namespace) -> None:
    from pricer.evaluator.views.report import Views, write_report

    service, repo = service_for(args)  # not started: the report reads what the store holds
    for path in write_report(Views(service), repo, Path(args.output), metric=args.metric, png=args.png):
        print(path)


def cmd_demo(args: argparse.Namespace) -> None:
    from pricer.evaluator.cli.demo import run_demo

    settings = settings_from(args)
    demo = run_demo(settings, items=args.items, epochs=args.epochs, save_steps=args.save_steps, progress=progress(args))
    print(f"validation ranking of {demo.repo} (best first):")
    print(ranking_table(demo.ranked))
    print()
    print_choice(demo.choice)
    print("charts and report:\n" + "\n".join(f"  {path}" for path in demo.charts))
    if args.no_serve:
        demo.service.stop()
        print(f'next:\n  pricer best {demo.run_dir}\n  pricer predict {demo.run_dir} "..."')
        return
    url = f"http://{settings.host}:{settings.port}"
    print(
        f"\nserving {demo.repo} at {url}: the dashboard is {url}/ (API docs: {url}/docs); try:\n"
        f"  curl -s {url}/best-checkpoint\n"
        f"  curl -s -X POST {url}/predict -H 'Content-Type: application/json' "
        """-d '{"description": "Stainless steel 5-quart stand mixer, 10 speeds"}'\n"""
        f"  curl -s {url}/evaluations\n"
        "Ctrl-C stops."
    )
    _run_app(args, settings, demo.service)


def add_commands(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("watch", help="evaluate every checkpoint of a run, and each new one as training writes it")
    p.add_argument("source", help="a local run folder or a Hub repo id")
    p.add_argument("--interval", type=positive(float), help="seconds between polls (default: PRICER_WATCH_INTERVAL, 30)")
    p.add_argument("--once", action="store_true", help="stop when what is there now is evaluated")
    p.add_argument(
        "--race", action="store_true",
        help="race each checkpoint against the current leader and stop scoring it once significantly worse "
        "(PRICER_RACE; a stopped one is kept as a partial evaluation)",
    )
    add_data_option(p)
    add_model_options(p)
    add_policy_options(p)
    p.set_defaults(run=cmd_watch)

    p = commands.add_parser("report", help="a self-contained HTML report of a repo's checkpoints, curve, choice and jobs")
    p.add_argument("source", help="a local run folder, local/<name> under PRICER_CHECKPOINT_ROOT, or a Hub repo id")
    p.add_argument("--output", default="report.html", help="the HTML file to write (default: report.html)")
    p.add_argument("--png", action="store_true", help="also write the two charts as PNG files beside it")
    p.add_argument("--metric", choices=list(Metric), help="what chooses the checkpoint (default: PRICER_METRIC, mae)")
    add_data_option(p)
    add_db_option(p)
    p.set_defaults(run=cmd_report)

    p = commands.add_parser("serve", help="run the HTTP service: evaluation jobs, best checkpoint, predictions")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1, or PRICER_HOST)")
    p.add_argument("--port", type=int, help="port (default 8000, or PRICER_PORT)")
    p.add_argument("--checkpoint-root", help="folder whose run folders are served as local/<name> (or PRICER_CHECKPOINT_ROOT)")
    add_data_option(p)
    p.add_argument("--repo", help="the repo whose best adapter /predict serves (default: the latest evaluated)")
    p.add_argument(
        "--executor", choices=["thread", "ray", "none"],
        help="what runs the evaluation jobs: a worker thread here (default), Ray actors, or none (`pricer worker` "
        "processes elsewhere) (PRICER_EXECUTOR)",
    )
    p.add_argument("--ray-address", help="the Ray cluster for --executor ray ('auto': the one `ray start` runs here)")
    p.add_argument("--ray-actors", type=positive(int), help="Ray actors evaluating (default: one per GPU of the cluster, else one)")
    add_model_options(p)
    p.set_defaults(run=cmd_serve)

    p = commands.add_parser("worker", help="run the evaluation jobs a store holds, beside `pricer serve` replicas")
    p.add_argument("--checkpoint-root", help="folder whose run folders are local/<name> (or PRICER_CHECKPOINT_ROOT)")
    add_data_option(p)
    p.add_argument("--threads", type=positive(int), help="CPU threads for pricing (default: torch's own choice)")
    add_model_options(p)
    p.set_defaults(run=cmd_worker)

    p = commands.add_parser("demo", help="the whole loop on the embedded default: tiny model, training, evaluation")
    add_db_option(p)
    p.add_argument("--items", type=positive(int), default=800, help="catalogue items to train on (default 800)")
    p.add_argument("--epochs", type=float, default=12, help="passes over them (default 12)")
    p.add_argument("--save-steps", type=int, default=100, help="a checkpoint every N steps (default 100: one per epoch)")
    p.add_argument("--no-serve", action="store_true", help="stop after the ranking and charts instead of serving")
    p.add_argument("--host", help="address to serve on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to serve on (default 8000)")
    p.set_defaults(run=cmd_demo)
