import numpy as np
from sqlalchemy import inspect, text

from pricer.evaluator.records import EvaluationKey, ItemPrices, Revision
from pricer.evaluator.store.evaluations import Store


def _save(store: Store, revision: Revision):
    truth = np.array([10.0, 20.0])
    return store.save(
        EvaluationKey(revision.source, revision.commit, "base", "fingerprint", "config"),
        revision,
        adapter_base="base",
        dataset_name="items",
        truth=truth,
        prices=ItemPrices(argmax=truth, mean=truth, p_number=np.ones(2)),
        test=np.array([False, True]),
        seconds=1.0,
    )


def test_a_store_made_before_newer_columns_gets_them_and_keeps_its_evaluations(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    old = Store(url)
    kept = _save(old, Revision("org/run", "checkpoint-1", "c1", step=1))
    with old.engine.begin() as connection:  # as an earlier pricer made it
        connection.execute(text("ALTER TABLE checkpoints DROP COLUMN train_loss"))
        connection.execute(text("ALTER TABLE predictions DROP COLUMN test"))
    old.engine.dispose()

    store = Store(url)
    assert "train_loss" in {c["name"] for c in inspect(store.engine).get_columns("checkpoints")}
    found = store.find(EvaluationKey("org/run", "c1", "base", "fingerprint", "config"))
    assert found.id == kept.id and found.revision.train_loss is None and not found.test.any()
    saved = _save(store, Revision("org/run", "checkpoint-2", "c2", step=2, train_loss=0.75))
    assert saved.revision.train_loss == 0.75 and saved.test.tolist() == [False, True]
