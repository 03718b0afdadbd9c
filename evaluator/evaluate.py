"""The `Evaluator`: the one object the CLI, the service and the tests call.

It resolves revisions, reuses stored results, keeps one loaded model per base, swaps
adapters, prices held-out items, stores every prediction, ranks and predicts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from pricer.evaluator.checkpoints.sources import Checkpoint, CheckpointSource, Revision, open_source
from pricer.evaluator.data import HeldOutSet, prompts_for
from pricer.evaluator.errors import InvalidAdapter, NotEvaluated
from pricer.evaluator.scoring import PriceModel, ScoringConfig
from pricer.evaluator.settings import Settings
from pricer.evaluator.stats.ranking import Ranked, latest_group, rank
from pricer.evaluator.stats.selection import Choice, choose
from pricer.evaluator.store.evaluations import Evaluation, EvaluationKey, Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prediction:
    """Prices for descriptions, and the checkpoint that gave them."""

    prices: list[float]
    revision: Revision


class Evaluator:
    """Evaluate, rank and serve a run's checkpoints."""

    def __init__(self, settings: Settings | None = None, *, store: Store | None = None) -> None:
        self.settings = settings or Settings()
        self.store = store or Store(self.settings.store_url)
        self.config = ScoringConfig(quantization="nf4" if self.settings.load_in_4bit else "none")
        self._models: dict[str, PriceModel] = {}
        self._models_lock = threading.Lock()

    @property
    def batch_size(self) -> int | None:
        """Items per forward pass when one was set (flag or PRICER_BATCH_SIZE); None lets the model choose
        (the default on a CPU, by free memory on CUDA)."""
        return self.settings.batch_size if "batch_size" in self.settings.model_fields_set else None

    def source(self, spec: str, *, root: Path | None = None) -> CheckpointSource:
        """The checkpoint source `spec` names: a local run folder or a Hub repo id."""
        return open_source(spec, token=self.settings.token, endpoint=self.settings.hf_endpoint, root=root)

    def model(self, base: str) -> PriceModel:
        """The loaded model for `base`, loading it on first use only."""
        with self._models_lock:
            if base not in self._models:
                log.info("loading base model %s", base)
                self._models[base] = PriceModel(
                    base, device=self.settings.device, load_in_4bit=self.settings.load_in_4bit, token=self.settings.token
                )
            return self._models[base]

    def evaluate(
        self, source: CheckpointSource, revisions: list[str] | None, dataset: HeldOutSet, *, progress: bool = False
    ) -> list[Evaluation]:
        """Evaluate the named revisions (every checkpoint when None), in order; stored results are reused.

        While one checkpoint is scored, the next one is fetched on a second thread (for a Hub repo,
        downloaded), so the download hides behind the scoring instead of adding to it.
        """
        resolved = source.revisions() if revisions is None else [source.resolve(r) for r in revisions]
        evaluations: list[Evaluation] = []
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pricer-prefetch")
        try:
            fetching: Future[Checkpoint] | None = None
            for i, revision in enumerate(resolved):
                current, fetching = fetching, None
                following = resolved[i + 1] if i + 1 < len(resolved) else None
                if following is not None and self._stored(source, following, dataset) is None:
                    fetching = pool.submit(source.fetch, following)
                evaluations.append(self.evaluate_revision(source, revision, dataset, progress=progress, fetched=current))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return evaluations

    def evaluate_revision(
        self,
        source: CheckpointSource,
        revision: Revision,
        dataset: HeldOutSet,
        *,
        progress: bool = False,
        on_batch: Callable[[int, int], None] | None = None,
        fetched: Future[Checkpoint] | None = None,
    ) -> Evaluation:
        """Price `dataset` under one checkpoint and store every prediction (or return the stored result).

        `on_batch(items priced, items in all)` follows the pricing (not called for a stored result).
        `fetched`: `source.fetch(revision)` already under way (prefetched by `evaluate`)."""
        if stored := self._stored(source, revision, dataset):
            return stored
        checkpoint = fetched.result() if fetched is not None else source.fetch(revision)
        base = self._base(checkpoint.adapter.base_model)
        if not base:
            raise InvalidAdapter(f"{source.name}@{revision.revision}: the adapter names no base model; give one with --base")
        key = self.key(source, checkpoint.revision, base, dataset)
        if stored := self.store.find(key):
            return stored
        model = self.model(base)
        started = time.perf_counter()
        name = model.load_adapter(checkpoint.adapter, name=f"eval_{revision.commit[:16]}")
        try:
            prices = model.price(
                dataset.prompts,
                adapter=name,
                batch_size=self.batch_size,
                progress=progress,
                desc=revision.revision,
                on_batch=on_batch,
                key=dataset.fingerprint,  # tokenised once for all checkpoints
            )
        finally:
            model.release_adapter(name)
        return self.store.save(
            key,
            checkpoint.revision,
            adapter_base=checkpoint.adapter.base_model,
            dataset_name=dataset.name,
            truth=dataset.prices,
            prices=prices,
            test=dataset.test,
            seconds=time.perf_counter() - started,
        )

    def _stored(self, source: CheckpointSource, revision: Revision, dataset: HeldOutSet) -> Evaluation | None:
        """The stored evaluation of a checkpoint whose base is known without fetching it, if there is one."""
        base = self.base_for(source, revision)
        return self.store.find(self.key(source, revision, base, dataset)) if base else None

    def _base(self, adapter_base: str | None) -> str | None:
        """The base to apply an adapter to; a local folder by its absolute path, so one base has one id."""
        base = self.settings.base_model or adapter_base
        if base and Path(base).expanduser().is_dir():
            return str(Path(base).expanduser().resolve())
        return base

    def base_for(self, source: CheckpointSource, revision: Revision) -> str | None:
        """The base a checkpoint is evaluated on, when known without fetching it (a stored checkpoint or --base)."""
        return self._base(self.store.adapter_base(source.name, revision.commit))

    def key(self, source: CheckpointSource, revision: Revision, base: str, dataset: HeldOutSet) -> EvaluationKey:
        return EvaluationKey(source.name, revision.commit, base, dataset.fingerprint, self.config.key())

    def ranking(
        self, source_name: str, *, dataset: HeldOutSet | None = None, metric: str = "mae", estimator: str = "argmax"
    ) -> list[Ranked]:
        """The source's checkpoints, best first, on `dataset` (default: the most recently used data)."""
        evaluations = self.store.evaluations(source_name, dataset_fingerprint=dataset.fingerprint if dataset else None)
        if not evaluations:
            raise NotEvaluated(f"{source_name}: nothing is evaluated yet" + (f" on {dataset.name}" if dataset else ""))
        return rank(latest_group(evaluations), metric=metric, estimator=estimator)

    def choice(
        self,
        source_name: str,
        *,
        dataset: HeldOutSet | None = None,
        metric: str = "mae",
        rule: str = "earliest",
        estimator: str = "argmax",
        patience: int = 3,
    ) -> Choice:
        """The checkpoint `rule` chooses on the validation items (default data: the most recently used)."""
        evaluations = self.store.evaluations(source_name, dataset_fingerprint=dataset.fingerprint if dataset else None)
        if not evaluations:
            raise NotEvaluated(f"{source_name}: nothing is evaluated yet" + (f" on {dataset.name}" if dataset else ""))
        group = latest_group(evaluations)
        return choose(group, metric=metric, rule=rule, estimator=estimator, test_mask=group[0].test, patience=patience)

    def predict(
        self,
        source: CheckpointSource,
        descriptions: list[str],
        *,
        metric: str = "mae",
        rule: str = "earliest",
        estimator: str = "argmax",
    ) -> Prediction:
        """Price descriptions with the checkpoint `rule` chooses among the evaluated ones of `source`."""
        prompts = prompts_for(descriptions, max_chars=self.settings.max_description_chars)
        best = self.choice(source.name, metric=metric, rule=rule, estimator=estimator).chosen.evaluation
        checkpoint = source.fetch(best.revision)
        model = self.model(best.base_model)
        name = model.load_adapter(checkpoint.adapter, name=f"eval_{best.revision.commit[:16]}")
        try:
            prices = model.price(prompts, adapter=name, batch_size=self.batch_size)
        finally:
            model.release_adapter(name)
        return Prediction(prices=[float(p) for p in prices.guesses(estimator)], revision=best.revision)
