"""The promotion gate: a staged model may be published only if it loads, answers its own warmup
requests, and is not worse than the version being served now by more than a tolerance.

Both models are measured here, on the same held-out examples, the way the server will call them:
raw file bytes into the `serving_default` signature. The gate only judges: imgclf.rollout.publish
acts on its decision. Only a refusal for accuracy may be overridden (FORCE); a candidate that does
not load or answer would fail in the server just the same.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from imgclf import contract
from imgclf.batches import run_batch_or_each
from imgclf.data_folders import find_class_folders, split_of
from imgclf.model_store import ModelStore
from imgclf.pdf import store as pdf_store
from imgclf.pdf.store import is_pdf_name
from imgclf.progress import track
from imgclf.settings import DEFAULT_PDF_RENDERER
from imgclf.tf_errors import tf_error_message

log = logging.getLogger(__name__)
Example = tuple[Path, str]     # an image file and its true label
BATCH_SIZE = 16


@dataclass
class Evaluation:
    """How one SavedModel did at the gate."""

    path: Path
    loaded: bool = False
    warmup_replayed: int = 0
    correct: int = 0
    total: int = 0
    failed_files: list[str] = field(default_factory=list)   # files the model could not answer
    unknown_labels: set[str] = field(default_factory=set)  # true labels the model cannot output
    error: str = ""                                          # why it failed to load or answer

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.total if self.total else None

    @property
    def answered(self) -> bool:
        return self.loaded and not self.error


@dataclass
class Decision:
    candidate: Evaluation
    current: Evaluation | None        # None when nothing is published yet
    current_version: int | None
    tolerance: float
    refused_because: str = ""          # empty when the candidate may be published
    overridable: bool = False          # only an accuracy refusal: FORCE may publish it anyway

    @property
    def refused(self) -> bool:
        return bool(self.refused_because)


def labelled_examples(folder: str | os.PathLike, pdf_renderer: str = DEFAULT_PDF_RENDERER,
                      pdf_cache: str | os.PathLike = "") -> list[Example]:
    """(image, label) for every image and PDF under folder/<label>/ (a PDF's image is its first
    page, rendered as training renders it); a folder without any is an error."""
    files = [(path, label) for label, paths in find_class_folders(folder, with_pdfs=True).items()
             for path in paths]
    examples = _pages_of(files, pdf_renderer, pdf_cache)
    if not examples:
        raise contract.ContractError(f"{folder}: no images in class sub-folders (expected {folder}/<label>/*.jpg)")
    return examples


def recorded_held_out(model_dir: str | os.PathLike) -> tuple[list[Example], str]:
    """The held-out split a model was trained with (test, else validation), rebuilt from the data
    folder, split percentages and PDF renderer in its training metadata; with a note on what was found."""
    try:
        metadata = json.loads((Path(model_dir) / contract.ASSETS_EXTRA_DIR / contract.METADATA_FILE).read_text())
        recorded = metadata["settings"]
        data, percents = recorded["data"], (recorded["validation_percent"], recorded["test_percent"])
        renderer = recorded.get("pdf_renderer", DEFAULT_PDF_RENDERER)
        pages_cache = pdf_store.training_cache_dir(recorded.get("pdf_cache", ""), recorded["models"])
    except (OSError, ValueError, KeyError, TypeError):
        return [], f"{model_dir}: no training metadata naming its data folder"
    if not Path(data).is_dir():
        return [], f"the data folder recorded at training, {data}, is not here"
    by_split: dict[str, list[Example]] = {"test": [], "validation": []}
    for label, files in find_class_folders(data, with_pdfs=True).items():
        for path in files:
            by_split.get(split_of(path.name, *percents), []).append((path, label))
    held_out = by_split["test"] or by_split["validation"]
    pages = _pages_of(held_out, renderer, pages_cache)
    return pages, f"held-out split of {data}: {len(pages)} images"


def _pages_of(examples: Sequence[Example], pdf_renderer: str, pdf_cache: str | os.PathLike) -> list[Example]:
    """The examples with each PDF replaced by its first page's image (rendered once, cached); a
    PDF that gives no page is left out with a warning naming it, as training leaves it out."""
    if not any(is_pdf_name(path) for path, _ in examples):
        return list(examples)
    label_of = dict(examples)
    pages = []
    with pdf_store.for_command(pdf_renderer, pdf_cache) as pdfs:
        for path, image, problem in pdfs.image_paths(label_of):
            if image is None:
                log.warning("skipping %s: %s", path, problem)
            else:
                pages.append((image, label_of[path]))
    return pages


def _signature(model):
    signatures = getattr(model, "signatures", {})
    if contract.SIGNATURE_NAME not in signatures:
        raise contract.ContractError(f"no {contract.SIGNATURE_NAME!r} signature (has {sorted(signatures)})")
    return signatures[contract.SIGNATURE_NAME]


class _LoadedSavedModel:
    """A tf.saved_model.load() result seen the way the local server's warmup sees a servable."""

    def __init__(self, model):
        self.model = model

    def predict(self, signature_name: str, inputs: dict, output_filter: list) -> dict:
        import tensorflow as tf

        signature = self.model.signatures[signature_name or contract.SIGNATURE_NAME]
        return signature(**{name: tf.constant(value) for name, value in inputs.items()})


def replay_warmup(model, model_dir: Path) -> int:
    """Replays assets.extra/tf_serving_warmup_requests through the server's own warmup reader, so
    the gate refuses a candidate exactly where serving would fail to load it; returns how many
    requests were replayed (0 when the file is absent)."""
    from imgclf.serving.warmup import replay_warmup as replay_as_server_does

    return replay_as_server_does(_LoadedSavedModel(model), model_dir)


