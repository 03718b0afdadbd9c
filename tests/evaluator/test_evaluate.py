"""The Evaluator with its store: identity, reuse, atomic writes, ranking, racing."""

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


def test_racing_drops_the_broken_checkpoint_and_stores_the_survivors_as_full_evaluations(settings, tiny_run, broken_run, tmp_path):
    from pricer.evaluator.data import catalogue_split, heldout_from_frame
    from pricer.evaluator.stats.selection import Policy, choose

    heldout = heldout_from_frame(catalogue_split()[1].iloc[:200], name="catalogue-200")
    racer = Evaluator(settings.model_copy(update={"base_models": [str(tiny_run.parent.parent)]}))
    raced = racer.race(racer.source(str(broken_run)), None, heldout, policy=Policy())
    assert [d.revision.revision for d in raced.dropped] == ["checkpoint-40"]
    assert raced.dropped[0].items_scored < (~heldout.test).sum() and raced.saved > 0
    assert [e.revision.step for e in raced.evaluations] == [10, 20, 30]
    assert all(e.n == len(heldout) for e in raced.evaluations)  # the survivors' test items were priced too

    full = Evaluator(settings.model_copy(update={"home": tmp_path / "full-home", "base_models": [str(tiny_run.parent.parent)]}))
    evaluated = full.evaluate(full.source(str(broken_run)), None, heldout)
    for survivor, reference in zip(raced.evaluations, evaluated[:3], strict=True):  # priced in other batches: float rounding
        np.testing.assert_allclose(survivor.prices.mean, reference.prices.mean, rtol=1e-4)
        assert np.mean(survivor.prices.argmax == reference.prices.argmax) > 0.99
    test_mask = heldout.test
    by_race, by_full = choose(raced.evaluations, test_mask=test_mask), choose(evaluated, test_mask=test_mask)
    assert by_race.chosen.evaluation.revision.commit == by_full.chosen.evaluation.revision.commit
    assert by_race.test.mae == pytest.approx(by_full.test.mae, rel=1e-3)

    again = racer.race(racer.source(str(broken_run)), None, heldout, policy=Policy())  # the survivors come from the store
    assert [e.id for e in again.evaluations] == [e.id for e in raced.evaluations]


def test_a_dropped_checkpoint_is_stored_partial_never_taken_as_complete_and_completed_on_request(settings, tiny_run, broken_run):
    from pricer.evaluator.data import catalogue_split, heldout_from_frame
    from pricer.evaluator.stats.selection import Policy

    heldout = heldout_from_frame(catalogue_split()[1].iloc[:200], name="catalogue-200")
    racer = Evaluator(settings.model_copy(update={"base_models": [str(tiny_run.parent.parent)]}))
    source = racer.source(str(broken_run))
    (dropped,) = racer.race(source, None, heldout, policy=Policy()).dropped
    partial = dropped.evaluation
    assert not partial.complete and partial.stopped.after_round == dropped.after_round
    assert partial.stopped.metric == "mae" and 0 < partial.stopped.low <= partial.stopped.difference <= partial.stopped.high
    assert partial.n == dropped.items_scored < (~heldout.test).sum()  # the validation items it scored, and no more
    assert not heldout.test[partial.item_ids].any()
    np.testing.assert_array_equal(partial.truth, heldout.prices[partial.item_ids])
    assert racer.store.get(partial.id).stopped == partial.stopped  # read back as partial

    # never taken as complete: not reused, not compared, not found
    revision = partial.revision
    assert racer.stored(source, revision, heldout) is None
    assert partial.id not in racer.comparable(source.name, heldout)
    assert racer.store.comparable_ids(source.name, dataset_fingerprint=heldout.fingerprint, partial=True) == [partial.id]
    raced_again = racer.race(source, None, heldout, policy=Policy())  # raced afresh: one partial row, replaced
    assert racer.store.comparable_ids(source.name, dataset_fingerprint=heldout.fingerprint, partial=True) == [
        raced_again.dropped[0].evaluation.id
    ]

    (completed,) = racer.evaluate(source, [revision.revision], heldout)  # completing it is evaluating it
    assert completed.complete and completed.n == len(heldout)
    assert racer.store.comparable_ids(source.name, dataset_fingerprint=heldout.fingerprint, partial=True) == []
    assert completed.id in racer.comparable(source.name, heldout)
    try:  # the partial row is gone (SQLite may give its id to the complete one)
        assert racer.store.get(raced_again.dropped[0].evaluation.id).complete
    except LookupError:
        pass
    third = racer.race(source, None, heldout, policy=Policy())  # the complete one is reused, dropped or not
    assert all(d.evaluation.complete for d in third.dropped) and completed.id in {e.id for e in third.evaluations} | {
        d.evaluation.id for d in third.dropped
    }
