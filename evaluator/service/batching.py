"""Micro-batching: concurrent prediction requests share one forward pass.

Each request waits at most `max_wait` seconds for others to join it, up to `max_batch`
items; the batch is priced once and each request gets its own slice of the answers.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Generic, TypeVar

Answer = TypeVar("Answer")


class MicroBatcher(Generic[Answer]):
    """Runs `run(items) -> (answers, extra)` on batches gathered from concurrent `submit` calls."""

    def __init__(self, run: Callable[[list[str]], tuple[list[Answer], object]], *, max_batch: int = 32, max_wait: float = 0.005):
        self.run, self.max_batch, self.max_wait = run, max_batch, max_wait
        self.batches = 0  # forward passes made, for /metrics and tests
        self._queue: queue.Queue[tuple[list[str], Future]] = queue.Queue()
        self._thread = threading.Thread(target=self._serve, name="pricer-batcher", daemon=True)
        self._thread.start()

    def submit(self, items: list[str]) -> tuple[list[Answer], object]:
        """The answers for `items` (and what `run` returned beside them), from a batch shared with others."""
        future: Future = Future()
        self._queue.put((items, future))
        return future.result()

    def _serve(self) -> None:
        while True:
            batch = [self._queue.get()]
            size, deadline = len(batch[0][0]), time.monotonic() + self.max_wait
            while size < self.max_batch:
                try:
                    request = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                batch.append(request)
                size += len(request[0])
            self._answer(batch)

    def _answer(self, batch: list[tuple[list[str], Future]]) -> None:
        items = [item for request, _ in batch for item in request]
        try:
            answers, extra = self.run(items)
        except Exception as exc:  # every request of the batch hears it; the batcher keeps serving
            for _, future in batch:
                future.set_exception(exc)
            return
        self.batches += 1
        start = 0
        for request, future in batch:
            future.set_result((answers[start : start + len(request)], extra))
            start += len(request)
