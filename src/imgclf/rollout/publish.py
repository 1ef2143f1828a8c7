"""Stage a model inside the base path, then publish it as the next version with one rename().

TensorFlow Serving (and the local server) only see folders whose name is an integer, so a model
written under a non-numeric staging name is invisible until ``os.rename`` gives it its number. The
rename is atomic on one filesystem; fsync before it makes sure the server never loads a version
whose files are not on disk yet, and fsync of the base path after it makes the new name durable.
A lock file in the base path serialises publishers (and rollbacks), so that two of them never pick
the same number. Plain Python: no TensorFlow import.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import time
from pathlib import Path
from typing import Iterator

from imgclf import contract

# Non-numeric and without the staging/retired prefixes: TF Serving ignores it, and so does status.
LOCK_FILE = contract.PUBLISH_LOCK_FILE


class PublishError(RuntimeError):
    """A staged folder that cannot be published; the message names it."""


def stage_dir(base_path: str | os.PathLike) -> Path:
    """A new, empty, uniquely named staging folder inside the base path (created with it)."""
    base = Path(base_path)
    base.mkdir(parents=True, exist_ok=True)
    # Several trainers may stage in the same second from one process: the random part keeps
    # names unique, and mkdir(exist_ok=False) makes sure of it.
    tag = f"{int(time.time())}-{os.getpid()}-{secrets.token_hex(4)}"
    staged = base / contract.staging_name(tag)
    staged.mkdir()
    return staged


@contextlib.contextmanager
def publish_lock(base_path: str | os.PathLike) -> Iterator[None]:
    """Exclusive lock on <base_path>/.publish.lock; the kernel releases it if the holder dies."""
    base = Path(base_path)
    base.mkdir(parents=True, exist_ok=True)
    with open(base / LOCK_FILE, "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def _fsync(path: str | os.PathLike, flags: int = os.O_RDONLY) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike) -> None:
    _fsync(path, os.O_RDONLY | os.O_DIRECTORY)


def fsync_tree(root: str | os.PathLike) -> None:
    """fsync every file, then every folder (deepest first), so that all names and bytes are durable."""
    for dirpath, _, filenames in os.walk(root, topdown=False):
        for name in filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                _fsync(path)
        fsync_dir(dirpath)


def check_stageable(staged: Path, base: Path) -> None:
    """A staged folder must be a non-numeric folder on the base path's filesystem."""
    if not staged.is_dir():
        raise PublishError(f"{staged}: no such staged folder")
    if contract.parse_version(staged.name) is not None:
        raise PublishError(f"{staged}: already has a version number; stage under a non-numeric name")
    if os.stat(staged).st_dev != os.stat(base).st_dev:
        # rename() across filesystems is a copy, which the server could see half-written.
        raise PublishError(f"{staged}: not on the same filesystem as {base}; stage inside the base path")


def publish(staged: str | os.PathLike, base_path: str | os.PathLike) -> int:
    """Rename a staged model folder to the next version number in base_path; return the version."""
    staged, base = Path(staged), Path(base_path)
    base.mkdir(parents=True, exist_ok=True)
    check_stageable(staged, base)
    fsync_tree(staged)
    with publish_lock(base):
        version = contract.next_version(base)
        os.rename(staged, contract.version_path(base, version))
        fsync_dir(base)
        if staged.parent.resolve() != base.resolve():
            fsync_dir(staged.parent)
    return version


def rollback(base_path: str | os.PathLike, allow_last: bool = False) -> tuple[int, Path]:
    """Moves the highest version to a retired (non-numeric) folder: the server falls back to the
    next highest. Nothing is deleted. Returns (version, retired folder)."""
    base = Path(base_path)
    with publish_lock(base):
        versions = contract.list_versions(base)
        if not versions:
            raise PublishError(f"{base}: no published version to roll back")
        if len(versions) == 1 and not allow_last:
            raise PublishError(f"{base}: version {versions[0]} is the only one; rolling it back would "
                               f"leave nothing to serve (use --force to do it anyway)")
        version = versions[-1]
        retired = base / contract.retired_name(version)
        os.rename(contract.version_path(base, version), retired)
        fsync_dir(base)
    return version, retired


def promote(*args, **kwargs) -> int:
    """The promotion gate, then publish: imgclf.rollout.gate.promote, imported when called because
    the gate imports this module."""
    from imgclf.rollout.gate import promote as gate_then_publish

    return gate_then_publish(*args, **kwargs)
