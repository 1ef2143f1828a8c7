"""PDFs in: the renderers against the original's own JPGs, the recipe against ImageMagick, and
`imgclf pages` on a folder of real PDFs, bad ones included (tests/data/pdfs/README.md)."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgclf.pdf import magick, pool, recipe
from imgclf.pdf.cli import main as pages_main
from imgclf.pdf.pages import STATE_DIR
from imgclf.pdf.render import RenderOptions, render_file
from imgclf.pdf.store import PdfImages
from imgclf.settings import PagesSettings

DATA = Path(__file__).parent / "data" / "pdfs"
GOOD = ["issue20489.pdf", "ZapfDingbats.pdf", "issue1002.pdf", "bug886717.pdf"]
HAVE_MAGICK = bool(shutil.which("gs") and shutil.which("convert"))
needs_magick = pytest.mark.skipif(not HAVE_MAGICK, reason="Ghostscript and ImageMagick are not installed")


def sha1(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def pixels(jpeg: bytes) -> tuple[str, np.ndarray]:
    image = Image.open(io.BytesIO(jpeg))
    return image.mode, np.asarray(image)


# --- ImageMagick's PDF reader, emulated -----------------------------------------------------------
def test_scan_finds_cmyk_names_outside_the_header_and_xmp():
    assert magick.scan(b"%PDF-1.4\n1 0 obj [/ICCBased 2 0 R] endobj") == (False, False)
    assert magick.scan(b"%PDF-1.4\n/ColorSpace /DeviceCMYK") == (True, False)
    assert magick.scan(b"%PDF-1.4\n/colorspace /devicecmyk") == (True, False)      # case aside
    assert magick.scan(b"%PDF-1.4 /DeviceCMYK\n") == (False, False)                  # header line
    xmp = b"<?xpacket begin='' id='W5M0'?><x/DeviceCMYK/><?xpacket end='w'?>"
    assert magick.scan(b"%PDF-1.4\n" + xmp) == (False, True)                         # inside XMP
    assert magick.scan(b"%PDF-1.4\n" + xmp + b"/DefaultCMYK") == (True, True)


def test_scan_eats_the_slash_after_a_spot_colour_name_as_imagemagick_does():
    # ReadPDFInfo reads a /Separation's name up to and including the next '/' or space.
    assert magick.scan(b"%PDF-1.4\n[/Separation/Black/DeviceCMYK 5 0 R]") == (False, False)
    assert magick.scan(b"%PDF-1.4\n[/Separation /Black /DeviceCMYK 5 0 R]") == (True, False)


# --- the recipe in numpy, against ImageMagick ------------------------------------------------------
@needs_magick
def test_numpy_recipe_matches_convert_on_a_ghostscript_page(tmp_path):
    page = tmp_path / "page.png"   # with alpha, as ImageMagick has Ghostscript render it
    subprocess.run(["gs", "-q", "-dSAFER", "-dBATCH", "-dNOPAUSE", "-sDEVICE=pngalpha", "-r72",
                    "-dFirstPage=1", "-dLastPage=1", f"-sOutputFile={page}", str(DATA / "issue1002.pdf")],
                   check=True)
    rgba = Image.open(page).convert("RGBA")
    rgb = np.asarray(Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB"))
    ours = recipe.finish(rgb, recipe.Recipe())
    theirs = tmp_path / "theirs.jpg"
    subprocess.run(["convert", str(page), *recipe.convert_args(recipe.Recipe()), str(theirs)], check=True)
    assert pixels(ours)[0] == pixels(theirs.read_bytes())[0]
    difference = np.abs(pixels(ours)[1].astype(int) - pixels(theirs.read_bytes())[1])
    # Equalise, sample, Mitchell resize and extent are ImageMagick's arithmetic; what is left comes
    # from compositing the alpha at 8 bits here, at 16 inside ImageMagick.
    assert difference.mean() < 0.1 and np.mean(difference <= 2) > 0.99, (difference.mean(), difference.max())


def test_pillow_equalize_is_not_imagemagicks():
    """Why the recipe has its own equalise: ImageOps.equalize maps channels one by one."""
    from PIL import ImageOps

    page = np.full((40, 40, 3), 255, np.uint8)
    page[5:15, 5:30] = (200, 40, 40)
    page[20:30, 5:30] = (30, 30, 30)
    ours = recipe.equalize(page.astype(float) * 257) / 257
    theirs = np.asarray(ImageOps.equalize(Image.fromarray(page)))
    assert np.abs(ours - theirs).max() > 50


# --- the renderers against the original's JPGs -----------------------------------------------------
@needs_magick
@pytest.mark.parametrize("name", GOOD)
def test_imagemagick_renderer_reproduces_the_originals_jpg(name):
    pdf = DATA / name
    expected = (DATA / "expected" / f"{sha1(pdf)}.jpg").read_bytes()
    page = render_file(pdf, RenderOptions(renderer="imagemagick"))
    assert page.problem is None and page.jpeg
    mode, ours = pixels(page.jpeg)
    assert mode == pixels(expected)[0]                      # L, RGB or CMYK, as the original
    assert np.array_equal(ours, pixels(expected)[1])        # pixel for pixel
    assert page.jpeg == expected                            # byte for byte: same blank verdicts


@pytest.mark.parametrize("name", GOOD)
def test_pdfium_renderer_is_close_to_the_originals_jpg(name):
    pdf = DATA / name
    expected = Image.open(DATA / "expected" / f"{sha1(pdf)}.jpg").convert("RGB")
    page = render_file(pdf, RenderOptions(renderer="pdfium", blank_bytes=0))
    assert page.problem is None
    ours = np.asarray(Image.open(io.BytesIO(page.jpeg)).convert("RGB")).astype(int)
    assert ours.shape == (224, 224, 3)
    # Another rasteriser: text edges differ, the layout does not (docs/pdfs.md has the figures).
    assert np.abs(ours - np.asarray(expected)).mean() < 25


# --- bad files: one clear problem each ------------------------------------------------------------
@pytest.mark.parametrize("renderer", ["imagemagick", "pdfium"])
@pytest.mark.parametrize("name, kind", [
    ("encrypted-user-password.pdf", "encrypted"),
    ("not-a-pdf.pdf", "not a PDF"),
    ("truncated.pdf", "corrupt"),
    ("huge-page.pdf", "page too large"),
])
def test_bad_pdfs_give_one_problem_each(renderer, name, kind):
    if renderer == "imagemagick" and not HAVE_MAGICK:
        pytest.skip("Ghostscript and ImageMagick are not installed")
    page = render_file(DATA / name, RenderOptions(renderer=renderer))
    assert page.jpeg is None and page.problem is not None
    assert page.problem.kind == kind, page.problem
    assert "\n" not in str(page.problem)


@needs_magick
def test_zero_pages_and_repairable_files_under_imagemagick():
    assert render_file(DATA / "zero-pages.pdf", RenderOptions()).problem.kind == "no pages"
    # PDFium reports the previous failure's error code for an empty document: not "encrypted".
    render_file(DATA / "encrypted-user-password.pdf", RenderOptions())
    assert render_file(DATA / "zero-pages.pdf", RenderOptions()).problem.kind == "no pages"
    # Broken cross-references and an empty user password: rendered, as the original rendered them.
    for name in ("xref-command-missing.pdf", "encrypted-empty-password.pdf"):
        page = render_file(DATA / name, RenderOptions(blank_bytes=0))
        assert page.problem is None and page.jpeg, (name, page.problem)


def test_page_count_limit():
    page = render_file(DATA / "two-pages.pdf", RenderOptions(renderer="pdfium", max_pages=1))
    assert page.problem.kind == "too many pages" and "MAX_PAGES=1" in page.problem.message


def test_blank_rule_counts_the_originals_profile_bytes():
    """issue20489's page is a few lines of text: its JPG is 6,232 bytes with Ghostscript's 2,594-byte
    profile. Raising BLANK_BYTES past it marks it blank, for either renderer."""
    for renderer in ("pdfium",) + (("imagemagick",) if HAVE_MAGICK else ()):
        kept = render_file(DATA / "issue20489.pdf", RenderOptions(renderer=renderer))
        assert kept.jpeg and not kept.blank
        dropped = render_file(DATA / "issue20489.pdf", RenderOptions(renderer=renderer, blank_bytes=20_000))
        assert dropped.blank and dropped.jpeg is None


# --- time limits: a stuck PDF costs one worker, never the run ---------------------------------------
@needs_magick
def test_ghostscript_past_the_deadline_is_killed(tmp_path):
    page = render_file(DATA / "bug886717.pdf", RenderOptions(timeout=0.05))
    assert page.problem.kind == "timeout"
    leftover = subprocess.run(["pgrep", "-f", str(DATA / "bug886717.pdf")], capture_output=True, text=True)
    assert leftover.stdout.strip() == ""


def test_a_worker_stuck_past_the_deadline_is_killed_and_replaced(tmp_path, monkeypatch):
    slow = tmp_path / "slow.pdf"
    slow.write_bytes(pathological_pdf(1_500_000))    # about 4 s of PDFium on an idle core
    monkeypatch.setattr(pool, "_GRACE_SECONDS", 0.0)
    with pool.PagePool(RenderOptions(renderer="pdfium", timeout=1.0, blank_bytes=0), workers=1) as workers:
        [(_, stuck)] = list(workers.render_many([slow]))
        assert stuck.problem.kind == "timeout" and "worker was killed" in stuck.problem.message
        workers.options = RenderOptions(renderer="pdfium", timeout=300, blank_bytes=0)
        assert workers.render(DATA / "issue1002.pdf").jpeg          # the pool goes on, a new worker


def pathological_pdf(rectangles: int) -> bytes:
    """A one-page PDF whose page draws `rectangles` tiny squares: seconds of work for PDFium."""
    import zlib

    ops = "".join(f"{i % 600} {i // 600 % 800} 0.5 0.5 re f\n" for i in range(rectangles)).encode()
    stream = zlib.compress(ops)
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>",
               b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
               b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream"]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer << /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


# --- imgclf pages -----------------------------------------------------------------------------------
def pdf_tree(root: Path) -> Path:
    """Class folders of real PDFs, the bad ones among them, as a user's crawl would be."""
    for folder, names in {"other": GOOD[:3], "mixed": ["encrypted-user-password.pdf", "not-a-pdf.pdf",
                                                        "truncated.pdf", "huge-page.pdf", "two-pages.pdf"]}.items():
        (root / folder).mkdir(parents=True)
        for name in names:
            shutil.copy(DATA / name, root / folder / name)
    return root


