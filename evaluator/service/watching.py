"""Watching: every checkpoint a watched repo has is queued, then each new one as training writes it.

Watches live in the store (they survive restarts); one poller thread lists each watched
repo's revisions at the watch's interval and hands them to `enqueue`, which never queues a
checkpoint twice.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from pricer.evaluator.errors import PricerError
from pricer.evaluator.records import Revision, Watch
from pricer.evaluator.store import Watches, utcnow

log = logging.getLogger(__name__)


class Watching:
    """Polls the watched repos on a thread of its own.

    Args:
        watches: the watches in the store.
        revisions: a repo's revisions now (its source's `revisions()`).
        enqueue: queue one revision of a repo for evaluation (a no-op when evaluated or queued).
    """

    def __init__(
        self, watches: Watches, *, revisions: Callable[[str], list[Revision]], enqueue: Callable[[str, Revision], None]
    ) -> None:
        self.watches, self.revisions, self.enqueue = watches, revisions, enqueue
        self._wake, self._stopping = threading.Event(), threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._loop, name="pricer-watches", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def wake(self) -> None:
        self._wake.set()

    def poll(self, watch: Watch) -> None:
        """Queue every revision the repo has now; record the poll, or why it failed."""
        try:
            revisions = self.revisions(watch.repo)
            for revision in revisions:
                self.enqueue(watch.repo, revision)
            self.watches.polled(watch.repo, checkpoints=len(revisions))
        except PricerError as exc:  # a repo with no checkpoint yet, or the Hub down: try again next time
            self.watches.polled(watch.repo, error=str(exc))
        except Exception as exc:
            log.exception("polling %s failed", watch.repo)
            self.watches.polled(watch.repo, error=f"internal error: {type(exc).__name__}: {exc}")

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                now = utcnow()
                for watch in self.watches.all():
                    if watch.due(now) and not self._stopping.is_set():
                        self.poll(watch)
            except Exception:  # the store is failing: try again at the next poll
                log.exception("listing the watches failed")
            self._wake.wait(timeout=1.0)
            self._wake.clear()
