"""One training run, start to finish: data -> features -> head (-> fine-tuning) -> report ->
export into a staging folder of the model store, sealed. Publishing is not the trainer's business:
`imgclf train` (imgclf.rollout.training) takes the staged export through the promotion gate."""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import tensorflow as tf
import tf_keras as keras

from imgclf import contract, images, model_store, settings as settings_module
from imgclf.pdf import store as pdf_store
from imgclf.settings import TrainSettings
from imgclf.trainer import export, model, report
from imgclf.trainer.backbone import Backbone, load_backbone
from imgclf.trainer.data import SPLITS, Dataset, Example, discover
from imgclf.trainer.features import FeatureCache, FileProbe, compute_features
from imgclf.warmup_requests import write_warmup_requests

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """A sealed export, staged in the model store (invisible to servers until published)."""

    staged: Path
    base_path: Path
    labels: list[str]
    report: dict
    metadata: dict
    held_out: list[tuple[Path, str]]   # (file, label): the split the promotion gate measures on


@dataclass
class Trained:
    """What training produced: the layers to export and a way to score any examples."""

    backbone: Backbone
    head: keras.Model
    phases: dict            # phase -> {"epoch_seconds": [...], "best_epoch": n}
    features_seconds: float | None
    scores_of: callable     # list[Example] -> probabilities [N, K]


def train(settings: TrainSettings) -> TrainResult:
    """Trains, then exports into a new staging folder of the model store and seals it."""
    started = time.perf_counter()
    keras.utils.set_random_seed(settings.seed)
    backbone = load_backbone(settings.module, settings.image_size, trainable=settings.fine_tune,
                             quadrants=settings.quadrants, layout_grid=settings.layout_grid)
    options = images.Preprocessing(backbone.image_size, settings.grayscale)
    cache = None if backbone.is_scratch else FeatureCache(feature_cache_dir(settings), backbone, options)
    with pdf_store.for_command(settings.pdf_renderer, pdf_cache_dir(settings), settings.progress) as pdfs:
        dataset = discover(settings.data, settings.validation_percent, settings.test_percent,
                           FileProbe(options, cache), images_of=pdfs.image_paths)
    log_dir = run_log_dir(settings)
    trained = fit_classifier(dataset, backbone, options, cache, settings, log_dir)
    run_report = build_report(dataset, trained)

    base_path = contract.model_base_path(settings.models, settings.model_name)
    metadata = training_metadata(settings, backbone, options, dataset, trained, run_report,
                                 seconds=time.perf_counter() - started)
    store = model_store.open_store(base_path)
    staged = store.stage()
    try:
        write_version(staged, trained, options, dataset, run_report, metadata, settings)
        store.seal(staged)
    except BaseException:
        # Nothing half-written stays behind; the folder was never visible to a server anyway.
        store.discard(staged)
        raise
    held_out = dataset.split("test") or dataset.split("validation")
    return TrainResult(staged, base_path, dataset.labels, run_report, metadata,
                       [(e.path, dataset.labels[e.label_index]) for e in held_out])


def feature_cache_dir(settings: TrainSettings) -> Path:
    return Path(settings.cache_dir) if settings.cache_dir else Path(settings.models) / ".cache" / "features"


def pdf_cache_dir(settings: TrainSettings) -> Path:
    """PDFs in DATA are rendered once, into <models>/.cache/pages unless PDF_CACHE says."""
    return Path(settings.pdf_cache) if settings.pdf_cache else Path(settings.models) / ".cache" / "pages"


def run_log_dir(settings: TrainSettings) -> str:
    root = Path(settings.log_dir) if settings.log_dir else Path(settings.models) / ".logs" / settings.model_name
    return str(root / time.strftime("%Y%m%d-%H%M%S"))


def fit_classifier(dataset: Dataset, backbone: Backbone, options: images.Preprocessing,
                   cache: FeatureCache | None, settings: TrainSettings, log_dir: str) -> Trained:
    """Trains the head on cached features when the backbone is frozen and images are not
    augmented, one branch after the other; otherwise end to end on images. Fine-tuning then
    unfreezes the backbone."""
    k = len(dataset.labels)
    head, branches = model.build_classifier_head(backbone.feature_dim, backbone.layout_dim, k,
                                                 settings.dropout, settings.seed, settings.layout_weight)
    full = model.build_full_model(backbone, head)
    train, validation = dataset.split("train"), dataset.split("validation")
    phases, features, features_seconds = {}, {}, None
    on_features = cache is not None and not settings.augment

    def run_phase(phase: str, network: keras.Model, batches, learning_rate: float, epochs: int) -> None:
        model.compile_for_training(network, learning_rate, settings.label_smoothing)
        result = model.fit(
            network, batches(train, shuffle=True), batches(validation) if validation else None,
            steps=model.steps_per_epoch(len(train), settings.batch_size), epochs=epochs,
            patience=settings.patience, min_delta=settings.min_delta, log_dir=log_dir, phase=phase,
            progress=settings.progress)
        phases[phase] = {"epoch_seconds": rounded(result.epoch_seconds), "best_epoch": result.best_epoch}

    def on_images(examples, shuffle=False):
        return image_batches(examples, k, options, settings, shuffle=shuffle, augment=shuffle and settings.augment)

    def on_cached(examples, shuffle=False, columns=slice(None)):
        return feature_batches(examples, features, k, settings, shuffle=shuffle, columns=columns)

    if on_features:
        begun = time.perf_counter()
        vectors = compute_features(dataset.examples, backbone, options, cache, settings.batch_size,
                                   settings.progress, settings.decode_parallelism)
        features_seconds = time.perf_counter() - begun
        features = dict(zip((e.digest for e in dataset.examples), vectors))
        for branch in branches:
            run_phase(branch.name, branch.model, partial(on_cached, columns=branch.columns),
                      settings.learning_rate, settings.epochs)
    else:
        run_phase("end-to-end" if backbone.is_scratch else "head-on-images", full, on_images,
                  settings.learning_rate, settings.epochs)
    if settings.fine_tune and not backbone.is_scratch:
        run_phase("fine-tune", full, on_images, settings.fine_tune_learning_rate, settings.fine_tune_epochs)
        on_features = False

    def scores_of(examples: list[Example]) -> np.ndarray:
        if not examples:
            return np.zeros([0, k], np.float32)
        if on_features:
            return head.predict(on_cached(examples), verbose=0)
        return full.predict(on_images(examples), verbose=0)

    return Trained(backbone, head, phases, features_seconds, scores_of)


