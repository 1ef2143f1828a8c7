"""The local server with a model made by the trainer's real export path (the trained_model
fixture): the project's serving contract end to end over REST and gRPC."""

from __future__ import annotations

import base64

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from imgclf import contract
from imgclf.data_folders import iter_image_files
from imgclf.serving import LocalServer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(trained_model):
    with LocalServer(trained_model.base_path, trained_model.model_name) as server:
        yield server, trained_model


def some_images(trained_model, count: int = 3) -> list[bytes]:
    return [path.read_bytes() for path, _ in zip(iter_image_files(trained_model.data_dir), range(count))]


def test_status_and_metadata_describe_the_exported_version(served):
    server, model = served
    base = server.rest_url + contract.rest_model_path(model.model_name)
    status = requests.get(base, timeout=30).json()["model_version_status"]
    assert status[0]["version"] == str(model.version) and status[0]["state"] == "AVAILABLE"
    signature = requests.get(base + "/metadata", timeout=30).json()[
        "metadata"]["signature_def"]["signature_def"][contract.SIGNATURE_NAME]
    assert signature["inputs"][contract.INPUT_NAME]["dtype"] == contract.INPUT_DTYPE
    assert signature["outputs"][contract.SCORES_OUTPUT]["dtype"] == contract.SCORES_DTYPE
    assert signature["outputs"][contract.CLASSES_OUTPUT]["dtype"] == contract.CLASSES_DTYPE


def test_rest_predict_follows_the_contract_and_matches_grpc(served):
    server, model = served
    images = some_images(model)
    reply = requests.post(server.rest_url + contract.rest_model_path(model.model_name) + ":predict",
                          json=contract.rest_predict_body(images), timeout=60)
    assert reply.status_code == 200, reply.text
    predictions = reply.json()["predictions"]
    assert len(predictions) == len(images)
    for prediction in predictions:
        assert prediction[contract.CLASSES_OUTPUT] == list(model.labels)
        assert abs(sum(prediction[contract.SCORES_OUTPUT]) - 1.0) < 1e-4

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model.model_name
    request.inputs[contract.INPUT_NAME].CopyFrom(tf.make_tensor_proto(images, dtype=tf.string))
    with grpc.insecure_channel(server.grpc_target) as channel:
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=60)
    grpc_scores = tf.make_ndarray(response.outputs[contract.SCORES_OUTPUT])
    rest_scores = np.array([p[contract.SCORES_OUTPUT] for p in predictions], np.float32)
    np.testing.assert_array_equal(grpc_scores, rest_scores)
    assert response.model_spec.version.value == model.version


def test_undecodable_image_bytes_are_a_400(served):
    server, model = served
    body = {"instances": [{"b64": base64.b64encode(b"not an image at all").decode()}]}
    reply = requests.post(server.rest_url + contract.rest_model_path(model.model_name) + ":predict",
                          json=body, timeout=60)
    assert reply.status_code == 400 and reply.headers["Content-Type"] == "application/json"
    assert "error" in reply.json()
