"""The local server's pieces without sockets: JSON <-> tensors, config files, flags, versions."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from tensorflow.core.framework import types_pb2

from imgclf.serving import config as config_files
from imgclf.serving import json_tensor
from imgclf.serving.cli import build_parser
from imgclf.serving.errors import ServingError
from imgclf.serving.server import VersionLoader
from imgclf.serving.versions import ModelVersions, ServerCore
from serving_models import export_toy_model, write_broken_version, write_warmup

FLOAT, STRING, INT64 = types_pb2.DT_FLOAT, types_pb2.DT_STRING, types_pb2.DT_INT64


def parse(body, dtypes):
    return json_tensor.parse_predict_request(json.dumps(body).encode() if not isinstance(body, bytes) else body,
                                             lambda signature: dtypes)


def error_of(body, dtypes) -> ServingError:
    with pytest.raises(ServingError) as caught:
        parse(body, dtypes)
    return caught.value


# --- JSON requests -----------------------------------------------------------------------------
def test_row_format_batches_instances_along_a_new_first_dimension():
    _, tensors, fmt = parse({"instances": [[1, 2, 3], [4, 5, 6]]}, {"x": FLOAT})
    assert fmt == json_tensor.ROW
    assert tensors["x"].dtype == np.float32 and tensors["x"].tolist() == [[1, 2, 3], [4, 5, 6]]


def test_row_format_with_named_inputs_and_b64():
    _, tensors, _ = parse({"instances": [{"a": 1, "s": {"b64": "AP8="}}, {"a": 2, "s": "text"}]},
                          {"a": INT64, "s": STRING})
    assert tensors["a"].tolist() == [1, 2]
    assert tensors["s"].tolist() == [b"\x00\xff", b"text"]


def test_columnar_format_keeps_the_value_shape_and_ignores_extra_keys():
    name, tensors, fmt = parse({"signature_name": "pair", "inputs": {"a": [1, 2], "b": [0.5, 1.5], "zzz": 1}},
                               {"a": INT64, "b": FLOAT})
    assert (name, fmt) == ("pair", json_tensor.COLUMNAR)
    assert sorted(tensors) == ["a", "b"] and tensors["b"].tolist() == [0.5, 1.5]


def test_nan_and_infinity_are_accepted():
    _, tensors, _ = parse(b'{"instances": [[NaN, Infinity, -Infinity]]}', {"x": FLOAT})
    values = tensors["x"][0]
    assert math.isnan(values[0]) and values[1] == math.inf and values[2] == -math.inf


@pytest.mark.parametrize("body,dtypes,message", [
    (b"", {"x": FLOAT}, "JSON Parse error: The document is empty"),
    (b"[1]", {"x": FLOAT}, "JSON Value: [1] Is not object"),
    ({"x": 1}, {"x": FLOAT}, "Missing 'inputs' or 'instances' key"),
    ({"instances": [1], "inputs": [1]}, {"x": FLOAT}, "expecting only one of 'inputs' or 'instances' keys"),
    ({"instances": {}}, {"x": FLOAT}, "Expecting 'instances' to be an list/array"),
    ({"instances": []}, {"x": FLOAT}, "No values in 'instances' array"),
    ({"instances": ["a"]}, {"x": FLOAT}, 'JSON Value: "a" Type: String is not of expected type: float'),
    ({"instances": [1.5]}, {"x": INT64}, "JSON Value: 1.5 Type: Number is not of expected type: int64"),
    ({"instances": [[1, 2], [1]]}, {"x": FLOAT}, "Expecting tensor size: 2 but got: 1"),
    ({"instances": [[1, [2]]]}, {"x": FLOAT}, "Encountered list at unexpected level: 1 expected < 1"),
    ({"instances": [[[1], 2]]}, {"x": FLOAT}, "JSON Value: 2 found at incorrect level: 2 in the JSON DOM. Expected at level: 2"),
    ({"instances": [{"y": 1}]}, {"x": FLOAT}, "JSON object: does not have named input: y"),
    ({"instances": [1]}, {"a": FLOAT, "b": FLOAT}, "instances is a plain list, but expecting list of objects"),
    ({"instances": [{"a": 1}]}, {"a": FLOAT, "b": FLOAT}, "keys must be equal to: a,b"),
    ({"inputs": {"a": [1]}}, {"a": FLOAT, "b": FLOAT}, "Missing named input: b in 'inputs' object."),
    ({"instances": [{"b64": "%%%"}]}, {"x": STRING}, "Unable to base64 decode"),
    ({"instances": [1], "signature_name": 5}, {"x": FLOAT}, "'signature_name' key must be a string value."),
])
def test_bad_requests_give_the_real_servers_messages(body, dtypes, message):
    error = error_of(body, dtypes)
    assert error.code == "INVALID_ARGUMENT" and error.http_status == 400
    assert message in error.message


# --- JSON replies ------------------------------------------------------------------------------
def test_row_reply_is_a_list_of_values_with_one_output_and_of_objects_with_several():
    one = json.loads(json_tensor.predict_response_json({"y": np.array([[1.5], [2.0]], np.float32)}, json_tensor.ROW))
    assert one == {"predictions": [[1.5], [2.0]]}
    outputs = {"scores": np.array([[0.25, 0.75]], np.float32), "classes": np.array([[b"a", b"b"]], object),
               "raw_bytes": np.array([b"\x00\xff"], object)}
    many = json.loads(json_tensor.predict_response_json(outputs, json_tensor.ROW))
    assert many == {"predictions": [{"scores": [0.25, 0.75], "classes": ["a", "b"], "raw_bytes": {"b64": "AP8="}}]}


def test_columnar_reply_and_special_floats():
    text = json_tensor.predict_response_json({"y": np.array([np.nan, np.inf, -np.inf, 3], np.float32)},
                                             json_tensor.COLUMNAR)
    assert "NaN" in text and "-Infinity" in text and "3.0" in text
    values = json.loads(text)["outputs"]
    assert math.isnan(values[0]) and values[1:] == [math.inf, -math.inf, 3.0]


def test_floats_are_written_short_but_exact():
    assert json_tensor.format_float(float(np.float32(0.2)), single=True) == "0.2"
    assert json_tensor.format_float(5.0, single=True) == "5.0"
    tricky = float(np.float32(0.119202912))
    assert np.float32(float(json_tensor.format_float(tricky, single=True))) == np.float32(tricky)


def test_row_reply_refuses_outputs_with_different_batch_sizes():
    with pytest.raises(ServingError, match="inconsistent batch size"):
        json_tensor.predict_response_json({"a": np.zeros(2), "b": np.zeros(3)}, json_tensor.ROW)


# --- config files and flags --------------------------------------------------------------------
def test_model_config_policies_labels_and_the_models_mapping(tmp_path):
    text = """model_config_list {
      config { name: "a" base_path: "/models/a" model_platform: "tensorflow"
               model_version_policy { specific { versions: 3 versions: 4 } }
               version_labels { key: "stable" value: 3 } version_labels { key: "canary" value: 4 } }
      config { name: "b" base_path: "/srv/b" model_version_policy { all {} } }
      config { name: "c" base_path: "/srv/c" model_version_policy { latest { num_versions: 2 } } }
    }"""
    a, b, c = config_files.parse_model_server_config(text, "models.config", models_root=tmp_path)
    assert a.base_path == tmp_path / "a" and b.base_path == Path("/srv/b")
    assert a.labels == {"stable": 3, "canary": 4}
    assert a.policy.choose([1, 3, 4, 5]) == [3, 4]
    assert b.policy.choose([1, 3]) == [1, 3]
    assert c.policy.choose([1, 3, 7]) == [3, 7]
    assert config_files.single_model_config("d", tmp_path).policy.choose([1, 2]) == [2]
    again = config_files.parse_model_server_config(config_files.format_model_server_config([a, b, c]))
    assert again == [a, b, c]


@pytest.mark.parametrize("text,message", [
    ('model_config_list { config { name: "a" base_path: "rel/a" } }', "to have an absolute path"),
    ('model_config_list { config { name: "a" base_path: "/a" } config { name: "a" base_path: "/b" } }',
     "multiple times"),
    ("model_config_list { nonsense: 1 }", "not a text-format ModelServerConfig"),
])
def test_bad_model_configs_name_the_file(text, message):
    with pytest.raises(config_files.ConfigError, match=message) as caught:
        config_files.parse_model_server_config(text, "my.config")
    assert "my.config" in str(caught.value)


def test_monitoring_and_batching_files(tmp_path):
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text('prometheus_config { enable: true path: "/metrics/here" }')
    assert config_files.read_monitoring_config(monitoring) == config_files.PrometheusSettings(True, "/metrics/here")
    assert not config_files.read_monitoring_config("").enabled
    batching = tmp_path / "batching.config"
    batching.write_text("max_batch_size { value: 16 } batch_timeout_micros { value: 2000 } "
                        "num_batch_threads { value: 1 } allowed_batch_sizes: 8 allowed_batch_sizes: 16")
    settings = config_files.read_batching_parameters(batching)
    assert (settings.max_batch_size, settings.batch_timeout_micros, settings.num_batch_threads) == (16, 2000, 1)
    assert settings.max_enqueued_batches == 100
    batching.write_text("max_batch_size: 16")
    with pytest.raises(config_files.ConfigError, match="batching.config"):
        config_files.read_batching_parameters(batching)


def test_repo_config_examples_parse():
    root = Path(__file__).resolve().parents[1] / "serving"
    assert config_files.read_monitoring_config(root / "monitoring.config").enabled
    assert config_files.read_batching_parameters(root / "batching.config").max_batch_size > 1
    specs = config_files.read_model_server_config(root / "models.config", models_root="/tmp/x")
    assert specs and all(str(s.base_path).startswith("/tmp/x/") for s in specs)


def test_flags_have_tensorflow_model_server_names_and_syntax():
    args = build_parser().parse_args([
        "--port=9000", "--rest_api_port", "9001", "--enable_batching", "--enable_model_warmup=false",
        "--model_config_file=/c/models.config", "--file_system_poll_wait_seconds=0.5",
    ])
    assert (args.port, args.rest_api_port, args.enable_batching, args.enable_model_warmup) == (9000, 9001, True, False)
    assert args.file_system_poll_wait_seconds == 0.5 and args.model_config_file == "/c/models.config"
    defaults = build_parser().parse_args([])
    assert (defaults.port, defaults.rest_api_port, defaults.host) == (8500, 8501, "127.0.0.1")
    assert defaults.rest_api_timeout_in_ms == 30000 and defaults.model_config_file_poll_wait_seconds == 0


def test_thread_flags_reach_every_versions_session_config(toy_versions):
    from imgclf.serving.app import session_config

    config = session_config(build_parser().parse_args(["--tensorflow_intra_op_parallelism=3",
                                                       "--tensorflow_inter_op_parallelism=1"]))
    assert (config.intra_op_parallelism_threads, config.inter_op_parallelism_threads) == (3, 1)
    default = session_config(build_parser().parse_args([]))
    assert (default.intra_op_parallelism_threads, default.inter_op_parallelism_threads) == (0, 0)
    loaded = VersionLoader(session_config=config)("toy", 2, toy_versions / "2")
    assert y_of(loaded) == 2.0


def test_make_serve_uses_the_models_config_when_it_lists_the_model(tmp_path):
    from imgclf.serving.cli import apply_make_defaults

    config = tmp_path / "models.config"
    config.write_text('model_config_list { config { name: "m" base_path: "/models/m" } }')
    listed = build_parser().parse_args(["--models", str(tmp_path), "--model_name", "m",
                                        "--models_config", str(config)])
    apply_make_defaults(listed)
    assert listed.model_config_file == str(config) and listed.model_config_file_poll_wait_seconds == 5
    other = build_parser().parse_args(["--models", str(tmp_path), "--model_name", "x", "--models_config", str(config)])
    apply_make_defaults(other)
    assert other.model_config_file == "" and other.model_name == "x"
    explicit = build_parser().parse_args(["--model_base_path", "/srv/m"])
    apply_make_defaults(explicit)
    assert (explicit.model_name, explicit.models, explicit.model_config_file) == ("default", None, "")


# --- versions ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def toy_versions(tmp_path_factory):
    """Versions 1, 2, 3 of the toy model exported once; tests copy what they need."""
    root = tmp_path_factory.mktemp("toy-exports")
    for version in (1, 2, 3):
        export_toy_model(root, version)
    return root


def place(toy_versions: Path, base: Path, *versions: int) -> None:
    import shutil

    for version in versions:
        shutil.copytree(toy_versions / str(version), base / str(version))


def y_of(servable) -> float:
    return float(servable.predict("", {"x": np.ones((1, 3), np.float32)})["y"][0, 0])


def test_latest_policy_swaps_and_falls_back_without_a_gap(toy_versions, tmp_path):
    import shutil

    place(toy_versions, tmp_path, 1)
    (tmp_path / ".staging-9").mkdir()
    (tmp_path / "7.partial").mkdir()
    model = ModelVersions(config_files.single_model_config("toy", tmp_path), VersionLoader())
    model.poll()
    held = model.resolve()
    assert held.version == 1 and sorted(model.states()) == [1]
    place(toy_versions, tmp_path, 2)
    model.poll()
    assert model.resolve().version == 2 and y_of(model.resolve()) == 2.0
    assert y_of(held) == 1.0, "a request holding the old version finishes on it"
    assert {v: s.state for v, s in model.states().items()} == {1: "END", 2: "AVAILABLE"}
    shutil.rmtree(tmp_path / "2")
    model.poll()
    assert model.resolve().version == 1
    assert {v: s.state for v, s in model.states().items()} == {1: "AVAILABLE", 2: "END"}


def test_a_version_that_fails_to_load_keeps_the_previous_one_serving(toy_versions, tmp_path):
    place(toy_versions, tmp_path, 1)
    model = ModelVersions(config_files.single_model_config("toy", tmp_path), VersionLoader())
    model.poll()
    write_broken_version(tmp_path, 5)
    model.poll()
    model.poll()      # not retried while the folder stays as it is
    state = model.states()[5]
    assert (state.state, state.error_code) == ("END", "DATA_LOSS") and "saved_model.pb" in state.error_message
    assert model.resolve().version == 1
    with pytest.raises(ServingError) as caught:
        model.resolve(version=5)
    assert caught.value.code == "NOT_FOUND"


def test_a_version_still_being_copied_is_retried_once_complete(toy_versions, tmp_path):
    import shutil

    place(toy_versions, tmp_path, 1)
    model = ModelVersions(config_files.single_model_config("toy", tmp_path), VersionLoader())
    model.poll()
    (tmp_path / "2").mkdir()          # a plain copy into a numeric name: the server sees it half-written
    shutil.copy(toy_versions / "2" / "saved_model.pb", tmp_path / "2")
    model.poll()
    assert model.states()[2].state == "END" and model.resolve().version == 1
    shutil.copytree(toy_versions / "2", tmp_path / "2", dirs_exist_ok=True)
    model.poll()
    assert model.states()[2].state == "AVAILABLE" and model.resolve().version == 2


def test_failed_warmup_fails_the_load(toy_versions, tmp_path):
    import shutil

    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    place(toy_versions, tmp_path, 1, 2)
    write_warmup(tmp_path / "1")
    model = ModelVersions(config_files.single_model_config("toy", tmp_path),
                          VersionLoader())
    # version 2 gets a warmup record the model cannot answer (unknown input name)
    request = predict_pb2.PredictRequest()
    request.inputs["nope"].CopyFrom(tf.make_tensor_proto([1.0]))
    warmup = tmp_path / "2" / "assets.extra" / "tf_serving_warmup_requests"
    warmup.parent.mkdir(parents=True)
    with tf.io.TFRecordWriter(str(warmup)) as writer:
        writer.write(prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request)).SerializeToString())
    model.poll()
    assert model.states()[2].state == "END" and "nope" in model.states()[2].error_message
    shutil.rmtree(tmp_path / "2")
    model.poll()
    assert model.resolve().version == 1, "version 1's three warmup records replay fine"


def test_a_truncated_warmup_file_fails_the_load_with_data_loss(toy_versions, tmp_path):
    place(toy_versions, tmp_path, 1)
    warmup = write_warmup(tmp_path / "1")
    warmup.write_bytes(warmup.read_bytes()[:-7])      # the last record cut short, as by a full disk
    model = ModelVersions(config_files.single_model_config("toy", tmp_path), VersionLoader())
    model.poll()
    state = model.states()[1]
    assert (state.state, state.error_code) == ("END", "DATA_LOSS"), state
    assert "truncated" in state.error_message and str(warmup) in state.error_message
    with pytest.raises(ServingError):
        model.resolve()


def test_specific_policy_and_labels(toy_versions, tmp_path):
    place(toy_versions, tmp_path, 1, 2, 3)
    spec = config_files.parse_model_server_config(
        f'model_config_list {{ config {{ name: "toy" base_path: "{tmp_path}" model_version_policy '
        f'{{ specific {{ versions: 1 versions: 2 }} }} version_labels {{ key: "stable" value: 1 }} '
        f'version_labels {{ key: "canary" value: 3 }} }} }}')[0]
    model = ModelVersions(spec, VersionLoader())
    model.poll()
    assert model.serving_versions() == [1, 2]
    assert model.resolve(label="stable").version == 1
    with pytest.raises(ServingError, match="Unrecognized servable version label: canary"):
        model.resolve(label="canary")      # version 3 is not served: the label is refused
    with pytest.raises(ServingError, match="cannot be supplied"):
        model.resolve(version=1, label="stable")


def test_core_reloads_config_and_reports_status(toy_versions, tmp_path):
    from tensorflow_serving.apis.get_model_status_pb2 import ModelVersionStatus

    State = ModelVersionStatus.State
    place(toy_versions, tmp_path, 1, 2)
    core = ServerCore([config_files.single_model_config("toy", tmp_path)], VersionLoader(), poll_seconds=0)
    core.load_initial()
    status = core.model_status("toy")
    assert [(s.version, State.Name(s.state)) for s in status.model_version_status] == [(2, "AVAILABLE")]
    all_policy = config_files.ModelSpecConfig("toy", tmp_path, config_files.VersionPolicy("all"), (("old", 1),))
    core.apply_config([all_policy])
    assert core.resolve("toy", label="old").version == 1 and core.resolve("toy").version == 2
    core.apply_config([])
    with pytest.raises(ServingError, match=r"Servable not found for request: Latest\(toy\)"):
        core.resolve("toy")
    assert {State.Name(s.state) for s in core.model_status("toy").model_version_status} == {"END"}
    with pytest.raises(ServingError, match="Could not find any versions of model other"):
        core.model_status("other")


def test_batching_merges_concurrent_calls_into_fewer_model_calls(toy_versions):
    from concurrent.futures import ThreadPoolExecutor

    from imgclf.serving.batching import BatchingServable
    from imgclf.serving.servable import Servable

    settings = config_files.BatchingSettings(max_batch_size=64, batch_timeout_micros=300_000, num_batch_threads=1)
    batching = BatchingServable(Servable.load("toy", 2, toy_versions / "2"), settings)
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(
                lambda i: batching.predict("", {"x": np.full((1 + i % 2, 3), i, np.float32)}), range(16)))
    finally:
        batching.close()
    for i, result in enumerate(results):
        assert result["y"].shape == (1 + i % 2, 3) and (result["y"] == 2.0 * i).all()
        assert result["tag_bytes"].tolist() == [b"\x00\xff2.0"] * (1 + i % 2)
    assert batching.requests_batched == 16 and batching.batches_run < 16


# --- the session load path ---------------------------------------------------------------------
def toy_requests() -> dict:
    """One request per toy signature (serving_default, pair, image, classify, regress)."""
    import io

    import tensorflow as tf
    from PIL import Image

    png = io.BytesIO()
    Image.new("L", (4, 3), color=90).save(png, format="PNG")
    example = tf.train.Example(features=tf.train.Features(
        feature={"f": tf.train.Feature(float_list=tf.train.FloatList(value=[0.25]))})).SerializeToString()
    return {"serving_default": {"x": np.arange(6, dtype=np.float32).reshape(2, 3)},
            "pair": {"a": np.array([1, 2], np.int64), "b": np.array([0.5, -1.0], np.float32)},
            "image": {"image_bytes": np.array([png.getvalue()] * 2, dtype=object)},
            "classify": {"inputs": np.array([example], dtype=object)},
            "regress": {"inputs": np.array([example], dtype=object)}}


def test_a_version_in_a_session_answers_as_tensorflows_own_loader(toy_versions):
    """The server loads a version into a TensorFlow session (as TF Serving does); every signature
    must answer exactly what tf.saved_model.load's functions answer, strings and all."""
    import tensorflow as tf

    from imgclf.serving.servable import Servable

    servable = Servable.load("toy", 3, toy_versions / "3")
    functions = tf.saved_model.load(str(toy_versions / "3")).signatures
    for key, inputs in toy_requests().items():
        got = servable.predict(key, inputs)
        expected = functions[key](**{name: tf.constant(value) for name, value in inputs.items()})
        assert sorted(got) == sorted(expected), key
        for name, value in expected.items():
            assert got[name].dtype == (object if value.dtype == tf.string else value.dtype.as_numpy_dtype), (key, name)
            assert got[name].shape == tuple(value.shape) and (got[name] == value.numpy()).all(), (key, name)


