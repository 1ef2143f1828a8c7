"""The original tool's page recipe, written once: what a rendered first page goes through to become
the small JPG the classifier was trained on.

    convert "$pdf[0]" -background white -alpha remove -equalize -quality 95 \\
            -thumbnail 156x -gravity north -extent 224x224 page.jpg

`convert_args` gives those steps to ImageMagick 6 (the `imagemagick` renderer runs them with the real
program); `finish` is the same steps in numpy and Pillow for renderers without ImageMagick, written
from ImageMagick 6.9.11's source (enhance.c EqualizeImageChannel, resize.c ThumbnailImage, jpeg.c),
so the two differ only where the arithmetic does (docs/pdfs.md has the measured difference).
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass

import numpy as np

_Q16 = 65535          # ImageMagick 6 Q16, Debian's build: pixels are 16-bit inside
_SAMPLE_FACTOR = 5    # ThumbnailImage samples a large page to 5x the thumbnail, then resizes


@dataclass(frozen=True)
class Recipe:
    """The recipe's numbers; the defaults are the original tool's. Part of every cache key."""

    density: int = 72          # dpi Ghostscript renders at (ImageMagick's default for PDF)
    width: int = 156           # -thumbnail 156x
    canvas: int = 224          # -extent 224x224, page top-centred (-gravity north)
    quality: int = 95          # -quality 95
    equalize: bool = True      # -equalize

    def as_dict(self) -> dict:
        return asdict(self)


def convert_args(recipe: Recipe) -> list[str]:
    """The recipe's ImageMagick 6 options, between the input and the output file."""
    args = ["-background", "white", "-alpha", "remove"]
    args += ["-equalize"] if recipe.equalize else []
    return args + ["-quality", str(recipe.quality), "-thumbnail", f"{recipe.width}x",
                   "-gravity", "north", "-extent", f"{recipe.canvas}x{recipe.canvas}"]


def finish(page: np.ndarray, recipe: Recipe) -> bytes:
    """JPEG bytes from a page rendered on white at recipe.density: uint8 [H, W, 3] RGB."""
    pixels = page.astype(np.float64) * (_Q16 / 255.0)
    if recipe.equalize:
        pixels = equalize(pixels)
    small = thumbnail(pixels, recipe.width)
    return encode_jpeg(extent_north(small, recipe.canvas), recipe.quality)


def equalize(pixels: np.ndarray) -> np.ndarray:
    """ImageMagick 6's -equalize: one map, from the histogram of Rec. 709 luma (0.212656 R +
    0.715158 G + 0.072186 B on the sRGB values, 65536 bins), applied to every channel alike. Pillow's
    ImageOps.equalize instead maps each channel by its own histogram (256 bins), which tints pages."""
    luma = pixels @ np.array([0.212656, 0.715158, 0.072186])
    bins = np.clip(np.floor(luma + 0.5), 0, _Q16).astype(np.int64)
    cumulative = np.cumsum(np.bincount(bins.ravel(), minlength=_Q16 + 1)).astype(np.float64)
    black, white = cumulative[0], cumulative[-1]
    if white == black:
        return pixels
    mapping = np.floor(_Q16 * (cumulative - black) / (white - black) + 0.5)
    return mapping[np.clip(np.floor(pixels + 0.5), 0, _Q16).astype(np.int64)]


def thumbnail_size(width: int, height: int, target_width: int) -> tuple[int, int]:
    """"156x": the width given, the height keeping the aspect, rounded half up (ParseMetaGeometry)."""
    return target_width, max(1, int(np.floor(target_width * height / width + 0.5)))


def thumbnail(pixels: np.ndarray, target_width: int) -> np.ndarray:
    """ImageMagick 6's -thumbnail (ThumbnailImage): a page with over ten times the thumbnail's
    pixels is first point-sampled to 5x its size; then resized (ResizeImage) with the Mitchell
    filter, which ImageMagick picks for an image with an alpha channel, as Ghostscript's page has.
    Pillow has no Mitchell filter and samples points differently, hence numpy (measured: Pillow's
    Lanczos resize differs by 7 grey levels on average, this by none)."""
    height, width = pixels.shape[:2]
    columns, rows = thumbnail_size(width, height, target_width)
    if (columns * rows) / (width * height) <= 0.1 and min(columns, rows) * _SAMPLE_FACTOR >= 128:
        pixels = sample(pixels, columns * _SAMPLE_FACTOR, rows * _SAMPLE_FACTOR)
        height, width = pixels.shape[:2]
    # One direction, then the other, rounding to 16 bits between (ImageMagick's Q16 pixel cache).
    if columns / width > rows / height:
        return _resize_rows(_resize_columns(pixels, columns), rows)
    return _resize_columns(_resize_rows(pixels, rows), columns)


