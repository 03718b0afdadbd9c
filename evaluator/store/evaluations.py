"""The store: checkpoints, evaluations and every per-item prediction (SQLAlchemy 2).

SQLite by default, any SQLAlchemy URL (PostgreSQL at scale). An evaluation is identified
by (checkpoint, base model, dataset fingerprint, scoring config); it is written with all
its predictions in one transaction, so a crash never leaves half an evaluation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sqlalchemy import create_engine, event, func, select
from sqlalchemy.engine import ExceptionContext, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, OperationalError
from sqlalchemy.orm import Session, selectinload

from pricer.evaluator.errors import StoreUnavailable
from pricer.evaluator.records import ESTIMATES, Evaluation, EvaluationKey, ItemPrices, RaceStop, Revision
from pricer.evaluator.store.migrate import migrate, one_at_a_time
from pricer.evaluator.store.schema import CheckpointRow, EvaluationRow, PredictionRow, utcnow  # noqa: F401  (utcnow: re-exported)


def _evaluation(row: EvaluationRow) -> Evaluation:
    ckpt = row.checkpoint
    table = np.array(
        [(p.truth, p.argmax, p.mean, np.nan if p.p_number is None else p.p_number, bool(p.test)) for p in row.predictions]
    )
    extra = np.array([[np.nan if getattr(p, name) is None else getattr(p, name) for name in ESTIMATES] for p in row.predictions])
    estimates = {} if np.isnan(extra).any() else dict(zip(ESTIMATES, extra.T, strict=True))
    return Evaluation(
        id=row.id,
        revision=Revision(ckpt.source, ckpt.revision, ckpt.commit, ckpt.step, ckpt.epoch, ckpt.message, ckpt.train_loss),
        base_model=row.base_model,
        dataset_name=row.dataset_name,
        dataset_fingerprint=row.dataset_fingerprint,
        config_key=row.config_key,
        truth=table[:, 0],
        prices=ItemPrices(argmax=table[:, 1], mean=table[:, 2], p_number=table[:, 3], **estimates),
        test=table[:, 4].astype(bool),
        seconds=row.seconds,
        created_at=row.created_at,
        stopped=None if row.stopped_round is None else RaceStop(
            row.stopped_round, row.stopped_metric, row.stopped_difference, row.stopped_low, row.stopped_high
        ),
        item_ids=None if row.stopped_round is None else np.array([p.item for p in row.predictions]),
    )


class _Kept(Exception):
    """A complete evaluation was already stored under the key: keep it, write nothing."""


def _keyed(query, key: EvaluationKey):
    """`query` over evaluations narrowed to the one under `key`."""
    return query.join(EvaluationRow.checkpoint).where(
        CheckpointRow.source == key.source,
        CheckpointRow.commit == key.commit,
        EvaluationRow.base_model == key.base_model,
        EvaluationRow.dataset_fingerprint == key.dataset_fingerprint,
        EvaluationRow.config_key == key.config_key,
    )


class Store:
    """Reads and writes evaluations; every method is one short transaction."""

    def __init__(self, url: str) -> None:
        try:
            parsed = make_url(url)
        except ArgumentError as exc:
            # not echoed: a URL may hold a password
            raise StoreUnavailable("the store's URL is not a database URL (sqlite:///path, postgresql+psycopg://user@host/db)") from exc
        sqlite_file = parsed.drivername.startswith("sqlite") and parsed.database not in (None, "", ":memory:")
        if sqlite_file:
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        connect_args = {"check_same_thread": False, "timeout": 30} if parsed.drivername.startswith("sqlite") else {}
        # a server's connections may drop (a restart, a failover): each is tried before use
        try:
            self.engine = create_engine(url, connect_args=connect_args, pool_pre_ping=not parsed.drivername.startswith("sqlite"))
        except (ArgumentError, ImportError) as exc:  # an unknown dialect, or its driver not installed
            driver = " (PostgreSQL: pip install 'pricer[postgres]')" if parsed.drivername.startswith("postgresql") else ""
            raise StoreUnavailable(f"cannot open a store at {parsed.render_as_string(hide_password=True)}: {exc}{driver}") from exc
        self.write_error: str | None = None  # the last write that failed, until one succeeds
        event.listen(self.engine, "handle_error", self._unavailable)
        event.listen(self.engine, "after_cursor_execute", self._executed)
        if sqlite_file:  # readers (requests) never wait for the writer (the worker), and a crash cannot corrupt
            # the mode is kept in the file; switching needs the file alone, so starters switch one at a time
            with one_at_a_time(self.engine), self.engine.connect() as connection:
                connection.exec_driver_sql("PRAGMA journal_mode=WAL")
        migrate(self.engine)

    def _unavailable(self, context: ExceptionContext) -> None:
        """A database that cannot be written or reached (disk full, locked, down) is `StoreUnavailable`."""
        if isinstance(context.sqlalchemy_exception, OperationalError):
            self.write_error = f"{type(context.original_exception).__name__}: {context.original_exception}"
            raise StoreUnavailable(f"the store cannot be used: {context.original_exception}") from context.original_exception

    def _executed(self, connection, cursor, statement: str, *args) -> None:
        if self.write_error is not None and statement.lstrip()[:6].upper() in ("INSERT", "UPDATE", "DELETE"):
            self.write_error = None  # a write went through: the store takes writes again

    def version(self) -> tuple[int, int | None]:
        """What changes whenever an evaluation is stored or replaced, by any process: how many there are, the newest id."""
        with Session(self.engine) as session:
            count, newest = session.execute(select(func.count(), func.max(EvaluationRow.id))).one()
            return int(count), newest

    def adapter_base(self, source: str, commit: str) -> str | None:
        """The base model a stored checkpoint's adapter names, if the checkpoint is known."""
        with Session(self.engine) as session:
            return session.scalar(select(CheckpointRow.adapter_base).filter_by(source=source, commit=commit))

    def find(self, key: EvaluationKey, *, partial: bool = False) -> Evaluation | None:
        """The complete evaluation under `key` (`partial`: or the partial one racing left there)."""
        query = _keyed(select(EvaluationRow), key).options(selectinload(EvaluationRow.predictions))
        if not partial:
            query = query.where(EvaluationRow.stopped_round.is_(None))
        with Session(self.engine) as session:
            row = session.scalar(query)
            return _evaluation(row) if row else None

    def save(
        self,
        key: EvaluationKey,
        revision: Revision,
        *,
        adapter_base: str | None,
        dataset_name: str,
        truth: np.ndarray,
        prices: ItemPrices,
        test: np.ndarray,
        seconds: float,
        stopped: RaceStop | None = None,
        items: np.ndarray | None = None,
    ) -> Evaluation:
        """Write one evaluation and all its predictions atomically; return it as stored.

        `stopped` and `items`: a partial evaluation (racing dropped the checkpoint), of these held-out items only
        (`truth`, `prices` and `test` are theirs). A complete evaluation replaces a partial one under the same key;
        a complete one stored meanwhile (by another process) is kept and returned instead of either.
        """
        items = np.arange(truth.size) if items is None else np.asarray(items)
        self._add_checkpoint(key, revision)
        try:
            with Session(self.engine) as session, session.begin():
                existing = session.scalar(_keyed(select(EvaluationRow), key))
                if existing is not None and existing.stopped_round is None:
                    evaluation_id = existing.id  # completed meanwhile
                    raise _Kept
                if existing is not None:
                    session.delete(existing)  # the partial one, completed now or raced again
                    session.flush()
                ckpt = session.scalars(select(CheckpointRow).filter_by(source=key.source, commit=key.commit)).one()
                ckpt.step, ckpt.epoch, ckpt.train_loss = revision.step, revision.epoch, revision.train_loss
                ckpt.adapter_base = adapter_base
                row = EvaluationRow(
                    checkpoint=ckpt,
                    base_model=key.base_model,
                    dataset_name=dataset_name,
                    dataset_fingerprint=key.dataset_fingerprint,
                    config_key=key.config_key,
                    n=int(truth.size),
                    seconds=seconds,
                    **({} if stopped is None else {
                        "stopped_round": stopped.after_round, "stopped_metric": stopped.metric,
                        "stopped_difference": stopped.difference, "stopped_low": stopped.low, "stopped_high": stopped.high,
                    }),
                )
                extra = {name: getattr(prices, name) for name in ESTIMATES if getattr(prices, name) is not None}
                row.predictions = [
                    PredictionRow(
                        item=int(item),
                        truth=float(t),
                        argmax=float(a),
                        mean=float(m),
                        p_number=None if np.isnan(p) else float(p),
                        test=bool(is_test),
                        **{name: float(values[i]) for name, values in extra.items()},
                    )
                    for i, (item, t, a, m, p, is_test) in enumerate(
                        zip(items, truth, prices.argmax, prices.mean, prices.p_number, test, strict=True)
                    )
                ]
                session.add(row)
                session.flush()
                evaluation_id = row.id
        except _Kept:
            pass
        except IntegrityError:  # stored by another process between the look and the write
            if (stored := self.find(key, partial=stopped is not None)) is None:
                raise
            return stored
        return self.get(evaluation_id)

    def _add_checkpoint(self, key: EvaluationKey, revision: Revision) -> None:
        """The checkpoint's row, made on its own first: two workers saving two configs of one new checkpoint at once
        both find it, instead of one of them failing on the second insert."""
        try:
            with Session(self.engine) as session, session.begin():
                if session.scalar(select(CheckpointRow.id).filter_by(source=key.source, commit=key.commit)) is None:
                    session.add(CheckpointRow(source=key.source, revision=revision.revision, commit=key.commit, message=revision.message))
        except IntegrityError:
            pass  # another worker made it meanwhile

    def get(self, evaluation_id: int) -> Evaluation:
        with Session(self.engine) as session:
            row = session.scalar(
                select(EvaluationRow).filter_by(id=evaluation_id).options(selectinload(EvaluationRow.predictions))
            )
            if row is None:
                raise LookupError(f"no evaluation {evaluation_id}")
            return _evaluation(row)

    def evaluations(
        self, source: str, *, dataset_fingerprint: str | None = None, ids: list[int] | None = None
    ) -> list[Evaluation]:
        """Every stored evaluation of a source's checkpoints (on one dataset; with these ids), oldest first."""
        query = (
            select(EvaluationRow)
            .join(EvaluationRow.checkpoint)
            .where(CheckpointRow.source == source)
            .options(selectinload(EvaluationRow.predictions))
            .order_by(EvaluationRow.id)
        )
        if dataset_fingerprint:
            query = query.where(EvaluationRow.dataset_fingerprint == dataset_fingerprint)
        if ids is not None:
            query = query.where(EvaluationRow.id.in_(ids))
        with Session(self.engine) as session:
            return [_evaluation(row) for row in session.scalars(query)]

    def comparable_ids(self, source: str, *, dataset_fingerprint: str, partial: bool = False) -> list[int]:
        """Ids of the complete evaluations a choice compares: on this dataset, with the base model and scoring config
        of the most recent one (a choice never mixes bases or configs). Reads no predictions.
        `partial`: the ids of the partial evaluations racing left in that group instead."""
        query = (
            select(EvaluationRow.id, EvaluationRow.base_model, EvaluationRow.config_key, EvaluationRow.stopped_round)
            .join(EvaluationRow.checkpoint)
            .where(CheckpointRow.source == source, EvaluationRow.dataset_fingerprint == dataset_fingerprint)
            .order_by(EvaluationRow.id)
        )
        with Session(self.engine) as session:
            rows = session.execute(query).all()
        complete = [row for row in rows if row.stopped_round is None]
        if not complete:
            return []
        group = (complete[-1].base_model, complete[-1].config_key)
        return [row.id for row in rows if (row.base_model, row.config_key) == group and (row.stopped_round is not None) == partial]
