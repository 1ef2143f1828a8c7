"""RECIPE=auto on this run's data: the candidates' features for the train and validation images
(through the feature cache, one part at a time), the measurement itself (recipe.choose), and what
each candidate costs to serve, timed here."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from imgclf import images
from imgclf.settings import TrainSettings
from imgclf.trainer import inputs, recipe
from imgclf.trainer.backbone import Backbone, FeatureParts, with_parts
from imgclf.trainer.data import Dataset, Example
from imgclf.trainer.features import FeatureCache, part_features

log = logging.getLogger(__name__)

_TIMED_IMAGES = 8      # images per timing call of a part's features
_TIMINGS = 3           # calls timed after a warm-up; the fastest counts (others share the cores)


def choose_recipe(dataset: Dataset, backbone: Backbone, settings: TrainSettings,
                  cache_root: Path) -> recipe.RecipeChoice:
    """The settings' recipe when they fix every option, else RECIPE=auto's measurement."""
    fixed = recipe.fixed_choice(settings)
    if fixed is not None:
        return fixed
    if backbone.is_scratch:
        return recipe.fixed_choice(settings, "nothing to measure on: a network trained from scratch has no "
                                             "cached features, so the photo recipe's options")
    measured = measured_examples(dataset, settings.selection_images, settings.seed)
    log.info("recipe: measuring the candidates on %d train and validation images", len(measured))
    parts = CandidateParts(measured, backbone, cache_root, settings)
    cost = ServingCost(backbone, [e.path for e in measured[:_TIMED_IMAGES]], settings.decode_parallelism)
    labels = np.array([e.label_index for e in measured])
    return recipe.choose(settings, labels, len(dataset.labels), parts, cost)


def measured_examples(dataset: Dataset, limit: int, seed: int) -> list[Example]:
    """Train and validation images, at most limit of them: a stratified sample when there are more."""
    pool = dataset.split("train") + dataset.split("validation")
    if len(pool) <= limit:
        return pool
    rng = np.random.default_rng(seed)
    keep = rng.permutation(len(pool))[:limit]
    return [pool[i] for i in sorted(keep, key=lambda i: (pool[i].label_index, i))]


class CandidateParts:
    """(grayscale, part) -> that part's features [N, D] of the measured images, from the cache."""

    def __init__(self, examples: list[Example], backbone: Backbone, cache_root: Path, settings: TrainSettings):
        self.examples, self.backbone, self.cache_root, self.settings = examples, backbone, cache_root, settings

    def __call__(self, grayscale: bool, part: str) -> np.ndarray:
        options = images.Preprocessing(self.backbone.image_size, grayscale)
        cache = FeatureCache(self.cache_root, self.backbone, options)
        return part_features(self.examples, self.backbone, part, options, cache, self.settings.batch_size,
                             self.settings.progress, self.settings.decode_parallelism)


class ServingCost:
    """ms per image of a recipe's features (what serving adds to decoding and the head): each part
    timed once on a few of the images in this process, a recipe costing the sum of its parts.
    Colour or grey costs the same here: the conversion is preprocessing, not a part."""

    def __init__(self, backbone: Backbone, paths: list[Path], parallel_decodes: int):
        self.backbone, self.paths, self.parallel_decodes = backbone, [str(p) for p in paths], parallel_decodes
        self.part_ms: dict[str, float] = {}

    def __call__(self, candidate: recipe.Recipe) -> float:
        parts = with_parts(self.backbone, candidate.view, candidate.layout_grid).parts
        return sum(map(self.time_part, parts))

    def time_part(self, part: str) -> float:
        if part not in self.part_ms:
            options = images.Preprocessing(self.backbone.image_size)
            pictures = next(iter(inputs.image_dataset(self.paths, options, self.parallel_decodes)
                                 .batch(len(self.paths))))
            layer = FeatureParts(self.backbone.network, self.backbone.image_size, (part,))
            layer(pictures, training=False)               # first call: tracing and allocation, not speed
            seconds = []
            for _ in range(_TIMINGS):
                started = time.perf_counter()
                layer(pictures, training=False).numpy()
                seconds.append(time.perf_counter() - started)
            self.part_ms[part] = 1000 * min(seconds) / len(self.paths)
        return self.part_ms[part]
