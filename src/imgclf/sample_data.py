"""A small sample dataset of page-like images, made on the spot: what the offline demo and the
tests train on when no real pages are at hand.

Two classes that a tiny model can tell apart yet that look like the product's real input: a
"research" page is a title over dense two-column text; an "other" page is a slide-like layout of
large blocks and few lines. Pages vary in size, margins, ink and noise, and are written as JPEG
(with a few PNGs) in class sub-folders, the layout `imgclf train` expects.
"""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

CLASSES = ("other", "research")


def _text_lines(draw: ImageDraw.ImageDraw, rng: random.Random, box, line_height, ink) -> None:
    left, top, right, bottom = box
    y = top
    while y + line_height <= bottom:
        end = right if rng.random() > 0.15 else left + int((right - left) * rng.uniform(0.3, 0.9))
        x = left
        while x < end:  # words of varying length
            word = rng.randint(line_height, line_height * 5)
            draw.rectangle([x, y, min(x + word, end), y + max(1, line_height // 2)], fill=ink)
            x += word + max(2, line_height // 2)
        y += line_height


def research_page(rng: random.Random, width: int, height: int) -> Image.Image:
    page = Image.new("L", (width, height), 255 - rng.randint(0, 12))
    draw = ImageDraw.Draw(page)
    ink = rng.randint(0, 60)
    margin = int(width * rng.uniform(0.07, 0.12))
    title_h = int(height * rng.uniform(0.03, 0.05))
    draw.rectangle([width * 0.2, margin, width * 0.8, margin + title_h], fill=ink)       # title
    _text_lines(draw, rng, (int(width * 0.3), margin + 2 * title_h, int(width * 0.7),
                            margin + 3 * title_h), max(3, title_h // 3), ink)            # authors
    body_top = margin + 4 * title_h
    gutter = int(width * 0.04)
    mid = width // 2
    line_h = max(3, int(height * rng.uniform(0.008, 0.012)))
    for left, right in ((margin, mid - gutter // 2), (mid + gutter // 2, width - margin)):
        _text_lines(draw, rng, (left, body_top, right, height - margin), line_h, ink)
    return page.convert("RGB")


def other_page(rng: random.Random, width: int, height: int) -> Image.Image:
    background = tuple(rng.randint(180, 255) for _ in range(3))
    page = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(page)
    for _ in range(rng.randint(2, 5)):  # large coloured blocks: pictures, banners, logos
        x0, y0 = rng.randint(0, width // 2), rng.randint(0, height // 2)
        x1, y1 = x0 + rng.randint(width // 5, width // 2), y0 + rng.randint(height // 8, height // 3)
        colour = tuple(rng.randint(0, 200) for _ in range(3))
        if rng.random() < 0.5:
            draw.rectangle([x0, y0, x1, y1], fill=colour)
        else:
            draw.ellipse([x0, y0, x1, y1], fill=colour)
    line_h = max(6, int(height * rng.uniform(0.03, 0.05)))
    top = int(height * rng.uniform(0.55, 0.7))
    _text_lines(draw, rng, (width // 10, top, width - width // 10, top + 3 * line_h), line_h, (20, 20, 20))
    return page


def make_page(label: str, rng: random.Random, size: tuple[int, int] = (170, 220)) -> Image.Image:
    width = int(size[0] * rng.uniform(0.9, 1.1))
    height = int(size[1] * rng.uniform(0.9, 1.1))
    page = research_page(rng, width, height) if label == "research" else other_page(rng, width, height)
    if rng.random() < 0.5:
        page = page.filter(ImageFilter.GaussianBlur(rng.uniform(0.2, 0.8)))
    return page


def write_sample_dataset(root: str | Path, per_class: int = 40, seed: int = 0,
                         size: tuple[int, int] = (170, 220), png_every: int = 7) -> Path:
    """Writes root/<class>/page-NNN.jpg (every png_every-th as .png); returns root."""
    root = Path(root)
    rng = random.Random(seed)
    for label in CLASSES:
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            page = make_page(label, rng, size)
            if png_every and index % png_every == png_every - 1:
                page.save(folder / f"page-{index:03d}.png")
            else:
                page.save(folder / f"page-{index:03d}.jpg", quality=rng.randint(70, 92))
    return root
