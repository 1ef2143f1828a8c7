"""The model store: where the versions of one model live, behind one interface.

Everything that creates, lists, publishes or retires a version folder goes through a `ModelStore`:
the trainer stages and seals its export, the promotion gate reads staged and published folders,
`publish`/`rollback`/`status`/`pin` and the servers' version pollers list and change them. As in
TensorFlow Serving, where a storage-path source tells the manager which versions exist and the
manager never lists folders itself, only this module knows how versions are kept; contract.py
keeps the naming rules (which names are versions, staged or retired folders).

`LocalModelStore` is the only implementation: a folder (the model's base path) on a POSIX
filesystem. A filesystem shared by several nodes (NFS and the like) is the same implementation on
another mount; an object store would be another implementation of the same methods. What the local
one relies on from the filesystem is spelled out in docs/model-store.md.

The life of a version:

    stage()    a new, empty folder under a non-numeric name: servers never see it
    seal()     the export is complete: every file and folder is fsync'ed, then a completion
               marker (assets.extra/export_complete.json, the files and their sizes) is written
               last. A folder without it is an export that died half-way.
    publish()  checks the seal, then under the store's lock renames the folder to the next
               number: the one moment a version appears, whole, to every server
    retire()   renames a version to a non-numeric `.retired-…` name: servers fall back to the
               next highest; nothing is deleted
    discard()  removes a staged folder (a failed export, or one left by a killed run)

Plain Python: no TensorFlow import.
"""

from __future__ import annotations

import abc
import contextlib
import fcntl
import json
import os
import secrets
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from imgclf import contract

SEAL_FORMAT = 1


class StoreError(RuntimeError):
    """A store operation that cannot be done; the message names the folder and why."""


class IncompleteExport(StoreError):
    """A staged folder that is not a whole, sealed export: never published, FORCE or not."""


@dataclass(frozen=True)
class Staged:
    """A staged folder: its path, whether its export was sealed, and when anything in it last
    changed (seconds since the epoch), which tells an abandoned folder from one being written."""

    path: Path
    sealed: bool
    changed_at: float

    def age(self, now: float | None = None) -> float:
        return max(0.0, (time.time() if now is None else now) - self.changed_at)


class ModelStore(abc.ABC):
    """The versions of one model. Methods that change the store are safe against concurrent
    writers in other processes and on other hosts sharing it (see lock())."""

    location: str   # where the store is, for messages: a folder, or a URL

    # --- reading -----------------------------------------------------------------------------
    @abc.abstractmethod
    def versions(self) -> list[int]:
        """Published versions, ascending. A store that does not exist yet has none."""

    @abc.abstractmethod
    def version_path(self, version: int) -> Path:
        """Where a loader (tf.saved_model.load, TF Serving) reads that version."""

    @abc.abstractmethod
    def retired(self) -> list[tuple[int, Path]]:
        """(version, folder) of every retired version, ascending."""

    @abc.abstractmethod
    def staged(self) -> list[Staged]:
        """Every staged folder, sealed or not, by name."""

    @abc.abstractmethod
    def fingerprint(self, version: int) -> tuple:
        """Changes whenever the version's files change: a server retries a version that failed
        to load only when this moved (a copy that was still being written)."""

    def latest(self) -> int | None:
        versions = self.versions()
        return versions[-1] if versions else None

    # --- writing -----------------------------------------------------------------------------
    @abc.abstractmethod
    def stage(self) -> Path:
        """A new, empty folder to write an export into, invisible to servers."""

    @abc.abstractmethod
    def seal(self, staged: str | os.PathLike) -> None:
        """Marks a staged export complete, durably, with the marker written last. Raises
        IncompleteExport when there is no model in it."""

    @abc.abstractmethod
    def check_sealed(self, staged: str | os.PathLike) -> None:
        """Raises StoreError when `staged` is not a staged folder of this store, IncompleteExport
        when it was never sealed or its files changed since."""

    @abc.abstractmethod
    def publish(self, staged: str | os.PathLike) -> int:
        """Makes a sealed staged folder the next version, atomically; returns the version."""

    @abc.abstractmethod
    def retire(self, version: int) -> Path:
        """Takes a published version out of service (nothing deleted); returns where it went."""

    @abc.abstractmethod
    def discard(self, staged: str | os.PathLike) -> None:
        """Removes a staged folder and everything in it."""

    @abc.abstractmethod
    def lock(self) -> contextlib.AbstractContextManager:
        """Exclusive across processes and hosts sharing the store, re-entrant within a thread:
        what is listed under it stays true until it is released (publish and retire take it)."""


