"""What the two trackers (MLflow, W&B) log, under which names, and how a pricer run finds its tracker run again.

A pricer run is one tracker run: the repo on one held-out set (its fingerprint), found again by a key derived from
both, so a service that restarts, or another replica on the same store, keeps writing to the same run. Each
checkpoint's figures are logged at its training step, under the estimate the choice was made with:

- `validation/<metric>` with `validation/<metric>_low` and `_high` (the 95% bootstrap interval), `train/loss`,
  `train/epoch`: one point per checkpoint, at its step;
- `chosen/<metric>` (with its interval), `chosen/step`, `chosen/epoch`, `chosen/p_best`, `test/<metric>` (the
  chosen checkpoint's test items, never used to choose), `test/coverage_80`, `baseline/<metric>` (the constant
  guess): the choice, what a run's summary shows. A checkpoint's test figures are never logged: only the chosen
  one's is an honest out-of-sample figure.
"""

from __future__ import annotations

import hashlib
import importlib
import re
from pathlib import Path
from types import ModuleType

from pricer.evaluator.checkpoints.adapters import CONFIG_FILE, WEIGHTS_FILE
from pricer.evaluator.errors import PricerError
from pricer.evaluator.publishing import Run
from pricer.evaluator.records import Evaluation
from pricer.evaluator.stats.metrics import Metrics

ADAPTER_FILES = (CONFIG_FILE, WEIGHTS_FILE)  # what the chosen adapter is logged as: no optimizer state, nothing pickled
STEP = "checkpoint/step"  # W&B's x-axis for the per-checkpoint figures: checkpoints may be evaluated out of order


class TrackerNotInstalled(PricerError, ImportError):
    """A tracker is turned on in the settings, but its library is not installed (`pip install 'pricer[mlflow]'`)."""


def require(module: str, *, setting: str) -> ModuleType:
    """Import a tracker's library, or say which extra brings it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise TrackerNotInstalled(
            f"{setting} is set, but {module} is not installed: pip install 'pricer[{module}]' (or unset {setting})"
        ) from exc


def slug(repo: str) -> str:
    """A name trackers accept for a repo's registered model or artifact: `org/pricer-run` -> `org-pricer-run`."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", repo).strip("-.") or "pricer-run"


def run_key(run: Run) -> str:
    """The tracker run's stable key: the repo and the held-out set's fingerprint (figures on other items are another run)."""
    return hashlib.sha256(f"{run.repo}\n{run.data.fingerprint}".encode()).hexdigest()[:24]


def step(evaluation: Evaluation) -> int:
    """Where a checkpoint's figures go: its training step (0 for a Hub commit that names none)."""
    return evaluation.revision.step if evaluation.revision.step is not None else 0


def checkpoint_name(evaluation: Evaluation) -> str:
    """A file-name-safe name for one checkpoint: its revision and commit (a branch names several commits)."""
    revision = evaluation.revision
    return f"{slug(revision.revision)}-{revision.commit[:12]}"


def _with_intervals(prefix: str, metrics: Metrics) -> dict[str, float]:
    figures = {}
    for name, value in metrics.values.items():
        low, high = metrics.intervals[name]
        figures |= {f"{prefix}/{name}": value, f"{prefix}/{name}_low": low, f"{prefix}/{name}_high": high}
    return figures


def checkpoint_figures(run: Run, evaluation: Evaluation) -> dict[str, float]:
    """One checkpoint's validation figures with their intervals, and where training was."""
    figures = _with_intervals("validation", evaluation.metrics(run.estimator))
    revision = evaluation.revision
    if revision.train_loss is not None:
        figures["train/loss"] = revision.train_loss
    if revision.epoch is not None:
        figures["train/epoch"] = revision.epoch
    return {name: float(value) for name, value in figures.items()}


def choice_figures(run: Run) -> dict[str, float]:
    """The choice as a run's summary shows it: the chosen checkpoint's figures, its test figure, the baseline."""
    choice = run.choice
    revision = choice.chosen.evaluation.revision
    figures = _with_intervals("chosen", choice.chosen.evaluation.metrics(run.estimator))
    figures["chosen/p_best"] = choice.chosen.p_best
    if revision.step is not None:
        figures["chosen/step"] = revision.step
    if revision.epoch is not None:
        figures["chosen/epoch"] = revision.epoch
    if choice.test is not None:
        figures |= _with_intervals("test", choice.test)
    if choice.coverage is not None:
        figures["test/coverage_80"] = choice.coverage  # the share of test prices inside the 80% intervals
    if choice.cross_fitted is not None:  # no test items: the out-of-sample figure by cross-fitting
        figures[f"cross_fitted/{choice.metric}"] = choice.cross_fitted.value
    figures |= {f"baseline/{name}": value for name, value in choice.baseline.values.items()}
    return {name: float(value) for name, value in figures.items()}


def choice_tags(run: Run) -> dict[str, str]:
    """What names the choice, as text: the checkpoint, the rule it was chosen by, the items it was chosen on."""
    choice, revision = run.choice, run.choice.chosen.evaluation.revision
    tags = {
        "repo": run.repo, "revision": revision.revision, "commit": revision.commit,
        "rule": str(choice.rule), "metric": str(choice.metric), "estimator": str(run.estimator), "statement": choice.statement,
        "data": run.data.name, "data_fingerprint": run.data.fingerprint,
    }
    if revision.step is not None:
        tags["step"] = str(revision.step)
    if revision.epoch is not None:
        tags["epoch"] = f"{revision.epoch:g}"
    return tags


def run_config(run: Run) -> dict:
    """What the run's figures depend on (from the results record): the base, the data, the scoring config, versions."""
    record = run.record
    return {
        "repo": run.repo, "base": record.get("base"), "data": record.get("data"), "config": record.get("config"),
        "estimator": str(run.estimator), "rule": str(run.choice.rule), "metric": str(run.choice.metric),
        "versions": record.get("versions"),
    }


def adapter_files(run: Run) -> list[Path]:
    """The chosen checkpoint's adapter files on local disk (a Hub revision is downloaded, with the token, if needed)."""
    folder = run.source.fetch(run.choice.chosen.evaluation.revision).adapter.path
    return [folder / name for name in ADAPTER_FILES if (folder / name).is_file()]
