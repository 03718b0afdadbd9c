"""The `Evaluator`: price held-out items under checkpoints and store every prediction.

It resolves revisions, reuses stored results, keeps one loaded model per base, and loads
each checkpoint's adapter beside it. What to choose from the stored evaluations is the
service's to decide (`PricerService.choice`), so that every door gives the same answer.
"""

from __future__ import annotations

import fnmatch
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from pricer.evaluator.checkpoints.sources import HUB_ID, Checkpoint, CheckpointSource, open_source
from pricer.evaluator.data import HeldOutSet
from pricer.evaluator.errors import InvalidAdapter, InvalidRequest
from pricer.evaluator.records import Evaluation, EvaluationKey, ItemPrices, RaceStop, Revision
from pricer.evaluator.scoring import PriceModel, ScoringConfig
from pricer.evaluator.settings import Settings
from pricer.evaluator.stats import racing
from pricer.evaluator.stats.metrics import spec
from pricer.evaluator.stats.racing import RaceResult
from pricer.evaluator.stats.selection import EstimatorChoice, Policy
from pricer.evaluator.store import Store

log = logging.getLogger(__name__)


def adapter_name(revision: Revision) -> str:
    """The one name a checkpoint's adapter has in a loaded model, for evaluating and for serving alike."""
    return f"ckpt_{revision.commit[:16]}"


