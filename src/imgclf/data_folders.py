"""Folders of images as the product reads them: one sub-folder per class, files listed in a stable
order, and each file's split decided by a hash of its name.

The trainer (discovery), the promotion gate (the held-out split a model was trained with) and the
client (the files it sends) all read folders this way, so it sits at the bottom, beside the
contract. Plain Python: no TensorFlow import.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterator

from imgclf import contract

_BUCKETS = 10_000   # split by hundredths of a percent


class DataError(ValueError):
    """Data that cannot be trained on; the message names the folder or class."""


def iter_image_files(root: str | os.PathLike, strict: bool = False, with_pdfs: bool = False) -> Iterator[Path]:
    """Image files (and PDFs, with_pdfs: imgclf.pdf renders them) under root, recursively, in a
    stable order, without listing everything first. A folder that cannot be listed is skipped, or
    with strict raises its OSError."""
    root = Path(root)
    for dirpath, dirnames, filenames in os.walk(root, onerror=_raise if strict else None):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if contract.is_image_file(name, with_pdfs) and not name.startswith("."):
                yield Path(dirpath) / name


def _raise(error: OSError) -> None:
    raise error


def split_of(file_name: str, validation_percent: float, test_percent: float) -> str:
    """The split a file belongs to, from a hash of its name alone (stable as the data grows)."""
    if validation_percent < 0 or test_percent < 0 or validation_percent + test_percent >= 100:
        raise DataError(f"validation_percent={validation_percent} and test_percent={test_percent}: "
                        "each must be >= 0 and together below 100")
    bucket = int(hashlib.sha1(file_name.encode("utf-8")).hexdigest(), 16) % _BUCKETS
    percent = bucket * 100 / _BUCKETS
    if percent < validation_percent:
        return "validation"
    if percent < validation_percent + test_percent:
        return "test"
    return "train"


def find_class_folders(data_dir: str | os.PathLike, with_pdfs: bool = False) -> dict[str, list[Path]]:
    """{class name: its image files (and PDFs, with_pdfs)}, for every sub-folder of data_dir
    (hidden ones aside)."""
    root = Path(data_dir)
    try:
        if not root.is_dir():
            raise DataError(f"{root}: no such folder (expected one sub-folder of images per class)")
        folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        return {folder.name: list(iter_image_files(folder, strict=True, with_pdfs=with_pdfs))
                for folder in folders}
    except PermissionError as error:
        raise DataError(f"{error.filename}: cannot be read ({error.strerror}); in a container, the "
                        f"trainer runs as the owner of MODELS and must be able to read DATA") from None
