"""The recipe: which features the classifier reads (colour or grey; the whole image, its centre
at 4x, or both; the page's ink map or not), and how `RECIPE=auto` picks one for the data at hand.

auto measures each option the settings leave open by cross-validation of ridge heads on cached
features of the train and validation images (a Gram matrix per part, so each candidate is a few
N x N solves), in two stages so that only the colour mode that won pays for the costlier views:
1. colour or grey, on the whole image: the more accurate (they cost the same);
2. in that mode: the whole image, its centre at 4x, and both, each with and without the layout
   head. The reference is the whole image + its centre, without the layout head: of everything
   measured it did best on pages from sources and on artwork from vendors the training never saw
   (docs/training.md). Another candidate replaces it only when it is more accurate by more than
   `selection_margin` standard errors of the paired per-image difference, i.e. by more than the
   validation data can resolve.
Why not "the cheapest unless a costlier one wins": gains on images like the training images
understate what detail views do for new sources; leaving one source of PDFs out, the whole image
alone was the most accurate by cross-validation, and 8 points worse on the source left out.
Explicit settings fix their option; presets fix them all. Quadrants at 2x and all 16 tiles at
4x are not measured: on both datasets the centre did as well or better, for as little or less.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np

from imgclf.settings import TrainSettings
from imgclf.trainer import linear
from imgclf.trainer.backbone import VIEWS

AUTO = "auto"
PRESETS = {
    # Best on PDF first pages from sources the training never saw (docs/training.md).
    "document": {"grayscale": True, "view": "centre", "layout_grid": 0},
    # The plain transfer recipe.
    "photo": {"grayscale": False, "view": "whole", "layout_grid": 0},
}
OPTIONS = ("grayscale", "view", "layout_grid")
MEASURED_VIEWS = ("whole", "centre", "whole+centre")   # what auto measures (see the module's doc)
REFERENCE_VIEW = "whole+centre"
MEASURED_LAYOUT_GRID = 32


_VIEW_PASSES = {"whole": 1, "centre": 4, "whole+centre": 5, "whole+quadrants": 5, "tiles": 16}
_VIEW_NAMES = {"whole": "whole image", "centre": "centre at 4x", "whole+centre": "whole image + centre at 4x",
               "whole+quadrants": "whole image + quadrants at 2x", "tiles": "all 4x4 tiles at 4x"}


@dataclass(frozen=True)
class Recipe:
    grayscale: bool
    view: str              # one of backbone.VIEWS
    layout_grid: int

    @property
    def passes(self) -> int:
        """Backbone passes per image."""
        return _VIEW_PASSES[self.view]

    def describe(self) -> str:
        parts = ["grey" if self.grayscale else "colour", _VIEW_NAMES[self.view]]
        if self.layout_grid:
            parts.append(f"layout head {self.layout_grid}x{self.layout_grid}")
        return ", ".join(parts)


@dataclass
class Trial:
    """One candidate as measured: cross-validated accuracy, its paired standard error against the
    stage's best, and what it costs to serve."""

    recipe: Recipe
    stage: int
    accuracy: float
    standard_error: float
    passes: int
    ms_per_image: float | None = None
    chosen: bool = False

    def as_dict(self) -> dict:
        return {"recipe": asdict(self.recipe), "description": self.recipe.describe(), "stage": self.stage,
                "cv_accuracy": round(self.accuracy, 4), "standard_error": round(self.standard_error, 4),
                "passes": self.passes, "ms_per_image": None if self.ms_per_image is None else round(self.ms_per_image, 1),
                "chosen": self.chosen}


@dataclass
class RecipeChoice:
    recipe: Recipe
    mode: str                       # auto | document | photo
    reason: str
    trials: list[Trial] = field(default_factory=list)
    images: int = 0                 # how many train + validation images the measurement used
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {"mode": self.mode, "chosen": asdict(self.recipe), "description": self.recipe.describe(),
                "passes": self.recipe.passes, "reason": self.reason, "images": self.images,
                "seconds": round(self.seconds, 2), "tried": [t.as_dict() for t in self.trials]}


def open_options(settings: TrainSettings) -> dict:
    """The options the settings fix (explicit flags, else the preset's), by name."""
    fixed = dict(PRESETS.get(settings.recipe, {}))
    fixed.update({name: getattr(settings, name) for name in OPTIONS if getattr(settings, name) is not None})
    return fixed


def fixed_choice(settings: TrainSettings, reason: str | None = None) -> RecipeChoice | None:
    """The recipe when the settings leave nothing to measure (a preset or every option given),
    or when nothing can be measured (reason says why): unset options then take the photo preset's."""
    fixed = open_options(settings)
    if reason is None and len(fixed) < len(OPTIONS):
        return None
    recipe = Recipe(**{**PRESETS["photo"], **fixed})
    if reason is None:
        reason = ("preset " + settings.recipe if settings.recipe != AUTO else "every option given") + \
                 (" with flags" if settings.recipe != AUTO and set(fixed.items()) - set(PRESETS[settings.recipe].items())
                  else "")
    return RecipeChoice(recipe, settings.recipe, reason)