def _predict_labels(signature, files: Sequence[Path], seen_classes: set[str]) -> list[str]:
    """The top label for each file, as the server would answer it; notes the classes output."""
    import tensorflow as tf

    images = tf.constant([path.read_bytes() for path in files])
    outputs = signature(**{contract.INPUT_NAME: images})
    classes = outputs[contract.CLASSES_OUTPUT]
    seen_classes.update(name.decode("utf-8") for name in classes.numpy()[0])
    best = tf.argmax(outputs[contract.SCORES_OUTPUT], axis=1)
    return [name.decode("utf-8") for name in tf.gather(classes, best, axis=1, batch_dims=1).numpy()]


def _first_line(error: BaseException) -> str:
    text = tf_error_message(str(error)).strip()
    return f"{type(error).__name__}: {text}"


def evaluate(model_dir: str | os.PathLike, examples: Sequence[Example], desc: str = "") -> Evaluation:
    """Loads a SavedModel, replays its warmup and measures its accuracy on the examples.

    Failures are recorded in the result rather than raised: the gate decides what they mean."""
    import tensorflow as tf

    evaluation = Evaluation(Path(model_dir))
    seen_classes: set[str] = set()

    def score(batch: Sequence[Example]) -> None:
        predicted = _predict_labels(signature, [p for p, _ in batch], seen_classes)
        evaluation.total += len(batch)
        evaluation.correct += sum(p == truth for p, (_, truth) in zip(predicted, batch))

    def failed(example: Example, error: BaseException) -> None:
        evaluation.total += 1
        evaluation.failed_files.append(str(example[0]))

    try:
        model = tf.saved_model.load(str(model_dir))
        signature = _signature(model)
        evaluation.loaded = True
        evaluation.warmup_replayed = replay_warmup(model, Path(model_dir))
        batches = [examples[i:i + BATCH_SIZE] for i in range(0, len(examples), BATCH_SIZE)]
        for batch in track(batches, desc=f"gate {desc or Path(model_dir).name}", unit="batch", leave=False):
            # A bad file fails its batch: the files are then scored one by one, and the bad one
            # counts as a wrong answer, so that both models are judged on the same examples.
            run_batch_or_each(batch, score, fall_back_on=(tf.errors.OpError, OSError), on_failure=failed)
    except Exception as error:  # a model that cannot load or answer is exactly what the gate catches
        evaluation.error = _first_line(error)
    if evaluation.total and len(evaluation.failed_files) == evaluation.total:
        evaluation.error = evaluation.error or f"answered none of {evaluation.total} examples"
    if seen_classes:
        evaluation.unknown_labels = {truth for _, truth in examples} - seen_classes
    return evaluation


def judge(candidate: Evaluation, current: Evaluation | None, current_version: int | None,
          tolerance: float) -> Decision:
    decision = Decision(candidate, current, current_version, tolerance)
    if not candidate.loaded:
        decision.refused_because = f"the candidate {candidate.path} does not load ({candidate.error})"
    elif candidate.error:
        decision.refused_because = f"the candidate {candidate.path} does not answer ({candidate.error})"
    elif (current is not None and current.answered and candidate.accuracy is not None
          and current.accuracy is not None and candidate.accuracy < current.accuracy - tolerance):
        decision.overridable = True
        decision.refused_because = (
            f"the candidate's accuracy {candidate.accuracy:.4f} is worse than version "
            f"{current_version}'s {current.accuracy:.4f} by more than the tolerance {tolerance:g} "
            f"(on the same {candidate.total} held-out examples)")
    return decision


def describe(decision: Decision) -> list[str]:
    """Human-readable lines: what was measured and what the gate decided."""
    def line(name: str, ev: Evaluation) -> str:
        if not ev.answered:
            return f"  {name}: FAILED {ev.error}"
        acc = "n/a" if ev.accuracy is None else f"{ev.accuracy:.4f} ({ev.correct}/{ev.total})"
        return f"  {name}: accuracy {acc}, warmup requests replayed {ev.warmup_replayed}"

    lines = ["promotion gate:", line(f"candidate {decision.candidate.path.name}", decision.candidate)]
    if decision.current is None:
        lines.append("  served: nothing published yet")
    else:
        lines.append(line(f"served version {decision.current_version}", decision.current))
        if not decision.current.answered:
            lines.append("  (the served version could not be measured: comparing is skipped)")
    for ev in filter(None, (decision.candidate, decision.current)):
        if ev.failed_files:
            shown = ", ".join(ev.failed_files[:5]) + (" ..." if len(ev.failed_files) > 5 else "")
            lines.append(f"  {ev.path.name} could not answer {len(ev.failed_files)} file(s): {shown}")
    if decision.candidate.unknown_labels:
        lines.append(f"  labels the candidate cannot output (always counted wrong): "
                     f"{sorted(decision.candidate.unknown_labels)}")
    if decision.candidate.total == 0 and decision.candidate.answered:
        lines.append("  no held-out examples: only loading and warmup were checked")
    lines.append(f"  REFUSED: {decision.refused_because}" if decision.refused else "  accepted")
    return lines


def check(staged: str | os.PathLike, store: ModelStore, examples: Sequence[Example],
          tolerance: float) -> Decision:
    """Measures the candidate and the highest published version on the same examples."""
    examples = list(examples)
    candidate = evaluate(staged, examples, desc="candidate")
    current_version = store.latest()
    current = None
    if current_version is not None:
        current = evaluate(store.version_path(current_version), examples, desc=f"version {current_version}")
    return judge(candidate, current, current_version, tolerance)
