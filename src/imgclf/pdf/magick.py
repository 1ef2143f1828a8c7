"""The `imagemagick` renderer: the original recipe run by the real programs, Ghostscript and
ImageMagick 6, as `convert "$pdf[0]" ...` runs them.

ImageMagick 6 reads a PDF by scanning its raw bytes and handing it to Ghostscript (coders/pdf.c,
ReadPDFImage). Debian's ImageMagick policy refuses PDF input, so this module does what that reader
does and gives only the rendered page to `convert`:
  1. a `/DeviceCMYK`, `/DefaultCMYK` or `/CMYKProcessColor` name in the bytes (case aside, outside
     the header line and the first XMP packet) makes it render in CMYK (`pamcmyk32`), else RGBA
     (`pngalpha`); an XMP packet (`<?xpacket begin=`) replaces the page's ICC profile, so the JPG
     carries none (which counts for the blank-page rule, a rule on bytes);
  2. Ghostscript renders page 1 at 72 dpi with ImageMagick's delegate arguments (delegates.xml);
  3. `convert PAGE <recipe> out.jpg`.
Checked against the shared dataset's JPGs, made with the real `convert "$pdf[0]"`: docs/pdfs.md.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from imgclf.pdf import recipe as recipes
from imgclf.pdf.problems import PageProblem

# What ReadPDFInfo reacts to, in the order it reads the bytes (it compares case-insensitively).
_TOKEN = re.compile(rb"%|<\?xpacket begin=|/(?:DefaultCMYK|DeviceCMYK|CMYKProcessColor|Separation)",
                    re.IGNORECASE)
_XMP_END = re.compile(rb"<\?xpacket end=[^>]*>", re.IGNORECASE)
_SPOT_NAME_END = re.compile(rb"[\s/]")
_LINE_END = re.compile(rb"[\r\n]")

# ImageMagick 6's "ps:alpha" / "ps:cmyk" delegates (Debian's delegates.xml), before the device.
_GS_ARGS = ["-sstdout=%stderr", "-dQUIET", "-dSAFER", "-dBATCH", "-dNOPAUSE", "-dNOPROMPT",
            "-dMaxBitmap=500000000", "-dAlignToPixels=0", "-dGridFitTT=2"]
_ANTIALIAS = ["-dTextAlphaBits=4", "-dGraphicsAlphaBits=4"]


def scan(data: bytes) -> tuple[bool, bool]:
    """(CMYK, has XMP) as ImageMagick 6's ReadPDFInfo decides them, reading the raw bytes in order:
    the first non-empty `%` line is the version; the first XMP packet is read whole; a
    `/Separation` is followed by its spot name, read up to and including the next space or `/`
    (so the `/` of `/Separation/Black/DeviceCMYK` is eaten and that CMYK name goes unseen)."""
    cmyk = xmp = version = False
    position = 0
    while token := _TOKEN.search(data, position):
        word, start = token.group(0).lower(), token.start()
        position = start + 1
        if word == b"%" and not version:   # up to 4095 characters, then one more is read
            end = _LINE_END.search(data, position, position + 4096)
            version = (end.start() if end else min(len(data), position + 1)) > position
            position = end.end() if end else position + 4096
        elif word.startswith(b"<") and not xmp:
            xmp, end = True, _XMP_END.search(data, token.end())
            position = end.end() if end else len(data)
        elif word == b"/separation":
            end = _SPOT_NAME_END.search(data, token.end() + 1)
            position = end.end() if end else len(data)
        elif word.startswith(b"/"):
            cmyk = True
        if cmyk and xmp:
            break
    return cmyk, xmp


def tools() -> dict[str, str]:
    """{"ghostscript": version, "imagemagick": version}; PageProblem when either is missing."""
    gs, convert = shutil.which("gs"), shutil.which("convert")
    if not gs or not convert:
        raise PageProblem("renderer missing", "the imagemagick renderer needs Ghostscript (gs) and "
                          "ImageMagick 6 (convert): apt-get install ghostscript imagemagick, or "
                          "choose RENDERER=pdfium (different pixels: docs/pdfs.md)")
    gs_version = _output([gs, "--version"]).strip()
    im_version = _output([convert, "-version"]).split("\n", 1)[0].replace("Version: ", "").strip()
    return {"ghostscript": gs_version, "imagemagick": im_version}


def _output(command: list[str]) -> str:
    return subprocess.run(command, capture_output=True, text=True, timeout=30).stdout


def render(pdf: Path, data: bytes, recipe: recipes.Recipe, deadline: float) -> bytes:
    """JPEG bytes of page 1, made as `convert "$pdf[0]"` with the recipe makes them."""
    cmyk, xmp = scan(data)
    with tempfile.TemporaryDirectory(prefix="imgclf-page-") as folder:
        work = Path(folder)
        (work / "control.ps").write_text(" ")   # ImageMagick's (empty) Ghostscript control file
        command = ghostscript_command("pamcmyk32" if cmyk else "pngalpha", recipe.density, work / "page%d")
        run([*command, f"-f{work / 'control.ps'}", f"-f{pdf.resolve()}"],
            deadline, "ghostscript", must_make=work / "page1")
        page = f"{'pam' if cmyk else 'png'}:{work / 'page1'}"
        drop_icc = ["+profile", "icc"] if xmp else []
        out = work / "page.jpg"
        # The PDF reader gives every page the density it rendered at, in no unit: the JFIF header
        # the original's JPGs carry (Ghostscript's PNG says dots per centimetre, its PAM nothing).
        resolution = ["-set", "units", "Undefined", "-density", f"{recipe.density}x{recipe.density}"]
        run([_which("convert"), page, *drop_icc, *resolution, *recipes.convert_args(recipe), f"jpg:{out}"],
            deadline, "imagemagick", must_make=out)
        return out.read_bytes()


def ghostscript_command(device: str, density: int, output: Path) -> list[str]:
    """gs with ImageMagick's delegate arguments, page 1 only; the input files go after it."""
    return [_which("gs"), *_GS_ARGS, f"-sDEVICE={device}", *_ANTIALIAS, f"-r{density}x{density}",
            "-dFirstPage=1", "-dLastPage=1", f"-sOutputFile={output}"]


