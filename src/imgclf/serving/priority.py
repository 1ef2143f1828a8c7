"""Work that must not take the CPU from requests: run at a lower priority (a higher nice value) on a
thread of its own, so that the rest of the server keeps its priority.

Linux gives every thread its own nice value (setpriority on a thread id); raising it needs no
privilege, lowering it back does (CAP_SYS_NICE), hence a fresh thread for each piece of work
rather than a long-lived thread that changes its mind. Threads the work creates inherit its nice
value, so a caller must create long-lived threads (TensorFlow's pools: session.start_thread_pools)
before. Elsewhere (no per-thread nice) the work runs at the process's priority.
"""

from __future__ import annotations

import os
import threading
from typing import Callable, TypeVar

MAX_NICE = 19
T = TypeVar("T")


def thread_nice() -> int:
    """The calling thread's nice value (0 where it cannot be read)."""
    try:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    except (AttributeError, OSError):
        return 0


def lower_this_thread(by: int) -> None:
    """Raise the calling thread's nice value by `by`, at most to 19 (not on systems without
    per-thread nice values: there the thread keeps the process's priority)."""
    if by <= 0:
        return
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), min(MAX_NICE, thread_nice() + by))
    except (AttributeError, OSError):
        pass


def call_niced(by: int, function: Callable[..., T], *args, name: str = "niced") -> T:
    """`function(*args)` on a new thread whose nice value is `by` above the caller's; waits for it
    and returns its result or raises its exception. `by` <= 0 calls it here."""
    if by <= 0:
        return function(*args)
    outcome: dict[str, object] = {}

    def work() -> None:
        lower_this_thread(by)
        try:
            outcome["value"] = function(*args)
        except BaseException as error:      # re-raised on the caller's thread
            outcome["error"] = error

    thread = threading.Thread(target=work, name=name, daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
