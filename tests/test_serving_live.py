"""The local server over real sockets: every REST path and error code, gRPC, labels, metrics and
config-file polling, against generic SavedModels (several outputs, bytes outputs, several inputs,
classify/regress signatures)."""

from __future__ import annotations

import base64
import io
import json
import math
import socket
import time

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from imgclf.serving import LocalServer
from serving_models import export_toy_model

pytestmark = pytest.mark.slow

CONFIG = """model_config_list {{
  config {{
    name: "toy"
    base_path: "{base}"
    model_platform: "tensorflow"
    model_version_policy {{ specific {{ versions: 1 versions: 2 }} }}
    version_labels {{ key: "stable" value: 1 }}
    version_labels {{ key: "canary" value: {canary} }}
  }}
}}
"""


@pytest.fixture(scope="module")
def toy_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("live")
    base = root / "toy"
    for version in (1, 2, 3):        # 3 is on disk but not in the specific policy
        export_toy_model(base, version, warmup=version == 1)
    (base / "9.partial").mkdir()     # never a version
    config = root / "models.config"
    config.write_text(CONFIG.format(base=base, canary=2))
    monitoring = root / "monitoring.config"
    monitoring.write_text('prometheus_config { enable: true path: "/monitoring/prometheus/metrics" }')
    server = LocalServer(None, "toy", poll_seconds=0.3, extra_args=[
        f"--model_config_file={config}", "--model_config_file_poll_wait_seconds=1",
        f"--monitoring_config_file={monitoring}", "--rest_api_enable_cors_support",
    ])
    with server:
        server.config_path = config
        server.base_path = base
        yield server


def get(server, path):
    return requests.get(server.rest_url + path, timeout=30)


def post(server, path, body):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return requests.post(server.rest_url + path, data=data, timeout=30)


def assert_error(reply, status, fragment):
    assert reply.status_code == status, reply.text
    assert reply.headers["Content-Type"] == "application/json"
    body = reply.json()
    assert list(body) == ["error"] and fragment in body["error"], body


# --- status and metadata -----------------------------------------------------------------------
def test_status_lists_every_known_version_with_the_real_json_shape(toy_server):
    reply = get(toy_server, "/v1/models/toy")
    assert reply.status_code == 200 and reply.headers["Content-Type"] == "application/json"
    statuses = reply.json()["model_version_status"]
    assert [s["version"] for s in statuses] == ["2", "1"], "numeric folders only, policy applied"
    for status in statuses:
        assert status == {"version": status["version"], "state": "AVAILABLE",
                          "status": {"error_code": "OK", "error_message": ""}}


@pytest.mark.parametrize("path,versions", [
    ("/v1/models/toy/versions/1", ["1"]),
    ("/v1/models/TOY/versions/2".replace("TOY", "toy"), ["2"]),
    ("/V1/Models/toy/Versions/2", ["2"]),                   # the real server's paths are case-insensitive
    ("/v1/models/toy/labels/stable", ["2", "1"]),           # as the real server: a label lists all
])
def test_status_by_version_or_label(toy_server, path, versions):
    reply = get(toy_server, path)
    assert [s["version"] for s in reply.json()["model_version_status"]] == versions