def test_an_error_inside_the_graph_keeps_its_code_and_the_session_keeps_answering(toy_versions):
    from imgclf.serving.servable import Servable

    servable = Servable.load("toy", 2, toy_versions / "2")
    with pytest.raises(ServingError) as caught:
        servable.predict("image", {"image_bytes": np.array([b"not an image"], dtype=object)})
    assert caught.value.code == "INVALID_ARGUMENT" and "image" in caught.value.message.lower()
    with pytest.raises(ServingError) as caught:
        servable.predict("", {"x": np.ones((1, 4), np.float32)})
    assert caught.value.code == "INVALID_ARGUMENT" and "[1, 4]" in caught.value.message
    assert y_of(servable) == 2.0


def test_the_real_model_answers_the_same_in_a_session(trained_model):
    import tensorflow as tf

    from imgclf import contract
    from imgclf.data_folders import iter_image_files
    from imgclf.serving.servable import Servable

    images = np.array([path.read_bytes() for path in list(iter_image_files(trained_model.data_dir))[:5]], dtype=object)
    got = Servable.load("m", 1, trained_model.version_dir).predict("", {contract.INPUT_NAME: images})
    expected = tf.saved_model.load(str(trained_model.version_dir)).signatures[contract.SIGNATURE_NAME](
        **{contract.INPUT_NAME: tf.constant(images)})
    assert (got[contract.CLASSES_OUTPUT] == expected[contract.CLASSES_OUTPUT].numpy()).all()
    np.testing.assert_allclose(got[contract.SCORES_OUTPUT], expected[contract.SCORES_OUTPUT].numpy(), rtol=1e-5, atol=1e-6)


