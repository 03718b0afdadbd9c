"""Publishing: the choice written back into the tools people already use.

A publisher is told of each evaluation of a run and of each new choice, once (the store records
what reached each target, so replicas sharing a store publish it once between them):

- `hub`: a tag (`pricer-best`) moved to a Hub repo's chosen commit, and the repo's model card;
- `card`: the same model card and `pricer-choice.json` in a local run's folder;
- `mlflow`, `wandb`: every evaluation's metrics at its step and its predictions, and the chosen
  adapter registered (MLflow) or linked (W&B) under an alias.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from pricer.evaluator.checkpoints.sources import CheckpointSource
    from pricer.evaluator.data import HeldOutSet
    from pricer.evaluator.records import Evaluation
    from pricer.evaluator.settings import Settings
    from pricer.evaluator.stats.selection import Choice


@dataclass(frozen=True)
class Run:
    """What a publisher is told about: a run, its complete evaluations on the default data (by step) and the choice."""

    repo: str  # as its user names it: a Hub id or local/<name>
    source: CheckpointSource
    data: HeldOutSet
    evaluations: list[Evaluation]
    choice: Choice
    record: dict  # the results record (`exports.results_record`): fingerprints, versions, metrics, the choice

    @property
    def estimator(self) -> str:
        """The estimate the choice was made with: every figure a publisher writes is under it."""
        return self.choice.policy.estimator


class Publisher(Protocol):
    name: str  # what the store records deliveries under: "hub", "card", "mlflow", "wandb"
    records_evaluations: bool  # told of each evaluation (trackers), or only of the choice (cards)

    def accepts(self, source: CheckpointSource) -> bool:
        """Whether this publisher writes for runs of this kind (the Hub tag: Hub repos only)."""
        ...

    def evaluated(self, run: Run, evaluation: Evaluation) -> None:
        """Record one evaluation (called once per evaluation, before the choice it may change; only where
        `records_evaluations`)."""
        ...

    def chose(self, run: Run) -> None:
        """Record the run's choice (`run.choice`), replacing the previous one. Called when the choice or the evaluations
        behind it changed: what names the choice (a tag, an alias) moves only when the chosen checkpoint did."""
        ...


def publishers(settings: Settings) -> list[Publisher]:
    """The publishers the settings turn on; a tracker's library is imported only when it is."""
    from pricer.evaluator.publishing.card import HubCard, RunCard

    chosen: list[Publisher] = []
    if settings.publish_hub:
        chosen.append(HubCard(settings))
    if settings.run_card:
        chosen.append(RunCard())
    if settings.mlflow_tracking_uri:
        from pricer.evaluator.publishing.mlflow import MlflowPublisher

        chosen.append(MlflowPublisher(settings))
    if settings.wandb_project:
        from pricer.evaluator.publishing.wandb import WandbPublisher

        chosen.append(WandbPublisher(settings))
    return chosen
