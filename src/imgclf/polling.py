"""The one poll-until-deadline loop: waiting for a server, a version, a label, a container."""

from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


def poll(check: Callable[[], T], timeout: float, interval: float) -> T | None:
    """Calls check() every `interval` seconds until it returns a true value, which it returns; None
    once `timeout` seconds have passed. check() runs at least once, and once more at the deadline,
    so a timeout of 0 is a single look. The caller says what did not happen: it knows the last state."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        time.sleep(min(interval, remaining))
