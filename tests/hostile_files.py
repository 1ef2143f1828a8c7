"""Hostile image files, real ones: what a careless user or an attacker drops among training images
or sends to the server (rows 2, 7, 12 and 13 of the hardening issue). Made here, so that the tests
need nothing from outside the repository."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

from PIL import Image


def huge_jpeg(path: Path, side: int = 20000) -> Path:
    """A real side x side greyscale JPEG (20000: 4.7 MB on disk, 1.2 GB decoded as RGB). Made once
    per path: Pillow holds the picture (400 MB) while encoding it."""
    if not path.exists():
        buffer = io.BytesIO()
        Image.new("L", (side, side), 255).save(buffer, "JPEG", quality=10)
        path.write_bytes(buffer.getvalue())
    return path


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def huge_png(path: Path, side: int = 23000) -> Path:
    """A real side x side greyscale PNG of white rows (23000: ~0.5 MB on disk, 2.1 GB decoded as
    RGBA), compressed row by row so that the whole picture is never in memory here."""
    if not path.exists():
        compressor, row = zlib.compressobj(9), b"\x00" + b"\xff" * side   # filter byte, then pixels
        body = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
        header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)      # 8-bit greyscale
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", body)
                         + _png_chunk(b"IEND", b""))
    return path


def small_files(good_jpeg: bytes) -> dict[str, bytes]:
    """Broken files of every kind a decoder meets, by file name (all named .jpg or .png)."""
    return {
        "empty.jpg": b"",
        "text.jpg": b"this is not an image\n",
        "truncated.jpg": good_jpeg[: len(good_jpeg) // 2],
        "garbage-after-header.jpg": good_jpeg[:20] + bytes(range(256)) * 2,
    }


def add_to_class_folder(folder: Path, cache: Path, good_jpeg: bytes) -> list[Path]:
    """Puts the huge JPEG and PNG (made once in cache) and the broken files into folder; returns them."""
    folder.mkdir(parents=True, exist_ok=True)
    added = []
    for name, make in (("huge-20000.jpg", huge_jpeg), ("huge-23000.png", huge_png)):
        source = make(cache / name)
        (folder / name).symlink_to(source)
        added.append(folder / name)
    for name, data in small_files(good_jpeg).items():
        (folder / name).write_bytes(data)
        added.append(folder / name)
    return added
