"""The gRPC transport: PredictionService / ModelService stubs from tensorflow-serving-api.

Those generated modules import TensorFlow's protos (and so TensorFlow), which is why this module is
imported only when --protocol grpc is chosen, and why it imports them inside the client."""

from __future__ import annotations

import json

import grpc

from imgclf import contract
from imgclf.client import base

MAX_ATTEMPTS = 5    # gRPC caps a retry policy's maxAttempts at 5


def retry_service_config(retries: int) -> str:
    """gRPC's own retry policy (with backoff) for UNAVAILABLE on predict and metadata. ModelService
    (status) is left out: wait_until_available polls it with its own deadline."""
    if retries <= 0:
        return json.dumps({"methodConfig": []})
    return json.dumps({"methodConfig": [{
        "name": [{"service": "tensorflow.serving.PredictionService"}],
        "retryPolicy": {
            "maxAttempts": min(retries + 1, MAX_ATTEMPTS),
            "initialBackoff": "1s",
            "maxBackoff": "30s",
            "backoffMultiplier": 2,
            "retryableStatusCodes": ["UNAVAILABLE"],
        },
    }]})


def normalize_target(target: str) -> str:
    """'grpc://host:8500' and 'host:8500' both mean host:8500."""
    target = target.strip().rstrip("/")
    return target.split("://", 1)[1] if "://" in target else target


class GrpcClient:
    def __init__(self, target: str, model_name: str = contract.DEFAULT_MODEL_NAME,
                 version: int | None = None, label: str | None = None, timeout: float = 30.0,
                 retries: int = 5):
        from tensorflow_serving.apis import (
            model_service_pb2_grpc,
            prediction_service_pb2_grpc,
        )

        contract.rest_model_path(model_name, version, label)   # same validation as REST
        self.target = normalize_target(target)
        self.model_name = model_name
        self.version = version
        self.label = label
        self.timeout = timeout
        self.retries = retries
        self._channel = grpc.insecure_channel(self.target, options=[
            ("grpc.max_send_message_length", -1),
            ("grpc.max_receive_message_length", -1),
            ("grpc.enable_retries", 1),
            ("grpc.service_config", retry_service_config(retries)),
        ])
        self._predictions = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)

    @property
    def endpoint(self) -> str:
        where = (f"/versions/{self.version}" if self.version is not None
                 else f"/labels/{self.label}" if self.label else "")
        return f"grpc://{self.target} model {self.model_name}{where}"

    def _model_spec(self, signature: bool = False):
        from tensorflow_serving.apis import model_pb2

        spec = model_pb2.ModelSpec(name=self.model_name)
        if signature:
            spec.signature_name = contract.SIGNATURE_NAME
        if self.version is not None:
            spec.version.value = int(self.version)
        elif self.label:
            spec.version_label = self.label
        return spec

    def _call(self, method, request, what: str):
        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as error:
            raise _translate(error, f"{self.endpoint} {what}", self.timeout) from None

    # --- status and metadata --------------------------------------------------------------------
    def status(self) -> base.ModelStatus:
        from tensorflow_serving.apis import get_model_status_pb2

        request = get_model_status_pb2.GetModelStatusRequest(model_spec=self._model_spec())
        reply = self._call(self._models.GetModelStatus, request, "status")
        names = get_model_status_pb2.ModelVersionStatus.State
        status = base.ModelStatus()
        for entry in reply.model_version_status:
            status.versions[entry.version] = (names.Name(entry.state), entry.status.error_message)
        return status

    def metadata_version(self) -> int:
        from tensorflow_serving.apis import get_model_metadata_pb2

        request = get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec=self._model_spec(), metadata_field=["signature_def"])
        reply = self._call(self._predictions.GetModelMetadata, request, "metadata")
        signatures = get_model_metadata_pb2.SignatureDefMap()
        if not reply.metadata["signature_def"].Unpack(signatures):
            raise base.ContractMismatch(f"{self.endpoint}: metadata holds no SignatureDefMap")
        signature = signatures.signature_def.get(contract.SIGNATURE_NAME)
        if signature is None:
            raise base.ContractMismatch(f"{self.endpoint}: no signature {contract.SIGNATURE_NAME!r}; "
                                   f"it has {sorted(signatures.signature_def)}")
        base.check_signature(set(signature.inputs), set(signature.outputs), self.endpoint)
        return reply.model_spec.version.value

    # --- predict --------------------------------------------------------------------------------
    def predict(self, images: list[bytes]) -> base.PredictReply:
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest(model_spec=self._model_spec(signature=True))
        request.inputs[contract.INPUT_NAME].CopyFrom(
            tf.make_tensor_proto(images, dtype=tf.string, shape=[len(images)]))
        request.output_filter.extend([contract.SCORES_OUTPUT, contract.CLASSES_OUTPUT])
        reply = self._call(self._predictions.Predict, request, "predict")
        try:
            scores = tf.make_ndarray(reply.outputs[contract.SCORES_OUTPUT]).tolist()
            classes = [[name.decode("utf-8") for name in row]
                       for row in tf.make_ndarray(reply.outputs[contract.CLASSES_OUTPUT]).tolist()]
        except (KeyError, ValueError, TypeError, AttributeError):
            raise base.ContractMismatch(f"{self.endpoint}: reply lacks outputs "
                                   f"{contract.SCORES_OUTPUT}/{contract.CLASSES_OUTPUT}") from None
        predictions = base.make_predictions(scores, classes, len(images), self.endpoint)
        return base.PredictReply(predictions, version=reply.model_spec.version.value or None,
                            request_bytes=request.ByteSize())

    def close(self) -> None:
        self._channel.close()


def _translate(error: grpc.RpcError, where: str, timeout: float) -> Exception:
    code, details = error.code(), error.details() or ""
    if code == grpc.StatusCode.UNAVAILABLE:
        return base.ServerUnreachable(f"{where}: unavailable: {details}")
    if code == grpc.StatusCode.NOT_FOUND:
        return base.ModelNotAvailable(f"{where}: {details}")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return base.RequestTimedOut(f"{where}: no reply within {timeout:g} s")
    return base.RequestRejected(details or code.name)
