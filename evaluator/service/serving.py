"""Serving: the adapter each repo's predictions come from, swapped when the choice changes.

Each repo's chosen checkpoint is loaded as its own adapter beside the base model. A swap
happens under the model's lock, so every prediction is answered wholly by one adapter, and
the answer names it. Concurrent requests for a repo share one forward pass (micro-batching).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, replace

from pricer.evaluator.checkpoints.sources import CheckpointSource
from pricer.evaluator.evaluate import Evaluator, adapter_name
from pricer.evaluator.records import Estimator, Evaluation, Revision
from pricer.evaluator.scoring import PriceModel
from pricer.evaluator.service.batching import MicroBatcher

log = logging.getLogger(__name__)

ROW_COLUMNS = (*(e.value for e in Estimator), "low", "high")
Rows = list[dict[str, float]]  # every estimate and the interval's ends, per prompt


@dataclass(frozen=True)
class Served:
    """The adapter that answers predictions for a repo: the checkpoint the policy chooses."""

    repo: str
    evaluation: Evaluation
    model: PriceModel
    adapter: str
    estimator: str  # the price it answers with: the one chosen with the checkpoint

    @property
    def revision(self) -> Revision:
        return self.evaluation.revision


class Serving:
    """The served adapter per repo, its swaps, and the micro-batchers in front of it."""

    def __init__(self, evaluator: Evaluator, *, max_batch: int, max_wait: float) -> None:
        self.evaluator, self.max_batch, self.max_wait = evaluator, max_batch, max_wait
        self._served: dict[str, Served] = {}
        self._batchers: dict[str, MicroBatcher] = {}
        self._lock = threading.Lock()

    def get(self, repo: str) -> Served | None:
        with self._lock:
            return self._served.get(repo)

    def revisions(self) -> list[tuple[str, Revision]]:
        with self._lock:
            return [(repo, served.revision) for repo, served in self._served.items()]

    def uses(self, model: PriceModel, adapter: str) -> bool:
        """Whether some repo is served by this adapter of this model."""
        with self._lock:
            return any(s.model is model and s.adapter == adapter for s in self._served.values())

    def serve(self, repo: str, evaluation: Evaluation, source: CheckpointSource, estimator: str) -> Served:
        """Serve `evaluation`'s checkpoint for `repo`, answering with `estimator`; an adapter already loaded (just
        evaluated) is used as it is."""
        current = self.get(repo)
        if current is not None and current.evaluation.id == evaluation.id:
            if current.estimator != estimator:
                with self._lock:
                    current = self._served[repo] = replace(current, estimator=estimator)
            return current
        model = self.evaluator.model(evaluation.base_model)
        name = adapter_name(evaluation.revision)
        if name not in model.adapters:
            model.load_adapter(source.fetch(evaluation.revision).adapter, name=name)
        served = Served(repo, evaluation, model, name, estimator)
        with model.lock:  # no prediction runs between the swap and the release of the old adapter
            with self._lock:
                self._served[repo] = served
            if current is not None and current.adapter != name and not self.uses(current.model, current.adapter):
                current.model.release_adapter(current.adapter)
        log.info("serving %s@%s for %s", evaluation.revision.revision, evaluation.revision.commit[:10], repo)
        return served

    def price(self, repo: str, prompts: list[str]) -> tuple[Rows, Served]:
        """Every estimate per prompt from the adapter served for `repo`, batched with concurrent requests."""
        if self.max_batch > 1:
            return self._batcher(repo).submit(prompts)
        return self._price(repo, prompts)

    def _batcher(self, repo: str) -> MicroBatcher:
        with self._lock:
            if repo not in self._batchers:
                self._batchers[repo] = MicroBatcher(
                    lambda prompts: self._price(repo, prompts), max_batch=self.max_batch, max_wait=self.max_wait
                )
            return self._batchers[repo]

    def _price(self, repo: str, prompts: list[str]) -> tuple[Rows, Served]:
        while True:
            model = self._served[repo].model
            with model.lock:  # the served adapter cannot change while these prompts are priced
                served = self._served[repo]
                if served.model is model:  # else a new choice on another base was swapped in meanwhile: take that
                    prices = model.price(prompts, adapter=served.adapter, batch_size=len(prompts))
                    columns = {name: getattr(prices, name).tolist() for name in ROW_COLUMNS}
                    return [dict(zip(columns, row, strict=True)) for row in zip(*columns.values(), strict=True)], served
