"""The local server's memory allocator: jemalloc where it is installed (Debian: libjemalloc2).

A version swap is mostly TensorFlow copying and rewriting graphs (Grappler), and with glibc's
malloc a fifth to a quarter of that CPU went into malloc/free (`malloc_consolidate`, `_int_free`)
on the loading thread, while the previous version serves on the same cores. With jemalloc the same
swap of the EfficientNet-Lite0 export took a quarter to a third less CPU, requests the same
(docs/serving.md, "Where a swap's CPU goes"). The official tensorflow/serving is a C++ binary with
its own allocator; this concerns the Python stand-in only.

An allocator can only be chosen before the process starts (LD_PRELOAD), so the server re-executes
itself, with the same command line, once, before it imports TensorFlow.
"""

from __future__ import annotations

import ctypes.util
import os
import sys
from pathlib import Path
from typing import Mapping

from imgclf.settings import ALLOCATORS as CHOICES

AUTO, JEMALLOC, SYSTEM = CHOICES
# Unused memory goes back to the system from jemalloc's own thread, also while the server is
# idle (by default only as later allocations happen): RSS returns to its level after a burst.
DEFAULT_CONF = "background_thread:true"


class AllocatorError(RuntimeError):
    """jemalloc asked for and not installed."""


def find_jemalloc() -> str | None:
    """The jemalloc library's name as the dynamic loader finds it (libjemalloc.so.2), or None;
    None off Linux, where LD_PRELOAD is not how a library is preloaded."""
    return ctypes.util.find_library("jemalloc") if sys.platform.startswith("linux") else None


def preloaded(environ: Mapping[str, str]) -> bool:
    return "jemalloc" in environ.get("LD_PRELOAD", "")


def environment_for(choice: str, environ: Mapping[str, str], library: str | None) -> dict[str, str] | None:
    """The environment to re-execute the server in for `choice`, or None to go on as it is: the
    system allocator, jemalloc already loaded, or (auto) jemalloc not installed."""
    if choice not in CHOICES:
        raise AllocatorError(f"--allocator {choice}: choose one of {', '.join(CHOICES)}")
    if choice == SYSTEM or preloaded(environ):
        return None
    if library is None:
        if choice == JEMALLOC:
            raise AllocatorError("--allocator jemalloc: libjemalloc.so.2 is not installed "
                                 "(Debian/Ubuntu: apt-get install libjemalloc2), or use --allocator auto")
        return None
    preload = " ".join(part for part in (environ.get("LD_PRELOAD", ""), library) if part)
    return {**environ, "LD_PRELOAD": preload, "MALLOC_CONF": environ.get("MALLOC_CONF", DEFAULT_CONF)}


def reexecute_with(choice: str) -> None:
    """Replace this process by the same command under jemalloc when `choice` asks for it and it can
    be had; returns only when the process goes on as it is."""
    environment = environment_for(choice, os.environ, find_jemalloc())
    if environment is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, sys.orig_argv, environment)


def in_use() -> str:
    """What this process allocates with, for the startup log: jemalloc when it is mapped (a
    preload the dynamic loader could not honour leaves LD_PRELOAD set and the library out)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return JEMALLOC if preloaded(os.environ) else SYSTEM
    return JEMALLOC if "libjemalloc" in maps else SYSTEM