class Evaluator:
    """Evaluate a run's checkpoints on held-out items; stored results are reused, never recomputed."""

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

    def source(self, spec: str, *, root: Path | None = None, paths: bool = True) -> CheckpointSource:
        """The checkpoint source `spec` names: a local run folder or a Hub repo id (see `open_source`)."""
        return open_source(spec, root=root, paths=paths, token=self.settings.token, endpoint=self.settings.hf_endpoint)

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
        resolved = self.resolve(source, revisions)
        evaluations: list[Evaluation] = []
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pricer-prefetch")
        try:
            fetching: Future[Checkpoint] | None = None
            for i, revision in enumerate(resolved):
                current, fetching = fetching, None
                following = resolved[i + 1] if i + 1 < len(resolved) else None
                if following is not None and self.stored(source, following, dataset) is None:
                    fetching = pool.submit(source.fetch, following)
                evaluations.append(self.evaluate_revision(source, revision, dataset, progress=progress, fetched=current))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return evaluations

    def resolve(self, source: CheckpointSource, revisions: list[str | Revision] | None) -> list[Revision]:
        """The named (or resolved) revisions, or every usable checkpoint (broken ones logged and skipped), in training order."""
        if revisions is not None:
            return [r if isinstance(r, Revision) else source.resolve(r) for r in revisions]
        scan = source.scan()
        for revision, reason in scan.skipped:
            log.warning("skipped %s: %s", revision.revision, reason)
        return scan.revisions or source.revisions()  # none usable: the error says why

    def race(
        self,
        source: CheckpointSource,
        revisions: list[str | Revision] | None,
        dataset: HeldOutSet,
        *,
        policy: Policy,
        progress: bool = False,
        seed: int = 0,
    ) -> Race:
        """Evaluate checkpoints as `evaluate` does, but race them (`stats.racing`): score in rounds on growing random
        subsets of the validation items and stop scoring those significantly worse than the leader.

        The survivors are scored on every item, test items included, and stored as full evaluations, so the
        choice among them, its paired statistics and its test figure are a full evaluation's. Dropped checkpoints
        are stored as partial evaluations (the items they scored, the round and their difference to the leader
        then), which no choice takes; a plain `evaluate` of one completes it. Complete stored evaluations are
        reused, not scored again.
        `seed` orders the items (and seeds the bootstraps).
        """
        if policy.estimator == EstimatorChoice.AUTO:
            raise InvalidRequest("racing compares checkpoints under one estimator: give --estimator, not auto")
        resolved = list({r.commit: r for r in self.resolve(source, revisions)}.values())  # "main" and its sha are one
        validation = np.flatnonzero(~dataset.test)
        if validation.size == 0:
            raise InvalidRequest("racing needs validation items; this held-out set has none")
        candidates = [_Candidate(self, source, revision, dataset) for revision in resolved]
        per_item = spec(policy.metric).per_item
        with tqdm(total=len(candidates) * validation.size, desc="racing", unit="item", disable=not progress) as bar:

            def score_items(k: int, indices: np.ndarray) -> np.ndarray:
                items = validation[indices]
                guesses = candidates[k].price(items).guesses(policy.estimator)
                bar.update(items.size)
                return per_item(dataset.prices[items], guesses)

            result = racing.race(
                len(candidates), score_items, int(validation.size), metric=policy.metric, rule=policy.rule,
                confidence=policy.confidence, seed=seed, shuffle_seed=seed,
            )
        survivors = [k for k, dropped in enumerate(result.dropped_after) if dropped is None]
        evaluations = [candidates[k].finish() for k in survivors]
        dropped = [
            Dropped(candidates[k].stop(RaceStop(after, policy.metric, gap.difference, gap.low, gap.high)), after, result.scored[k])
            for k, (after, gap) in enumerate(zip(result.dropped_after, result.gaps, strict=True))
            if after is not None
        ]
        return Race(evaluations, dropped, result)

    def evaluate_revision(
        self,
        source: CheckpointSource,
        revision: Revision,
        dataset: HeldOutSet,
        *,
        progress: bool = False,
        on_batch: Callable[[int, int], None] | None = None,
        fetched: Future[Checkpoint] | None = None,
        keep: bool = False,
    ) -> Evaluation:
        """Price `dataset` under one checkpoint and store every prediction (or return the stored result).

        Args:
            on_batch: `(items priced, items in all)` after each batch (not called for a stored result).
            fetched: `source.fetch(revision)` already under way (prefetched).
            keep: leave the adapter loaded (as `adapter_name(revision)`) for the caller to serve or release.
        """
        known = self.base_for(source, revision)  # without fetching: --base, or a checkpoint seen before
        if known and (stored := self.store.find(self.key(source, revision, known, dataset))):
            return stored
        checkpoint = fetched.result() if fetched is not None else source.fetch(revision)
        base = self.base_of(source, checkpoint)
        key = self.key(source, checkpoint.revision, base, dataset)
        if base != known and (stored := self.store.find(key)):
            return stored
        model = self.model(base)
        started = time.perf_counter()
        loaded_before = adapter_name(revision) in model.adapters  # served already: never released here
        name = model.load_adapter(checkpoint.adapter, name=adapter_name(revision))
        try:
            prices = model.price(
                dataset.prompts,
                adapter=name,
                batch_size=self.batch_size,
                progress=progress,
                desc=revision.revision,
                on_batch=on_batch,
                key=dataset.fingerprint,  # tokenised once for all checkpoints
                merged=self.settings.merge_adapters,
            )
        except BaseException:
            if not loaded_before:
                model.release_adapter(name)
            raise
        if not (keep or loaded_before):
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

    def stored(self, source: CheckpointSource, revision: Revision, dataset: HeldOutSet, *, partial: bool = False) -> Evaluation | None:
        """The stored complete evaluation of a checkpoint whose base is known without fetching it, if there is one
        (`partial`: or the partial one racing left)."""
        base = self.base_for(source, revision)
        return self.store.find(self.key(source, revision, base, dataset), partial=partial) if base else None

    def comparable(self, source_name: str, dataset: HeldOutSet) -> list[int]:
        """Ids of the stored evaluations a choice compares (one dataset, the latest base and config)."""
        return self.store.comparable_ids(source_name, dataset_fingerprint=dataset.fingerprint)

    def _base(self, adapter_base: str | None) -> str | None:
        """The base to apply an adapter to; a local folder by its absolute path, so one base has one id.

        A base the adapter names must be allowed (`PRICER_BASE_MODELS`): loading one is reading files or
        downloading gigabytes, which a checkpoint's author must not choose for the service."""
        base = self.settings.base_model or adapter_base
        local = Path(base).expanduser() if base else None
        if local is not None and (local.is_absolute() or local.exists()):
            base = str(local.resolve())
        if base and not self.settings.base_model and not self.base_allowed(base):
            raise InvalidAdapter(
                f"the adapter names the base model {adapter_base!r}, which this service does not allow "
                "(PRICER_BASE_MODELS lists the Hub ids and folders it does)"
            )
        return base

    def base_of(self, source: CheckpointSource, checkpoint: Checkpoint) -> str:
        """The base a fetched checkpoint's adapter is applied to (see `_base`)."""
        base = self._base(checkpoint.adapter.base_model)
        if not base:
            raise InvalidAdapter(
                f"{source.name}@{checkpoint.revision.revision}: the adapter names no base model; give one with --base"
            )
        return base

    def base_allowed(self, base: str) -> bool:
        """Whether `base` (a Hub id, or a resolved local path) is one an adapter may name."""
        settings = self.settings
        folders = [settings.home, settings.checkpoint_root]
        folders += [Path(entry) for entry in settings.base_models if entry.startswith(("/", "~", "."))]
        if Path(base).is_absolute():
            return any(Path(base).is_relative_to(Path(f).expanduser().resolve()) for f in folders if f is not None)
        patterns = [entry for entry in settings.base_models if not entry.startswith(("/", "~", "."))]
        return HUB_ID.match(base) is not None and any(fnmatch.fnmatchcase(base, pattern) for pattern in patterns)

    def base_for(self, source: CheckpointSource, revision: Revision) -> str | None:
        """The base a checkpoint is evaluated on, when known without fetching it (a stored checkpoint or --base)."""
        return self._base(self.store.adapter_base(source.name, revision.commit))

    def key(self, source: CheckpointSource, revision: Revision, base: str, dataset: HeldOutSet) -> EvaluationKey:
        return EvaluationKey(source.name, revision.commit, base, dataset.fingerprint, self.config.key())


