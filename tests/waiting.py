"""Tests wait on events, not on the clock: poll a condition until it holds, with a generous limit for loaded machines."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def until(condition: Callable[[], T], what: str, *, timeout: float = 120, every: float = 0.05) -> T:
    """The condition's first truthy value; `TimeoutError` naming `what` if none comes within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(every)
    raise TimeoutError(f"waited {timeout:g} s for {what}")
