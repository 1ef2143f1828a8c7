"""The promotion gate on real SavedModels: a good one, a deliberately worse one, broken ones."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from imgclf import contract
from imgclf.model_store import IncompleteExport, LocalModelStore
from imgclf.rollout import cli
from imgclf.rollout.gate import check, labelled_examples, recorded_held_out
from imgclf.rollout.markers import write_marker_model
from imgclf.warmup_requests import write_warmup_requests
from imgclf.rollout.publish import GateRefused, promote


@pytest.fixture(scope="module")
def examples(sample_dataset):
    return labelled_examples(sample_dataset)


@pytest.fixture(scope="module")
def models(tmp_path_factory, trained_model, examples):
    """The trainer's real export (accurate on these pages) and a useless marker model that always
    answers "other"; both carry warmup requests."""
    worse = write_marker_model(tmp_path_factory.mktemp("gate-models") / "worse", 1, trained_model.labels,
                               warmup_images=[path.read_bytes() for path, _ in examples[:2]])
    return {"good": trained_model.version_dir, "worse": worse}


def stage_copy(model: Path, store: LocalModelStore, change=None) -> Path:
    """A sealed staged copy of a model folder, changed by change(folder) before sealing."""
    staged = store.stage()
    shutil.copytree(model, staged, dirs_exist_ok=True)
    if change:
        change(staged)
    store.seal(staged)
    return staged


def publish_copy(model: Path, store: LocalModelStore) -> int:
    return store.publish(stage_copy(model, store))


def staged_paths(store: LocalModelStore) -> list[Path]:
    return [s.path for s in store.staged()]


def test_first_candidate_is_measured_and_published(tmp_path, models, examples):
    store = LocalModelStore(tmp_path / "m")
    staged = stage_copy(models["good"], store)
    decision = check(staged, store, examples, tolerance=0.01)
    assert decision.current is None and not decision.refused
    assert decision.candidate.accuracy > 0.9 and decision.candidate.warmup_replayed > 0
    version = promote(store, staged, examples, tolerance=0.01, force=False)
    assert store.versions() == [version]


def test_worse_candidate_is_refused_and_stays_staged_unless_forced(tmp_path, models, examples):
    store = LocalModelStore(tmp_path / "m")
    served = publish_copy(models["good"], store)
    staged = stage_copy(models["worse"], store)

    with pytest.raises(GateRefused, match=f"worse than version {served}") as refused:
        promote(store, staged, examples, tolerance=0.05, force=False)
    assert str(staged) in str(refused.value) and "FORCE=1" in str(refused.value)
    assert store.versions() == [served]
    assert staged_paths(store) == [staged]

    forced = promote(store, staged, examples, tolerance=0.05, force=True)
    assert store.versions() == [served, forced]


def test_tolerance_lets_a_slightly_worse_candidate_through(tmp_path, models, examples):
    store = LocalModelStore(tmp_path / "m")
    publish_copy(models["good"], store)
    decision = check(stage_copy(models["worse"], store), store, examples, tolerance=1.0)
    assert not decision.refused
    assert decision.candidate.accuracy < decision.current.accuracy


def test_better_candidate_replaces_a_worse_served_version(tmp_path, models, examples):
    store = LocalModelStore(tmp_path / "m")
    publish_copy(models["worse"], store)
    version = promote(store, stage_copy(models["good"], store), examples, tolerance=0.0, force=False)
    assert store.latest() == version


def test_candidate_that_does_not_load_is_refused_even_with_force(tmp_path, models, examples):
    store = LocalModelStore(tmp_path / "m")
    served = publish_copy(models["good"], store)
    staged = stage_copy(models["good"], store,
                        change=lambda folder: (folder / "saved_model.pb").write_bytes(b"not a SavedModel"))
    for force in (False, True):
        with pytest.raises(GateRefused, match="does not load.*FORCE does not override"):
            promote(store, staged, examples, tolerance=0.5, force=force)
    assert store.versions() == [served] and staged.is_dir()


def test_candidate_that_fails_its_warmup_is_refused_even_with_force(tmp_path, models, examples):
    store = LocalModelStore(tmp_path / "m")
    staged = stage_copy(models["good"], store,
                        change=lambda folder: write_warmup_requests(folder, [b"these bytes are no image"]))
    for force in (False, True):
        with pytest.raises(GateRefused, match="does not answer.*FORCE does not override"):
            promote(store, staged, [], tolerance=0.5, force=force)
    assert store.versions() == []


def test_an_incomplete_export_is_refused_before_measuring_even_with_force(tmp_path, models, examples):
    """Row 14 of the hardening issue: an export killed with 8 of its 9 files written."""
    store = LocalModelStore(tmp_path / "m")
    staged = store.stage()
    shutil.copytree(models["good"], staged, dirs_exist_ok=True)
    (staged / contract.ASSETS_EXTRA_DIR / contract.SEAL_FILE).unlink(missing_ok=True)
    next(staged.glob("variables/variables.data-*")).unlink()
    for force in (False, True):
        with pytest.raises(IncompleteExport, match="incomplete export"):
            promote(store, staged, examples, tolerance=0.5, force=force)
    assert store.versions() == [] and staged.is_dir()


def test_unreadable_examples_are_named_and_count_against_both(tmp_path, models, examples, sample_dataset):
    held_out = tmp_path / "held-out"
    shutil.copytree(sample_dataset, held_out)
    broken = held_out / "research" / "broken.jpg"
    broken.write_bytes(b"truncated")
    store = LocalModelStore(tmp_path / "m")
    publish_copy(models["good"], store)
    decision = check(stage_copy(models["good"], store), store, labelled_examples(held_out), tolerance=0.0)
    assert not decision.refused
    for evaluation in (decision.candidate, decision.current):
        assert evaluation.failed_files == [str(broken)]
        assert evaluation.total == len(examples) + 1


def test_publish_command_exits_non_zero_with_the_reason(tmp_path, models, sample_dataset, capsys):
    models_dir = tmp_path / "models"
    store = LocalModelStore(contract.model_base_path(models_dir, "pages"))
    served = publish_copy(models["good"], store)
    staged = stage_copy(models["worse"], store)
    argv = ["--models", str(models_dir), "--model-name", "pages", "--staged", str(staged),
            "--validate", str(sample_dataset), "--tolerance", "0.05"]

    assert cli.main(argv, command="publish") == 1
    err = capsys.readouterr().err
    assert "REFUSED" in err and f"version {served}" in err and "FORCE=1" in err
    assert staged_paths(store) == [staged]

    assert cli.main(argv + ["--force"], command="publish") == 0
    assert len(store.versions()) == 2


def test_publish_command_measures_the_recorded_held_out_split(tmp_path, trained_model, capsys):
    models_dir = tmp_path / "models"
    store = LocalModelStore(contract.model_base_path(models_dir, "pages"))
    staged = stage_copy(trained_model.version_dir, store)
    held_out, note = recorded_held_out(staged)
    metadata = json.loads((staged / contract.ASSETS_EXTRA_DIR / contract.METADATA_FILE).read_text())
    assert len(held_out) == sum(metadata["counts"]["per_split"]["test"].values()) > 0
    assert {label for _, label in held_out} == set(trained_model.labels)

    assert cli.main(["--models", str(models_dir), "--model-name", "pages"], command="publish") == 0
    err = capsys.readouterr().err
    assert note in err and f"/{len(held_out)}), warmup" in err
    assert len(store.versions()) == 1 and store.staged() == []