def _resize_rows(pixels: np.ndarray, rows: int) -> np.ndarray:
    height, width, channels = pixels.shape
    out = _weights(height, rows) @ pixels.reshape(height, width * channels)
    return np.clip(np.floor(out + 0.5), 0, _Q16).reshape(rows, width, channels)


def _resize_columns(pixels: np.ndarray, columns: int) -> np.ndarray:
    return _resize_rows(pixels.transpose(1, 0, 2), columns).transpose(1, 0, 2)


def sample(pixels: np.ndarray, columns: int, rows: int) -> np.ndarray:
    """SampleImage: the source pixel under each target pixel's centre (a hair before it, as
    ImageMagick's offset is 0.5 - 1e-12)."""
    height, width = pixels.shape[:2]
    xs = ((np.arange(columns) + 0.5 - 1e-12) * width / columns).astype(np.int64)
    ys = ((np.arange(rows) + 0.5 - 1e-12) * height / rows).astype(np.int64)
    return pixels[ys][:, xs]


def _mitchell(x: np.ndarray) -> np.ndarray:
    """The Mitchell-Netravali cubic, B = C = 1/3 (ImageMagick's CubicBC)."""
    b = c = 1.0 / 3.0
    x = np.abs(x)
    near = ((12 - 9 * b - 6 * c) * x ** 3 + (-18 + 12 * b + 6 * c) * x ** 2 + (6 - 2 * b)) / 6
    far = ((-b - 6 * c) * x ** 3 + (6 * b + 30 * c) * x ** 2 + (-12 * b - 48 * c) * x + (8 * b + 24 * c)) / 6
    return np.where(x < 1, near, np.where(x < 2, far, 0.0))


def _weights(old: int, new: int) -> np.ndarray:
    """[new, old] resampling weights as resize.c's HorizontalFilter computes them."""
    factor = new / old
    scale = max(1.0 / factor + 1e-12, 1.0)
    support = max(2.0 * scale, 0.5)
    matrix = np.zeros((new, old))
    for x in range(new):
        bisect = (x + 0.5) / factor + 1e-12
        start, stop = int(max(bisect - support + 0.5, 0.0)), int(min(bisect + support + 0.5, old))
        weights = _mitchell((np.arange(start, stop) - bisect + 0.5) / scale)
        density = weights.sum()
        matrix[x, start:stop] = weights / density if density not in (0.0, 1.0) else weights
    return matrix


def extent_north(pixels: np.ndarray, canvas: int) -> np.ndarray:
    """-gravity north -extent CxC on white: centred across (ImageMagick's integer halves), at the
    top; a page taller than the canvas loses its bottom."""
    height, width = pixels.shape[:2]
    out = np.full((canvas, canvas, pixels.shape[2]), float(_Q16))
    left = canvas // 2 - width // 2
    src_x0, dst_x0 = max(0, -left), max(0, left)
    span_x = min(width - src_x0, canvas - dst_x0)
    span_y = min(height, canvas)
    out[:span_y, dst_x0:dst_x0 + span_x] = pixels[:span_y, src_x0:src_x0 + span_x]
    return out


def encode_jpeg(pixels: np.ndarray, quality: int) -> bytes:
    """JPEG as ImageMagick writes it: 8-bit, greyscale when every pixel is grey, no chroma
    subsampling at quality 90 and above, optimised Huffman tables."""
    from PIL import Image

    # ScaleQuantumToChar: 16-bit to 8-bit with rounding.
    eight = np.floor(pixels / 257.0 + 0.5).clip(0, 255).astype(np.uint8)
    grey = bool(np.all(eight[..., 0] == eight[..., 1]) and np.all(eight[..., 1] == eight[..., 2]))
    image = Image.fromarray(eight[..., 0] if grey else eight)
    out = io.BytesIO()
    # ImageMagick optimises the Huffman tables of images this small: same pixels, fewer bytes
    # (which the blank-page rule counts); Pillow's optimize=True gives the same byte count.
    image.save(out, format="JPEG", quality=quality, subsampling=0 if quality >= 90 else 2, optimize=True)
    return out.getvalue()
