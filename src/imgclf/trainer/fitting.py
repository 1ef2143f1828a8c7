"""Fitting the classifier: a ridge or softmax head on cached features, or end to end on images
(scratch backbone, augmentation), then fine-tuning and temperature scaling when asked."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np
import tf_keras as keras

from imgclf import images
from imgclf.settings import TrainSettings
from imgclf.trainer import inputs, linear, model
from imgclf.trainer.backbone import Backbone
from imgclf.trainer.data import Dataset, Example
from imgclf.trainer.features import FeatureCache, compute_features


@dataclass
class Trained:
    """What training produced: the layers to export, and how to score examples with them."""

    backbone: Backbone
    head: keras.Model
    classifier: keras.Model          # images -> backbone -> head
    phases: dict                     # phase -> its figures (epoch times and best epoch, or fit time)
    features_seconds: float | None
    # Cached features by image digest while they still are what the exported backbone computes;
    # None when there are none or fine-tuning moved the backbone: then scoring runs on images.
    features: dict[str, np.ndarray] | None
    calibration: dict | None = None  # the temperature fitted on validation and what it changed


@dataclass(frozen=True)
class FeatureSource:
    """Batches of cached features (the columns one head reads) with their targets."""

    features: dict
    columns: slice | None = None     # None: all of them

    def stacked(self, examples: list[Example]) -> np.ndarray:
        columns = self.columns or slice(None)
        return np.stack([self.features[e.digest][columns] for e in examples])

    def batches(self, examples: list[Example], k: int, batch_size: int, shuffle_seed: int | None = None):
        return inputs.feature_batches(self.stacked(examples), inputs.one_hot(labels_of(examples), k), batch_size,
                                      shuffle_seed=shuffle_seed)


@dataclass(frozen=True)
class ImageSource:
    """Batches of decoded images with their targets; augmented only when shuffled for training."""

    options: images.Preprocessing
    parallel_decodes: int
    augment: bool = False

    def batches(self, examples: list[Example], k: int, batch_size: int, shuffle_seed: int | None = None):
        return inputs.image_batches([str(e.path) for e in examples], inputs.one_hot(labels_of(examples), k),
                                    self.options, batch_size, self.parallel_decodes, shuffle_seed=shuffle_seed,
                                    augment=self.augment and shuffle_seed is not None)


def fit_classifier(dataset: Dataset, backbone: Backbone, options: images.Preprocessing,
                   cache: FeatureCache | None, settings: TrainSettings, log_dir: str | None) -> Trained:
    """On cached features when the backbone is frozen and images are not augmented (a ridge head,
    or softmax heads one branch after the other); otherwise end to end on images. Fine-tuning then
    unfreezes the backbone; calibration last."""
    images_source = ImageSource(options, settings.decode_parallelism, settings.augment)
    features, features_seconds = None, None
    if cache is not None and not settings.augment:
        begun = time.perf_counter()
        vectors = compute_features(dataset.examples, backbone, options, cache, settings.batch_size, settings.progress,
                                   settings.decode_parallelism)
        features_seconds = time.perf_counter() - begun
        features = dict(zip((e.digest for e in dataset.examples), vectors))
        fit_head = fit_ridge_head if settings.head == "ridge" else fit_softmax_head
        head, phases = fit_head(dataset, backbone, features, settings, log_dir)
        classifier = model.build_full_model(backbone, head)
    else:
        head, _ = model.build_classifier_head(backbone.feature_dim, backbone.layout_dim, len(dataset.labels),
                                              settings.dropout, settings.seed, settings.layout_weight)
        classifier = model.build_full_model(backbone, head)
        phase = "end-to-end" if backbone.is_scratch else "head-on-images"
        phases = {phase: fit_phase(classifier, images_source, dataset, settings, log_dir, phase,
                                   settings.learning_rate, settings.epochs)}
    if settings.fine_tune and not backbone.is_scratch:
        phases["fine-tune"] = fit_phase(classifier, images_source, dataset, settings, log_dir, "fine-tune",
                                        settings.fine_tune_learning_rate, settings.fine_tune_epochs)
        features = None     # the backbone moved: cached features no longer describe it
    trained = Trained(backbone, head, classifier, phases, features_seconds, features)
    if not settings.calibrate or any("scale" in figures for figures in phases.values()):
        return trained       # a ridge head fitted its temperature already
    return calibrate(trained, dataset, settings.batch_size, images_source)


def fit_ridge_head(dataset: Dataset, backbone: Backbone, features: dict, settings: TrainSettings,
                   log_dir: str | None) -> tuple[keras.Model, dict]:
    """Each branch a ridge head. Its softmax temperature is fitted on the validation split's scores
    of a head fitted on the train split alone; the head itself is then fitted on train and
    validation together, since nothing stops early: 21% more images to learn from."""
    k, train, held = len(dataset.labels), dataset.split("train"), dataset.split("validation")
    branches, phases = [], {}
    for name, columns in model.branch_columns(backbone.feature_dim, backbone.layout_dim):
        started = time.perf_counter()
        source = FeatureSource(features, columns)
        scale = 1.0
        if held:
            scale = linear.fit_scale(_ridge(source, train, k, settings).scores(source.stacked(held)), labels_of(held))
        fit = _ridge(source, train + held, k, settings)
        branches.append(model.Branch(name, model.linear_branch(fit.weights, fit.bias, scale, name.replace("-", "_")),
                                     columns))
        phases[name] = {"fit_seconds": round(time.perf_counter() - started, 3), "scale": round(scale, 4),
                        "fitted_on": ["train", "validation"] if held else ["train"]}
    return model.combine_branches(branches, backbone.feature_dim, settings.layout_weight), phases


def _ridge(source: FeatureSource, examples: list[Example], k: int, settings: TrainSettings) -> linear.LinearFit:
    y = labels_of(examples)
    return linear.fit_ridge(source.stacked(examples), y, k, settings.ridge_strength,
                            linear.class_weights(y, k, settings.balance_classes))


def fit_softmax_head(dataset: Dataset, backbone: Backbone, features: dict, settings: TrainSettings,
                     log_dir: str | None) -> tuple[keras.Model, dict]:
    """Dropout + softmax branches, each with its own early stopping."""
    head, branches = model.build_classifier_head(backbone.feature_dim, backbone.layout_dim, len(dataset.labels),
                                                 settings.dropout, settings.seed, settings.layout_weight)
    phases = {branch.name: fit_phase(branch.model, FeatureSource(features, branch.columns), dataset, settings,
                                     log_dir, branch.name, settings.learning_rate, settings.epochs)
              for branch in branches}
    return head, phases


def fit_phase(network: keras.Model, source, dataset: Dataset, settings: TrainSettings, log_dir: str | None,
              phase: str, learning_rate: float, epochs: int) -> dict:
    """One training phase with early stopping on the validation split; its epoch times and best epoch."""
    k, train, validation = len(dataset.labels), dataset.split("train"), dataset.split("validation")
    model.compile_for_training(network, learning_rate, settings.label_smoothing)
    weights = linear.class_weights(labels_of(train), k, True) if settings.balance_classes else None
    result = model.fit(
        network, source.batches(train, k, settings.batch_size, shuffle_seed=settings.seed),
        source.batches(validation, k, settings.batch_size) if validation else None,
        steps=model.steps_per_epoch(len(train), settings.batch_size), epochs=epochs, patience=settings.patience,
        min_delta=settings.min_delta, log_dir=log_dir, phase=phase, progress=settings.progress,
        class_weight=None if weights is None else class_weight_map(labels_of(train), weights))
    return {"epoch_seconds": [round(s, 3) for s in result.epoch_seconds], "best_epoch": result.best_epoch}


def calibrate(trained: Trained, dataset: Dataset, batch_size: int, source: ImageSource) -> Trained:
    """Temperature scaling of the head's probabilities, fitted on the validation split."""
    held = dataset.split("validation")
    if not held:
        return dataclasses.replace(trained, calibration={"scale": None, "why": "no validation images"})
    y = labels_of(held)
    before = scores_of(trained, held, len(dataset.labels), batch_size, source)
    scale = linear.fit_scale(np.log(np.maximum(before, 1e-12)), y)
    head = model.calibrated(trained.head, scale)
    after = linear.softmax(scale * np.log(np.maximum(before, 1e-12)))
    return dataclasses.replace(trained, head=head, classifier=model.build_full_model(trained.backbone, head),
                               calibration={"scale": round(scale, 4),
                                            "validation_ece_before": round(linear.expected_calibration_error(before, y), 4),
                                            "validation_ece_after": round(linear.expected_calibration_error(after, y), 4)})


def scores_of(trained: Trained, examples: list[Example], k: int, batch_size: int, source: ImageSource) -> np.ndarray:
    """Probabilities [N, K]: from the cached features when they still hold, else from the images."""
    if not examples:
        return np.zeros([0, k], np.float32)
    if trained.features is not None:
        return trained.head.predict(FeatureSource(trained.features).batches(examples, k, batch_size), verbose=0)
    return trained.classifier.predict(source.batches(examples, k, batch_size), verbose=0)


def labels_of(examples: list[Example]) -> np.ndarray:
    return np.array([e.label_index for e in examples], np.int64)


def class_weight_map(labels: np.ndarray, weights: np.ndarray) -> dict[int, float]:
    return {int(label): float(weight) for label, weight in zip(labels, weights)}
