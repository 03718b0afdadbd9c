"""Micro-batching: concurrent requests share forward passes and each gets exactly its own answers."""

import threading
import time

import pytest

from pricer.evaluator.service.batching import MicroBatcher
from tests.waiting import until


def test_concurrent_requests_share_batches_and_get_their_own_answers():
    sizes = []

    def run(items):
        sizes.append(len(items))
        time.sleep(0.02)  # a forward pass
        return [f"answer to {item}" for item in items], "adapter-a"

    batcher = MicroBatcher(run, max_batch=16, max_wait=0.01)
    results, threads = {}, []
    for r in range(24):
        request = [f"r{r}-{i}" for i in range(1 + r % 3)]
        thread = threading.Thread(target=lambda r=r, request=request: results.__setitem__(r, (request, batcher.submit(request))))
        threads.append(thread)
        thread.start()
    for thread in threads:
        thread.join()
    for request, (answers, extra) in results.values():
        assert answers == [f"answer to {item}" for item in request] and extra == "adapter-a"
    assert sum(sizes) == sum(len(request) for request, _ in results.values())
    assert batcher.batches == len(sizes) < 24 and max(sizes) > 3  # requests were coalesced


def test_a_failing_batch_fails_its_requests_and_the_batcher_keeps_serving():
    calls = []

    def run(items):
        calls.append(items)
        if len(calls) == 1:
            raise RuntimeError("no adapter")
        return [len(item) for item in items], None

    batcher = MicroBatcher(run, max_batch=4, max_wait=0.0)
    with pytest.raises(RuntimeError, match="no adapter"):
        batcher.submit(["a"])
    assert batcher.submit(["abc", "de"]) == ([3, 2], None)


class Submit(threading.Thread):
    """`batcher.submit(items)` on its own thread; `result` or `error` once it returns."""

    def __init__(self, batcher, items):
        super().__init__(daemon=True)
        self.batcher, self.items, self.result, self.error = batcher, items, None, None
        self.start()

    def run(self):
        try:
            self.result = self.batcher.submit(self.items)
        except Exception as exc:
            self.error = exc


class GatedRun:
    """A `run` whose n-th pass starts (`started[n]`) and then waits until the test opens `gates[n]`."""

    def __init__(self, fail_on=None):
        self.calls, self.fail_on = [], fail_on
        self.started = [threading.Event() for _ in range(20)]
        self.gates = [threading.Event() for _ in range(20)]

    def __call__(self, items):
        n = len(self.calls)
        self.calls.append(list(items))
        self.started[n].set()
        assert self.gates[n].wait(10), f"pass {n} was never let through"
        if self.fail_on in items:
            raise RuntimeError(f"cannot price {self.fail_on}")
        return [item.upper() for item in items], "adapter"


def test_a_request_larger_than_max_batch_is_split_into_passes_and_answered_in_order():
    sizes, served = [], {"adapter": "a"}

    def run(items):
        sizes.append(len(items))
        return [f"answer to {item}" for item in items], served  # the same adapter for every pass, as serving gives

    batcher = MicroBatcher(run, max_batch=4, max_wait=0.0)
    items = [f"item {i}" for i in range(12)]
    answers, extra = batcher.submit(items)
    assert answers == [f"answer to {item}" for item in items] and extra == {"adapter": "a"}
    assert sizes == [4, 4, 4] and batcher.batches == 3  # one adapter throughout: nothing was priced again


def test_a_short_request_is_answered_while_a_long_one_is_still_being_priced():
    run = GatedRun()
    batcher = MicroBatcher(run, max_batch=4, max_wait=0.0)
    long = Submit(batcher, [f"l{i}" for i in range(12)])
    assert run.started[0].wait(10)
    short = Submit(batcher, ["s"])
    until(lambda: batcher._queue.qsize() == 1, "the request to queue", every=0.001)  # queued while the long request's first pass runs
    run.gates[0].set()
    run.gates[1].set()  # only the second pass: the long request still has items left
    short.join(10)
    assert short.result == (["S"], "adapter")
    assert run.calls[1] == ["l4", "s", "l5", "l6"]  # round-robin: the short request's item in the next pass
    assert long.is_alive() and long.result is None
    for gate in run.gates:
        gate.set()
    long.join(10)
    assert long.result == ([f"L{i}" for i in range(12)], "adapter")
    assert max(len(call) for call in run.calls) <= 4 and batcher.batches == 4


def test_a_request_priced_across_an_adapter_change_is_answered_wholly_by_the_new_adapter():
    calls = []

    def run(items):
        calls.append(list(items))
        adapter = "v1" if len(calls) == 1 else "v2"  # the served adapter is swapped after the first pass
        return [f"{adapter}:{item}" for item in items], adapter

    batcher = MicroBatcher(run, max_batch=2, max_wait=0.0)
    answers, extra = batcher.submit(["a", "b", "c", "d"])
    assert extra == "v2" and answers == ["v2:a", "v2:b", "v2:c", "v2:d"]
    assert calls == [["a", "b"], ["c", "d"], ["a", "b"]]  # the items priced by v1 were priced again by v2


def test_a_failing_pass_fails_only_the_requests_in_it():
    run = GatedRun(fail_on="s1")
    batcher = MicroBatcher(run, max_batch=2, max_wait=0.0)
    long = Submit(batcher, ["l0", "l1", "l2", "l3"])
    assert run.started[0].wait(10)
    first = Submit(batcher, ["s1"])
    until(lambda: batcher._queue.qsize() == 1, "one queued request", every=0.001)
    second = Submit(batcher, ["s2"])
    until(lambda: batcher._queue.qsize() == 2, "two queued requests", every=0.001)  # both wait while the first pass runs
    for gate in run.gates:
        gate.set()
    for request in (long, first, second):
        request.join(10)
    assert run.calls[:2] == [["l0", "l1"], ["l2", "s1"]]  # the failing pass held the long request and the first
    assert isinstance(long.error, RuntimeError) and isinstance(first.error, RuntimeError)
    assert second.error is None and second.result == (["S2"], "adapter")  # waiting, but not in that pass
    assert batcher.submit(["after"]) == (["AFTER"], "adapter")  # the batcher keeps serving
    assert batcher.batches == len(run.calls) - 1
