"""Streaming the files of a folder into batches and running them with a bounded number in flight,
so that memory stays flat however many files there are."""

from __future__ import annotations

import itertools
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Iterator, TypeVar

from imgclf.data_folders import iter_image_files

T = TypeVar("T")
R = TypeVar("R")


def iter_batches(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of `size` items (the last may be shorter), pulled lazily."""
    if size < 1:
        raise ValueError(f"batch size must be at least 1, got {size}")
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


def image_files(root: str | os.PathLike, shard: str = "", with_pdfs: bool = False) -> Iterator[Path]:
    """The files under root that iter_image_files yields, or shard i/N's share of them."""
    from imgclf.client.shards import select

    return select(iter_image_files(root, with_pdfs=with_pdfs), Path(root), shard)


def count_image_files(root: str | os.PathLike, shard: str = "", with_pdfs: bool = False) -> int:
    """How many files image_files will yield (one directory walk; nothing kept)."""
    return sum(1 for _ in image_files(root, shard, with_pdfs))


def true_label(path: Path, root: Path) -> str | None:
    """The class folder a file sits in: the first folder below root, or None for files at the top."""
    parts = path.relative_to(root).parts
    return parts[0] if len(parts) > 1 else None


def read_file(path: Path) -> tuple[bytes | None, str | None]:
    """(bytes, None), or (None, reason) when the file cannot be read."""
    try:
        return path.read_bytes(), None
    except OSError as error:
        return None, f"cannot read file: {error.strerror or error}"


def ordered_bounded_map(function: Callable[[T], R], items: Iterable[T], workers: int,
                        window: int | None = None) -> Iterator[R]:
    """function(item) for every item, `workers` at a time, results in input order.

    At most `window` items (default 2 x workers) are submitted and not yet consumed, so items are
    pulled from `items` only as results are taken: memory does not grow with the input. If a call
    raises, the exception surfaces when its result is reached and the calls not yet started are
    cancelled."""
    window = window or 2 * workers
    pending: deque[Future] = deque()
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="imgclf-client")
    try:
        for item in items:
            pending.append(pool.submit(function, item))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True)
