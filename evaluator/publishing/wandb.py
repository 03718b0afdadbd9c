"""W&B: every evaluation of a run logged to one W&B run, and the chosen adapter logged as a model artifact with an alias.

`PRICER_WANDB_PROJECT` (and `PRICER_WANDB_ENTITY`) turns it on; W&B's own variables apply (`WANDB_API_KEY`,
`WANDB_MODE=offline`, `WANDB_DIR`; without `WANDB_DIR`, run folders go under pricer's home). A pricer run (the repo
on one held-out set) is one W&B run, its id derived from both (`pricer-<key>`), resumed by each call and finished
before the call returns: nothing stays open between calls, whichever thread or process makes the next one.

Each checkpoint's validation figures are logged against `checkpoint/step`, its training step (W&B's own step only
counts calls: checkpoints may be evaluated out of order), with its per-item predictions as the table `predictions`.
The run's summary always shows the choice: `chosen/*`, `test/*` and `baseline/*`, and the per-checkpoint keys
(`validation/*`, `train/*`, `checkpoint/step`) set to the chosen checkpoint's, not to whichever was logged last.
The choice logs the chosen adapter's files as the `model` artifact `<repo>-adapter` (metadata: the commit, the rule,
the figures) with the alias `PRICER_CHAMPION_ALIAS` (`champion`); W&B moves the alias to each new choice, and a
commit chosen again is the same version (its files are the same).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from pricer.evaluator.exports import prediction_rows
from pricer.evaluator.publishing import tracking

if TYPE_CHECKING:
    from pricer.evaluator.checkpoints.sources import CheckpointSource
    from pricer.evaluator.publishing import Run
    from pricer.evaluator.records import Evaluation
    from pricer.evaluator.settings import Settings


class WandbPublisher:
    """Logs a run's evaluations and its choice to W&B (see the module's docstring)."""

    name = "wandb"
    records_evaluations = True

    def __init__(self, settings: Settings) -> None:
        self._wandb = tracking.require("wandb", setting="PRICER_WANDB_PROJECT")
        self._project, self._entity, self._alias = settings.wandb_project, settings.wandb_entity, settings.champion_alias
        self._home = settings.home
        self._lock = threading.Lock()  # one W&B session at a time: two for the same run id would collide

    def accepts(self, source: CheckpointSource) -> bool:
        return True

    def evaluated(self, run: Run, evaluation: Evaluation) -> None:
        """One checkpoint's figures against its step, and its predictions as a table."""
        with self._session(run) as session:
            rows = self._wandb.Table(dataframe=prediction_rows(evaluation, run.data))
            session.log({tracking.STEP: tracking.step(evaluation), **tracking.checkpoint_figures(run, evaluation), "predictions": rows})

    def chose(self, run: Run) -> None:
        """The chosen adapter as a model artifact, aliased; the summary (set by every session) shows the choice."""
        with self._session(run) as session:
            metadata = {**tracking.choice_tags(run), "figures": tracking.choice_figures(run)}
            artifact = self._wandb.Artifact(
                f"{tracking.slug(run.repo)}-adapter", type="model", description=run.choice.statement, metadata=metadata
            )
            for file in tracking.adapter_files(run):
                artifact.add_file(str(file), name=file.name)
            session.log_artifact(artifact, aliases=[self._alias])

    @contextmanager
    def _session(self, run: Run) -> Iterator[Any]:
        """The run's W&B run, resumed (or created), with its metrics defined; the summary set to the choice and the
        run finished on the way out, failed if the call raised."""
        wandb = self._wandb
        root = None if os.environ.get("WANDB_DIR") else self._home  # W&B's run folders: where WANDB_DIR says, else pricer's home
        with self._lock:
            if root is not None:
                root.mkdir(parents=True, exist_ok=True)
            session = wandb.init(
                project=self._project, entity=self._entity, id=f"pricer-{tracking.run_key(run)}", name=run.repo,
                resume="allow", reinit="create_new", job_type="pricer", dir=None if root is None else str(root),
                # the service's other threads write to stdout too: capture none of it; no system metrics either
                settings=wandb.Settings(console="off", x_disable_stats=True),
            )
            try:
                session.config.update(tracking.run_config(run), allow_val_change=True)
                session.define_metric(tracking.STEP)
                for pattern in ("validation/*", "train/*", "predictions"):
                    session.define_metric(pattern, step_metric=tracking.STEP)
                yield session
                chosen = run.choice.chosen.evaluation
                session.summary.update({
                    tracking.STEP: tracking.step(chosen), **tracking.checkpoint_figures(run, chosen), **tracking.choice_figures(run),
                    "chosen/commit": chosen.revision.commit, "chosen/revision": chosen.revision.revision,
                })
            except BaseException:
                session.finish(exit_code=1)
                raise
            session.finish()
