"""Rank a run's checkpoints on the same held-out items by a chosen metric."""

from __future__ import annotations

from dataclasses import dataclass

from pricer.evaluator.records import Estimator, Evaluation
from pricer.evaluator.stats.metrics import Metrics, spec


@dataclass(frozen=True)
class Ranked:
    """One checkpoint's place in a ranking and the metrics it was ranked by."""

    rank: int
    evaluation: Evaluation
    metrics: Metrics

    def to_dict(self) -> dict:
        return {
            "rank": self.rank,
            **self.evaluation.revision.fields(),
            **self.metrics.to_dict(),
            "base_model": self.evaluation.base_model,
            "dataset": self.evaluation.dataset_name,
        }


def rank(evaluations: list[Evaluation], *, metric: str = "mae", estimator: str = Estimator.ARGMAX) -> list[Ranked]:
    """Best first by `metric`; ties go to the earlier checkpoint (less trained, less overfit)."""
    sign = spec(metric).sign
    if len({(e.dataset_fingerprint, e.base_model, e.config_key) for e in evaluations}) > 1:
        raise ValueError("cannot rank evaluations made on different data, base models or scoring configs")
    scored = [(e, e.metrics(estimator)) for e in evaluations]
    scored.sort(key=lambda pair: (sign * pair[1].value(metric), pair[0].revision.step or 0, pair[0].id))
    return [Ranked(rank=i + 1, evaluation=e, metrics=m) for i, (e, m) in enumerate(scored)]