def test_metadata_has_the_signature_defs_of_the_saved_model(toy_server):
    body = get(toy_server, "/v1/models/toy/metadata").json()
    assert body["model_spec"] == {"name": "toy", "signature_name": "", "version": "2"}
    signatures = body["metadata"]["signature_def"]["signature_def"]
    assert {"serving_default", "pair", "image", "classify", "regress"} <= set(signatures)
    default = signatures["serving_default"]
    assert default["method_name"] == "tensorflow/serving/predict"
    assert default["inputs"]["x"]["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in default["inputs"]["x"]["tensor_shape"]["dim"]] == ["-1", "3"]
    assert set(default["outputs"]) == {"y", "total", "tag", "tag_bytes"}
    assert default["outputs"]["tag_bytes"]["dtype"] == "DT_STRING"
    assert get(toy_server, "/v1/models/toy/labels/stable/metadata").json()["model_spec"]["version"] == "1"
    assert get(toy_server, "/v1/models/toy/versions/1/metadata").json()["model_spec"]["version"] == "1"


# --- predict -----------------------------------------------------------------------------------
def test_row_predict_with_several_outputs_and_b64_bytes(toy_server):
    reply = post(toy_server, "/v1/models/toy:predict", {"instances": [[1, 2, 3], [0.5, 0, -1]]})
    assert reply.status_code == 200 and reply.headers["Content-Type"] == "application/json"
    first, second = reply.json()["predictions"]
    assert first["y"] == [2.0, 4.0, 6.0] and first["total"] == 12.0 and second["total"] == -1.0
    assert base64.b64decode(first["tag_bytes"]["b64"]) == b"\x00\xff2.0"
    assert first["tag"] == "scale 2.0", "strings not named *_bytes stay plain"


def test_columnar_predict(toy_server):
    outputs = post(toy_server, "/v1/models/toy:predict", {"inputs": [[1, 1, 1]]}).json()["outputs"]
    assert outputs["y"] == [[2.0, 2.0, 2.0]] and outputs["total"] == [6.0]
    single = post(toy_server, "/v1/models/toy:predict",
                  {"signature_name": "pair", "inputs": {"a": [1, 2], "b": [0.5, 1]}}).json()
    assert single == {"outputs": [2.0, 4.0]}, "one output: the value itself"


def test_several_inputs_in_row_format_and_one_output(toy_server):
    body = {"signature_name": "pair", "instances": [{"a": 1, "b": 0.5}, {"a": 10, "b": -1}]}
    assert post(toy_server, "/v1/models/toy:predict", body).json() == {"predictions": [2.0, 8.0]}


def test_nan_and_infinity_travel_both_ways(toy_server):
    reply = post(toy_server, "/v1/models/toy:predict", '{"instances": [[NaN, Infinity, -Infinity]]}')
    assert reply.status_code == 200
    assert "NaN" in reply.text and "-Infinity" in reply.text
    y = reply.json()["predictions"][0]["y"]
    assert math.isnan(y[0]) and y[1] == math.inf and y[2] == -math.inf


@pytest.mark.parametrize("path,scale", [
    ("/v1/models/toy:predict", 2.0),
    ("/v1/models/toy/versions/1:predict", 1.0),
    ("/v1/models/toy/versions/2:predict", 2.0),
    ("/v1/models/toy/labels/stable:predict", 1.0),
    ("/v1/models/toy/labels/canary:predict", 2.0),
])
def test_version_and_label_selection(toy_server, path, scale):
    reply = post(toy_server, path, {"instances": [[1, 1, 1]]})
    assert reply.json()["predictions"][0]["y"] == [scale] * 3


def test_b64_image_input(toy_server):
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (4, 4), color=100).save(buffer, format="PNG")
    body = {"signature_name": "image", "instances": [{"b64": base64.b64encode(buffer.getvalue()).decode()}]}
    assert post(toy_server, "/v1/models/toy/versions/1:predict", body).json() == {"predictions": [100.0]}


@pytest.mark.parametrize("method,path,body,status,fragment", [
    ("GET", "/v1/models/toy:predict", None, 400, "Malformed request: GET /v1/models/toy:predict"),
    ("POST", "/v1/models", "{}", 400, "Malformed request: POST /v1/models"),
    ("POST", "/v1/models/toy/version/5:predict", "{}", 400, "Malformed request"),
    ("POST", "/v1/models/toy/versions/x:predict", "{}", 400, "Malformed request"),
    ("PUT", "/v1/models/toy", "{}", 400, "Malformed request: PUT /v1/models/toy"),
    ("GET", "/v1/models", None, 400, "Missing model name in request."),
    ("GET", "/v1/models/nope", None, 404, "Could not find any versions of model nope"),
    ("GET", "/v1/models/toy/versions/7", None, 404, "Could not find version 7 of model toy"),
    ("GET", "/v1/models/nope/metadata", None, 404, "Servable not found for request: Latest(nope)"),
    ("POST", "/v1/models/nope:predict", {"instances": [1]}, 404, "Servable not found for request: Latest(nope)"),
    ("POST", "/v1/models/toy/versions/3:predict", {"instances": [[1, 1, 1]]}, 404,
     "Servable not found for request: Specific(toy, 3)"),
    ("POST", "/v1/models/toy/labels/nope:predict", {"instances": [[1, 1, 1]]}, 400,
     "Unrecognized servable version label: nope"),
    ("POST", "/v1/models/toy:predict", {"signature_name": "nope", "instances": [[1, 1, 1]]}, 400,
     'Serving signature name: "nope" not found in signature def'),
    ("POST", "/v1/models/toy:predict", '{"instances": [[1, 1, 1]', 400, "JSON Parse error"),
    ("POST", "/v1/models/toy:predict", "", 400, "JSON Parse error: The document is empty"),
    ("POST", "/v1/models/toy:predict", {"instances": [{"z": [1, 1, 1]}]}, 400,
     "JSON object: does not have named input: z"),
    ("POST", "/v1/models/toy:predict", {"instances": [["a", "b", "c"]]}, 400,
     "is not of expected type: float"),
    ("POST", "/v1/models/toy:predict", {"signature_name": "image", "instances": [{"b64": "aGVsbG8="}]}, 400,
     "Unknown image file format"),
    ("POST", "/v1/models/toy:classify", {"examples": [{"f": 1.0}]}, 400,
     "Expected one or two output Tensors, found 4"),
    ("POST", "/v1/models/toy:classify", {"signature_name": "image", "examples": [{"f": 1.0}]}, 400,
     "No classification inputs found in SignatureDef"),
    ("GET", "/elsewhere", None, 404, "Not found"),
])
def test_every_failure_is_json_with_the_real_status_code(toy_server, method, path, body, status, fragment):
    data = None if body is None else (body if isinstance(body, str) else json.dumps(body))
    reply = requests.request(method, toy_server.rest_url + path, data=data, timeout=30)
    assert_error(reply, status, fragment)