def open_store(base_path: str | os.PathLike) -> ModelStore:
    """The store at a model's base path. Plain paths (and file:// URLs) are local folders, on
    whatever filesystem is mounted there."""
    text = os.fspath(base_path)
    if text.startswith("file://"):
        text = text[len("file://"):]
    elif "://" in text:
        raise StoreError(f"{text}: no model store for {text.split('://', 1)[0]}:// URLs; give a folder "
                         f"(a shared filesystem mounted on every node is a folder too)")
    return LocalModelStore(text)


def open_model(models_dir: str | os.PathLike, model_name: str = contract.DEFAULT_MODEL_NAME) -> ModelStore:
    """The store of models/<model_name>."""
    return open_store(contract.model_base_path(models_dir, model_name))


# --- the local (POSIX filesystem) implementation --------------------------------------------------
_locks_held = threading.local()   # lock file path -> depth, per thread: lock() is re-entrant


class LocalModelStore(ModelStore):
    """A model's base path on a POSIX filesystem: `<version>/` folders, `.staging-…` and
    `.retired-…` folders beside them, and the `.publish.lock` file."""

    def __init__(self, base_path: str | os.PathLike):
        self.base = Path(base_path)
        self.location = str(self.base)

    def __repr__(self) -> str:
        return f"LocalModelStore({self.location!r})"

    # --- reading -----------------------------------------------------------------------------
    def versions(self) -> list[int]:
        return sorted(version for version, _ in self._folders(contract.parse_version))

    def version_path(self, version: int) -> Path:
        return contract.version_path(self.base, version)

    def retired(self) -> list[tuple[int, Path]]:
        return sorted(self._folders(contract.parse_retired))

    def staged(self) -> list[Staged]:
        folders = sorted(path for _, path in self._folders(lambda n: n if contract.is_staging_name(n) else None))
        return [Staged(path, _seal_path(path).is_file(), _last_change(path)) for path in folders]

    def fingerprint(self, version: int) -> tuple:
        """Names, sizes and mtimes of the top-level files and of variables/."""
        root = self.version_path(version)
        marks = []
        for folder in (root, root / "variables"):
            try:
                entries = sorted(os.scandir(folder), key=lambda e: e.name)
            except OSError:
                continue
            for entry in entries:
                try:
                    info = entry.stat()
                except OSError:
                    continue
                marks.append((folder.name, entry.name, info.st_size, info.st_mtime_ns))
        return tuple(marks)

    def _folders(self, parse) -> Iterator[tuple[object, Path]]:
        """(parse(name), path) for each sub-folder whose name parse() accepts (returns non-None)."""
        try:
            entries = list(os.scandir(self.base))
        except FileNotFoundError:
            return
        for entry in entries:
            parsed = parse(entry.name)
            if parsed is not None and entry.is_dir():
                yield parsed, Path(entry.path)

    # --- writing -----------------------------------------------------------------------------
    def stage(self) -> Path:
        self.base.mkdir(parents=True, exist_ok=True)
        # Several trainers may stage in the same second from one process: the random part keeps
        # names unique, and mkdir(exist_ok=False) makes sure of it.
        staged = self.base / contract.staging_name(f"{int(time.time())}-{os.getpid()}-{secrets.token_hex(4)}")
        staged.mkdir()
        return staged

    def seal(self, staged: str | os.PathLike) -> None:
        staged = self._own_staged(staged)
        files = _file_sizes(staged)
        if contract.SAVED_MODEL_FILE not in files:
            raise IncompleteExport(f"{staged}: no {contract.SAVED_MODEL_FILE} in it ("
                                   f"{len(files)} file(s)): there is no model to seal")
        fsync_tree(staged)
        _write_seal(staged, files)

    def check_sealed(self, staged: str | os.PathLike) -> None:
        staged = self._own_staged(staged)
        marker = _seal_path(staged)
        try:
            recorded = json.loads(marker.read_text())["files"]
        except FileNotFoundError:
            raise IncompleteExport(f"{staged}: incomplete export (no {contract.ASSETS_EXTRA_DIR}/"
                                   f"{contract.SEAL_FILE}, the marker an export writes last): the run "
                                   f"that wrote it was killed or failed") from None
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise IncompleteExport(f"{staged}: unreadable completion marker {marker} ({error})") from None
        found = _file_sizes(staged)
        if found != recorded:
            changed = sorted(set(found.items()) ^ set(recorded.items()))
            names = sorted({name for name, _ in changed})
            raise IncompleteExport(f"{staged}: its files changed since the export was sealed "
                                   f"({', '.join(names[:5])}{' …' if len(names) > 5 else ''})")

    def publish(self, staged: str | os.PathLike) -> int:
        staged = self._own_staged(staged)
        self.check_sealed(staged)
        fsync_tree(staged)   # cheap when sealed here; makes a folder copied in after sealing durable
        with self.lock():
            if not staged.is_dir():
                raise StoreError(f"{staged}: published or removed meanwhile by another process")
            version = contract.next_version(self.versions() + [v for v, _ in self.retired()])
            os.rename(staged, self.version_path(version))
            fsync_dir(self.base)
        return version

    def retire(self, version: int) -> Path:
        with self.lock():
            if version not in self.versions():
                raise StoreError(f"{self.base}: version {version} is not published")
            retired = self.base / contract.retired_name(version)
            os.rename(self.version_path(version), retired)
            fsync_dir(self.base)
        files = _file_sizes(retired)
        if not _seal_path(retired).is_file() and contract.SAVED_MODEL_FILE in files:
            # Published before exports were sealed: it was whole when served, so it may be
            # published again (`make publish STAGED=…/.retired-…`) like any retired version.
            _write_seal(retired, files)
        return retired

    def discard(self, staged: str | os.PathLike) -> None:
        staged = self._own_staged(staged)
        if not contract.is_staging_name(staged.name):
            raise StoreError(f"{staged}: not a staged folder ({contract.STAGING_PREFIX}…); not removed")
        shutil.rmtree(staged)
        fsync_dir(self.base)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """flock on <base>/.publish.lock; the kernel releases it if the holder dies."""
        self.base.mkdir(parents=True, exist_ok=True)
        path = os.path.realpath(self.base / contract.PUBLISH_LOCK_FILE)
        held = _locks_held.__dict__
        if held.get(path):
            held[path] += 1
            try:
                yield
            finally:
                held[path] -= 1
            return
        with open(path, "a") as lock_file:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX)
            held[path] = 1
            try:
                yield
            finally:
                held[path] = 0
                fcntl.flock(lock_file.fileno(), fcntl.LOCK_UN)

    def _own_staged(self, staged: str | os.PathLike) -> Path:
        """A staged folder of this store: non-numeric, a folder, on the base path's filesystem."""
        staged = Path(staged)
        if not staged.is_dir():
            raise StoreError(f"{staged}: no such staged folder")
        if contract.parse_version(staged.name) is not None:
            raise StoreError(f"{staged}: already has a version number; stage under a non-numeric name")
        self.base.mkdir(parents=True, exist_ok=True)
        if os.stat(staged).st_dev != os.stat(self.base).st_dev:
            # rename() across filesystems is a copy, which a server could see half-written.
            raise StoreError(f"{staged}: not on the same filesystem as {self.base}; stage inside the base path")
        if staged.resolve().parent != self.base.resolve():
            raise StoreError(f"{staged}: not in {self.base}; stage inside the base path "
                             f"(imgclf stages there itself)")
        return staged


