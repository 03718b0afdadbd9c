"""A background loop: a daemon thread that repeats one step until stopped; `wake` cuts its wait short."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Loop:
    """Runs `step()` over and over on a thread named `name`; when a step reports no work (False), waits `wait`
    seconds or until `wake()`. A step that raises is logged and the loop goes on: one bad round never ends it."""

    def __init__(self, name: str, step: Callable[[], bool], *, wait: float = 1.0):
        self.name, self.step, self.wait = name, step, wait
        self._wake, self._stopping = threading.Event(), threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def revive(self) -> bool:
        """Start the thread again if it ended without being stopped. Returns whether it had ended."""
        if self.alive or self.stopping or self._thread is None:
            return False
        log.error("%s had stopped; starting it again", self.name)
        self.start()
        return True

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                busy = self.step()
            except Exception:
                log.exception("%s: a round failed; trying again", self.name)
                busy = False
            if not busy:
                self._wake.wait(timeout=self.wait)
                self._wake.clear()
