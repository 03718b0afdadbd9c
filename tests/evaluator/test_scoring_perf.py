"""What makes evaluation fast keeps its results: length-sorted batches, the batch size chosen by memory,
the next checkpoint fetched while the current one is scored. (No timings here: see bench/.)"""

import threading
from types import SimpleNamespace

import numpy as np
import pytest

from pricer.evaluator.evaluate import Evaluator
from pricer.evaluator.scoring import CPU_BATCH_SIZE, MAX_AUTO_BATCH, PriceModel, batch_order, batch_size_for_memory
from pricer.evaluator.settings import Settings


def test_batches_cover_every_item_once_in_length_order():
    lengths = [5, 1, 9, 3, 3, 7, 2]
    batches = batch_order(lengths, 3)
    assert [len(b) for b in batches] == [3, 3, 1]
    rows = np.concatenate(batches)
    assert sorted(rows) == list(range(len(lengths)))
    assert [lengths[i] for i in rows] == sorted(lengths)


def test_batch_size_by_memory_grows_with_memory_and_shrinks_with_length():
    llama8b = SimpleNamespace(hidden_size=4096, intermediate_size=14336, num_attention_heads=32, vocab_size=128256)
    gib = 2**30
    sizes = [batch_size_for_memory(b * gib, llama8b, 180) for b in (1, 4, 16)]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
    assert batch_size_for_memory(4 * gib, llama8b, 400) < batch_size_for_memory(4 * gib, llama8b, 100)
    assert batch_size_for_memory(0, llama8b, 180) == 1
    assert batch_size_for_memory(200 * gib, llama8b, 180) == MAX_AUTO_BATCH


def test_without_a_batch_size_a_cpu_model_uses_the_default(tiny_base, catalogue_heldout):
    model = PriceModel(str(tiny_base), device="cpu")
    assert model.auto_batch_size(500) == CPU_BATCH_SIZE
    prompts = catalogue_heldout.prompts[:20]
    np.testing.assert_array_equal(model.price(prompts).argmax, model.price(prompts, batch_size=CPU_BATCH_SIZE).argmax)


def test_the_batch_size_is_passed_only_when_set(tmp_path):
    assert Evaluator(Settings(home=tmp_path), store=_store(tmp_path)).batch_size is None
    assert Evaluator(Settings(home=tmp_path, batch_size=8), store=_store(tmp_path)).batch_size == 8


def _store(tmp_path):
    from pricer.evaluator.store.evaluations import Store

    return Store(f"sqlite:///{tmp_path / 'store.db'}")


class RecordingSource:
    """A run folder whose fetches are recorded: which revision, on which thread, while what was being scored."""

    def __init__(self, inner, events, *, fail: str | None = None):
        self.inner, self.events, self.fail = inner, events, fail
        self.name = inner.name

    def scan(self):
        return self.inner.scan()

    def revisions(self):
        return self.inner.revisions()

    def resolve(self, revision):
        return self.inner.resolve(revision)

    def fetch(self, revision):
        self.events.append(("fetch", revision.revision, threading.current_thread() is threading.main_thread()))
        if revision.revision == self.fail:
            raise OSError("download failed")
        return self.inner.fetch(revision)


def _recording_price(monkeypatch, events):
    price = PriceModel.price

    def recorded(self, prompts, **kwargs):
        events.append(("score", kwargs.get("desc"), True))
        return price(self, prompts, **kwargs)

    monkeypatch.setattr(PriceModel, "price", recorded)


def test_the_next_checkpoint_is_fetched_while_one_is_scored_and_results_are_unchanged(
    settings, tiny_run, catalogue_heldout, monkeypatch, tmp_path
):
    one_by_one = Evaluator(settings.model_copy(update={"db_url": f"sqlite:///{tmp_path / 'one.db'}"}))
    expected = [
        one_by_one.evaluate_revision(one_by_one.source(str(tiny_run)), r, catalogue_heldout)
        for r in one_by_one.source(str(tiny_run)).revisions()
    ]
    events: list[tuple] = []
    _recording_price(monkeypatch, events)
    evaluator = Evaluator(settings)
    source = RecordingSource(evaluator.source(str(tiny_run)), events)
    results = evaluator.evaluate(source, None, catalogue_heldout)
    assert [e.revision.revision for e in results] == ["checkpoint-10", "checkpoint-20", "checkpoint-30"]
    for got, want in zip(results, expected, strict=True):
        np.testing.assert_array_equal(got.prices.argmax, want.prices.argmax)
    fetches = [e for e in events if e[0] == "fetch"]
    # each fetched once, the later ones on the prefetch thread
    assert sorted(fetches) == [("fetch", "checkpoint-10", True), ("fetch", "checkpoint-20", False), ("fetch", "checkpoint-30", False)]
    # the next fetch is started before the current checkpoint is scored
    assert events.index(("fetch", "checkpoint-20", False)) < events.index(("score", "checkpoint-10", True))

    events.clear()
    again = evaluator.evaluate(source, None, catalogue_heldout)  # all stored: nothing is fetched or scored
    assert events == [] and [e.id for e in again] == [e.id for e in results]


def test_a_failed_prefetch_fails_its_own_checkpoint_only(settings, tiny_run, catalogue_heldout):
    evaluator = Evaluator(settings)
    events: list[tuple] = []
    source = RecordingSource(evaluator.source(str(tiny_run)), events, fail="checkpoint-20")
    with pytest.raises(OSError, match="download failed"):
        evaluator.evaluate(source, None, catalogue_heldout)
    assert [e.revision.revision for e in evaluator.store.evaluations(source.name)] == ["checkpoint-10"]
    assert all(model.adapters == [] for model in evaluator._models.values())


class CountingTokenizer:
    """The model's tokenizer, counting the calls that encode prompts."""

    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.inner(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_a_held_out_set_is_tokenised_once_for_all_checkpoints(tiny_base, catalogue_heldout):
    model = PriceModel(str(tiny_base), device="cpu")
    prompts = catalogue_heldout.prompts[:12]
    plain = model.price(prompts, batch_size=5)
    model.tokenizer = counting = CountingTokenizer(model.tokenizer)
    first = model.price(prompts, batch_size=5, key=catalogue_heldout.fingerprint)
    again = model.price(prompts, batch_size=5, key=catalogue_heldout.fingerprint)
    assert counting.calls == 1
    np.testing.assert_array_equal(first.argmax, plain.argmax)
    np.testing.assert_array_equal(again.mean, first.mean)
    model.price(prompts[:3], batch_size=5)  # no key: tokenised every time
    assert counting.calls == 2
