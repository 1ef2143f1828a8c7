"""The gRPC API on --port, through the servicers generated in tensorflow-serving-api:
PredictionService (Predict, GetModelMetadata, Classify, Regress; MultiInference UNIMPLEMENTED) and
ModelService (GetModelStatus, HandleReloadConfigRequest). Errors carry the same canonical codes
that the REST API turns into HTTP statuses."""

from __future__ import annotations

import logging
from concurrent import futures

import grpc
import tensorflow as tf
from tensorflow_serving.apis import (
    classification_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from imgclf.serving.errors import ServingError, from_exception, invalid_argument
from imgclf.serving.server import ModelServer

log = logging.getLogger(__name__)


def _spec_choice(model_spec) -> tuple[int | None, str | None]:
    version = model_spec.version.value if model_spec.HasField("version") else None
    label = model_spec.version_label or None
    return version, label


def _first_dim(tensor_proto) -> int:
    dims = tensor_proto.tensor_shape.dim
    return dims[0].size if dims else 1


def _example_count(request_input) -> int:
    kind = request_input.WhichOneof("kind")
    if kind == "example_list":
        return len(request_input.example_list.examples)
    if kind == "example_list_with_context":
        return len(request_input.example_list_with_context.examples)
    return 0


def _abort(context, error: BaseException):
    failure = from_exception(error)
    context.abort(failure.grpc_code, failure.message)


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, server: ModelServer):
        self.server = server

    def Predict(self, request, context):
        name = request.model_spec.name
        try:
            with self.server.observe("Predict", "GRPC", name) as holder, self.server.model_request():
                self.server.check_instances(max((_first_dim(p) for p in request.inputs.values()), default=0))
                servable = self.server.resolve(name, *_spec_choice(request.model_spec))
                holder["version"] = servable.version
                inputs = {alias: tf.make_ndarray(proto) for alias, proto in request.inputs.items()}
                signature_name = request.model_spec.signature_name or "serving_default"
                outputs = self.server.predict(servable, signature_name, inputs, list(request.output_filter))
                response = predict_pb2.PredictResponse()
                response.model_spec.name = servable.name
                response.model_spec.version.value = servable.version
                response.model_spec.signature_name = signature_name
                for alias, array in outputs.items():
                    response.outputs[alias].CopyFrom(tf.make_tensor_proto(array))
                return response
        except Exception as error:
            _abort(context, error)

    def GetModelMetadata(self, request, context):
        name = request.model_spec.name
        try:
            with self.server.observe("GetModelMetadata", "GRPC", name):
                for field in request.metadata_field:
                    if field != "signature_def":
                        raise invalid_argument(f"Metadata field {field} is not supported")
                return self.server.metadata(name, *_spec_choice(request.model_spec))
        except Exception as error:
            _abort(context, error)

    def Classify(self, request, context):
        from imgclf.serving import inference

        return self._examples_call(request, context, "Classify", inference.classify_proto,
                                   classification_pb2.ClassificationResponse)

    def Regress(self, request, context):
        from imgclf.serving import inference

        return self._examples_call(request, context, "Regress", inference.regress_proto,
                                   regression_pb2.RegressionResponse)

    def _examples_call(self, request, context, api, run, response_type):
        name = request.model_spec.name
        try:
            with self.server.observe(api, "GRPC", name) as holder, self.server.model_request():
                self.server.check_instances(_example_count(request.input))
                servable = self.server.resolve(name, *_spec_choice(request.model_spec))
                holder["version"] = servable.version
                response = response_type()
                signature_name = request.model_spec.signature_name or "serving_default"
                response.model_spec.name = servable.name
                response.model_spec.version.value = servable.version
                response.model_spec.signature_name = signature_name
                run(servable, signature_name, request.input, response.result)
                return response
        except Exception as error:
            _abort(context, error)

    def MultiInference(self, request, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "MultiInference is not supported by this server")


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, server: ModelServer, reload_config=None):
        self.server = server
        self.reload_config = reload_config   # ModelServerConfig message -> None (raises on error)

    def GetModelStatus(self, request, context):
        try:
            if not request.HasField("model_spec"):
                raise invalid_argument("Missing ModelSpec")
            version, _ = _spec_choice(request.model_spec)
            return self.server.status(request.model_spec.name, version)
        except Exception as error:
            _abort(context, error)

    def HandleReloadConfigRequest(self, request, context):
        """As model_service_impl.cc: only a model_config_list is taken (anything else, an empty
        config included, is INVALID_ARGUMENT); a failure is both in the reply's status and the
        call's status. What reload_config refuses beyond that (base paths outside the model
        roots, a list that would unload every model) is this server's own safety."""
        response = model_management_pb2.ReloadConfigResponse()
        if self.reload_config is None:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "Config reload is not enabled")
        try:
            if request.config.WhichOneof("config") != "model_config_list":
                raise invalid_argument("ServerModelConfig type not supported by HandleReloadConfigRequest. "
                                       "Only ModelConfigList is currently supported")
            self.reload_config(request.config)
            response.status.error_code = 0
        except Exception as error:
            failure = from_exception(error)
            from tensorflow.core.protobuf import error_codes_pb2

            log.error("ReloadConfig failed: %s", failure.message)
            response.status.error_code = error_codes_pb2.Code.Value(failure.code)
            response.status.error_message = failure.message
            context.set_code(failure.grpc_code)
            context.set_details(failure.message)
        return response


def channel_options(max_receive_bytes: int, channel_arguments: str = "") -> list[tuple[str, object]]:
    """The server's channel arguments: the receive limit (--grpc_max_receive_message_bytes; the
    real server takes up to 2 GiB), no send limit, then --grpc_channel_arguments parsed as
    server.cc does ("key=value,key=value", integers where they parse), which may override both."""
    options: dict[str, object] = {"grpc.max_receive_message_length": max_receive_bytes or -1,
                                  "grpc.max_send_message_length": -1}
    for item in filter(None, (part.strip() for part in channel_arguments.split(","))):
        key, separator, value = item.partition("=")
        if not separator or not key:
            raise ValueError(f"--grpc_channel_arguments: {item!r} is not key=value")
        options[key.strip()] = int(value) if value.strip().lstrip("-").isdigit() else value.strip()
    return list(options.items())


def make_grpc_server(server: ModelServer, host: str, port: int, max_threads: int,
                     reload_config=None, options: list[tuple[str, object]] | None = None,
                     max_concurrent_rpcs: int | None = None) -> grpc.Server:
    """max_concurrent_rpcs: calls running or queued for a thread; more get RESOURCE_EXHAUSTED."""
    grpc_server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix="grpc"),
        options=options if options is not None else channel_options(0),
        maximum_concurrent_rpcs=max_concurrent_rpcs or None,
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(server), grpc_server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(server, reload_config), grpc_server)
    bound = grpc_server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise ServingError("UNAVAILABLE", f"cannot listen for gRPC on {host}:{port}")
    return grpc_server