# --- limits ------------------------------------------------------------------------------------
def test_large_requests_run_in_slices_with_the_same_answers(toy_versions):
    from imgclf.serving.servable import Servable

    whole = Servable.load("toy", 2, toy_versions / "2")
    sliced = Servable.load("toy", 2, toy_versions / "2", run_batch_size=2)
    calls = []
    run = sliced._run
    sliced._run = lambda key, tensors, outputs: calls.append(len(next(iter(tensors.values())))) or run(key, tensors, outputs)
    x = np.arange(15, dtype=np.float32).reshape(5, 3)
    expected, got = whole.predict("", {"x": x}), sliced.predict("", {"x": x})
    assert calls == [2, 2, 1]
    for name in expected:
        assert (expected[name] == got[name]).all(), name
    # A signature whose inputs disagree on the batch size is never sliced (the model says why).
    calls.clear()
    with pytest.raises(ServingError):
        sliced.predict("pair", {"a": np.arange(3, dtype=np.int64), "b": np.ones(2, np.float32)})
    assert calls == [3]


def test_the_model_gate_runs_some_queues_some_and_refuses_the_rest():
    from imgclf.serving.server import ModelGate

    gate = ModelGate(concurrent=1, queued=1)
    assert gate.admit() is None and gate.admit() is None
    refusal = gate.admit()
    assert refusal.code == "UNAVAILABLE" and refusal.http_status == 503
    assert "--model_max_queued_requests" in refusal.message
    gate.leave()
    assert gate.admit() is None
    assert gate.run(lambda a, b: a + b, 2, 3) == 5


