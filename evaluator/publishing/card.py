"""The choice in a model card: a Hub repo's (with a tag moved to the chosen commit) or a local run's.

The card keeps what its owner wrote: pricer's part sits between two markers and is replaced
whole, and its metadata gains `model-index` evaluation results (the Hub's convention, parsed
back by `huggingface_hub.ModelCard`), `base_model` and a `pricer` tag.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard

from pricer.evaluator.checkpoints.sources import CheckpointSource, HubRepo, LocalRun
from pricer.evaluator.publishing import Run
from pricer.evaluator.settings import Settings
from pricer.evaluator.stats.metrics import METRICS, Metrics

log = logging.getLogger(__name__)
BEGIN, END = "<!-- pricer:begin -->", "<!-- pricer:end -->"
CARD_FILE, RECORD_FILE = "README.md", "pricer-choice.json"


def _figure(metrics: Metrics, name: str) -> str:
    spec = METRICS[name]
    low, high = metrics.intervals[name]
    return f"{spec.show(metrics.values[name])} {spec.show_interval(low, high)}"


def _checkpoint(run: Run) -> str:
    revision = run.choice.chosen.evaluation.revision
    where = [f"commit `{revision.commit[:10]}`"]
    where += [f"step {revision.step}"] if revision.step is not None else []
    where += [f"epoch {revision.epoch:g}"] if revision.epoch is not None else []
    return f"`{revision.revision}` ({', '.join(where)})"


def section(run: Run, *, load: str) -> str:
    """pricer's part of the card: the choice, the rule, its figures with intervals, how to load it, the ranking."""
    choice, estimator = run.choice, run.estimator
    chosen = choice.chosen.evaluation
    metric = METRICS[choice.metric]
    names = list(METRICS)
    validation = chosen.metrics(estimator)
    rows = [f"| validation ({validation.n} items) | " + " | ".join(_figure(validation, n) for n in names) + " |"]
    if choice.test is not None:
        rows.append(f"| test ({choice.test.n} items, never used to choose) | " + " | ".join(_figure(choice.test, n) for n in names) + " |")
    ranked = sorted(choice.candidates, key=lambda c: c.validation.values[metric.name] * (-1 if metric.higher_is_better else 1))
    ranking = [
        f"| {i} | `{c.evaluation.revision.revision}` | {c.evaluation.revision.step if c.evaluation.revision.step is not None else ''} | "
        f"{_figure(c.validation, metric.name)} | {metric.show_paired(c.versus_best.difference, c.versus_best.low, c.versus_best.high)} | "
        f"{c.p_best:.0%} | {'chosen' if c is choice.chosen else ''} |"
        for i, c in enumerate(ranked, 1)
    ]
    return "\n".join([
        BEGIN,
        "## The checkpoint pricer chose",
        "",
        f"**{_checkpoint(run)}**, chosen by pricer's rule: {choice.statement} (`{choice.rule}`, prices read as `{estimator}`),",
        f"on the {validation.n} validation items of `{run.data.name}` (fingerprint `{run.data.fingerprint[:12]}`), "
        f"among {len(choice.candidates)} evaluated checkpoints.",
        "",
        "| items | " + " | ".join(METRICS[n].label for n in names) + " |",
        "|---|" + "---|" * len(names),
        *rows,
        "",
        "Each figure with its 95% bootstrap interval. The test items were never used to choose: their figure is the one "
        "to expect in use.",
        "",
        "```python",
        "from peft import PeftModel",
        load,
        "```",
        "",
        f"### Every checkpoint, on validation {metric.label}",
        "",
        f"| rank | checkpoint | step | {metric.short} | versus the best (paired, 95%) | P(best) | |",
        "|---|---|---|---|---|---|---|",
        *ranking,
        "",
        f"_Written by pricer on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC._",
        END,
    ])


def eval_results(run: Run) -> list[EvalResult]:
    """The chosen checkpoint's figures as `model-index` results: every metric, on validation and on test."""
    parts = [("validation", run.choice.chosen.evaluation.metrics(run.estimator))]
    parts += [("test", run.choice.test)] if run.choice.test is not None else []
    return [
        EvalResult(
            task_type="text-generation",
            task_name="Price prediction",
            dataset_type=run.data.name,
            dataset_name=run.data.name,
            dataset_split=split,
            dataset_revision=run.data.fingerprint,
            metric_type=name,
            metric_name=METRICS[name].label,
            metric_value=round(metrics.values[name], 6),
        )
        for split, metrics in parts
        for name in METRICS
    ]


