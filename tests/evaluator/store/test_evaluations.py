import threading

import numpy as np
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from pricer.evaluator.records import EvaluationKey, ItemPrices, Revision
from pricer.evaluator.store import JobQueue
from pricer.evaluator.store.evaluations import Store
from pricer.evaluator.store.migrate import MIGRATIONS, head, revision
from pricer.evaluator.store.schema import Base


def _save(store: Store, revision: Revision, config: str = "config"):
    truth = np.array([10.0, 20.0])
    return store.save(
        EvaluationKey(revision.source, revision.commit, "base", "fingerprint", config),
        revision,
        adapter_base="base",
        dataset_name="items",
        truth=truth,
        prices=ItemPrices(argmax=truth, mean=truth, p_number=np.ones(2)),
        test=np.array([False, True]),
        seconds=1.0,
    )


def _store_before_migrations(url: str) -> None:
    """A store as an earlier pricer made it: the baseline's tables, some columns not yet added, no migration record."""
    engine = create_engine(url)
    config = Config()
    config.set_main_option("script_location", MIGRATIONS)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0001")
        connection.execute(text("DROP TABLE alembic_version"))
        connection.execute(text("ALTER TABLE checkpoints DROP COLUMN train_loss"))
        connection.execute(text("ALTER TABLE predictions DROP COLUMN test"))
        connection.execute(text(
            "INSERT INTO checkpoints (source, revision, \"commit\", step, created_at) "
            "VALUES ('org/run', 'checkpoint-1', 'c1', 1, '2026-11-01 10:00:00')"
        ))
        connection.execute(text(
            "INSERT INTO evaluations (checkpoint_id, base_model, dataset_name, dataset_fingerprint, config_key, n, seconds, "
            "created_at) SELECT id, 'base', 'items', 'fingerprint', 'config', 2, 1.0, '2026-11-01 10:00:00' FROM checkpoints"
        ))
        connection.execute(text(
            "INSERT INTO predictions (evaluation_id, item, truth, argmax, mean) "
            "SELECT id, item, truth, truth, truth FROM evaluations, (SELECT 0 AS item, 10 AS truth UNION SELECT 1, 20) AS items"
        ))
        connection.execute(text(
            "INSERT INTO jobs (repo, source, revision, \"commit\", dataset, dataset_fingerprint, config_key, status, "
            "attempts, created_at) VALUES ('org/run', 'org/run', 'checkpoint-2', 'c2', 'items', 'fingerprint', 'config', "
            "'queued', 0, '2026-11-01 10:00:00'), ('org/run', 'org/run', 'checkpoint-2', 'c2', 'items', 'fingerprint', "
            "'config', 'queued', 0, '2026-11-01 10:00:01')"  # the same job twice, as a race between processes left it
        ))
    engine.dispose()


def test_a_store_made_before_migrations_is_brought_to_the_head_and_keeps_its_evaluations(store_url):
    _store_before_migrations(store_url)
    store = Store(store_url)
    assert revision(store.engine) == head()
    assert "train_loss" in {c["name"] for c in inspect(store.engine).get_columns("checkpoints")}
    found = store.find(EvaluationKey("org/run", "c1", "base", "fingerprint", "config"))
    assert found.truth.tolist() == [10, 20] and found.revision.train_loss is None and not found.test.any()
    assert [job.status for job in JobQueue(store).jobs()] == ["queued", "failed"]  # the duplicate open job is closed

    saved = _save(store, Revision("org/run", "checkpoint-2", "c2", step=2, train_loss=0.75))
    assert saved.revision.train_loss == 0.75 and saved.test.tolist() == [False, True]


def test_migrations_make_exactly_the_schema_the_code_describes(store_url):
    store = Store(store_url)
    with store.engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []


def test_processes_starting_together_migrate_one_at_a_time(store_url):
    outcomes: list[object] = []

    def start() -> None:
        try:
            outcomes.append(revision(Store(store_url).engine))
        except Exception as exc:  # a second process creating the same tables would fail here
            outcomes.append(exc)

    starters = [threading.Thread(target=start) for _ in range(4)]
    for thread in starters:
        thread.start()
    for thread in starters:
        thread.join()
    assert outcomes == [head()] * 4


def test_workers_saving_two_configs_of_one_new_checkpoint_at_once_both_succeed(store_url):
    stores = [Store(store_url) for _ in range(8)]
    revision = Revision("run", "checkpoint-1", "c" * 64, step=1)
    barrier, saved = threading.Barrier(len(stores)), []

    def save(store: Store, config: str) -> None:
        barrier.wait()  # every save looks for the checkpoint's row before any has made it
        saved.append(_save(store, revision, config))

    savers = [threading.Thread(target=save, args=(store, f"config-{i}")) for i, store in enumerate(stores)]
    for thread in savers:
        thread.start()
    for thread in savers:
        thread.join()
    assert sorted(e.config_key for e in saved) == sorted(f"config-{i}" for i in range(len(stores)))
    assert len({e.id for e in saved}) == len(stores)
