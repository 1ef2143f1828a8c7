"""Training data: class folders, stable splits by file-name hash, and unusable files skipped.

Classes are the sub-folders of the data folder (their sorted names are the label order). A file's
split depends only on a hash of its name, so adding images never moves old ones between train,
validation and test. Files that cannot be decoded are skipped with one warning each and counted;
a class left without training images is an error before any training starts.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

from imgclf import contract
# Class folders and splits are read the same way by the promotion gate: they live at the bottom.
from imgclf.data_folders import DataError, find_class_folders, split_of

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
__all__ = ["DataError", "Dataset", "Example", "SPLITS", "check_trainable", "discover", "find_class_folders",
           "split_of"]


@dataclass(frozen=True)
class Example:
    path: Path
    label_index: int
    split: str
    digest: str = ""     # sha256 of the file's bytes, once read
    source: Path | None = None   # the file in the data folder, when path is its rendered page (a PDF's)

    @property
    def file(self) -> Path:
        """The file as the user named it: the PDF, not its cached page."""
        return self.source or self.path


@dataclass
class Dataset:
    labels: list[str]
    examples: list[Example]
    skipped: list[tuple[Path, str]] = field(default_factory=list)   # (file, why)

    def split(self, name: str) -> list[Example]:
        return [e for e in self.examples if e.split == name]

    def counts(self) -> dict:
        """Images per split and class, and the files skipped: for the report and metadata."""
        per_split = {
            name: {self.labels[i]: n for i, n in sorted(Counter(e.label_index for e in self.split(name)).items())}
            for name in SPLITS
        }
        return {"per_split": per_split, "skipped": len(self.skipped),
                "skipped_files": [{"file": str(p), "reason": why} for p, why in self.skipped]}


ImagesOf = Callable[[Iterable[Path]], Iterator[tuple[Path, "Path | None", "str | None"]]]


def discover(data_dir: str | Path, validation_percent: float, test_percent: float,
             probe: Callable[[Path], tuple[str, str | None]], images_of: ImagesOf | None = None) -> Dataset:
    """Every usable image under data_dir with its label, split and content digest.

    probe(path) returns (sha256 of the bytes, None) for a usable file, else (digest, the reason to
    skip it); the reason is logged as one warning and kept in Dataset.skipped. images_of(files)
    gives (file, the image to read for it or None, why not) for each file: a PDF's is its first
    page, rendered (imgclf.pdf.store.PdfImages.image_paths); without it files are their own images.
    """
    files = find_class_folders(data_dir, with_pdfs=images_of is not None)
    with_files = {name: paths for name, paths in files.items() if paths}
    if len(with_files) < 2:
        raise DataError(
            f"{data_dir}: found {len(with_files)} class folder(s) with images "
            f"({', '.join(sorted(with_files)) or 'none'}); need two or more sub-folders of "
            f"{'/'.join(contract.IMAGE_EXTENSIONS + contract.PDF_EXTENSIONS)} files, one per class")
    labels = contract.label_order(files)
    dataset = Dataset(labels=labels, examples=[])
    everything = [path for paths in files.values() for path in paths]
    images = {path: (image, why) for path, image, why in (images_of or _as_they_are)(everything)}
    for label_index, label in enumerate(labels):
        for path in files[label]:
            image, reason = images[path]
            digest, reason = probe(image) if image is not None else ("", reason)
            if reason:
                log.warning("skipping %s: %s", path, reason)
                dataset.skipped.append((path, reason))
                continue
            split = split_of(path.name, validation_percent, test_percent)
            dataset.examples.append(Example(image, label_index, split, digest,
                                            source=None if image == path else path))
    check_trainable(dataset, data_dir)
    return dataset


def _as_they_are(paths: Iterable[Path]) -> Iterator[tuple[Path, Path, None]]:
    return ((path, path, None) for path in paths)


def check_trainable(dataset: Dataset, data_dir: str | Path) -> None:
    train_counts = Counter(e.label_index for e in dataset.split("train"))
    any_counts = Counter(e.label_index for e in dataset.examples)
    for index, label in enumerate(dataset.labels):
        if not any_counts[index]:
            raise DataError(f"{Path(data_dir) / label}: no usable images in class {label!r}")
        if not train_counts[index]:
            raise DataError(f"{Path(data_dir) / label}: class {label!r} has no images in the train "
                            f"split ({any_counts[index]} usable in all); add images or lower "
                            "validation/test percentages")
