"""Work that must not take the CPU from requests: calls into TensorFlow's C API made at a lower
priority (a higher nice value), each on a thread of its own, while the Python around them stays on
the caller's thread at the caller's priority.

Linux gives every thread its own nice value (setpriority on a thread id); raising it needs no
privilege, lowering it back does (CAP_SYS_NICE), hence a fresh thread for each call. Only calls
that release the interpreter lock belong there (ctypes calls into C): a thread at a low priority
that holds the lock and is not scheduled stalls every other Python thread of the server with it.
Threads created during such a call inherit its nice value, so long-lived threads (TensorFlow's
pools: session.start_thread_pools) must exist before. Elsewhere than Linux calls run as they are.
"""

from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, TypeVar

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


@dataclass
class NicedCalls:
    """What `niced_calls` asked for, and what its calls took: CPU seconds on their threads and
    the nice value they ran at."""

    by: int
    cpu_seconds: float = 0.0
    nice: int | None = None


_current = threading.local()


@contextmanager
def niced_calls(by: int) -> Iterator[NicedCalls]:
    """Within it, `niced_call`s made by this thread run `by` nicer than it (0: as they are)."""
    previous = getattr(_current, "calls", None)
    _current.calls = calls = NicedCalls(by)
    try:
        yield calls
    finally:
        _current.calls = previous


def niced_call(function: Callable[..., T], *args) -> T:
    """`function(*args)` at the priority the calling thread asked for with `niced_calls`: on a new
    thread, waited for, its result returned or its exception raised here; with none asked for,
    called here."""
    calls = getattr(_current, "calls", None)
    if calls is None or calls.by <= 0:
        return function(*args)
    outcome: dict[str, object] = {}

    def work() -> None:
        lower_this_thread(calls.by)
        started = time.thread_time()
        try:
            outcome["value"] = function(*args)
        except BaseException as error:      # re-raised on the caller's thread
            outcome["error"] = error
        finally:
            calls.cpu_seconds += time.thread_time() - started
            calls.nice = thread_nice()

    thread = threading.Thread(target=work, name="niced-call", daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
