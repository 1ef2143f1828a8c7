"""The serving contract between trainer, server and client, and the version-folder rules.

This is the only module that knows the signature's names and dtypes, the label rules and how a
version folder is named. It is plain Python (no TensorFlow import) so that the REST client, which
carries no TensorFlow, can use it too. See docs/contract.md.
"""

from __future__ import annotations

import base64
import os
import re
import time
from pathlib import Path
from typing import Iterable, Sequence

# --- model -------------------------------------------------------------------------------------
DEFAULT_MODEL_NAME = "image_classifier"

# --- signature ---------------------------------------------------------------------------------
SIGNATURE_NAME = "serving_default"
PREDICT_METHOD_NAME = "tensorflow/serving/predict"
INPUT_NAME = "image_bytes"          # DT_STRING [-1]: encoded JPEG (PNG, GIF, BMP also decode)
SCORES_OUTPUT = "scores"            # DT_FLOAT  [-1, K]: probabilities in label order, sum to 1
CLASSES_OUTPUT = "classes"          # DT_STRING [-1, K]: label names in the same order
INPUT_DTYPE = "DT_STRING"
SCORES_DTYPE = "DT_FLOAT"
CLASSES_DTYPE = "DT_STRING"

# --- what a version folder holds, beside saved_model.pb and variables/ --------------------------
ASSETS_DIR = "assets"
ASSETS_EXTRA_DIR = "assets.extra"
LABELS_FILE = "labels.txt"                       # assets/: one label per line, in output order
WARMUP_FILE = "tf_serving_warmup_requests"       # assets.extra/: TFRecord of PredictionLog
MAX_WARMUP_RECORDS = 1000                        # TF Serving reads at most this many
METADATA_FILE = "training_metadata.json"         # assets.extra/: module, hyperparameters, counts
REPORT_FILE = "training_report.json"             # assets.extra/: metrics per split, confusion
CONFUSION_MATRIX_PNG = "confusion_matrix.png"    # assets.extra/

# --- images --------------------------------------------------------------------------------------
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")     # training files, matched in any letter case
PDF_EXTENSIONS = (".pdf",)                       # classified by their first page (imgclf.pdf)
# The exported graph refuses, before decoding, an image with more pixels than this (read from its
# header), in training and in serving. 40 MP holds a 600-dpi A4 scan (7016 x 4961 = 35 MP) and a
# 40-megapixel photo; decoded as floats such an image is already ~0.5 GB.
MAX_IMAGE_PIXELS = 40_000_000

# --- version folders ---------------------------------------------------------------------------
# TF Serving counts only folders whose whole name is an integer ("0042" is version 42); anything
# else is invisible to it. That is what makes publishing atomic: write under a non-numeric name on
# the same filesystem, then rename() into the numeric one.
_VERSION_RE = re.compile(r"^[0-9]+$")
STAGING_PREFIX = ".staging-"     # a model being written or waiting for the promotion gate
RETIRED_PREFIX = ".retired-"     # a version taken out of service by rollback; nothing is deleted
PUBLISH_LOCK_FILE = ".publish.lock"   # in the base path: two publishers never take one number
SAVED_MODEL_FILE = "saved_model.pb"   # a folder without it is no model, whatever else it holds
# assets.extra/: written last when an export is complete (the files and their sizes); a staged
# folder without it, or whose files no longer match it, is never published.
SEAL_FILE = "export_complete.json"


class ContractError(ValueError):
    """Input that breaks the contract; the message names the file or field."""


def parse_version(folder_name: str) -> int | None:
    """The version a folder name stands for, or None when TF Serving would ignore the folder."""
    if _VERSION_RE.match(folder_name):
        return int(folder_name)
    return None


def model_base_path(models_dir: str | os.PathLike, model_name: str = DEFAULT_MODEL_NAME) -> Path:
    """models/<model_name>: the folder TF Serving is pointed at (--model_base_path)."""
    validate_model_name(model_name)
    return Path(models_dir) / model_name


def validate_model_name(model_name: str) -> str:
    if not model_name or not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", model_name):
        raise ContractError(
            f"model name {model_name!r}: use letters, digits, '_', '.', '-' (it is a folder and a URL part)"
        )
    return model_name


def version_path(base_path: str | os.PathLike, version: int) -> Path:
    return Path(base_path) / str(int(version))


def next_version(taken: Iterable[int], now: float | None = None) -> int:
    """Unix epoch seconds, raised to one more than every number taken (the store passes published
    and retired ones, so that a rolled-back number is never reused for a different model)."""
    candidate = int(time.time() if now is None else now)
    taken = list(taken)
    if taken:
        candidate = max(candidate, max(taken) + 1)
    return candidate


def staging_name(tag: str | None = None) -> str:
    """A non-numeric folder name inside the base path, unique per process and moment."""
    tag = tag or f"{int(time.time())}-{os.getpid()}"
    return f"{STAGING_PREFIX}{tag}"


def retired_name(version: int, at: float | None = None) -> str:
    return f"{RETIRED_PREFIX}{int(version)}-{int(time.time() if at is None else at)}"


def parse_retired(folder_name: str) -> int | None:
    """The version a retired folder held, or None when the name is not a retired folder."""
    if not folder_name.startswith(RETIRED_PREFIX):
        return None
    head = folder_name[len(RETIRED_PREFIX):].split("-", 1)[0]
    return parse_version(head)


def is_staging_name(folder_name: str) -> bool:
    return folder_name.startswith(STAGING_PREFIX)


# --- labels ------------------------------------------------------------------------------------
def validate_labels(labels: Sequence[str]) -> list[str]:
    """Label names as the model outputs them: two or more, unique, non-empty, one line each."""
    labels = list(labels)
    if len(labels) < 2:
        raise ContractError(f"need at least two classes, got {len(labels)}: {labels}")
    for label in labels:
        if not label or label != label.strip() or "\n" in label or "\r" in label:
            raise ContractError(f"label {label!r}: must be non-empty, one line, no outer spaces")
    if len(set(labels)) != len(labels):
        raise ContractError(f"labels are not unique: {labels}")
    return labels


def label_order(class_names: Iterable[str]) -> list[str]:
    """The order of the scores: class folder names sorted, so that it never depends on disk order."""
    return validate_labels(sorted(class_names))


def format_labels_file(labels: Sequence[str]) -> str:
    return "".join(f"{label}\n" for label in validate_labels(labels))


def parse_labels_file(text: str) -> list[str]:
    return validate_labels([line for line in text.splitlines() if line])


# --- image files -------------------------------------------------------------------------------
def is_image_file(path: str | os.PathLike, with_pdfs: bool = False) -> bool:
    return str(path).lower().endswith(IMAGE_EXTENSIONS + (PDF_EXTENSIONS if with_pdfs else ()))



# --- REST wire format --------------------------------------------------------------------------
def rest_model_path(model_name: str, version: int | None = None, label: str | None = None) -> str:
    """/v1/models/<name>[/versions/<v>|/labels/<l>]; append ':predict' or '/metadata' as needed."""
    if version is not None and label is not None:
        raise ContractError("choose a version or a label, not both")
    path = f"/v1/models/{validate_model_name(model_name)}"
    if version is not None:
        path += f"/versions/{int(version)}"
    elif label is not None:
        path += f"/labels/{label}"
    return path


def rest_predict_body(images: Sequence[bytes]) -> dict:
    """Row-format request for encoded image files: {"instances": [{"b64": ...}, ...]}."""
    return {"instances": [{"b64": base64.b64encode(data).decode("ascii")} for data in images]}