def _which(program: str) -> str:
    found = shutil.which(program)
    if not found:
        tools()   # raises the message saying what to install
    return found


def run(command: list[str], deadline: float, name: str, must_make: Path) -> None:
    """Runs one program until the deadline; PageProblem unless it made `must_make`."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise PageProblem("timeout", f"no time left for {name}")
    env = dict(os.environ, MAGICK_THREAD_LIMIT="1")   # parallel over files, not inside one
    try:
        done = subprocess.run(command, capture_output=True, timeout=remaining, env=env,
                              preexec_fn=_die_with_parent)
    except subprocess.TimeoutExpired:
        raise PageProblem("timeout", f"{name} still running at the deadline; killed") from None
    if not must_make.is_file() or must_make.stat().st_size == 0:
        raise PageProblem(*classify(name, done.returncode, done.stderr.decode("utf-8", "replace")))


def classify(name: str, returncode: int, stderr: str) -> tuple[str, str]:
    """(kind, message) for a program that made no page, from its own last words."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    said = " | ".join(lines[-3:]) or f"exit status {returncode}"
    if "document has no pages" in stderr.lower():
        return "no pages", f"{name}: {said}"
    if "password" in stderr.lower():
        return "encrypted", f"{name}: {said}"
    if returncode < 0 or "memory" in stderr.lower() or "cache resources exhausted" in stderr.lower():
        return "render failed", f"{name}: {said} (exit status {returncode})"
    return ("corrupt" if name == "ghostscript" else "render failed"), f"{name}: {said}"


def _die_with_parent() -> None:
    """Linux: the program is killed with the worker that started it (a timed-out worker is killed
    from outside and must not leave Ghostscript running)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
    except OSError:
        pass