def test_pages_renders_a_tree_reports_bad_files_and_resumes(tmp_path, capsys):
    pdfs, out = pdf_tree(tmp_path / "pdfs"), tmp_path / "out"
    argv = ["--pdfs", str(pdfs), "--out", str(out), "--renderer", "pdfium", "--workers", "2", "--progress", "0"]
    assert pages_main(argv) == 0
    captured = capsys.readouterr()
    for name in GOOD[:3] + ["two-pages.pdf"]:
        folder = "other" if name in GOOD else "mixed"
        assert (out / folder / f"{sha1(DATA / name)}.jpg").is_file(), name
    lines = [line for line in captured.err.splitlines() if line.split(":")[0] in
             ("encrypted", "not a PDF", "corrupt", "page too large")]
    assert len(lines) == 4 and all(str(pdfs) in line for line in lines)
    assert "4 rendered, 0 already there, 0 blank, 4 failed" in captured.out
    assert "1 not a PDF, 1 encrypted, 1 corrupt, 1 page too large" in captured.out
    assert "pages/s per worker" in captured.out

    made = {p: p.stat().st_mtime_ns for p in out.rglob("*.jpg")}
    (pdfs / "other" / "copy-of-issue1002.pdf").write_bytes((DATA / "issue1002.pdf").read_bytes())
    assert pages_main(argv) == 0
    again = capsys.readouterr().out
    assert "0 rendered, 5 already there" in again               # keyed by content, not by name
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.jpg")} == made


