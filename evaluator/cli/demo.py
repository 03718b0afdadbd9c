"""`pricer demo`: the whole loop on the embedded default, on a fresh machine.

Makes the tiny base model and the generated catalogue, fine-tunes a LoRA adapter that
writes several checkpoints, evaluates them all through the service's job queue, ranks
them and draws the charts; the CLI then serves the best adapter over HTTP.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from pricer.evaluator.data import catalogue_split, heldout_from_frame
from pricer.evaluator.embedded.tiny import make_tiny_base
from pricer.evaluator.records import JobStatus
from pricer.evaluator.service.facade import PricerService
from pricer.evaluator.settings import Settings
from pricer.evaluator.stats.ranking import Ranked
from pricer.evaluator.stats.selection import Choice
from pricer.evaluator.views.charts import error_curve, save_png, truth_vs_prediction
from pricer.evaluator.views.report import Views, write_report


@dataclass
class Demo:
    run_dir: Path
    repo: str
    ranked: list[Ranked]
    choice: Choice
    charts: list[Path]
    service: PricerService  # started, with the best adapter served


def run_demo(settings: Settings, *, items: int = 800, epochs: float = 12, save_steps: int = 100, progress: bool = True) -> Demo:
    """Train (once), evaluate every checkpoint through the job queue, rank and chart them.

    The run trains on the first `items` of the catalogue's training part for `epochs` passes,
    a checkpoint every `save_steps` steps, and is scored on the 400 held-out items; `progress`: bars on stderr.
    """
    from pricer.trainer import preset, train

    if not (settings.home / "tiny-llama" / "pricer-tiny.json").is_file():
        print(
            "building the tiny base model (a tokenizer and 300 pretraining steps): done once, kept in "
            f"{settings.home / 'tiny-llama'}; about 35 s on 2 idle CPU cores"
        )
    base = make_tiny_base(settings.home / "tiny-llama", progress=progress)
    root = settings.home / "runs"
    run_dir = root / f"demo-{items}x{epochs:g}-{save_steps}"
    if not any(run_dir.glob("checkpoint-*")):
        config = preset("tiny", epochs=epochs, save_steps=save_steps)
        print(
            f"fine-tuning the tiny model on {items} items for {epochs:g} epochs, a checkpoint every {save_steps} steps -> {run_dir}"
        )
        train(base, heldout_from_frame(catalogue_split()[0].iloc[:items], name="catalogue-train"), run_dir, config, progress=progress)

    repo = f"local/{run_dir.name}"
    service = PricerService(settings.model_copy(update={"checkpoint_root": root, "repo": repo, "data": None}))
    service.start()
    jobs = [service.submit(repo, revision.revision)[0].job.id for revision in service.source(repo).revisions()]
    print(f"evaluating {len(jobs)} checkpoints of {repo} on {service.default_dataset} through the job queue")
    with tqdm(total=len(jobs), desc="evaluating", unit="checkpoint", disable=not progress) as bar:
        while (finished := sum(service.job(j).job.status in (JobStatus.DONE, JobStatus.FAILED) for j in jobs)) < len(jobs):
            bar.update(finished - bar.n)
            time.sleep(0.2)
        bar.update(finished - bar.n)
    for failed in (service.job(j).job for j in jobs):
        if failed.status == JobStatus.FAILED:
            print(f"  {failed.revision.revision} failed: {failed.error}")

    ranked, choice = service.ranking(repo), service.choice(repo)
    reports = settings.home / "reports" / run_dir.name
    chosen = choice.chosen.evaluation
    charts = [
        save_png(error_curve(choice, title=f"{repo}: validation error per checkpoint"), reports / "validation-error.png"),
        save_png(truth_vs_prediction(chosen, part="test"), reports / "chosen-truth-vs-prediction.png"),
        *write_report(Views(service), repo, reports / "report.html"),
    ]
    return Demo(run_dir, repo, ranked, choice, charts, service)