def feature_batches(examples: list[Example], features: dict, k: int, settings: TrainSettings,
                    shuffle: bool = False, columns: slice = slice(None)) -> tf.data.Dataset:
    stacked = np.stack([features[e.digest][columns] for e in examples])
    targets = model.one_hot([e.label_index for e in examples], k)
    return model.feature_batches(stacked, targets, settings.batch_size,
                                 shuffle_seed=settings.seed if shuffle else None)


def image_batches(examples: list[Example], k: int, options: images.Preprocessing,
                  settings: TrainSettings, shuffle: bool = False, augment: bool = False) -> tf.data.Dataset:
    targets = model.one_hot([e.label_index for e in examples], k)
    return model.image_batches([str(e.path) for e in examples], targets, options, settings.batch_size,
                               shuffle_seed=settings.seed if shuffle else None, augment=augment,
                               parallel_decodes=settings.decode_parallelism)


def build_report(dataset: Dataset, trained: Trained) -> dict:
    splits, wrong = {}, []
    for name in SPLITS:
        examples = dataset.split(name)
        scores = trained.scores_of(examples)
        truth = [e.label_index for e in examples]
        splits[name] = report.split_metrics(scores, truth, dataset.labels)
        if name == "test":
            wrong = report.misclassified([e.path for e in examples], scores, truth, dataset.labels)
    counts = dataset.counts()
    return {"labels": dataset.labels, "splits": splits, "misclassified_test": wrong,
            "skipped": counts["skipped"], "skipped_files": counts["skipped_files"]}


def training_metadata(settings: TrainSettings, backbone: Backbone, options: images.Preprocessing,
                      dataset: Dataset, trained: Trained, run_report: dict, seconds: float) -> dict:
    return {
        "module": settings.module,
        "module_fingerprint": backbone.fingerprint,
        "preprocessing": options.as_dict(),
        "labels": dataset.labels,
        "settings": settings_module.to_dict(settings),
        "counts": dataset.counts(),
        "accuracy": {name: m["accuracy"] for name, m in run_report["splits"].items()},
        "timing": {"features_seconds": rounded_one(trained.features_seconds),
                   "phases": trained.phases, "total_seconds": round(seconds, 2)},
        "tensorflow_version": tf.__version__,
        "python_version": sys.version.split()[0],
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write_version(staged: Path, trained: Trained, options: images.Preprocessing, dataset: Dataset,
                  run_report: dict, metadata: dict, settings: TrainSettings) -> None:
    export.export_saved_model(staged, trained.backbone.layer, trained.head, options, dataset.labels)
    warmup = warmup_files(dataset, settings.warmup_records)
    metadata["warmup_records"] = write_warmup_requests(staged, (Path(path).read_bytes() for path in warmup),
                                                       settings.model_name)
    export.write_extra_json(staged, contract.METADATA_FILE, metadata)
    export.write_extra_json(staged, contract.REPORT_FILE, run_report)
    confusion = run_report["splits"]["test"]["confusion"]
    report.save_confusion_png(confusion, dataset.labels,
                              staged / contract.ASSETS_EXTRA_DIR / contract.CONFUSION_MATRIX_PNG)


def warmup_files(dataset: Dataset, count: int) -> list[Path]:
    """Real training images, taking the classes in turn, so warmup exercises what traffic sends."""
    by_class = [[e.path for e in dataset.split("train") if e.label_index == i] for i in range(len(dataset.labels))]
    chosen = []
    for round_ in range(max(map(len, by_class))):
        for files in by_class:
            if round_ < len(files) and len(chosen) < count:
                chosen.append(files[round_])
    return chosen


def timing_summary(metadata: dict) -> str:
    """One line on where the time went: the epoch-time ratio the feature cache buys."""
    timing = metadata["timing"]
    images_count = sum(sum(per_class.values()) for per_class in metadata["counts"]["per_split"].values())
    parts = []
    if timing["features_seconds"] is not None:
        parts.append(f"features of {images_count} images {timing['features_seconds']:.1f} s")
    for phase, figures in timing["phases"].items():
        seconds = figures["epoch_seconds"]
        text = f"{phase}: {len(seconds)} epochs, first {seconds[0]:.2f} s"
        if len(seconds) > 1:
            later = sum(seconds[1:]) / (len(seconds) - 1)
            text += f", later {later:.3f} s each, best epoch {figures['best_epoch']}"
        parts.append(text)
    return "timing: " + "; ".join(parts)


def rounded(values) -> list[float]:
    return [round(v, 3) for v in values]


def rounded_one(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
