"""The `pdfium` renderer, and what every renderer asks of a PDF before drawing it.

PDFium (the pypdfium2 wheel: no system packages) draws page 1 on white at the recipe's density;
recipe.finish then does the original's steps in numpy. Its rasteriser is not Ghostscript's, so
pages differ slightly from the original's (measured in docs/pdfs.md); choose it where Ghostscript
and ImageMagick cannot be installed.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pypdfium2
import pypdfium2.raw as pdfium_c

from imgclf.pdf import recipe as recipes
from imgclf.pdf.problems import PageProblem

_HEADER_WINDOW = 1024   # Ghostscript and PDFium accept junk before %PDF- within the first 1 KiB


@dataclass(frozen=True)
class Facts:
    pages: int
    width_pt: float     # page 1's MediaBox (what Ghostscript draws), in points (1/72 inch)
    height_pt: float


def inspect(data: bytes) -> Facts:
    """Page count and page 1's size; PageProblem for a file that is not a PDF, needs a password,
    cannot be parsed or has no pages."""
    if b"%PDF-" not in data[:_HEADER_WINDOW]:
        shown = data[:24].decode("latin-1").encode("unicode_escape").decode("ascii")
        raise PageProblem("not a PDF", f"no %PDF- header (starts with {shown!r})" if data else "empty file")
    document = open_document(data)
    try:
        count = len(document)
        if count == 0:
            raise PageProblem("no pages", "the document has no pages")
        left, bottom, right, top = document[0].get_mediabox()
        return Facts(count, abs(right - left), abs(top - bottom))
    finally:
        document.close()


def open_document(data: bytes) -> pypdfium2.PdfDocument:
    try:
        return pypdfium2.PdfDocument(data)
    except pypdfium2.PdfiumError as error:
        # PDFium fails to load an empty page tree without setting an error code of its own: the
        # code reported is then the previous failure's in this process. So "password" is believed
        # only of a file that has an /Encrypt dictionary (a trailer or cross-reference stream
        # entry, never compressed); corrupt and empty are told apart by Ghostscript.
        if error.err_code in (pdfium_c.FPDF_ERR_PASSWORD, pdfium_c.FPDF_ERR_SECURITY) and b"/Encrypt" in data:
            raise PageProblem("encrypted", "needs a password to open") from None
        raise PageProblem("corrupt", "PDFium cannot load it (broken, or no pages)") from None


def render(data: bytes, recipe: recipes.Recipe) -> bytes:
    """JPEG bytes of page 1: drawn by PDFium, finished by the recipe."""
    document = open_document(data)
    try:
        with warnings.catch_warnings():   # "XFA forms need another PDFium build": the fields render
            warnings.simplefilter("ignore")
            document.init_forms()         # form fields are drawn, as Ghostscript draws them
        page = document[0]
        # Ghostscript, as ImageMagick calls it, draws the whole MediaBox; PDFium the CropBox.
        page.set_cropbox(*page.get_mediabox())
        bitmap = page.render(scale=recipe.density / 72.0, fill_color=(255, 255, 255, 255))
        pixels = np.array(bitmap.to_numpy()[..., :3], copy=True)
        pixels = pixels[..., ::-1] if bitmap.mode in ("BGR", "BGRA", "BGRX") else pixels
    except pypdfium2.PdfiumError as error:
        raise PageProblem("render failed", f"PDFium: {error}") from None
    finally:
        document.close()
    return recipes.finish(pixels, recipe)
