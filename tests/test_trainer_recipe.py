"""RECIPE=auto's choice on synthetic features: the cheapest candidate unless a costlier one wins by
more than the validation data can resolve; presets and explicit settings fix options."""

import numpy as np
import pytest

from imgclf.settings import TrainSettings
from imgclf.trainer import recipe
from imgclf.trainer.recipe import Recipe


class Parts:
    """Features per (grayscale, part): whole images tell the classes apart a little, other parts
    not at all (noise, `noise_dim` wide), unless given in `strong`: then by a wide margin. Records
    what was asked for."""

    def __init__(self, labels, strong=(), noise_dim=12, seed=0):
        self.labels, self.strong, self.noise_dim, self.asked = labels, set(strong), noise_dim, []
        self.rng = np.random.default_rng(seed)

    def __call__(self, grayscale, part):
        self.asked.append((grayscale, part))
        dim = 12 if part == "whole" else self.noise_dim if part == "centre" else 16
        signal = 3.0 if (grayscale, part) in self.strong else 0.6 if part == "whole" else 0.0
        x = self.rng.normal(size=[len(self.labels), dim])
        x[:, 0] += signal * (self.labels == 1)
        x[:, 1] += signal * (self.labels == 2)
        return x


LABELS = np.repeat([0, 1, 2], 60)
SETTINGS = TrainSettings(data="x", selection_repeats=2)


def choose(parts, **overrides):
    settings = TrainSettings(**{**SETTINGS.__dict__, **overrides})
    return recipe.choose(settings, LABELS, 3, parts, lambda r: 10.0 * r.passes)


def test_colour_is_measured_on_the_whole_image_and_only_the_winner_pays_for_the_centre():
    parts = Parts(LABELS, strong={(False, "whole")})
    choice = choose(parts)
    assert choice.recipe.grayscale is False                      # colour won stage 1
    assert not any(grey and part == "centre" for grey, part in parts.asked)
    assert [t.stage for t in choice.trials] == [1, 1, 2, 2, 2, 2, 2, 2]
    assert [t.recipe.view for t in choice.trials if t.stage == 2][::2] == ["whole", "centre", "whole+centre"]
    assert [t.chosen for t in choice.trials].count(True) == 1


def test_without_a_resolvable_difference_the_reference_recipe_is_kept():
    choice = choose(Parts(LABELS))
    assert choice.recipe.view == "whole+centre" and choice.recipe.layout_grid == 0 and choice.recipe.passes == 5
    assert choice.mode == "auto" and choice.images == len(LABELS) and "reference" in choice.reason
    stage_two = [t for t in choice.trials if t.stage == 2]
    assert {t.ms_per_image for t in stage_two} == {10.0, 40.0, 50.0}
    described = choice.as_dict()
    assert described["chosen"] == {"grayscale": choice.recipe.grayscale, "view": "whole+centre", "layout_grid": 0}
    assert len(described["tried"]) == 8 and described["reason"]


def test_a_candidate_that_beats_the_reference_clearly_replaces_it():
    # The centre part is wide noise here: the whole image alone is clearly better than with it.
    whole_wins = choose(Parts(LABELS, strong={(True, "whole"), (False, "whole")}, noise_dim=400))
    assert whole_wins.recipe.view == "whole" and "can resolve" in whole_wins.reason
    layout_wins = choose(Parts(LABELS, strong={(True, "layout32"), (False, "layout32")}))
    assert layout_wins.recipe.layout_grid == 32


def test_a_margin_of_zero_takes_the_most_accurate():
    trials = choose(Parts(LABELS, strong={(True, "centre"), (False, "centre")}), selection_margin=0.0).trials
    best = max((t for t in trials if t.stage == 2), key=lambda t: t.accuracy)
    assert best.chosen


def test_explicit_settings_fix_their_option_and_presets_fix_all():
    parts = Parts(LABELS, strong={(False, "centre")})
    choice = choose(parts, grayscale=True, layout_grid=0)
    assert choice.recipe.grayscale is True and all(grey for grey, _ in parts.asked)
    assert {t.stage for t in choice.trials} == {2} and len(choice.trials) == 3     # the three views
    fixed_view = choose(Parts(LABELS), view="whole")
    assert fixed_view.recipe.view == "whole" and len([t for t in fixed_view.trials if t.stage == 2]) == 2
    document = recipe.fixed_choice(TrainSettings(data="x", recipe="document"))
    assert document.recipe == Recipe(True, "centre", 0) and document.mode == "document" and not document.trials
    photo = recipe.fixed_choice(TrainSettings(data="x", recipe="photo", view="whole+quadrants"))
    assert photo.recipe == Recipe(False, "whole+quadrants", 0) and "with flags" in photo.reason
    assert recipe.fixed_choice(TrainSettings(data="x", grayscale=False, view="whole", layout_grid=0)).recipe \
        == Recipe(False, "whole", 0)
    assert recipe.fixed_choice(TrainSettings(data="x")) is None              # auto: something to measure


@pytest.mark.parametrize("preset", ["document", "photo"])
def test_recipes_describe_their_cost(preset):
    chosen = recipe.fixed_choice(TrainSettings(data="x", recipe=preset)).recipe
    assert chosen.passes == (4 if preset == "document" else 1)
    assert ("centre" in chosen.describe()) == (preset == "document")


def test_the_printed_table_lists_every_candidate_in_aligned_columns_and_marks_the_choice():
    from imgclf.trainer.report import format_recipe

    lines = format_recipe(choose(Parts(LABELS)).as_dict())
    assert lines[0].startswith("recipe (auto): ") and "backbone pass(es) per image" in lines[0]
    header, rows = lines[2], lines[3:]
    assert len(rows) == 8 and sum(row.endswith("<- chosen") for row in rows) == 1
    # The longest description (with the layout head) must not push its figures out of line.
    accuracy_end = header.index("accuracy") + len("accuracy")
    assert all(row[accuracy_end - 6:accuracy_end].strip().startswith("0.") for row in rows)
    assert all(row.split()[-1] in ("chosen", "50.0", "40.0", "10.0") for row in rows)
