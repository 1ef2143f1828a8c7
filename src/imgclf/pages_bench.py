"""`imgclf pages-bench`: how close each way of rendering PDFs comes to the original's JPGs.

    imgclf pages-bench --pdfs DIR --reference DIR [--model VERSION_DIR] [--output FILE]

Every PDF under --pdfs whose sha1 names a JPG under --reference (the original tool's naming, as in
the shared pdf-first-pages dataset) is rendered by each candidate; the table gives, per candidate,
the share of pages pixel-identical to the reference, the mean absolute difference of the pixels the
model sees (0-255, decoded as the serving graph decodes them), the share of blank-page verdicts
that differ, seconds per page (one process, side by side in one run) and, with --model, how often
the model's top class is the one it gives the reference. Candidates besides the product's two
renderers separate the rasteriser's share of the difference from the recipe's.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from imgclf.pdf import magick, pdfium, recipe as recipes
from imgclf.pdf.problems import PageProblem
from imgclf.pdf.render import RenderOptions, profile_bytes, render_file

RECIPE = recipes.Recipe()
PDFIUM = RenderOptions(renderer="pdfium")


def ghostscript_then_numpy(path: Path, data: bytes) -> bytes:
    """Ghostscript's page as ImageMagick asks for it (RGBA), then the recipe in numpy."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "page.png"
        subprocess.run([*magick.ghostscript_command("pngalpha", RECIPE.density, out), str(path)],
                       capture_output=True, timeout=300)
        return recipes.finish(_on_white(out.read_bytes()), RECIPE)


def poppler_then_numpy(path: Path, data: bytes) -> bytes:
    """poppler's pdftoppm (MediaBox, 72 dpi), then the recipe in numpy."""
    done = subprocess.run(["pdftoppm", "-r", "72", "-f", "1", "-l", "1", "-singlefile", "-png",
                           str(path)], capture_output=True, timeout=300)
    return recipes.finish(_on_white(done.stdout), RECIPE)


