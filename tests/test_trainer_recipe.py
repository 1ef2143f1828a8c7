"""RECIPE=auto's choice on synthetic features: the cheapest candidate unless a costlier one wins by
more than the validation data can resolve; presets and explicit settings fix options."""

import numpy as np
import pytest

from imgclf.settings import TrainSettings
from imgclf.trainer import recipe
from imgclf.trainer.recipe import Recipe


class Parts:
    """Features per (grayscale, part): whole images barely tell the classes apart; a part given in
    `strong` does, by a wide margin. Records what was asked for."""

    def __init__(self, labels, strong=(), seed=0):
        self.labels, self.strong, self.asked = labels, set(strong), []
        self.rng = np.random.default_rng(seed)

    def __call__(self, grayscale, part):
        self.asked.append((grayscale, part))
        dim = {"whole": 12, "quadrants": 48, "centre": 12}.get(part, 16)
        signal = 3.0 if (grayscale, part) in self.strong else 0.35
        x = self.rng.normal(size=[len(self.labels), dim])
        x[:, 0] += signal * (self.labels == 1)
        x[:, 1] += signal * (self.labels == 2)
        return x


LABELS = np.repeat([0, 1, 2], 60)
SETTINGS = TrainSettings(data="x", selection_repeats=2)


def choose(parts, **overrides):
    settings = TrainSettings(**{**SETTINGS.__dict__, **overrides})
    return recipe.choose(settings, LABELS, 3, parts, lambda r: 10.0 * r.passes)


def test_a_part_that_wins_clearly_is_chosen_and_the_other_colour_never_pays_for_costlier_views():
    parts = Parts(LABELS, strong={(False, "whole"), (False, "quadrants")})
    choice = choose(parts)
    assert choice.recipe.grayscale is False                      # colour won stage 1
    assert not any(grey and part in ("quadrants", "centre") for grey, part in parts.asked)
    strong_centre = Parts(LABELS, strong={(True, "centre")})
    chosen = choose(strong_centre).recipe
    assert chosen.view == "centre" and chosen.passes == 4
    assert [t.chosen for t in choose(strong_centre).trials].count(True) == 1


def test_without_a_resolvable_gain_the_cheapest_candidate_is_kept():
    choice = choose(Parts(LABELS))
    assert choice.recipe.passes == 1 and choice.recipe.layout_grid == 0
    assert choice.mode == "auto" and choice.images == len(LABELS)
    stage_two = [t for t in choice.trials if t.stage == 2]
    assert len(stage_two) == 6 and {t.ms_per_image for t in stage_two} == {10.0, 40.0, 50.0}
    described = choice.as_dict()
    assert described["chosen"] == {"grayscale": choice.recipe.grayscale, "view": "whole", "layout_grid": 0}
    assert len(described["tried"]) == 8 and described["reason"]


def test_a_margin_of_zero_takes_the_most_accurate():
    parts = Parts(LABELS, strong={(True, "centre")})
    trials = choose(parts, selection_margin=0.0).trials
    best = max((t for t in trials if t.stage == 2), key=lambda t: t.accuracy)
    assert best.chosen


def test_explicit_settings_fix_their_option_and_presets_fix_all():
    parts = Parts(LABELS, strong={(False, "quadrants")})
    choice = choose(parts, grayscale=True, layout_grid=0)
    assert choice.recipe.grayscale is True and all(grey for grey, _ in parts.asked)
    assert {t.stage for t in choice.trials} == {2} and len(choice.trials) == 3     # the three views
    document = recipe.fixed_choice(TrainSettings(data="x", recipe="document"))
    assert document.recipe == Recipe(True, "centre", 0) and document.mode == "document" and not document.trials
    photo = recipe.fixed_choice(TrainSettings(data="x", recipe="photo", view="quadrants"))
    assert photo.recipe == Recipe(False, "quadrants", 0) and "with flags" in photo.reason
    assert recipe.fixed_choice(TrainSettings(data="x", grayscale=False, view="whole", layout_grid=0)).recipe \
        == Recipe(False, "whole", 0)
    assert recipe.fixed_choice(TrainSettings(data="x")) is None              # auto: something to measure


@pytest.mark.parametrize("preset", ["document", "photo"])
def test_recipes_describe_their_cost(preset):
    chosen = recipe.fixed_choice(TrainSettings(data="x", recipe=preset)).recipe
    assert chosen.passes == (4 if preset == "document" else 1)
    assert ("centre" in chosen.describe()) == (preset == "document")