def test_pages_remembers_blank_pages(tmp_path, capsys):
    pdfs, out = tmp_path / "pdfs", tmp_path / "out"
    pdfs.mkdir()
    shutil.copy(DATA / "issue20489.pdf", pdfs)
    argv = ["--pdfs", str(pdfs), "--out", str(out), "--renderer", "pdfium", "--blank-bytes", "20000",
            "--progress", "0"]
    assert pages_main(argv) == 0 and "1 blank" in capsys.readouterr().out
    assert not list(out.rglob("*.jpg")) and list((out / STATE_DIR).rglob("*.blank"))
    assert pages_main(argv) == 0 and "0 rendered, 0 already there, 1 blank" in capsys.readouterr().out


def test_pages_usage_errors(tmp_path, capsys):
    assert pages_main(["--pdfs", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert pages_main(["--pdfs", str(tmp_path), "--out", str(tmp_path / "out"), "--renderer", "magic"]) == 2
    assert pages_main(["--pdfs", str(tmp_path), "--out", str(tmp_path / "out")]) == 1


# --- the content-keyed cache train and validate read through ---------------------------------------
def test_pdf_images_renders_once_and_answers_for_images_too(tmp_path):
    image = tmp_path / "page.jpg"
    Image.new("RGB", (8, 8), "white").save(image)
    with PdfImages(tmp_path / "cache", PagesSettings(renderer="pdfium", workers=1)) as pdfs:
        assert pdfs.image_path(image) == (image, None)
        first, problem = pdfs.image_path(DATA / "issue1002.pdf")
        assert problem is None and first.name == f"{sha1(DATA / 'issue1002.pdf')}.jpg"
        data, _ = pdfs.image_bytes(DATA / "issue1002.pdf")
        assert data == first.read_bytes()
        none, why = pdfs.image_path(DATA / "encrypted-user-password.pdf")
        assert none is None and why.startswith("encrypted")
        listed = {p.name: (img, why) for p, img, why in pdfs.image_paths(
            [image, DATA / "issue1002.pdf", DATA / "not-a-pdf.pdf"])}
    assert listed["issue1002.pdf"] == (first, None) and listed["page.jpg"] == (image, None)
    assert listed["not-a-pdf.pdf"][1].startswith("not a PDF")


def test_a_cache_that_cannot_be_written_costs_only_the_cache(tmp_path, caplog):
    """A read-only or full cache folder (a container's small /tmp): pages still come back."""
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache folder should be")
    with PdfImages(blocked, PagesSettings(renderer="pdfium", workers=1)) as pdfs:
        data, why = pdfs.image_bytes(DATA / "issue1002.pdf")
        again, _ = pdfs.image_bytes(DATA / "issue1002.pdf")
    assert why is None and data[:2] == b"\xff\xd8" and again == data
    assert caplog.text.count("PDF page cache") == 1


@needs_magick
def test_pages_bench_measures_the_renderers_against_the_originals_jpgs(tmp_path, capsys):
    from imgclf import pages_bench

    figures = tmp_path / "bench.json"
    assert pages_bench.main(["--pdfs", str(DATA), "--reference", str(DATA / "expected"),
                             "--candidates", "imagemagick,pdfium", "--output", str(figures)]) == 0
    rows = json.loads(figures.read_text())["rows"]
    assert rows["imagemagick"]["pages"] == rows["imagemagick"]["identical"] == len(GOOD)
    assert rows["pdfium"]["pages"] == len(GOOD) and 0 < np.mean(rows["pdfium"]["mad"]) < 25
    assert "imagemagick" in capsys.readouterr().out