# Parts of the features a candidate reads, computed on demand: (grayscale, part name) -> [N, D].
PartSource = Callable[[bool, str], np.ndarray]


def choose(settings: TrainSettings, labels: np.ndarray, num_classes: int, part_source: PartSource,
           cost_of: Callable[[Recipe], float | None]) -> RecipeChoice:
    """RECIPE=auto: the two stages above, on the images whose features part_source returns (in
    the order of labels). cost_of(recipe) gives ms per image, or None when not measured."""
    started = time.perf_counter()
    fixed = open_options(settings)
    measure = _Measurer(settings, labels, num_classes, part_source)
    colours = [fixed["grayscale"]] if "grayscale" in fixed else [True, False]
    views = [fixed["view"]] if "view" in fixed else list(MEASURED_VIEWS)
    grids = [fixed["layout_grid"]] if "layout_grid" in fixed else [0, MEASURED_LAYOUT_GRID]
    grey = colours[0]
    if len(colours) > 1:   # on the cheapest view measured: colour or grey does not depend on it
        first = measure.trials([Recipe(grey, min(views, key=_VIEW_PASSES.get), 0) for grey in colours], stage=1)
        grey = max(first, key=lambda t: t.accuracy).recipe.grayscale
    reference = Recipe(grey, REFERENCE_VIEW if REFERENCE_VIEW in views else views[0], min(grids))
    trials = measure.trials([Recipe(grey, view, grid) for view in views for grid in grids], stage=2, anchor=reference)
    chosen, reason = _pick(trials, reference, settings.selection_margin)
    chosen.chosen = True
    for trial in measure.all:
        trial.ms_per_image = cost_of(trial.recipe)
    return RecipeChoice(chosen.recipe, AUTO, reason, measure.all, len(labels), time.perf_counter() - started)


class _Measurer:
    """Cross-validated per-image correctness of candidate recipes, from per-part Gram matrices."""

    def __init__(self, settings: TrainSettings, labels: np.ndarray, num_classes: int, part_source: PartSource):
        self.settings, self.labels, self.k, self.part_source = settings, labels, num_classes, part_source
        self.grams: dict = {}
        self.all: list[Trial] = []
        self.folds = [linear.stratified_folds(labels, settings.selection_folds, settings.seed + r)
                      for r in range(settings.selection_repeats)]

    def gram(self, grayscale: bool, part: str) -> np.ndarray:
        if (grayscale, part) not in self.grams:
            x = np.asarray(self.part_source(grayscale, part), np.float64)
            self.grams[grayscale, part] = x @ x.T
        return self.grams[grayscale, part]

    def correct(self, recipe: Recipe) -> np.ndarray:
        texture = sum(self.gram(recipe.grayscale, part) for part in VIEWS[recipe.view])
        hits = np.zeros(len(self.labels))
        for folds in self.folds:
            scores = self._scores(texture, folds)
            if recipe.layout_grid:
                layout = self._scores(self.gram(recipe.grayscale, f"layout{recipe.layout_grid}"), folds)
                scores = (1 - self.settings.layout_weight) * scores + self.settings.layout_weight * layout
            hits += scores.argmax(axis=1) == self.labels
        return hits / len(self.folds)

    def _scores(self, gram: np.ndarray, folds: np.ndarray) -> np.ndarray:
        return linear.cross_validated_scores(gram, self.labels, self.k, self.settings.ridge_strength, folds,
                                             self.settings.balance_classes)

    def trials(self, recipes: Sequence[Recipe], stage: int, anchor: Recipe | None = None) -> list[Trial]:
        """Each recipe's accuracy, and the standard error of its per-image difference from the
        anchor's (from the best one's when there is no anchor)."""
        hits = [self.correct(recipe) for recipe in recipes]
        base = hits[recipes.index(anchor)] if anchor is not None else hits[int(np.argmax([h.mean() for h in hits]))]
        trials = [Trial(recipe, stage, float(h.mean()), _paired_error(base, h), recipe.passes)
                  for recipe, h in zip(recipes, hits)]
        self.all.extend(trials)
        return trials


def _paired_error(best: np.ndarray, other: np.ndarray) -> float:
    difference = best - other
    return float(difference.std(ddof=1) / np.sqrt(len(difference))) if len(difference) > 1 else 0.0


def _pick(trials: list[Trial], reference: Recipe, margin: float) -> tuple[Trial, str]:
    """The reference, unless the most accurate candidate beats it by more than margin standard
    errors of their paired difference; and why, in words."""
    anchor = next(t for t in trials if t.recipe == reference)
    best = max(trials, key=lambda t: (t.accuracy, -t.passes))
    gain, error = best.accuracy - anchor.accuracy, best.standard_error
    if best is anchor:
        return anchor, "the reference recipe, and the most accurate of the candidates"
    if gain > margin * error:
        return best, (f"{gain:+.3f} over the reference recipe ({reference.describe()}), more than {margin:g} "
                      f"standard errors ({margin * error:.3f}): a gain the validation data can resolve")
    return anchor, (f"the reference recipe: the most accurate ({best.recipe.describe()}, {gain:+.3f}) does not "
                    f"beat it by more than {margin:g} standard errors ({margin * error:.3f}), which the "
                    "validation data cannot resolve")