def updated_card(existing: str | None, run: Run, *, model_name: str, load: str) -> str:
    """`existing` (or a new card) with pricer's part and metadata replaced by the choice's."""
    card = ModelCard(existing or "---\n{}\n---\n", ignore_metadata_errors=True)  # "{}": empty metadata, not none
    card.data.model_name = model_name
    card.data.eval_results = eval_results(run)
    card.data.base_model = card.data.base_model or run.choice.chosen.evaluation.base_model
    card.data.library_name = card.data.library_name or "peft"
    card.data.tags = sorted({*(card.data.tags or []), "pricer"})
    text, ours = card.text, section(run, load=load)
    if BEGIN in text and END in text.split(BEGIN, 1)[1]:
        before, rest = text.split(BEGIN, 1)
        text = before + ours + rest.split(END, 1)[1]
    else:
        text = text.rstrip() + ("\n\n" if text.strip() else f"# {model_name}\n\n") + ours + "\n"
    card.text = text
    return str(card)


def choice_record(run: Run) -> dict:
    """The choice, machine-readable: what pricer-choice.json holds (the results record's choice, its data and base)."""
    return {"repo": run.repo, **{key: run.record[key] for key in ("choice", "data", "base", "estimator", "versions", "created_at")}}


class HubCard:
    """Moves `settings.hub_tag` to a Hub repo's chosen commit and writes the choice into the repo's model card."""

    name = "hub"
    records_evaluations = False

    def __init__(self, settings: Settings) -> None:
        from huggingface_hub import HfApi

        self.tag = settings.hub_tag
        self._api = HfApi(endpoint=settings.hf_endpoint, token=settings.token or False)

    def accepts(self, source: CheckpointSource) -> bool:
        return isinstance(source, HubRepo)

    def evaluated(self, run: Run, evaluation) -> None:
        raise NotImplementedError("a card is written with the choice alone")

    def chose(self, run: Run) -> None:
        from huggingface_hub import errors

        repo, commit = run.source.name, run.choice.chosen.evaluation.revision.commit
        refs = self._api.list_repo_refs(repo)
        if {t.name: t.target_commit for t in refs.tags}.get(self.tag) != commit:
            try:
                self._api.delete_tag(repo, tag=self.tag)
            except errors.RevisionNotFoundError:
                pass  # the first choice: no tag yet
            self._api.create_tag(repo, tag=self.tag, revision=commit, tag_message=f"pricer: {run.choice.statement}")
        try:
            existing = Path(self._api.hf_hub_download(repo, CARD_FILE)).read_text(encoding="utf-8")
        except errors.EntryNotFoundError:
            existing = None
        load = f'model = PeftModel.from_pretrained(base, "{repo}", revision="{self.tag}")'
        card = updated_card(existing, run, model_name=repo.split("/")[-1], load=load)
        revision = run.choice.chosen.evaluation.revision
        self._api.upload_file(
            path_or_fileobj=card.encode(),
            path_in_repo=CARD_FILE,
            repo_id=repo,
            commit_message=f"pricer: the chosen checkpoint is {revision.revision} ({revision.commit[:7]})",
        )
        log.info("%s: tag %s moved to %s, model card written", repo, self.tag, commit[:10])


class RunCard:
    """Writes the choice into a local run's folder: its model card (README.md) and pricer-choice.json."""

    name = "card"
    records_evaluations = False

    def accepts(self, source: CheckpointSource) -> bool:
        return isinstance(source, LocalRun)

    def evaluated(self, run: Run, evaluation) -> None:
        raise NotImplementedError("a card is written with the choice alone")

    def chose(self, run: Run) -> None:
        folder: Path = run.source.path
        chosen = folder / run.choice.chosen.evaluation.revision.revision
        readme = folder / CARD_FILE
        # a card that is a link is not followed out of the run: it is replaced by a file
        existing = readme.read_text(encoding="utf-8") if readme.is_file() and not readme.is_symlink() else None
        load = f'model = PeftModel.from_pretrained(base, "{chosen}")'
        _write(readme, updated_card(existing, run, model_name=folder.name, load=load))
        _write(folder / RECORD_FILE, json.dumps({**choice_record(run), "path": str(chosen)}, indent=2) + "\n")
        log.info("%s: the choice is written into the run's folder", run.repo)


def _write(path: Path, text: str) -> None:
    """Replace `path` whole: a reader never sees half a file."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
