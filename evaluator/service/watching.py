"""Watching: every checkpoint a watched repo has is queued, then each new one as training writes it.

Watches live in the store (they survive restarts); one poller thread per replica takes the
watches due (one replica polls each, see `Watches.take_due`), lists each one's revisions and
hands them to `enqueue`, which never queues a checkpoint twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from pricer.evaluator.errors import PricerError
from pricer.evaluator.records import Revision, Watch
from pricer.evaluator.service.loop import Loop
from pricer.evaluator.store import Watches

log = logging.getLogger(__name__)
POLL_LEASE = 120  # seconds a replica holds a poll it took; a poll cut off by its end is taken by another after this


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
        self._loop = Loop("pricer-watches", self._poll_due)

    def start(self) -> None:
        self._loop.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._loop.stop(timeout)

    def revive(self) -> bool:
        """Start the poller again if its thread ended without being stopped."""
        return self._loop.revive()

    def wake(self) -> None:
        self._loop.wake()

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

    def _poll_due(self) -> bool:
        for watch in self.watches.take_due(POLL_LEASE):
            if self._loop.stopping:
                break
            self.poll(watch)
        return False  # wait for the next round
