"""Where rendered pages live, keyed by the PDF's content (sha1, the original tool's file name), and
the one question training and validation ask of any input file: which image is it?

Images are themselves. A PDF is its first page, rendered once through the worker pool and kept in
<cache>/<renderer key>/<sha1>.jpg (a blank page leaves <sha1>.blank), so a second run, or a
second command on the same files, reads the JPG instead of rendering again.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

from imgclf.pdf.problems import PageProblem
from imgclf.progress import Progress
from imgclf.settings import PagesSettings

if TYPE_CHECKING:   # the renderers (numpy, PDFium) load only once a PDF turns up
    from imgclf.pdf.render import Page, RenderOptions

log = logging.getLogger(__name__)
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


def blank_reason(options: "RenderOptions") -> str:
    return f"blank first page (its JPEG is under BLANK_BYTES={options.blank_bytes} bytes)"


class PageCache:
    """<root>/<key>/<sha1>.jpg and <sha1>.blank for one renderer's options."""

    def __init__(self, root: str | Path, options: RenderOptions):
        from imgclf.pdf.render import tool_versions

        self.options = options
        self.folder = Path(root) / options.key(tool_versions(options.renderer))

    def jpeg_path(self, sha1: str) -> Path:
        return self.folder / f"{sha1}.jpg"

    def blank_path(self, sha1: str) -> Path:
        return self.folder / f"{sha1}.blank"

    def lookup(self, sha1: str) -> Page | None:
        from imgclf.pdf.render import Page

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


def default_cache_dir() -> Path:
    """Where `make validate` keeps rendered pages unless told: the user's cache folder."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "imgclf" / "pages"


def for_command(renderer: str, cache_dir: str | Path, progress: bool = False) -> "PdfImages":
    """The PDFs `make train` and `make validate` meet: the renderer asked for, the limits and
    worker count of settings.PagesSettings."""
    return PdfImages(cache_dir or default_cache_dir(), PagesSettings(renderer=renderer), progress)


def training_cache_dir(pdf_cache: str | os.PathLike, models: str | os.PathLike) -> Path:
    """Where `make train` keeps the pages of the PDFs in DATA: PDF_CACHE, else <MODELS>/.cache/pages
    (beside the feature cache)."""
    return Path(pdf_cache) if pdf_cache else Path(models) / ".cache" / "pages"


def is_pdf_name(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(".pdf")


class PdfImages:
    """image_path(file) for images and PDFs alike; PDFs render in `workers` processes, once."""

    def __init__(self, cache_dir: str | Path, settings: PagesSettings, progress: bool = False):
        self.cache_dir, self.settings, self.progress = Path(cache_dir), settings, progress
        self._cache: PageCache | None = None
        self._pool = None
        self._cache_failed = False

    def __enter__(self) -> "PdfImages":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()

    @property
    def cache(self) -> PageCache:
        """Made on first use, so that folders without PDFs need no renderer (nor numpy, PDFium)."""
        if self._cache is None:
            try:
                from imgclf.pdf.pool import PagePool
                from imgclf.pdf.render import RenderOptions
            except ImportError as error:
                raise PageProblem("renderer missing", f"PDFs need the pdf extra (pip install "
                                  f"'imgclf[pdf]'): {error}") from None
            options = RenderOptions.from_settings(self.settings)
            self._cache = PageCache(self.cache_dir, options)
            self._pool = PagePool(options, self.settings.workers, self.settings.memory_mb)
        return self._cache

    def image_path(self, path: Path) -> tuple[Path | None, str | None]:
        """(the image to read for this file, None), or (None, why there is none)."""
        if not is_pdf_name(path):
            return path, None
        page, problem = self._page(path)
        return (None, problem) if page is None else self._answer(page)

    def image_bytes(self, path: Path) -> tuple[bytes | None, str | None]:
        """The bytes to classify for this file (a PDF's first page as JPEG), or (None, why not)."""
        page, problem = self._page(path) if is_pdf_name(path) else (None, None)
        if page is not None and page.jpeg:
            return page.jpeg, None          # just rendered: even when the cache could not keep it
        image, problem = self._answer(page) if page is not None else (path, problem)
        if image is None:
            return None, problem
        try:
            return image.read_bytes(), None
        except OSError as error:
            return None, f"cannot read file: {error.strerror or error}"

    def _page(self, path: Path) -> tuple[Page | None, str | None]:
        """The cached or freshly rendered Page of a PDF, or (None, why not)."""
        try:
            return self.cache.lookup(sha1_of(path)) or self._render(path), None
        except OSError as error:
            return None, f"unreadable: {error.strerror or error}"
        except PageProblem as problem:   # the renderer itself is missing
            return None, str(problem)

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
            except PageProblem as problem:   # the renderer is not installed
                yield path, None, str(problem)
                continue
            if page is None:
                to_render.append(path)
            else:
                yield (path, *self._answer(page))
        if to_render:
            with Progress(len(to_render), "pages", "pdf", enabled=self.progress) as bar:
                for path, page in self._pool.render_many(to_render):
                    self._keep(page)
                    bar.update(1)
                    yield (path, *self._answer(page))

    def _render(self, path: Path) -> Page:
        page = self._pool.render(path)
        self._keep(page)
        return page

    def _keep(self, page: Page) -> None:
        """The cache saves work; a full or read-only cache folder costs only that (one warning)."""
        try:
            self.cache.keep(page)
        except OSError as error:
            if not self._cache_failed:
                log.warning("PDF page cache %s: %s; pages are rendered again next time",
                            self.cache.folder, error.strerror or error)
            self._cache_failed = True

    def _answer(self, page: Page) -> tuple[Path | None, str | None]:
        if page.problem is not None:
            return None, str(page.problem)
        if page.blank:
            return None, blank_reason(self.cache.options)
        return self.cache.jpeg_path(page.sha1), None
