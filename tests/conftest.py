"""Fixtures shared by the whole suite. Heavy artefacts (a trained tiny model, a running server) are
session-scoped so that TensorFlow trains once per run."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from imgclf.serving.process import free_port  # noqa: F401  (tests import it from conftest)
from imgclf.tf_logging import quiet_tensorflow_logs

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
quiet_tensorflow_logs()   # as the console script does: the servers tests start inherit it

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared beside the checkout (tests may use it; the product never does)."""
    if not SHARED.is_dir():
        pytest.skip("../shared is not beside this checkout")
    return SHARED


@pytest.fixture(scope="session")
def sample_dataset(tmp_path_factory) -> Path:
    """Generated page-like images in class folders: research/ and other/, 40 each."""
    from imgclf.sample_data import write_sample_dataset

    return write_sample_dataset(tmp_path_factory.mktemp("sample-data"), per_class=40, seed=1)


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory, sample_dataset):
    """A real model trained on sample_dataset in a few seconds (scratch backbone, 32 px images) and
    published through the trainer's real export path and the promotion gate. Fields: models_dir, model_name, base_path,
    version, version_dir, labels, data_dir. Treat it as read-only: it is shared by the session."""
    from collections import namedtuple

    from imgclf.rollout.training import train_and_publish
    from imgclf.settings import TrainSettings

    models_dir = tmp_path_factory.mktemp("trained-models")
    settings = TrainSettings(data=str(sample_dataset), module="scratch", models=str(models_dir),
                             image_size=32, epochs=8, progress=False,
                             cache_dir=str(tmp_path_factory.mktemp("feature-cache")),
                             log_dir=str(tmp_path_factory.mktemp("train-logs")))
    result = train_and_publish(settings)
    TrainedModel = namedtuple("TrainedModel", "models_dir model_name base_path version version_dir labels data_dir")
    return TrainedModel(models_dir, settings.model_name, result.base_path, result.version,
                        result.version_dir, result.labels, sample_dataset)


# --- on a real Docker engine (tests/e2e) ---------------------------------------------------------
@pytest.fixture(scope="module")
def docker_engine():
    from imgclf import stack

    client = stack.connect(timeout=300)
    if client is None:
        if os.environ.get("IMGCLF_REQUIRE_DOCKER") == "1":  # CI starts an engine: its absence is a failure
            pytest.fail("IMGCLF_REQUIRE_DOCKER=1 but no Docker engine is reachable")
        pytest.skip("no Docker engine is reachable")
    yield client
    client.close()


@pytest.fixture()
def run_make(capsys):
    """run_make(target, summary_title): `make <target>` as a user runs it; returns the result and
    its summary (from summary_title on), which the test output shows. Fails the test, with the
    output's tail, unless it exited 0."""
    def run(target: str, summary_title: str) -> tuple[subprocess.CompletedProcess, str]:
        result = subprocess.run(["make", target], cwd=REPO, capture_output=True, text=True, timeout=3600)
        summary = result.stdout[result.stdout.find(summary_title):]
        with capsys.disabled():
            print("\n" + summary)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
        return result, summary
    return run
