"""One PDF in, its first page's JPEG (or the reason there is none) out: what a worker process runs.

The checks every renderer shares come first (a PDF at all? a password? pages? a page of sane size?),
then the renderer draws, then the blank-page rule: the original kept no JPG under 3,000 bytes.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

from imgclf.pdf import magick, pdfium
from imgclf.pdf.problems import PageProblem
from imgclf.pdf.recipe import Recipe

RENDERERS = ("imagemagick", "pdfium")
# The original's JPGs carry Ghostscript's sRGB profile, a 2,594-byte APP2 segment (250 of the
# dataset's 373 files), unless the PDF has an XMP packet or renders in CMYK, and its 3,000-byte rule
# counted those bytes: without them most text pages would fall under it. A renderer that embeds no
# profile adds them back before applying the rule, so that it drops the pages the original dropped.
_GHOSTSCRIPT_PROFILE_BYTES = 2594


@dataclass(frozen=True)
class RenderOptions:
    """Everything that decides the page a PDF becomes (and so the cache key), and the limits."""

    renderer: str = "imagemagick"
    blank_bytes: int = 3000          # a JPEG under this many bytes is a blank page (0: keep all)
    max_pages: int = 100_000
    max_page_inches: float = 100.0
    timeout: float = 120.0           # seconds for one PDF, everything included
    recipe: Recipe = Recipe()

    @classmethod
    def from_settings(cls, settings) -> "RenderOptions":
        """From settings.PagesSettings (make pages, and the limits train and validate use)."""
        return cls(renderer=settings.renderer, blank_bytes=settings.blank_bytes, max_pages=settings.max_pages,
                   max_page_inches=settings.max_page_inches, timeout=settings.timeout)

    def key(self, tool_versions: dict[str, str]) -> str:
        """Names a cache: the same PDF bytes under the same key always give the same page."""
        described = {"renderer": self.renderer, "blank_bytes": self.blank_bytes,
                     "recipe": self.recipe.as_dict(), "tools": tool_versions, "format": 1}
        text = json.dumps(described, sort_keys=True)
        return f"{self.renderer}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


@dataclass(frozen=True)
class Page:
    """What became of one file: a JPEG, a blank page, or a problem."""

    sha1: str
    jpeg: bytes | None = None
    blank: bool = False
    problem: PageProblem | None = None


def tool_versions(renderer: str) -> dict[str, str]:
    """The programs or libraries a renderer draws with; PageProblem when they are not there."""
    if renderer == "imagemagick":
        return magick.tools()
    if renderer == "pdfium":
        import pypdfium2.version

        return {"pdfium": str(pypdfium2.version.PDFIUM_INFO),
                "pypdfium2": str(pypdfium2.version.PYPDFIUM_INFO)}
    raise PageProblem("renderer missing", f"unknown renderer {renderer!r}: use one of {', '.join(RENDERERS)}")


def render_file(path: str | Path, options: RenderOptions) -> Page:
    """The page of one file; never raises for a bad file (the problem is in Page.problem)."""
    started = time.monotonic()
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        return Page("", problem=PageProblem("unreadable", error.strerror or str(error)))
    sha1 = hashlib.sha1(data).hexdigest()
    try:
        jpeg = draw(Path(path), data, options, deadline=started + options.timeout)
    except PageProblem as problem:
        return Page(sha1, problem=problem)
    except MemoryError:
        return Page(sha1, problem=PageProblem("render failed", "out of memory (raise MEMORY_MB?)"))
    if len(jpeg) + profile_bytes(data, options) < options.blank_bytes:
        return Page(sha1, blank=True)
    return Page(sha1, jpeg=jpeg)


def draw(path: Path, data: bytes, options: RenderOptions, deadline: float) -> bytes:
    if options.renderer not in RENDERERS:
        tool_versions(options.renderer)   # raises: unknown renderer
    try:
        check_limits(pdfium.inspect(data), options)
    except PageProblem as problem:
        if problem.kind != "corrupt" or options.renderer != "imagemagick":
            raise
        return repaired(path, data, options, deadline, problem)
    if options.renderer == "imagemagick":
        return magick.render(path, data, options.recipe, deadline)
    return pdfium.render(data, options.recipe)


def repaired(path: Path, data: bytes, options: RenderOptions, deadline: float,
             problem: PageProblem) -> bytes:
    """Ghostscript repairs some files PDFium gives up on, and the original would have had their
    page; when it cannot either, PDFium's verdict stands, with Ghostscript's words added."""
    try:
        return magick.render(path, data, options.recipe, deadline)
    except PageProblem as also:
        if also.kind in ("timeout", "renderer missing"):
            raise
        kind = also.kind if also.kind in ("no pages", "encrypted") else problem.kind
        raise PageProblem(kind, f"{problem.message}; {also.message}") from None


def profile_bytes(data: bytes, options: RenderOptions) -> int:
    """Bytes of colour profile the original's JPG would carry and this renderer's lacks."""
    if options.renderer == "imagemagick":
        return 0   # the real programs embed it themselves
    cmyk, xmp = magick.scan(data)
    return 0 if cmyk or xmp else _GHOSTSCRIPT_PROFILE_BYTES


def check_limits(facts: pdfium.Facts, options: RenderOptions) -> None:
    if options.max_pages and facts.pages > options.max_pages:
        raise PageProblem("too many pages", f"{facts.pages} pages (limit MAX_PAGES={options.max_pages})")
    longest = max(facts.width_pt, facts.height_pt) / 72.0
    if options.max_page_inches and longest > options.max_page_inches:
        raise PageProblem("page too large", f"page 1 is {facts.width_pt / 72:.0f} x {facts.height_pt / 72:.0f} "
                          f"inches (limit MAX_PAGE_INCHES={options.max_page_inches:g})")
