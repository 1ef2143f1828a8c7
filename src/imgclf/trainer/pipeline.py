"""One training run, start to finish: data -> features -> head (-> fine-tuning) -> report ->
export into a staging folder of the model store, sealed. Publishing is not the trainer's business:
`imgclf train` (imgclf.rollout.training) takes the staged export through the promotion gate."""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import tensorflow as tf
import tf_keras as keras

from imgclf import contract, images, model_store, settings as settings_module
from imgclf.pdf import store as pdf_store
from imgclf.settings import SettingsError, TrainSettings
from imgclf.trainer import export, report
from imgclf.trainer.backbone import Backbone, load_backbone, with_parts
from imgclf.trainer.data import SPLITS, Dataset, discover
from imgclf.trainer.features import FeatureCache, FileProbe
from imgclf.trainer.fitting import ImageSource, Trained, fit_classifier, scores_of
from imgclf.trainer.recipe import RecipeChoice
from imgclf.trainer.selection import choose_recipe
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


def train(settings: TrainSettings) -> TrainResult:
    """Chooses the recipe, trains, then exports into a new staging folder of the model store and
    seals it."""
    problem = settings.problem()
    if problem:
        raise SettingsError(problem)
    started = time.perf_counter()
    keras.utils.set_random_seed(settings.seed)
    network = load_backbone(settings.module, settings.image_size, trainable=settings.fine_tune)
    dataset = discover_data(settings, network)
    choice = choose_recipe(dataset, network, settings, feature_cache_dir(settings))
    log.info("recipe: %s (%s)", choice.recipe.describe(), choice.reason)
    backbone = with_parts(network, choice.recipe.view, choice.recipe.layout_grid)
    options = images.Preprocessing(backbone.image_size, choice.recipe.grayscale)
    cache = None if backbone.is_scratch else FeatureCache(feature_cache_dir(settings), backbone, options)
    trained = fit_classifier(dataset, backbone, options, cache, settings, run_log_dir(settings))
    run_report = build_report(dataset, trained, ImageSource(options, settings.decode_parallelism),
                              settings.batch_size, choice)
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


def discover_data(settings: TrainSettings, backbone: Backbone) -> Dataset:
    """The usable images of DATA (PDFs rendered), each decoded once to check it, unless its
    features are cached already (then it was decoded before)."""
    options = images.Preprocessing(backbone.image_size, grayscale=False)
    cache = None if backbone.is_scratch else FeatureCache(feature_cache_dir(settings), backbone, options)
    with pdf_store.for_command(settings.pdf_renderer, pdf_cache_dir(settings), settings.progress) as pdfs:
        return discover(settings.data, settings.validation_percent, settings.test_percent,
                        FileProbe(options, cache), images_of=pdfs.image_paths)


def feature_cache_dir(settings: TrainSettings) -> Path:
    return Path(settings.cache_dir) if settings.cache_dir else Path(settings.models) / ".cache" / "features"


def pdf_cache_dir(settings: TrainSettings) -> Path:
    """PDFs in DATA are rendered once, into <models>/.cache/pages unless PDF_CACHE says."""
    return pdf_store.training_cache_dir(settings.pdf_cache, settings.models)


def run_log_dir(settings: TrainSettings) -> str:
    root = Path(settings.log_dir) if settings.log_dir else Path(settings.models) / ".logs" / settings.model_name
    return str(root / time.strftime("%Y%m%d-%H%M%S"))


def build_report(dataset: Dataset, trained: Trained, source: ImageSource, batch_size: int,
                 choice: RecipeChoice) -> dict:
    splits, wrong = {}, []
    for name in SPLITS:
        examples = dataset.split(name)
        scores = scores_of(trained, examples, len(dataset.labels), batch_size, source)
        truth = [e.label_index for e in examples]
        splits[name] = report.split_metrics(scores, truth, dataset.labels)
        if name == "test":
            wrong = report.misclassified([e.file for e in examples], scores, truth, dataset.labels)
    counts = dataset.counts()
    fitted_on = sorted({split for figures in trained.phases.values() for split in figures.get("fitted_on", ["train"])})
    return {"labels": dataset.labels, "recipe": choice.as_dict(), "calibration": trained.calibration,
            "fitted_on": fitted_on,
            "splits": splits, "misclassified_test": wrong,
            "skipped": counts["skipped"], "skipped_files": counts["skipped_files"]}


def training_metadata(settings: TrainSettings, backbone: Backbone, options: images.Preprocessing,
                      dataset: Dataset, trained: Trained, run_report: dict, seconds: float) -> dict:
    return {
        "module": settings.module,
        "module_fingerprint": backbone.fingerprint,
        "preprocessing": options.as_dict(),
        "recipe": run_report["recipe"],
        "head": "ridge" if trained.features is not None and settings.head == "ridge" else "softmax",
        "calibration": trained.calibration,
        "passes_per_image": backbone.passes,
        "labels": dataset.labels,
        "settings": settings_module.to_dict(settings),
        "counts": dataset.counts(),
        "accuracy": {name: m["accuracy"] for name, m in run_report["splits"].items()},
        "calibration_error": {name: m["ece"] for name, m in run_report["splits"].items()},
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
    if metadata["recipe"]["mode"] == "auto" and metadata["recipe"]["tried"]:
        parts.append(f"recipe measured in {metadata['recipe']['seconds']:.1f} s")
    if timing["features_seconds"] is not None:
        parts.append(f"features of {images_count} images {timing['features_seconds']:.1f} s")
    for phase, figures in timing["phases"].items():
        if "fit_seconds" in figures:
            parts.append(f"{phase}: ridge fit {figures['fit_seconds']:.2f} s")
            continue
        seconds = figures["epoch_seconds"]
        text = f"{phase}: {len(seconds)} epochs, first {seconds[0]:.2f} s"
        if len(seconds) > 1:
            later = sum(seconds[1:]) / (len(seconds) - 1)
            text += f", later {later:.3f} s each, best epoch {figures['best_epoch']}"
        parts.append(text)
    return "timing: " + "; ".join(parts)


def rounded_one(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
