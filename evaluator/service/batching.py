"""Micro-batching: concurrent prediction requests share forward passes, fairly.

Why fair: if each request were priced whole, one request of many long descriptions would hold
the model for one huge pass while every other caller waited behind it. So no pass holds more
than `max_batch` items, and each pass is filled round-robin, one item from each waiting request
in turn: a short request that arrives while a long one is being priced is answered in the next
pass. A pass that is not full waits at most `max_wait` seconds for more requests to join it.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

Answer = TypeVar("Answer")


@dataclass(eq=False)
class _Request:
    items: list[str]
    future: Future
    todo: deque[int] = field(default_factory=deque)  # indices of the items still to price
    priced: dict[int, Any] = field(default_factory=dict)  # index -> answer, all from `extra`
    extra: object = None

    def __post_init__(self) -> None:
        self.todo.extend(range(len(self.items)))


class MicroBatcher(Generic[Answer]):
    """Runs `run(items) -> (answers, extra)` on passes gathered from concurrent `submit` calls."""

    def __init__(self, run: Callable[[list[str]], tuple[list[Answer], object]], *, max_batch: int = 32, max_wait: float = 0.005):
        self.run, self.max_batch, self.max_wait = run, max_batch, max_wait
        self.batches = 0  # forward passes made, for /metrics and tests
        self._queue: queue.Queue[_Request] = queue.Queue()
        self._pending: deque[_Request] = deque()  # round-robin order; only the serving thread touches it
        self._thread = threading.Thread(target=self._serve, name="pricer-batcher", daemon=True)
        self._thread.start()

    def submit(self, items: list[str]) -> tuple[list[Answer], object]:
        """The answers for `items`, in order, and the `extra` of the pass that priced them (one for all)."""
        request = _Request(list(items), Future())
        self._queue.put(request)
        return request.future.result()

    def _serve(self) -> None:
        while True:
            self._gather()
            members: dict[_Request, None] = {}  # the requests with items in this pass, in order
            picks: list[tuple[_Request, int]] = []
            while self._pending and len(picks) < self.max_batch:
                request = self._pending.popleft()
                members[request] = None
                if request.todo:
                    picks.append((request, request.todo.popleft()))
                if request.todo:
                    self._pending.append(request)  # its next item waits for the others' turn
            self._answer(list(members), picks)

    def _gather(self) -> None:
        """Takes new requests: waits for one if none is pending, then at most `max_wait` until a pass is full."""
        if not self._pending:
            self._pending.append(self._queue.get())
        deadline = time.monotonic() + self.max_wait
        while True:
            full = sum(len(request.todo) for request in self._pending) >= self.max_batch
            try:  # when full, only take those already queued, so they get their turn in this pass
                self._pending.append(self._queue.get(timeout=0.0 if full else max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                return

    def _answer(self, members: list[_Request], picks: list[tuple[_Request, int]]) -> None:
        try:
            answers, extra = self.run([request.items[i] for request, i in picks])
            if len(answers) != len(picks):
                raise ValueError(f"run gave {len(answers)} answers for {len(picks)} items")
        except Exception as exc:  # every request of the pass hears it; the others and the batcher go on
            for request in members:
                request.future.set_exception(exc)
            self._pending = deque(request for request in self._pending if request not in members)
            return
        self.batches += 1
        for (request, i), answer in zip(picks, answers, strict=True):
            if request.priced and request.extra is not extra:  # `is`: one swap, one object (== may not be defined)
                # The adapter changed since this request's earlier passes: requeue those items, so all
                # its answers come from one adapter (the latest). Adapter swaps are rare, so this ends.
                if not request.todo:
                    self._pending.append(request)
                request.todo.extend(request.priced)
                request.priced.clear()
            request.extra = extra
            request.priced[i] = answer
        for request in members:
            if not request.todo:  # all its items priced, by one adapter (an empty request takes this pass's)
                in_order = [request.priced[i] for i in range(len(request.items))]
                request.future.set_result((in_order, request.extra if request.items else extra))
