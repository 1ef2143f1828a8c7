"""`imgclf evaluate`: folds built from a manifest (leave one group out) or held-out folders, each
trained with the product's own `train` and scored through the exported signature."""

import json

import numpy as np
import pytest

from imgclf import evaluate
from imgclf.sample_data import write_sample_dataset
from imgclf.settings import EvaluateSettings, TrainSettings


def write_manifest(root, groups):
    """Sample pages of two classes under root/<group>/<class>/, listed with their group."""
    rows = ["image\tlabel\tsource"]
    for index, group in enumerate(groups):
        folder = write_sample_dataset(root / f"part{index}", per_class=12, seed=index, size=(60, 80))
        for path in sorted(folder.rglob("*.*")):
            rows.append(f"{path.relative_to(root)}\t{path.parent.name}\t{group}")
    manifest = root / "MANIFEST.tsv"
    manifest.write_text("\n".join(rows) + "\n")
    return manifest


def test_leave_one_group_out_links_every_other_group_and_merges_by_prefix(tmp_path):
    manifest = write_manifest(tmp_path / "pages", ["debian:tex", "debian:doc", "mozilla/pdf.js"])
    folds = evaluate.leave_group_out_folds(manifest, "source", ":", tmp_path / "work")
    assert [fold.name for fold in folds] == ["debian", "mozilla/pdf.js"]
    debian, mozilla = folds
    assert len(debian.tests) == 48 and len(mozilla.tests) == 24
    linked = sorted(p for p in debian.data.rglob("*") if p.is_symlink())
    assert len(linked) == 24 and {p.resolve() for p in linked} == {path for path, _ in mozilla.tests}
    assert {p.parent.name for p in linked} == {"other", "research"}
    whole = evaluate.leave_group_out_folds(manifest, "source", "", tmp_path / "work-2")
    assert len(whole) == 3


def test_a_manifest_without_its_columns_is_refused_by_name(tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("image\tlabel\na.jpg\tx\n")
    with pytest.raises(evaluate.EvaluationError, match="no column.*source"):
        evaluate.leave_group_out_folds(bad, "source", ":", tmp_path)


@pytest.mark.slow
def test_evaluate_trains_each_fold_and_scores_through_the_signature(tmp_path, capsys):
    manifest = write_manifest(tmp_path / "pages", ["a", "b"])
    output = tmp_path / "figures.json"
    code = evaluate.main(["--manifest", str(manifest), "--module", "scratch", "--image-size", "24", "--epochs", "3",
                          "--seeds", "1,2", "--models", str(tmp_path / "models"), "--progress", "0",
                          "--output", str(output)])
    assert code == 0
    results = json.loads(output.read_text())
    assert set(results["seeds"]) == {"1", "2"}
    for figures in results["seeds"].values():
        assert [fold["fold"] for fold in figures["folds"]] == ["a", "b"]
        assert figures["pooled"]["count"] == 48 and 0 <= figures["pooled"]["accuracy"] <= 1
        assert all(fold["recipe"] and fold["passes"] == 1 for fold in figures["folds"])
    printed = capsys.readouterr().out
    assert "leave one source out" in printed and "pooled" in printed
    assert not list((tmp_path / "models").rglob("saved_model.pb"))     # staged exports are discarded


@pytest.mark.slow
def test_held_out_folders_are_scored_one_by_one_and_pooled(tmp_path):
    train_dir = write_sample_dataset(tmp_path / "train", per_class=16, seed=3, size=(60, 80))
    other = write_sample_dataset(tmp_path / "other-style", per_class=6, seed=4, size=(60, 80))
    third = write_sample_dataset(tmp_path / "third-style", per_class=4, seed=6, size=(60, 80))
    settings = EvaluateSettings(test=f"{other},{third}", seeds="5")
    training = TrainSettings(data=str(train_dir), module="scratch", image_size=24, epochs=3, progress=False,
                             models=str(tmp_path / "models"))
    results = evaluate.evaluate(settings, training, tmp_path / "work")
    [run] = results["seeds"][5]["folds"]
    assert run["images"] == 20 and run["fold"] == "other-style,third-style"
    assert {group: figures["count"] for group, figures in run["by_group"].items()} == \
        {"other-style": 12, "third-style": 8}
    assert results["mean_accuracy"] == results["seeds"][5]["pooled"]["accuracy"]
    assert np.isfinite(run["ece"])
    assert "third-style" in evaluate.format_results(results)
