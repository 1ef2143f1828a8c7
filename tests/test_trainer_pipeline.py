"""Training runs end to end: on a tiny TF-Hub-style module built here (feature cache, fine-tuning),
through the CLI, and safely when it fails or is killed."""

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from imgclf import contract, images
from imgclf.model_store import LocalModelStore, open_model
from imgclf.rollout import training as cli          # `imgclf train`: train, gate, publish
from imgclf.rollout.training import train_and_publish
from imgclf.settings import SettingsError, TrainSettings
from imgclf.trainer.backbone import ModuleError, load_backbone
from imgclf.trainer.features import FeatureCache
from imgclf.trainer.inputs import image_dataset
from imgclf.trainer.pipeline import train

TINY_SIZE = 32


def tiny_module_object():
    """A reusable TF-Hub-style feature-vector module (the attributes hub.KerasLayer looks for):
    [N, 32, 32, 3] in [0, 1] -> [N, 24] features."""
    module = tf.train.Checkpoint()
    module.kernel = tf.Variable(tf.random.stateless_normal([5, 5, 3, 24], seed=[1, 2], stddev=0.3))
    module.bias = tf.Variable(tf.zeros([24]))
    module.variables = [module.kernel, module.bias]
    module.trainable_variables = [module.kernel, module.bias]
    module.regularization_losses = []

    @tf.function(input_signature=[tf.TensorSpec([None, TINY_SIZE, TINY_SIZE, 3], tf.float32)])
    def features(pictures):
        maps = tf.nn.relu(tf.nn.conv2d(pictures - 0.5, module.kernel, 2, "SAME") + module.bias)
        return tf.reduce_mean(maps, axis=[1, 2])

    module.__call__ = features
    return module


