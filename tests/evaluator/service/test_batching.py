"""Micro-batching: concurrent requests share forward passes and each gets exactly its own answers."""

import threading
import time

import pytest

from pricer.evaluator.service.batching import MicroBatcher


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
