"""The Evaluator with its store: identity, reuse, atomic writes, ranking."""

from datetime import datetime

import numpy as np
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pricer.evaluator.errors import NotEvaluated
from pricer.evaluator.evaluate import Evaluator
from pricer.evaluator.records import Evaluation, ItemPrices, Revision
from pricer.evaluator.scoring import PriceModel
from pricer.evaluator.stats.ranking import rank
from pricer.evaluator.store.evaluations import CheckpointRow, EvaluationRow, PredictionRow


def _counts(evaluator: Evaluator) -> tuple[int, int, int]:
    with Session(evaluator.store.engine) as session:
        return tuple(session.scalar(select(func.count()).select_from(t)) for t in (CheckpointRow, EvaluationRow, PredictionRow))


def test_evaluates_every_checkpoint_and_stores_every_prediction(settings, tiny_run, catalogue_heldout):
    evaluator = Evaluator(settings)
    results = evaluator.evaluate(evaluator.source(str(tiny_run)), None, catalogue_heldout)
    assert [e.revision.step for e in results] == [10, 20, 30]
    assert _counts(evaluator) == (3, 3, 3 * len(catalogue_heldout))
    stored = evaluator.store.get(results[1].id)
    np.testing.assert_array_equal(stored.truth, catalogue_heldout.prices)
    np.testing.assert_array_equal(stored.prices.argmax, results[1].prices.argmax)
    assert len(evaluator._models) == 1  # one base, loaded once for all checkpoints


def test_asking_again_returns_the_stored_result_without_a_model(settings, tiny_run, catalogue_heldout, monkeypatch):
    first = Evaluator(settings)
    before = first.evaluate(first.source(str(tiny_run)), ["checkpoint-20"], catalogue_heldout)[0]
    again = Evaluator(settings)  # a new process, the same store
    monkeypatch.setattr(PriceModel, "__init__", lambda *a, **k: pytest.fail("the model was loaded again"))
    after = again.evaluate(again.source(str(tiny_run)), ["checkpoint-20"], catalogue_heldout)[0]
    assert after.id == before.id and after.metrics() == before.metrics()


def test_other_data_is_a_new_evaluation(settings, tiny_run, catalogue_heldout):
    evaluator = Evaluator(settings)
    source = evaluator.source(str(tiny_run))
    first = evaluator.evaluate(source, ["checkpoint-10"], catalogue_heldout)[0]
    smaller = type(catalogue_heldout)(
        name="smaller", prompts=catalogue_heldout.prompts[:10], prices=catalogue_heldout.prices[:10]
    )
    second = evaluator.evaluate(source, ["checkpoint-10"], smaller)[0]
    assert second.id != first.id and second.n == 10
    np.testing.assert_array_equal(second.prices.argmax, first.prices.argmax[:10])
    # a choice compares evaluations on one named held-out set only, never "the most recent data"
    assert evaluator.comparable(source.name, smaller) == [second.id]
    assert evaluator.comparable(source.name, catalogue_heldout) == [first.id]


def test_a_failure_while_scoring_writes_nothing(settings, tiny_run, catalogue_heldout, monkeypatch):
    evaluator = Evaluator(settings)

    def crash(*args, **kwargs):
        raise RuntimeError("device lost")

    monkeypatch.setattr(PriceModel, "price", crash)
    with pytest.raises(RuntimeError):
        evaluator.evaluate(evaluator.source(str(tiny_run)), ["checkpoint-10"], catalogue_heldout)
    assert _counts(evaluator) == (0, 0, 0)


def test_choosing_before_any_evaluation(settings, tiny_run):
    from pricer.evaluator.service import PricerService

    service = PricerService(settings.model_copy(update={"checkpoint_root": tiny_run.parent}))
    with pytest.raises(NotEvaluated):
        service.choice(f"local/{tiny_run.name}")


def _evaluation(id_: int, step: int, guess: np.ndarray, truth: np.ndarray) -> Evaluation:
    prices = ItemPrices(argmax=guess, mean=guess, p_number=np.ones_like(guess))
    return Evaluation(
        id_, Revision("run", f"checkpoint-{step}", f"c{step}", step), "base", "d", "fp", "cfg", truth, prices, np.zeros(truth.size, bool), 1.0, datetime.now()
    )


def test_rank_by_each_metric_and_ties_go_to_the_earlier_checkpoint():
    truth = np.array([10.0, 100.0, 1000.0, 50.0])
    close_on_cheap = _evaluation(1, 30, np.array([11.0, 101.0, 700.0, 51.0]), truth)  # 3 hits, one huge miss
    close_on_dear = _evaluation(2, 20, np.array([60.0, 160.0, 1000.0, 110.0]), truth)  # 1 hit, smaller total error
    assert [r.evaluation.id for r in rank([close_on_cheap, close_on_dear], metric="mae")] == [2, 1]
    assert [r.evaluation.id for r in rank([close_on_cheap, close_on_dear], metric="hit_rate")] == [1, 2]
    assert [r.evaluation.id for r in rank([close_on_cheap, close_on_dear], metric="rmsle")] == [1, 2]
    tie = _evaluation(3, 10, close_on_dear.prices.argmax, truth)
    assert [r.evaluation.revision.step for r in rank([close_on_dear, tie])] == [10, 20]
    with pytest.raises(ValueError, match="unknown metric"):
        rank([tie], metric="accuracy")


def test_saving_the_same_evaluation_twice_keeps_the_first(settings, tiny_run, catalogue_heldout):
    evaluator = Evaluator(settings)
    first = evaluator.evaluate(evaluator.source(str(tiny_run)), ["checkpoint-10"], catalogue_heldout)[0]
    key = evaluator.key(evaluator.source(str(tiny_run)), first.revision, first.base_model, catalogue_heldout)
    again = evaluator.store.save(
        key, first.revision, adapter_base=first.base_model, dataset_name="x", truth=first.truth, prices=first.prices, test=first.test, seconds=0.0
    )
    assert again.id == first.id and _counts(evaluator)[1] == 1