def test_classify_and_regress_signatures(toy_server):
    classify = post(toy_server, "/v1/models/toy/versions/1:classify",
                    {"signature_name": "classify", "examples": [{"f": 0.0}, {"f": 100.0}]}).json()
    assert [[label for label, _ in row] for row in classify["results"]] == [["low", "high"]] * 2
    assert classify["results"][0][1][1] == 0.5 and classify["results"][1][1][1] == 1.0
    regress = post(toy_server, "/v1/models/toy:regress",
                   {"signature_name": "regress", "context": {"f": 9.0}, "examples": [{"f": 1.5}, {}]}).json()
    assert regress == {"results": [3.0, 18.0]}, "example features win over context"


def test_cors_preflight_and_headers(toy_server):
    preflight = requests.options(toy_server.rest_url + "/v1/models/toy:predict",
                                 headers={"Origin": "http://example.org"}, timeout=30)
    assert preflight.status_code == 200
    assert preflight.headers["Access-Control-Allow-Origin"] == "*"
    missing = requests.options(toy_server.rest_url + "/v1/models/toy:predict", timeout=30)
    assert_error(missing, 400, "Origin header is missing in CORS preflight")


def test_garbage_never_takes_the_server_down(toy_server):
    for junk in (b"\x00\xff garbage\r\n\r\n", b"POST /v1/models/toy:predict HTTP/1.1\r\nContent-Length: 5\r\n\r\n{{{{{"):
        with socket.create_connection(("127.0.0.1", toy_server.rest_port), timeout=10) as sock:
            sock.sendall(junk)
            sock.recv(4096)
    for _ in range(3):
        post(toy_server, "/v1/models/toy:predict", b'{"instances": [[1, 2, 3]]')
    assert post(toy_server, "/v1/models/toy:predict", {"instances": [[1, 2, 3]]}).status_code == 200
    assert toy_server.process.poll() is None


# --- gRPC --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def channel(toy_server):
    with grpc.insecure_channel(toy_server.grpc_target) as channel:
        yield channel


def grpc_predict(channel, inputs, **spec):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = spec.get("name", "toy")
    if "version" in spec:
        request.model_spec.version.value = spec["version"]
    if "label" in spec:
        request.model_spec.version_label = spec["label"]
    request.model_spec.signature_name = spec.get("signature", "")
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    return stub.Predict(request, timeout=30)


def test_grpc_and_rest_return_the_same_numbers(toy_server, channel):
    x = np.array([[0.1, 0.2, 0.3], [1e-8, 3.3, -7.25]], np.float32)
    reply = grpc_predict(channel, {"x": x}, label="stable")
    assert (reply.model_spec.name, reply.model_spec.version.value, reply.model_spec.signature_name) == \
        ("toy", 1, "serving_default")
    rest = post(toy_server, "/v1/models/toy/labels/stable:predict", {"instances": x.tolist()}).json()
    grpc_y = tf.make_ndarray(reply.outputs["y"])
    rest_y = np.array([p["y"] for p in rest["predictions"]], np.float32)
    np.testing.assert_array_equal(grpc_y, rest_y)
    assert tf.make_ndarray(reply.outputs["tag_bytes"])[0] == b"\x00\xff1.0"