def test_content_length_checks():
    from tornado.httputil import HTTPHeaders

    from imgclf.serving.http_server import body_problem

    assert body_problem(HTTPHeaders({"Content-Length": "abc"}), 100)[0] == 400
    assert body_problem(HTTPHeaders({"Content-Length": "-1"}), 100)[0] == 400
    status, message = body_problem(HTTPHeaders({"Content-Length": "101"}), 100)
    assert status == 413 and "101 bytes" in message and "--rest_api_max_body_bytes" in message
    assert body_problem(HTTPHeaders({"Content-Length": "100"}), 100) is None
    assert body_problem(HTTPHeaders({}), 100) is None


class Stream:
    """A connection as the connection table sees it."""

    closed = False

    def close(self):
        self.closed = True


def full_table_of_three():
    """A ConnectionTable of 3 and its clock (now[0], seconds), 1 s before a connection may go."""
    from imgclf.serving.http_server import ConnectionTable

    now = [0.0]
    return ConnectionTable(limit=3, min_age=1.0, clock=lambda: now[0]), now


def test_a_full_connection_table_closes_the_longest_idle_old_enough_connection():
    from imgclf.serving.http_server import ConnectionTable

    table, now = full_table_of_three()
    idle, busy, receiving = Stream(), Stream(), Stream()
    for stream in (idle, busy, receiving):
        table.add(stream)
    table.set(busy, ConnectionTable.WORKING)
    table.set(receiving, ConnectionTable.RECEIVING)
    assert not table.make_room(), "nothing has lasted a second yet: refuse the newcomer"
    now[0] = 5.0
    assert table.make_room() and idle.closed and not receiving.closed
    table.add(Stream())
    now[0] = 5.5
    assert table.make_room() and receiving.closed, "then the body that has been arriving longest"
    table.add(Stream())
    now[0] = 10.0
    assert table.make_room(), "the newest idle one, once old enough"
    assert not busy.closed, "a request in the model is never cut off"