@pytest.fixture(scope="module")
def tiny_module(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tiny-module")
    tf.saved_model.save(tiny_module_object(), str(path))
    return path


def settings_for(data, models, module, **overrides) -> TrainSettings:
    values = dict(data=str(data), module=str(module), models=str(models), epochs=40, patience=8,
                  learning_rate=0.02, progress=False, cache_dir=str(Path(models) / "cache"),
                  log_dir=str(Path(models) / "logs"), warmup_records=2)
    values.update(overrides)
    return TrainSettings(**values)


def test_module_size_is_read_from_the_module_and_enforced(tiny_module):
    backbone = load_backbone(str(tiny_module))
    assert (backbone.image_size, backbone.feature_dim) == (TINY_SIZE, 24)
    assert not backbone.is_scratch
    with pytest.raises(ModuleError, match="takes 32x32"):
        load_backbone(str(tiny_module), image_size=64)


def test_unreachable_hub_handle_names_the_local_way_out():
    with pytest.raises(ModuleError, match=r"MODULE=/path/to/module.*MODULE=scratch"):
        load_backbone("https://127.0.0.1:9/no/such/module/1")
    with pytest.raises(ModuleError, match="no such folder"):
        load_backbone("not/a/folder/or/handle")


def test_trains_on_a_hub_module_with_a_feature_cache(sample_dataset, tmp_path, tiny_module):
    # Grey, quadrants and the layout head with softmax heads: three parts cached, two heads
    # trained by epochs.
    settings = settings_for(sample_dataset, tmp_path, tiny_module, grayscale=True, view="whole+quadrants", layout_grid=32,
                            head="softmax")
    first = train_and_publish(settings)
    assert first.report["splits"]["test"]["accuracy"] >= 0.9
    assert first.metadata["timing"]["features_seconds"] is not None
    backbone = load_backbone(str(tiny_module), view="whole+quadrants", layout_grid=settings.layout_grid)
    assert backbone.feature_dim == 5 * 24 + settings.layout_grid ** 2 and backbone.passes == 5
    assert set(first.metadata["timing"]["phases"]) == {"head-texture", "head-layout"}
    cache = FeatureCache(settings.cache_dir, backbone, images.Preprocessing(TINY_SIZE, True))
    cached = sorted(cache.folder.rglob("*.npy"))
    assert {p.parent.name for p in cached} == {"whole", "quadrants", "layout32"}   # one folder per part
    assert len(cached) == 3 * 80
    stamps = {p: p.stat().st_mtime_ns for p in cached}

    second = train_and_publish(settings)   # same images, module and preprocessing: nothing is recomputed
    assert {p: p.stat().st_mtime_ns for p in cache.folder.rglob("*.npy")} == stamps
    assert second.version > first.version
    assert LocalModelStore(first.base_path).versions() == [first.version, second.version]

    # Other preprocessing options are another cache entry, never a stale hit; a recipe reading
    # fewer parts of the same images reads the same files.
    colour = FeatureCache(settings.cache_dir, backbone, images.Preprocessing(TINY_SIZE, False))
    whole_only = FeatureCache(settings.cache_dir, load_backbone(str(tiny_module)), images.Preprocessing(TINY_SIZE, True))
    assert colour.folder != cache.folder and whole_only.folder == cache.folder


def test_without_a_layout_map_one_head_is_trained_and_exported(sample_dataset, tmp_path, tiny_module):
    result = train_and_publish(settings_for(sample_dataset, tmp_path, tiny_module, grayscale=True, view="whole+quadrants",
                                            layout_grid=0, head="softmax"))
    assert set(result.metadata["timing"]["phases"]) == {"head"}
    assert result.report["splits"]["test"]["accuracy"] >= 0.9
    served = tf.saved_model.load(str(result.version_dir)).signatures[contract.SIGNATURE_NAME]
    files = sorted((sample_dataset / result.labels[0]).iterdir())[:3]
    scores = served(**{contract.INPUT_NAME: tf.constant([f.read_bytes() for f in files])})[contract.SCORES_OUTPUT]
    np.testing.assert_allclose(scores.numpy().sum(axis=1), 1.0, rtol=1e-5)


def test_exported_preprocessing_equals_training_preprocessing(trained_model):
    loaded = tf.saved_model.load(str(trained_model.version_dir))
    metadata = json.loads((trained_model.version_dir / contract.ASSETS_EXTRA_DIR / contract.METADATA_FILE).read_text())
    options = images.Preprocessing(**metadata["preprocessing"])
    files = [next((trained_model.data_dir / label).glob("*.png")) for label in trained_model.labels]
    files += [next((trained_model.data_dir / label).glob("*.jpg")) for label in trained_model.labels]
    from_training = np.stack(list(image_dataset(files, options).as_numpy_iterator()))
    from_export = loaded.preprocess(tf.constant([f.read_bytes() for f in files])).numpy()
    np.testing.assert_array_equal(from_export, from_training)


def test_fine_tuning_and_augmentation_train_the_backbone(sample_dataset, tmp_path, tiny_module):
    result = train_and_publish(settings_for(sample_dataset, tmp_path, tiny_module, fine_tune=True, augment=True,
                                epochs=20, fine_tune_epochs=2, fine_tune_learning_rate=1e-3))
    assert set(result.metadata["timing"]["phases"]) == {"head-on-images", "fine-tune"}
    original = tf.saved_model.load(str(tiny_module)).kernel.numpy()
    checkpoint = tf.train.load_checkpoint(str(result.version_dir / "variables" / "variables"))
    kernels = [checkpoint.get_tensor(name) for name, shape in tf.train.list_variables(
        str(result.version_dir / "variables" / "variables")) if shape == list(original.shape)]
    assert kernels and not np.allclose(kernels[0], original)
    assert result.report["splits"]["test"]["accuracy"] >= 0.8


def test_cli_prints_report_and_the_version_path_last(sample_dataset, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(sample_dataset, data)
    (data / "other" / "broken.jpg").write_bytes(b"\xff\xd8\xff truncated")
    models = tmp_path / "models"
    code = cli.main(["--data", str(data), "--module", "scratch", "--models", str(models),
                     "--image-size", "24", "--epochs", "3", "--progress", "0", "--grayscale", "0",
                     "--cache-dir", str(tmp_path / "cache"), "--log-dir", str(tmp_path / "logs")])
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0
    version_dir = Path(out[-1])
    assert version_dir.parent == models / contract.DEFAULT_MODEL_NAME
    assert LocalModelStore(version_dir.parent).versions() == [int(version_dir.name)]
    assert any(line.startswith("test: accuracy") for line in out)
    assert "skipped 1 unusable file(s) (see warnings above)" in out
    report = json.loads((version_dir / contract.ASSETS_EXTRA_DIR / contract.REPORT_FILE).read_text())
    assert report["skipped_files"][0]["file"] == str(data / "other" / "broken.jpg")
    metadata = json.loads((version_dir / contract.ASSETS_EXTRA_DIR / contract.METADATA_FILE).read_text())
    assert metadata["preprocessing"] == {"image_size": 24, "grayscale": False}
    assert any((tmp_path / "logs").rglob("events.out.tfevents.*"))


@pytest.mark.parametrize("flags, named", [(["--layout-weight", "1.5"], "--layout-weight: 1.5: give a fraction"),
                                           (["--layout-grid", "-1"], "--layout-grid: -1: must not be negative"),
                                           (["--view", "sideways"], "--view: invalid choice: 'sideways'"),
                                           (["--validation-percent", "60", "--test-percent", "40"],
                                            "--validation-percent 60 and --test-percent 40")])
def test_cli_out_of_range_settings_name_the_flag(tmp_path, capsys, flags, named):
    models = tmp_path / "models"
    try:
        code = cli.main(["--data", str(tmp_path), "--models", str(models), *flags])
    except SystemExit as stopped:      # refused by the flag's own check while parsing
        code = stopped.code
    assert code == 2
    assert named in capsys.readouterr().err
    assert not models.exists()


def test_cli_bad_data_is_a_clear_error_and_publishes_nothing(tmp_path, capsys):
    (tmp_path / "data" / "one").mkdir(parents=True)
    code = cli.main(["--data", str(tmp_path / "data"), "--module", "scratch", "--models", str(tmp_path / "m")])
    assert code == 1
    assert "need two or more sub-folders" in capsys.readouterr().err
    assert not (tmp_path / "m" / contract.DEFAULT_MODEL_NAME).exists()


def test_training_returns_a_sealed_staged_export_and_publishes_nothing(sample_dataset, tmp_path):
    result = train(settings_for(sample_dataset, tmp_path, "scratch", image_size=16, epochs=1))
    store = open_model(tmp_path)
    assert store.versions() == []
    [staged] = store.staged()
    assert staged.path == result.staged and staged.sealed
    store.check_sealed(result.staged)
    assert result.held_out and {label for _, label in result.held_out} == set(result.labels)


def test_a_failed_export_leaves_nothing_behind(sample_dataset, tmp_path):
    # A warmup count of the wrong type makes the run fail after the SavedModel is written.
    settings = settings_for(sample_dataset, tmp_path, "scratch", image_size=16, epochs=1)
    settings.warmup_records = "many"
    with pytest.raises(TypeError):
        train(settings)
    store = open_model(tmp_path)
    assert store.versions() == [] and store.staged() == []


def test_an_export_killed_midway_leaves_no_numeric_folder(sample_dataset, tmp_path):
    store = open_model(tmp_path / "models")
    command = [sys.executable, "-m", "imgclf", "train", "--data", str(sample_dataset), "--module", "scratch",
               "--models", str(tmp_path / "models"), "--image-size", "16", "--epochs", "1", "--progress", "0",
               "--log-dir", str(tmp_path / "logs")]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not store.staged() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        staged = store.staged()
        process.send_signal(signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
    assert staged, "the trainer finished or failed before it began to export"
    assert store.versions() == []
    [left] = store.staged()
    if not left.sealed:   # killed before its last write (nearly always: the export takes seconds)
        assert cli_publish(tmp_path / "models", left.path) == 1   # never published, even with FORCE
        assert store.versions() == []


def cli_publish(models, staged) -> int:
    from imgclf.rollout import cli as rollout_cli

    return rollout_cli.main(["--models", str(models), "--staged", str(staged), "--force"], command="publish")


@pytest.mark.parametrize("overrides, named", [
    (dict(layout_weight=1.5), "--layout-weight 1.5"), (dict(layout_grid=-1), "--layout-grid -1"),
    (dict(epochs=0), "--epochs 0"), (dict(dropout=1.0), "--dropout 1.0"),
    (dict(validation_percent=60, test_percent=40), "--validation-percent 60 and --test-percent 40"),
    (dict(data=""), "--data is required")])
def test_settings_problems_are_said_once_naming_the_flag(tmp_path, overrides, named):
    settings = TrainSettings(**{"data": str(tmp_path), "models": str(tmp_path / "m"), **overrides})
    assert named in settings.problem()
    with pytest.raises(SettingsError, match=named):     # the library refuses them too
        train(settings)
    assert TrainSettings(data=str(tmp_path)).problem() is None


def test_without_a_terminal_progress_is_one_line_per_epoch(sample_dataset, tmp_path, tiny_module, capsys):
    settings = settings_for(sample_dataset, tmp_path, tiny_module, progress=True, recipe="photo", head="softmax",
                            epochs=4, patience=10)
    train(settings)
    err = capsys.readouterr().err
    epochs = [line for line in err.splitlines() if " epoch " in line]
    assert [line.split(":")[0] for line in epochs] == [f"head epoch {i}/4" for i in range(1, 5)]
    assert all("val_loss" in line for line in epochs)
    assert any(line.startswith("features (whole): 80 img in") for line in err.splitlines())
    assert "\r" not in err     # no bar redrawn into the log


def test_auto_recipe_is_measured_recorded_and_served(sample_dataset, tmp_path, tiny_module):
    result = train_and_publish(settings_for(sample_dataset, tmp_path, tiny_module, selection_repeats=1))
    chosen = result.metadata["recipe"]
    assert chosen["mode"] == "auto" and chosen["reason"] and chosen["images"] == sum(
        sum(result.metadata["counts"]["per_split"][split].values()) for split in ("train", "validation"))
    assert [t["stage"] for t in chosen["tried"]] == [1, 1, 2, 2, 2, 2, 2, 2]
    assert all(t["ms_per_image"] > 0 and 0 <= t["cv_accuracy"] <= 1 for t in chosen["tried"])
    assert sum(t["chosen"] for t in chosen["tried"]) == 1
    assert result.metadata["preprocessing"]["grayscale"] == chosen["chosen"]["grayscale"]
    assert result.metadata["passes_per_image"] == chosen["passes"] == {"whole": 1, "centre": 4, "whole+centre": 5}[
        chosen["chosen"]["view"]]
    assert result.metadata["head"] == "ridge" and result.report["fitted_on"] == ["train", "validation"]
    test = result.report["splits"]["test"]
    assert test["accuracy"] >= 0.9 and 0 <= test["ece"] <= 1 and test["balanced_accuracy"] >= 0.9
    # The exported signature scores the test split as the report did.
    data = result.report["splits"]
    served = tf.saved_model.load(str(result.version_dir)).signatures[contract.SIGNATURE_NAME]
    held = json.loads((result.version_dir / contract.ASSETS_EXTRA_DIR / contract.METADATA_FILE).read_text())
    assert held["recipe"] == chosen and data["test"]["count"] > 0
    files = sorted((sample_dataset / result.labels[1]).iterdir())[:4]
    scores = served(**{contract.INPUT_NAME: tf.constant([f.read_bytes() for f in files])})[contract.SCORES_OUTPUT]
    np.testing.assert_allclose(scores.numpy().sum(axis=1), 1.0, rtol=1e-5)


def test_explicit_options_force_the_recipe_and_nothing_is_measured(sample_dataset, tmp_path, tiny_module):
    result = train(settings_for(sample_dataset, tmp_path, tiny_module, grayscale=False, view="whole+quadrants",
                                layout_grid=0))
    chosen = result.metadata["recipe"]
    assert chosen["tried"] == [] and chosen["reason"] == "every option given"
    assert chosen["chosen"] == {"grayscale": False, "view": "whole+quadrants", "layout_grid": 0}
    assert result.metadata["passes_per_image"] == 5 and set(result.metadata["timing"]["phases"]) == {"head"}


@pytest.mark.slow
def test_on_real_pages_auto_measures_the_recipe_records_it_and_a_preset_forces_one(shared_dir, tmp_path):
    # Real first pages of PDFs and the real EfficientNet-Lite0 module: 30 pages a class.
    data = tmp_path / "pages"
    for label in ("other", "research"):
        (data / label).mkdir(parents=True)
        for page in sorted((shared_dir / "datasets" / "pdf-first-pages" / "train" / label).iterdir())[:30]:
            (data / label / page.name).symlink_to(page)
    module = shared_dir / "modules" / "efficientnet_lite0_feature_vector"
    settings = TrainSettings(data=str(data), module=str(module), models=str(tmp_path / "models"), progress=False,
                             selection_repeats=1, warmup_records=2)
    measured = train(settings)
    recipe = measured.metadata["recipe"]
    assert recipe["mode"] == "auto" and recipe == measured.report["recipe"]
    stage_one = [t["recipe"] for t in recipe["tried"] if t["stage"] == 1]
    assert stage_one == [{"grayscale": True, "view": "whole", "layout_grid": 0},
                         {"grayscale": False, "view": "whole", "layout_grid": 0}]
    [chosen] = [t for t in recipe["tried"] if t["chosen"]]
    assert chosen["stage"] == 2 and chosen["recipe"] == recipe["chosen"]
    assert measured.metadata["passes_per_image"] == chosen["passes"] == recipe["passes"]
    assert measured.metadata["preprocessing"]["grayscale"] == recipe["chosen"]["grayscale"]
    costs = {t["passes"]: t["ms_per_image"] for t in recipe["tried"] if not t["recipe"]["layout_grid"]}
    assert costs[5] > costs[1] > 0                   # five passes cost more than one, measured here
    assert all(measured.report["splits"][split]["ece"] is not None for split in ("train", "validation", "test"))
    forced = train(TrainSettings(**{**settings.__dict__, "recipe": "photo"}))
    assert forced.metadata["recipe"]["tried"] == [] and forced.metadata["passes_per_image"] == 1
    assert forced.metadata["preprocessing"]["grayscale"] is False