def _seal_path(staged: Path) -> Path:
    return staged / contract.ASSETS_EXTRA_DIR / contract.SEAL_FILE


def _write_seal(folder: Path, files: dict[str, int]) -> None:
    marker = _seal_path(folder)
    marker.parent.mkdir(exist_ok=True)
    content = {"format": SEAL_FORMAT, "sealed_at": time.time(), "files": files}
    write_durably(marker, json.dumps(content, indent=1, sort_keys=True) + "\n")
    fsync_dir(folder)


def _file_sizes(root: Path) -> dict[str, int]:
    """{path relative to root: size} of every file below root, the seal marker aside."""
    sizes = {}
    marker = _seal_path(root)
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            path = Path(dirpath) / name
            if path != marker:
                sizes[path.relative_to(root).as_posix()] = path.lstat().st_size
    return sizes


def _last_change(root: Path) -> float:
    """The newest mtime of root and anything below it (0 when it vanished meanwhile)."""
    newest = 0.0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [".", *dirnames, *filenames]:
            try:
                newest = max(newest, os.lstat(os.path.join(dirpath, name)).st_mtime)
            except OSError:
                continue
    return newest


# --- durability helpers ---------------------------------------------------------------------------
def _fsync(path: str | os.PathLike, flags: int = os.O_RDONLY) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike) -> None:
    """Makes the names in a folder durable (a rename or a new file in it)."""
    _fsync(path, os.O_RDONLY | os.O_DIRECTORY)


def fsync_tree(root: str | os.PathLike) -> None:
    """fsync every file, then every folder (deepest first), so that all names and bytes are durable."""
    for dirpath, _, filenames in os.walk(root, topdown=False):
        for name in filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                _fsync(path)
        fsync_dir(dirpath)


def write_durably(path: Path, text: str) -> None:
    """Writes a file under a temporary name, fsyncs it, renames it into place and fsyncs the
    folder: a reader sees the whole file or none."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)