def test_a_full_table_closes_a_client_it_has_answered_only_after_every_other_candidate():
    """A keep-alive client that has been answered and sits idle longer than the flood's silent
    connections (a slow client on a loaded machine) keeps its connection while others can go."""
    from imgclf.serving.http_server import ConnectionTable

    table, now = full_table_of_three()
    client, silent, slow_body = Stream(), Stream(), Stream()
    table.add(client)
    table.set(client, ConnectionTable.RECEIVING)
    table.set(client, ConnectionTable.WORKING)
    table.set(client, ConnectionTable.IDLE)          # answered, now idle the longest of all
    now[0] = 1.0
    table.add(silent)
    table.add(slow_body)
    table.set(slow_body, ConnectionTable.RECEIVING)
    now[0] = 3.0
    assert table.make_room() and silent.closed and not client.closed
    table.add(Stream())
    assert table.make_room() and slow_body.closed and not client.closed
    table.add(Stream())
    now[0] = 3.5                                     # the two newcomers are under a second old
    assert table.make_room() and client.closed, "answered connections go last, not never"


def test_reload_base_paths_must_stay_under_the_model_roots(tmp_path):
    roots_dir = tmp_path / "models"
    (roots_dir / "a").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (roots_dir / "link").symlink_to(tmp_path / "outside")
    started = [config_files.single_model_config("a", roots_dir / "a")]
    roots = config_files.model_roots(started)
    config_files.check_within_roots([config_files.single_model_config("b", roots_dir / "b")], roots)
    for escape in (tmp_path / "outside", roots_dir / "link", roots_dir / ".." / "outside"):
        with pytest.raises(ServingError, match="outside the model roots") as caught:
            config_files.check_within_roots([config_files.single_model_config("x", escape)], roots)
        assert caught.value.code == "PERMISSION_DENIED"
    wider = config_files.model_roots(started, extra=str(tmp_path / "outside"))
    config_files.check_within_roots([config_files.single_model_config("x", roots_dir / "link")], wider)


