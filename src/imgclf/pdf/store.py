"""Where rendered pages live, keyed by the PDF's content (sha1, the original tool's file name), and
the one question training and validation ask of any input file: which image is it?

Images are themselves. A PDF is its first page, rendered once through the worker pool and kept in
<cache>/<renderer key>/<sha1>.jpg (a blank page leaves <sha1>.blank), so a second run, or a
second command on the same files, reads the JPG instead of rendering again.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

from imgclf.pdf.pool import PagePool
from imgclf.pdf.problems import PageProblem
from imgclf.pdf.render import Page, RenderOptions, tool_versions

_CHUNK = 1 << 20
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def sha1_of(path: Path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def write_atomically(path: Path, data: bytes) -> None:
    """Written under a temporary name and renamed: a killed run never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    with os.fdopen(handle, "wb") as out:
        out.write(data)
    os.chmod(temporary, 0o666 & ~_UMASK)   # mkstemp makes it private; these are ordinary files
    os.replace(temporary, path)


def blank_reason(options: RenderOptions) -> str:
    return f"blank first page (its JPEG is under BLANK_BYTES={options.blank_bytes} bytes)"


class PageCache:
    """<root>/<key>/<sha1>.jpg and <sha1>.blank for one renderer's options."""

    def __init__(self, root: str | Path, options: RenderOptions):
        self.options = options
        self.folder = Path(root) / options.key(tool_versions(options.renderer))

    def jpeg_path(self, sha1: str) -> Path:
        return self.folder / f"{sha1}.jpg"

    def blank_path(self, sha1: str) -> Path:
        return self.folder / f"{sha1}.blank"

    def lookup(self, sha1: str) -> Page | None:
        if self.jpeg_path(sha1).is_file():
            return Page(sha1, jpeg=b"")     # present; read it from jpeg_path
        if self.blank_path(sha1).is_file():
            return Page(sha1, blank=True)
        return None

    def keep(self, page: Page) -> None:
        if page.jpeg:
            write_atomically(self.jpeg_path(page.sha1), page.jpeg)
        elif page.blank:
            write_atomically(self.blank_path(page.sha1), b"")


def is_pdf_name(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(".pdf")


class PdfImages:
    """image_path(file) for images and PDFs alike; PDFs render in `workers` processes, once."""

    def __init__(self, cache_dir: str | Path, options: RenderOptions, workers: int = 0,
                 memory_mb: int = 2048):
        self.options = options
        self.cache_dir, self.workers, self.memory_mb = Path(cache_dir), workers, memory_mb
        self._cache: PageCache | None = None
        self._pool: PagePool | None = None

    def __enter__(self) -> "PdfImages":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()

    @property
    def cache(self) -> PageCache:
        """Made on first use, so that folders without PDFs never need a renderer installed."""
        if self._cache is None:
            self._cache = PageCache(self.cache_dir, self.options)
            self._pool = PagePool(self.options, self.workers, self.memory_mb)
        return self._cache

    def image_path(self, path: Path) -> tuple[Path | None, str | None]:
        """(the image to read for this file, None), or (None, why there is none)."""
        if not is_pdf_name(path):
            return path, None
        try:
            sha1 = sha1_of(path)
        except OSError as error:
            return None, f"unreadable: {error.strerror or error}"
        try:
            page = self.cache.lookup(sha1) or self._render(path)
        except PageProblem as problem:   # the renderer itself is missing
            return None, str(problem)
        return self._answer(page)

    def image_bytes(self, path: Path) -> tuple[bytes | None, str | None]:
        """The bytes to classify for this file (a PDF's first page as JPEG), or (None, why not)."""
        image, problem = self.image_path(path)
        if image is None:
            return None, problem
        try:
            return image.read_bytes(), None
        except OSError as error:
            return None, f"cannot read file: {error.strerror or error}"

    def image_paths(self, paths: Iterable[Path]) -> Iterator[tuple[Path, Path | None, str | None]]:
        """(file, image, problem) for every file, PDFs rendered in parallel; images come first,
        then PDFs as they finish."""
        to_render = []
        for path in paths:
            if not is_pdf_name(path):
                yield path, path, None
                continue
            try:
                page = self.cache.lookup(sha1_of(path))
            except OSError as error:
                yield path, None, f"unreadable: {error.strerror or error}"
                continue
            if page is None:
                to_render.append(path)
            else:
                yield (path, *self._answer(page))
        if to_render:
            for path, page in self._pool.render_many(to_render):
                self.cache.keep(page)
                yield (path, *self._answer(page))

    def _render(self, path: Path) -> Page:
        page = self._pool.render(path)
        self.cache.keep(page)
        return page

    def _answer(self, page: Page) -> tuple[Path | None, str | None]:
        if page.problem is not None:
            return None, str(page.problem)
        if page.blank:
            return None, blank_reason(self.options)
        return self.cache.jpeg_path(page.sha1), None