@dataclass(frozen=True)
class Dropped:
    """A checkpoint racing stopped scoring, and its evaluation as stored: partial (the items it scored), or the
    complete one stored before the race."""

    evaluation: Evaluation
    after_round: int
    items_scored: int

    @property
    def revision(self) -> Revision:
        return self.evaluation.revision


@dataclass(frozen=True)
class Race:
    """What `Evaluator.race` did: the survivors' full evaluations, the dropped checkpoints, and the race's cost."""

    evaluations: list[Evaluation]
    dropped: list[Dropped]
    result: RaceResult

    @property
    def saved(self) -> float:
        """The share of validation-item scorings that full evaluation would have made and racing did not."""
        return 1 - self.result.share

    def to_dict(self) -> dict:
        """What racing dropped and what it saved, as plain values (the CLI's --json; the API's, once it races)."""
        return {
            "dropped": [  # rounds counted from 1, as every answer counts them
                {**d.revision.fields(), "evaluation_id": d.evaluation.id, "complete": d.evaluation.complete,
                 "after_round": d.after_round + 1, "items_scored": d.items_scored,
                 **(d.evaluation.stopped.to_dict() if d.evaluation.stopped else {})}
                for d in self.dropped
            ],
            "scorings": self.result.scorings,
            "full_scorings": self.result.full,
            "saved": round(self.saved, 4),
        }


class _Candidate:
    """One raced checkpoint: fetched once, priced on the items asked for, stored once scored on every item."""

    def __init__(self, evaluator: Evaluator, source: CheckpointSource, revision: Revision, dataset: HeldOutSet) -> None:
        self.evaluator, self.source, self.revision, self.dataset = evaluator, source, revision, dataset
        self.stored = evaluator.stored(source, revision, dataset)
        self.checkpoint: Checkpoint | None = None
        self.columns: dict[str, np.ndarray] = {}  # every estimate, NaN where not priced yet
        self.seconds = 0.0

    def price(self, items: np.ndarray) -> ItemPrices:
        """The prices of `items` (indices into the held-out set): from the store when stored, else priced now."""
        if self.stored is not None:
            return self.stored.prices.take(items)
        if self.checkpoint is None:
            self.checkpoint = self.source.fetch(self.revision)
            self.revision = self.checkpoint.revision
            self.stored = self.evaluator.store.find(self._key())  # evaluated under a name seen only now
            if self.stored is not None:
                return self.stored.prices.take(items)
        started = time.perf_counter()
        model = self.evaluator.model(self.evaluator.base_of(self.source, self.checkpoint))
        name = model.load_adapter(self.checkpoint.adapter, name=adapter_name(self.revision))
        try:
            prices = model.price(
                [self.dataset.prompts[i] for i in items], adapter=name, batch_size=self.evaluator.batch_size,
                merged=self.evaluator.settings.merge_adapters,
            )
        finally:
            model.release_adapter(name)
        self.seconds += time.perf_counter() - started
        for column, values in vars(prices).items():
            if values is not None:
                self.columns.setdefault(column, np.full(len(self.dataset), np.nan))[items] = values
        return prices

    def finish(self) -> Evaluation:
        """Price whatever items are left (the test items) and store the full evaluation."""
        if self.stored is not None:
            return self.stored
        missing = np.flatnonzero(np.isnan(self.columns["argmax"])) if self.columns else np.arange(len(self.dataset))
        if missing.size:
            self.price(missing)
        if self.stored is not None:  # found in the store once fetched
            return self.stored
        return self.evaluator.store.save(
            self._key(), self.revision, adapter_base=self.checkpoint.adapter.base_model, dataset_name=self.dataset.name,
            truth=self.dataset.prices, prices=ItemPrices(**self.columns), test=self.dataset.test, seconds=self.seconds,
        )

    def stop(self, stopped: RaceStop) -> Evaluation:
        """Store what was scored as a partial evaluation (a complete one stored before the race is kept as it is)."""
        if self.stored is not None:
            return self.stored
        items = np.flatnonzero(~np.isnan(self.columns["argmax"]))
        return self.evaluator.store.save(
            self._key(), self.revision, adapter_base=self.checkpoint.adapter.base_model, dataset_name=self.dataset.name,
            truth=self.dataset.prices[items], prices=ItemPrices(**self.columns).take(items), test=self.dataset.test[items],
            seconds=self.seconds, stopped=stopped, items=items,
        )

    def _key(self) -> EvaluationKey:
        return self.evaluator.key(self.source, self.revision, self.evaluator.base_of(self.source, self.checkpoint), self.dataset)
