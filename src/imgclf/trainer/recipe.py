"""The recipe: which features the classifier reads (colour or grey; the whole image, also its
quadrants, or pooled tiles; the page's ink map or not), and how `RECIPE=auto` picks one for the
data at hand.

auto measures each option the settings leave open by cross-validation of ridge heads on cached
features of the train and validation images (a Gram matrix per part, so each candidate is a few
N x N solves), in two stages so that only the colour mode that won pays for the costlier views:
1. colour or grey, on the whole image;
2. in that mode: the whole image, its centre at 4x and the whole image + quadrants, each with
   and without the layout head.
In each stage it takes the cheapest candidate (backbone passes per image, then no layout head)
whose accuracy is within `selection_margin` standard errors of the best one's, the error being
that of the paired per-image difference: a costlier recipe has to beat a cheaper one by more than
the validation data can resolve. Explicit settings fix their option; presets fix them all.
All 16 tiles (16 passes per image) are never measured by auto: they cost four times the centre
and did no better on images like the training images (docs/training.md).
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
MEASURED_VIEWS = ("whole", "centre", "quadrants")      # auto never pays for measuring "tiles"
MEASURED_LAYOUT_GRID = 32


_VIEW_PASSES = {"whole": 1, "centre": 4, "quadrants": 5, "tiles": 16}
_VIEW_NAMES = {"whole": "whole image", "centre": "centre at 4x", "quadrants": "whole image + quadrants",
               "tiles": "all 4x4 tiles at 4x"}


@dataclass(frozen=True)
class Recipe:
    grayscale: bool
    view: str              # backbone.VIEWS: whole, centre, quadrants or tiles
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
    margin = settings.selection_margin
    views = [fixed["view"]] if "view" in fixed else list(MEASURED_VIEWS)
    grey = colours[0]
    if len(colours) > 1:   # on the cheapest view measured: colour or grey does not depend on it
        first = [Recipe(grey, min(views, key=_VIEW_PASSES.get), 0) for grey in colours]
        grey = _pick(measure.trials(first, stage=1), margin).recipe.grayscale
    grids = [fixed["layout_grid"]] if "layout_grid" in fixed else [0, MEASURED_LAYOUT_GRID]
    trials = measure.trials([Recipe(grey, view, grid) for view in views for grid in grids], stage=2)
    chosen = _pick(trials, margin)
    chosen.chosen = True
    for trial in measure.all:
        trial.ms_per_image = cost_of(trial.recipe)
    return RecipeChoice(chosen.recipe, AUTO, _reason(chosen, trials, margin), measure.all, len(labels),
                        time.perf_counter() - started)


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

    def trials(self, recipes: Sequence[Recipe], stage: int) -> list[Trial]:
        hits = [self.correct(recipe) for recipe in recipes]
        best = hits[int(np.argmax([h.mean() for h in hits]))]
        trials = [Trial(recipe, stage, float(h.mean()), _paired_error(best, h), recipe.passes)
                  for recipe, h in zip(recipes, hits)]
        self.all.extend(trials)
        return trials


def _paired_error(best: np.ndarray, other: np.ndarray) -> float:
    difference = best - other
    return float(difference.std(ddof=1) / np.sqrt(len(difference))) if len(difference) > 1 else 0.0


def _pick(trials: list[Trial], margin: float) -> Trial:
    """The cheapest trial within margin standard errors of the best (ties in cost: the better)."""
    best = max(t.accuracy for t in trials)
    in_reach = [t for t in trials if best - t.accuracy <= margin * t.standard_error]
    return min(in_reach, key=lambda t: (*_cost(t), -t.accuracy))


def _cost(trial: Trial) -> tuple[int, bool]:
    """Backbone passes first, then whether a second head is needed."""
    return trial.passes, bool(trial.recipe.layout_grid)


def _reason(chosen: Trial, trials: list[Trial], margin: float) -> str:
    best = max(trials, key=lambda t: t.accuracy)
    cheaper = [t for t in trials if _cost(t) < _cost(chosen)]
    if best is chosen and not cheaper:
        return "the most accurate candidate is also the cheapest"
    if best is chosen:
        return (f"more accurate than every cheaper candidate by more than {margin:g} standard errors of the "
                "difference: a gain the validation data can resolve")
    return (f"{best.accuracy - chosen.accuracy:.3f} below the most accurate ({best.recipe.describe()}), within "
            f"{margin:g} standard errors ({margin * chosen.standard_error:.3f}): a gain the validation data cannot "
            "resolve is not worth its cost")