def pdfium_then_pillow(path: Path, data: bytes) -> bytes:
    """PDFium, then the recipe as Pillow's own operations would do it (ImageOps.equalize, a plain
    Lanczos thumbnail, default JPEG settings): what a quick port of the shell line gives."""
    from PIL import Image, ImageOps

    document = pdfium.open_document(data)
    try:
        page = document[0].render(scale=1.0, fill_color=(255, 255, 255, 255)).to_pil().convert("RGB")
    finally:
        document.close()
    page = ImageOps.equalize(page)
    page.thumbnail((RECIPE.width, 10 * RECIPE.width), Image.LANCZOS)
    canvas = Image.new("RGB", (RECIPE.canvas, RECIPE.canvas), "white")
    canvas.paste(page, ((RECIPE.canvas - page.width) // 2, 0))
    out = io.BytesIO()
    canvas.save(out, "JPEG", quality=RECIPE.quality)
    return out.getvalue()


def _on_white(png: bytes) -> np.ndarray:
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGBA")
    white = Image.new("RGBA", image.size, (255, 255, 255, 255))
    return np.asarray(Image.alpha_composite(white, image).convert("RGB"))


def product(renderer: str):
    def render(path: Path, data: bytes) -> bytes:
        page = render_file(path, RenderOptions(renderer=renderer, blank_bytes=0, timeout=600))
        if page.problem:
            raise page.problem
        return page.jpeg
    return render


CANDIDATES = {
    "imagemagick": product("imagemagick"),
    "pdfium": product("pdfium"),
    "ghostscript+numpy": ghostscript_then_numpy,
    "poppler+numpy": poppler_then_numpy,
    "pdfium+pillow": pdfium_then_pillow,
}


def decode(jpeg: bytes) -> np.ndarray:
    """uint8 [224, 224, 3] as the serving graph decodes it (TensorFlow, CMYK JPEGs included)."""
    import tensorflow as tf

    return tf.io.decode_jpeg(jpeg, channels=3).numpy()


def references(root: Path) -> dict[str, Path]:
    return {p.stem: p for p in root.rglob("*.jpg")}


def measure(pdfs: list[Path], refs: dict[str, Path], names: list[str]) -> dict:
    """Per candidate: identical share, mean abs difference, blank disagreements, s/page; and the
    rendered JPEGs (for the model comparison)."""
    rows = {name: {"pages": 0, "identical": 0, "mad": [], "seconds": 0.0, "errors": 0,
                   "blank_disagreements": 0, "jpegs": {}} for name in names}
    for number, path in enumerate(pdfs, 1):
        data = path.read_bytes()
        sha1 = hashlib.sha1(data).hexdigest()
        reference = refs[sha1].read_bytes()
        seen = decode(reference).astype(np.int16)
        for name in names:
            row = rows[name]
            started = time.perf_counter()
            try:
                jpeg = CANDIDATES[name](path, data)
            except (PageProblem, OSError, subprocess.SubprocessError) as error:
                row["errors"] += 1
                print(f"  {name}: {path.name}: {error}", file=sys.stderr)
                continue
            row["seconds"] += time.perf_counter() - started
            difference = np.abs(decode(jpeg).astype(np.int16) - seen)
            row["pages"] += 1
            row["identical"] += int(difference.max() == 0)
            row["mad"].append(float(difference.mean()))
            # The blank-page rule as the product applies it (profile bytes added back where a
            # candidate's JPG lacks the profile the original's carries).
            size = len(jpeg) + (0 if name == "imagemagick" else profile_bytes(data, PDFIUM))
            row["blank_disagreements"] += int((size < 3000) != (len(reference) < 3000))
            row["jpegs"][sha1] = jpeg
        print(f"pages-bench: {number}/{len(pdfs)}", file=sys.stderr, flush=True)
    return rows


def agreement(model_dir: str, rows: dict, refs: dict[str, Path]) -> dict[str, dict]:
    """Top-class agreement with the reference rendering, and accuracy against the reference's
    folder label, per candidate."""
    import tensorflow as tf

    serve = tf.saved_model.load(model_dir).signatures["serving_default"]

    def top(jpegs: list[bytes]) -> list[str]:
        labels = []
        for start in range(0, len(jpegs), 32):
            out = serve(image_bytes=tf.constant(jpegs[start:start + 32]))
            labels += [c[i].decode() for c, i in zip(out["classes"].numpy(), np.argmax(out["scores"].numpy(), 1))]
        return labels

    result = {}
    for name, row in rows.items():
        shas = sorted(row["jpegs"])
        ours = top([row["jpegs"][s] for s in shas])
        theirs = top([refs[s].read_bytes() for s in shas])
        truth = [refs[s].parent.name for s in shas]
        held_out = [a == b for s, a, b in zip(shas, ours, theirs) if "validation" in refs[s].parts]
        result[name] = {"agreement": float(np.mean([a == b for a, b in zip(ours, theirs)])) if shas else None,
                        "held_out_agreement": float(np.mean(held_out)) if held_out else None,
                        "held_out_pages": len(held_out),
                        "accuracy": float(np.mean([a == t for a, t in zip(ours, truth)])) if shas else None,
                        "reference_accuracy": float(np.mean([b == t for b, t in zip(theirs, truth)])) if shas else None,
                        "disagreements": [s for s, a, b in zip(shas, ours, theirs) if a != b]}
    return result


def table(rows: dict, agreements: dict | None) -> str:
    lines = [f"{'candidate':<20}{'pages':>6}{'identical':>10}{'MAD':>7}{'MAD p95':>8}{'blank≠':>7}"
             f"{'s/page':>8}{'agree':>7}"]
    for name, row in rows.items():
        mad = np.array(row["mad"]) if row["mad"] else np.zeros(1)
        agree = agreements[name]["agreement"] if agreements else None
        lines.append(f"{name:<20}{row['pages']:>6}{row['identical'] / max(row['pages'], 1):>10.1%}"
                     f"{mad.mean():>7.2f}{np.percentile(mad, 95):>8.2f}{row['blank_disagreements']:>7}"
                     f"{row['seconds'] / max(row['pages'], 1):>8.3f}"
                     f"{'' if agree is None else f'{agree:.1%}':>7}")
    return "\n".join(lines)


def main(argv: list[str], command: str = "pages-bench") -> int:
    parser = argparse.ArgumentParser(prog=f"imgclf {command}", description=__doc__.split("\n\n")[0])
    parser.add_argument("--pdfs", required=True)
    parser.add_argument("--reference", required=True, help="JPGs named <sha1 of the PDF>.jpg, in label folders")
    parser.add_argument("--model", default="", help="a version folder: also compare its predictions")
    parser.add_argument("--candidates", default=",".join(CANDIDATES))
    parser.add_argument("--limit", type=int, default=0, help="only the first N PDFs (sorted by name)")
    parser.add_argument("--output", default="", help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    refs = references(Path(args.reference))
    pdfs = [p for p in sorted(Path(args.pdfs).rglob("*.pdf"))
            if hashlib.sha1(p.read_bytes()).hexdigest() in refs][: args.limit or None]
    names = [n for n in args.candidates.split(",") if n]
    rows = measure(pdfs, refs, names)
    agreements = agreement(args.model, rows, refs) if args.model else None
    print(table(rows, agreements))
    if args.output:
        figures = {name: {k: v for k, v in row.items() if k != "jpegs"} for name, row in rows.items()}
        Path(args.output).write_text(json.dumps({"rows": figures, "agreement": agreements}, indent=1))
    return 0
