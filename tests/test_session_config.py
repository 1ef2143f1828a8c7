"""--tensorflow_session_config_file: a text-format ConfigProto that every version's session gets,
read and overridden by the thread flags exactly as tensorflow_model_server's server.cc does; and the
project's serving/session.config, which compose passes to both servers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import requests
from tensorflow.core.protobuf import rewriter_config_pb2

from imgclf.serving import LocalServer
from imgclf.serving.app import session_config, thread_counts
from imgclf.serving.cli import apply_make_defaults, build_parser
from imgclf.serving.config import ConfigError
from imgclf.serving.errors import ServingError
from imgclf.serving.server import VersionLoader
from imgclf.settings import SESSION_CONFIG_FILE, DrillSettings, ServeSettings
from serving_models import export_checked_model, export_toy_model

REPOSITORY = Path(__file__).resolve().parents[1]
STRIP_ASSERTS = "graph_options { rewrite_options { debug_stripper: ON } }\n"
NEGATIVE = {"x": -np.ones((1, 3), np.float32)}


def args_of(*flags):
    return build_parser().parse_args(list(flags))


@pytest.fixture(scope="module")
def checked(tmp_path_factory) -> Path:
    """Base path of a model that refuses negative inputs with an Assert."""
    base = tmp_path_factory.mktemp("checked")
    export_checked_model(base, 1)
    return base


def test_thread_flags_are_picked_as_the_real_server_picks_them():
    assert thread_counts(args_of()) == (0, 0)
    assert thread_counts(args_of("--tensorflow_session_parallelism=3")) == (3, 3)
    # Either of the two finer flags replaces --tensorflow_session_parallelism for both counts.
    assert thread_counts(args_of("--tensorflow_session_parallelism=3", "--tensorflow_inter_op_parallelism=1")) == (0, 1)
    with pytest.raises(ConfigError, match="cannot configure all"):
        thread_counts(args_of("--tensorflow_session_parallelism=1", "--tensorflow_intra_op_parallelism=1",
                              "--tensorflow_inter_op_parallelism=1"))


def test_the_file_reaches_every_versions_session_and_thread_flags_override_it(checked, tmp_path):
    config_file = tmp_path / "session.config"
    config_file.write_text(STRIP_ASSERTS + "intra_op_parallelism_threads: 7\n")
    config = session_config(args_of(f"--tensorflow_session_config_file={config_file}",
                                    "--tensorflow_session_parallelism=2"))
    assert config.graph_options.rewrite_options.debug_stripper == rewriter_config_pb2.RewriterConfig.ON
    assert (config.intra_op_parallelism_threads, config.inter_op_parallelism_threads) == (2, 2)
    with pytest.raises(ServingError, match="x must not be negative"):
        VersionLoader()("checked", 1, checked / "1").predict("", NEGATIVE)
    # Grappler, configured by the file, stripped the Assert from this session's graph.
    stripped = VersionLoader(session_config=config)("checked", 1, checked / "1")
    assert stripped.predict("", NEGATIVE)["y"].tolist() == [[-2.0, -2.0, -2.0]]


def test_an_unreadable_or_malformed_file_is_named(tmp_path):
    malformed = tmp_path / "session.config"
    malformed.write_text("graph_options { no_such_field: 1 }")
    with pytest.raises(ConfigError, match=f"{malformed}: not a text-format ConfigProto"):
        session_config(args_of(f"--tensorflow_session_config_file={malformed}"))
    with pytest.raises(ConfigError, match="cannot read ConfigProto file"):
        session_config(args_of(f"--tensorflow_session_config_file={tmp_path / 'missing.config'}"))


def test_the_projects_session_config_changes_no_answer(tmp_path):
    config = session_config(args_of(f"--tensorflow_session_config_file={REPOSITORY / SESSION_CONFIG_FILE}"))
    assert config.graph_options.rewrite_options.meta_optimizer_iterations == rewriter_config_pb2.RewriterConfig.ONE
    export_toy_model(tmp_path, 3)
    inputs = {"x": np.array([[1.5, -2.0, 0.25]], np.float32)}
    plain = VersionLoader()("toy", 3, tmp_path / "3").predict("", inputs)
    configured = VersionLoader(session_config=config)("toy", 3, tmp_path / "3").predict("", inputs)
    assert sorted(plain) == sorted(configured)
    for name in plain:
        assert np.array_equal(plain[name], configured[name]), name


@pytest.mark.parametrize("deployment", ["docker-compose.yml", "deploy/swarm/stack.yml",
                                        "deploy/kubernetes/base/serving.yaml"])
def test_every_deployment_passes_the_projects_file_to_its_servers(deployment):
    """Compose, the swarm stack and the Kubernetes base: the same flag, the file mounted at /config
    (the swarm stack as a config from serving/, Kubernetes from its ConfigMap's checked copy)."""
    text = (REPOSITORY / deployment).read_text()
    assert f"--tensorflow_session_config_file=/config/{Path(SESSION_CONFIG_FILE).name}" in text
    if deployment.startswith("deploy/swarm"):
        assert f"file: ../../{SESSION_CONFIG_FILE}" in text and "target: /config/session.config" in text


def test_make_serve_and_the_drill_pass_the_projects_file_as_compose_does(monkeypatch, tmp_path):
    from imgclf.rollout.drill import session_config_args

    monkeypatch.chdir(REPOSITORY)
    local = args_of("--models", str(tmp_path))
    apply_make_defaults(local)
    assert local.tensorflow_session_config_file == ServeSettings().session_config == SESSION_CONFIG_FILE
    own = args_of("--models", str(tmp_path), "--tensorflow_session_config_file=/etc/other.config")
    apply_make_defaults(own)
    assert own.tensorflow_session_config_file == "/etc/other.config"
    assert session_config_args(DrillSettings().session_config) == [f"--tensorflow_session_config_file={SESSION_CONFIG_FILE}"]
    assert session_config_args("") == []
    with pytest.raises(ValueError, match="no such file"):
        session_config_args(str(tmp_path / "missing.config"))
    monkeypatch.chdir(tmp_path)     # outside a checkout the default file is simply not there
    assert session_config_args(DrillSettings().session_config) == []


def test_the_live_server_reads_the_file(checked, tmp_path):
    config_file = tmp_path / "session.config"
    config_file.write_text(STRIP_ASSERTS)
    body = {"instances": NEGATIVE["x"].tolist()}
    with LocalServer(checked, "checked", extra_args=[f"--tensorflow_session_config_file={config_file}"]) as server:
        stripped = requests.post(f"{server.rest_url}/v1/models/checked:predict", json=body, timeout=60)
    assert stripped.status_code == 200 and stripped.json() == {"predictions": [[-2.0, -2.0, -2.0]]}
    with LocalServer(checked, "checked") as server:
        refused = requests.post(f"{server.rest_url}/v1/models/checked:predict", json=body, timeout=60)
    assert refused.status_code == 400 and "x must not be negative" in refused.json()["error"]
