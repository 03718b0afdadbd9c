"""pricer's value types: what a checkpoint, a prediction, an evaluation, a job and a watch are.

Plain frozen dataclasses over numpy: the statistics, the views and the HTTP schemas use them
without importing torch or SQLAlchemy. The store reads and writes them; the service hands them out.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

import numpy as np

from pricer.evaluator.errors import NotEvaluated
from pricer.evaluator.stats.metrics import Metrics, score


class Estimator(StrEnum):
    """Which price is read from the model's distribution over 0..999 (all come from the one forward pass)."""

    ARGMAX = "argmax"  # the most likely number
    MEAN = "mean"  # the probability-weighted mean: minimises the expected squared error
    MEDIAN = "median"  # minimises the expected absolute error
    LOG = "log"  # exp(E[log(1 + price)]) - 1: minimises the expected squared log error (RMSLE)
    HIT = "hit"  # the price with the most probability inside its hit band (within $40 or 20%)


class Part(StrEnum):
    """Which held-out items: validation items choose, test items report the chosen one's error."""

    VALIDATION = "validation"
    TEST = "test"
    ALL = "all"


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True)
class Revision:
    """One checkpoint of a run: the name it was asked by, its immutable id, and where training was."""

    source: str
    revision: str
    commit: str
    step: int | None = None
    epoch: float | None = None
    message: str | None = None
    train_loss: float | None = None  # the training loss the Trainer logged last at this checkpoint

    def fields(self) -> dict:
        """What names the checkpoint in an answer: its revision, commit, step and epoch."""
        return {"revision": self.revision, "commit": self.commit, "step": self.step, "epoch": self.epoch}


@dataclass(frozen=True)
class ItemPrices:
    """Per-item predictions: the most likely price, the expected price, and the mass on number tokens."""

    argmax: np.ndarray
    mean: np.ndarray
    p_number: np.ndarray
    # the other estimates and the central 80% interval; None in evaluations stored by an earlier pricer
    median: np.ndarray | None = None
    log: np.ndarray | None = None
    hit: np.ndarray | None = None
    low: np.ndarray | None = None  # the 10th percentile
    high: np.ndarray | None = None  # the 90th percentile

    def guesses(self, estimator: str = Estimator.ARGMAX) -> np.ndarray:
        if not self.holds(Estimator(estimator)):
            raise NotEvaluated(f"the {estimator} estimate was not stored for this evaluation (an earlier pricer made it)")
        return getattr(self, Estimator(estimator).value)

    def take(self, items: np.ndarray) -> ItemPrices:
        """The predictions of these items (indices) alone."""
        return ItemPrices(**{name: None if values is None else values[items] for name, values in vars(self).items()})

    def holds(self, estimate: str) -> bool:
        """Whether this estimate (or interval end) was stored: an earlier pricer stored only argmax and mean."""
        return getattr(self, str(estimate)) is not None


ESTIMATES = ("median", "log", "hit", "low", "high")  # beyond argmax and mean


@dataclass(frozen=True)
class EvaluationKey:
    """What makes two evaluations the same: the checkpoint and everything that changes its predictions."""

    source: str
    commit: str
    base_model: str
    dataset_fingerprint: str
    config_key: str


@dataclass(frozen=True)
class RaceStop:
    """Where racing stopped scoring a checkpoint, significantly worse than the leader: its evaluation is partial."""

    after_round: int  # 0-based
    metric: str
    difference: float  # metric(this checkpoint) - metric(the leader then), on the items both had scored
    low: float  # the interval of that difference at the policy's confidence
    high: float

    def to_dict(self) -> dict:
        """As answers give it: rounds counted from 1."""
        return {"after_round": self.after_round + 1, "metric": self.metric, "difference": self.difference,
                "interval": (self.low, self.high)}


@dataclass(frozen=True)
class Evaluation:
    """An evaluation: the checkpoint, the set-up, and every item's truth and predictions.

    Complete unless `stopped` says racing dropped it: a partial evaluation holds the validation items it scored
    alone (`item_ids` names them in the held-out set), and no choice, ranking figure or reuse takes it as complete.
    """

    id: int
    revision: Revision
    base_model: str
    dataset_name: str
    dataset_fingerprint: str
    config_key: str
    truth: np.ndarray
    prices: ItemPrices
    test: np.ndarray  # (n,) bool: the test items; the others validate
    seconds: float
    created_at: datetime
    stopped: RaceStop | None = None
    item_ids: np.ndarray | None = None  # a partial evaluation's items, as indices into the held-out set

    @property
    def complete(self) -> bool:
        return self.stopped is None

    @property
    def n(self) -> int:
        return int(self.truth.size)

    def items(self, part: str = Part.VALIDATION) -> np.ndarray:
        """Indices of the validation items, the test items, or all."""
        mask = {Part.VALIDATION: ~self.test, Part.TEST: self.test, Part.ALL: np.ones_like(self.test)}[Part(part)]
        return np.flatnonzero(mask)

    def metrics(self, estimator: str = Estimator.ARGMAX, part: str = Part.VALIDATION) -> Metrics:
        """The course's metrics on one part of the items (by default the validation part, which ranks)."""
        items = self.items(part)
        return score(self.truth[items], self.prices.guesses(estimator)[items])


@dataclass(frozen=True)
class Job:
    """One asked-for evaluation and where it stands."""

    id: int
    repo: str
    revision: Revision
    dataset: str
    dataset_fingerprint: str
    config_key: str
    status: JobStatus
    error: str | None
    evaluation_id: int | None
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    worker: str | None = None  # who runs (or ran) it: host:pid:token of the process, and the actor's name under Ray
    items_done: int = 0  # while running: how far its pricing is, as its worker last reported
    items_total: int = 0

    @property
    def finished(self) -> bool:
        return self.status in (JobStatus.DONE, JobStatus.FAILED)


@dataclass(frozen=True)
class JobResult:
    """A job and, once it is done, its evaluation."""

    job: Job
    evaluation: Evaluation | None


@dataclass(frozen=True)
class Progress:
    """A running job and how far its pricing is."""

    job: Job
    done: int
    total: int
    moved: float = field(default_factory=time.monotonic)  # when it last moved (time.monotonic)


@dataclass(frozen=True)
class Watch:
    """A watched repo: every checkpoint it has, and each new one, is evaluated."""

    repo: str
    interval: float
    checkpoints: int
    last_polled: datetime | None
    last_error: str | None
    created_at: datetime
    next_poll: datetime | None = None  # when it is due (None: now)