def test_grpc_channel_arguments_parse_as_the_real_server_does():
    from imgclf.serving.grpc_service import channel_options

    options = dict(channel_options(1000, "grpc.max_connection_age_ms=2000, grpc.lb_policy_name=x"))
    assert options == {"grpc.max_receive_message_length": 1000, "grpc.max_send_message_length": -1,
                       "grpc.max_connection_age_ms": 2000, "grpc.lb_policy_name": "x"}
    assert dict(channel_options(1000, "grpc.max_receive_message_length=5"))["grpc.max_receive_message_length"] == 5
    with pytest.raises(ValueError, match="not key=value"):
        channel_options(1000, "nonsense")


def test_batch_size_and_nesting_are_checked_before_conversion():
    assert json_tensor.batch_size_of({"instances": [1, 2, 3]}) == 3
    assert json_tensor.batch_size_of({"inputs": {"a": [1, 2], "b": [[1], [2], [3]]}}) == 3
    assert json_tensor.batch_size_of({"inputs": {"b64": "AA=="}}) == 0
    deep = 1
    for _ in range(40):
        deep = [deep]
    with pytest.raises(ServingError, match="nested more than 32"):
        json_tensor.tensors_from_inputs(deep, {"x": 1})


def test_a_dropped_session_is_deleted_on_a_thread_of_its_own(toy_versions, monkeypatch):
    """The request that drops the last reference to an unloaded version must not pay for deleting
    its session (it would hold back that request's reply)."""
    import os
    import threading

    from imgclf.serving import session as sessions

    deleted = []
    real_delete = sessions._delete_session

    def delete(session, graph):
        deleted.append((threading.current_thread().name, os.getpriority(os.PRIO_PROCESS, threading.get_native_id())))
        real_delete(session, graph)

    monkeypatch.setattr(sessions, "_delete_session", delete)
    servable = VersionLoader()("toy", 1, toy_versions / "1")
    assert servable.predict("", {"x": np.ones((1, 3), np.float32)})
    del servable
    for thread in [t for t in threading.enumerate() if t.name == "session-close"]:
        thread.join(timeout=30)
    assert deleted == [("session-close", 19)], "deleted at the lowest priority, off the dropping thread"