def test_grpc_errors_carry_the_same_codes(channel):
    cases = [
        (dict(name="nope"), {"x": np.ones((1, 3), np.float32)}, grpc.StatusCode.NOT_FOUND),
        (dict(version=3), {"x": np.ones((1, 3), np.float32)}, grpc.StatusCode.NOT_FOUND),
        (dict(label="nope"), {"x": np.ones((1, 3), np.float32)}, grpc.StatusCode.INVALID_ARGUMENT),
        (dict(), {"z": np.ones((1, 3), np.float32)}, grpc.StatusCode.INVALID_ARGUMENT),
        (dict(), {"x": np.ones((1, 3), np.float64)}, grpc.StatusCode.INVALID_ARGUMENT),
        (dict(signature="nope"), {"x": np.ones((1, 3), np.float32)}, grpc.StatusCode.FAILED_PRECONDITION),
    ]
    for spec, inputs, code in cases:
        with pytest.raises(grpc.RpcError) as caught:
            grpc_predict(channel, inputs, **spec)
        assert caught.value.code() == code, (spec, caught.value.details())


def test_grpc_metadata_status_classify_and_unimplemented(channel):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "toy"
    reply = stub.GetModelMetadata(request, timeout=30)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    reply.metadata["signature_def"].Unpack(signatures)
    assert reply.model_spec.version.value == 2 and "pair" in signatures.signature_def

    status_request = get_model_status_pb2.GetModelStatusRequest()
    status_request.model_spec.name = "toy"
    status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(status_request, timeout=30)
    assert [s.version for s in status.model_version_status] == [2, 1]

    classify = classification_pb2.ClassificationRequest()
    classify.model_spec.name, classify.model_spec.signature_name = "toy", "classify"
    example = classify.input.example_list.examples.add()
    example.features.feature["f"].float_list.value.append(0.0)
    result = stub.Classify(classify, timeout=30).result
    assert [(c.label, c.score) for c in result.classifications[0].classes] == [("low", 0.5), ("high", 0.5)]

    with pytest.raises(grpc.RpcError) as caught:
        stub.MultiInference(inference_pb2.MultiInferenceRequest(), timeout=30)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_grpc_reload_config_reports_a_bad_config_and_keeps_serving(toy_server, channel):
    from tensorflow_serving.apis import model_management_pb2

    request = model_management_pb2.ReloadConfigRequest()
    config = request.config.model_config_list.config.add()
    config.name, config.base_path = "toy", "relative/path"
    # As model_service_impl.cc: the failure is the call's status (the reply's status says the same).
    with pytest.raises(grpc.RpcError) as caught:
        model_service_pb2_grpc.ModelServiceStub(channel).HandleReloadConfigRequest(request, timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "absolute path" in caught.value.details()
    assert post(toy_server, "/v1/models/toy:predict", {"instances": [[1, 1, 1]]}).status_code == 200


# --- metrics and config polling ----------------------------------------------------------------
def test_prometheus_metrics_count_requests_and_errors_per_model_and_version(toy_server):
    post(toy_server, "/v1/models/toy/versions/1:predict", {"instances": [[1, 1, 1]]})
    post(toy_server, "/v1/models/toy:predict", {"instances": [["bad", 1, 1]]})
    reply = get(toy_server, "/monitoring/prometheus/metrics")
    assert reply.status_code == 200
    text = reply.text
    assert ':tensorflow:serving:request_count{API="Predict",entrypoint="REST",model_name="toy",' \
           'status="OK",version="1"}' in text
    assert 'status="INVALID_ARGUMENT"' in text
    assert ":tensorflow:serving:request_latency_bucket" in text


def test_config_file_polling_moves_a_label(toy_server):
    """Last in this module: it rewrites the config (canary -> 1) and waits for the server."""
    toy_server.config_path.write_text(CONFIG.format(base=toy_server.base_path, canary=1))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        reply = post(toy_server, "/v1/models/toy/labels/canary:predict", {"instances": [[1, 1, 1]]})
        if reply.json()["predictions"][0]["y"] == [1.0] * 3:
            return
        time.sleep(0.3)
    pytest.fail("the canary label did not move to version 1 within 20 s")
