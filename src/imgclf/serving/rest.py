"""The REST API on --rest_api_port, answering as TF Serving's http_rest_api_handler.cc:
same paths (case-insensitive, URL-decoded names and labels), same JSON, same error messages and
HTTP status codes, `Content-Type: application/json` on every reply. The sockets, connections and
threads around it are http_server.py's."""

from __future__ import annotations

import logging
import re
from urllib.parse import unquote

from google.protobuf import json_format

from imgclf.serving import json_tensor
from imgclf.serving.errors import ServingError, invalid_argument
from imgclf.serving.server import ModelServer

log = logging.getLogger(__name__)

_API_PATH = re.compile(r"(?i)/v1/.*")
_PREDICTION_PATH = re.compile(
    r"(?i)/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)"
)
_STATUS_PATH = re.compile(
    r"(?i)/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?"
)
_INT64_MAX = 2**63 - 1
JSON = "application/json"


class RestApi:
    """Turns (method, path, body) into (HTTP status, JSON text). No sockets here."""

    def __init__(self, server: ModelServer, prometheus_path: str | None = None):
        self.server = server
        self.prometheus_path = prometheus_path

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, str, str]:
        """(HTTP status, content type, body) for one request."""
        if self.prometheus_path and path == self.prometheus_path and self.server.metrics is not None:
            return 200, "text/plain; version=0.0.4", self.server.metrics.page().decode()
        if not _API_PATH.fullmatch(path):
            return 404, JSON, json_tensor.error_json(f"Not found: {method} {path}")
        try:
            return 200, JSON, self._process(method, path, body)
        except ServingError as error:
            return error.http_status, JSON, json_tensor.error_json(error.message)
        except RecursionError:           # only input can nest without bound
            return 400, JSON, json_tensor.error_json(f"Malformed request: {method} {path}: nested too deeply")
        except Exception as error:  # a bug must answer 500, never take the server down
            log.exception("Unexpected error on %s %s", method, path)
            return 500, JSON, json_tensor.error_json(f"Internal error: {type(error).__name__}: {error}")

    def _process(self, method: str, path: str, body: bytes) -> str:
        malformed = invalid_argument(f"Malformed request: {method} {path}")
        if method == "POST":
            match = _PREDICTION_PATH.fullmatch(path)
            if not match:
                raise malformed
            name, version, label, verb = _model_info(match)
            verb = verb.lower()
            with self.server.observe(verb.capitalize(), "REST", name) as holder:
                if verb == "predict":
                    return self._predict(name, version, label, body, holder)
                return self._classify_or_regress(verb, name, version, label, body, holder)
        if method == "GET":
            match = _STATUS_PATH.fullmatch(path)
            if not match:
                raise malformed
            name, version, label, subresource = _model_info(match)
            if not name:
                raise invalid_argument("Missing model name in request.")
            if version is not None and label is not None:
                raise invalid_argument(
                    f"Both model version ({version}) and model version label ({label}) cannot be supplied."
                )
            if subresource and subresource.lower() == "metadata":
                with self.server.observe("GetModelMetadata", "REST", name):
                    return metadata_json(self.server.metadata(name, version, label))
            with self.server.observe("GetModelStatus", "REST", name):
                return status_json(self.server.status(name, version))
        raise malformed

    def _predict(self, name, version, label, body: bytes, holder: dict) -> str:
        resolved = {}

        def input_dtypes_for(signature_name: str):
            servable = self.server.resolve(name, version, label)
            resolved["servable"] = servable
            holder["version"] = servable.version
            key = signature_name or "serving_default"
            if key not in servable.signature_defs:
                raise invalid_argument(f'Serving signature name: "{key}" not found in signature def')
            return {alias: info.dtype for alias, info in servable.signature_defs[key].inputs.items()}

        signature_name, inputs, fmt = json_tensor.parse_predict_request(body, input_dtypes_for,
                                                                        self.server.check_instances)
        outputs = self.server.predict(resolved["servable"], signature_name, inputs)
        return json_tensor.predict_response_json(outputs, fmt)

    def _classify_or_regress(self, verb: str, name, version, label, body: bytes, holder: dict) -> str:
        from tensorflow_serving.apis import classification_pb2, regression_pb2

        from imgclf.serving import inference

        doc = json_tensor.parse_json_object(body)
        signature_name = json_tensor.signature_name_of(doc)
        if isinstance(doc.get("examples"), list):
            self.server.check_instances(len(doc["examples"]))
        examples = inference.examples_from_json(doc)
        servable = self.server.resolve(name, version, label)
        holder["version"] = servable.version
        if verb == "classify":
            result = classification_pb2.ClassificationResult()
            inference.classify_proto(servable, signature_name, examples, result)
            return inference.classify_json(result)
        result = regression_pb2.RegressionResult()
        inference.regress_proto(servable, signature_name, examples, result)
        return inference.regress_json(result)


def _model_info(match: re.Match) -> tuple[str, int | None, str | None, str | None]:
    """(name, version, label, verb-or-subresource) as ParseModelInfo extracts them."""
    name, version_text, label, last = match.groups()
    name = unquote(name) if name else ""
    version = None
    if version_text:
        if int(version_text) > _INT64_MAX:
            raise invalid_argument(f"Failed to convert version: {version_text} to numeric.")
        version = int(version_text)
    if label:
        label = unquote(label)
    return name, version, label or None, last


def status_json(response) -> str:
    return json_format.MessageToJson(response, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True, indent=1)


def metadata_json(response) -> str:
    """As the real server: model_spec and the unpacked SignatureDefMap, proto field names kept."""
    from tensorflow_serving.apis import get_model_metadata_pb2

    signature_map = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signature_map)
    options = dict(preserving_proto_field_name=True, always_print_fields_with_no_presence=True, indent=1)
    spec = json_format.MessageToJson(response.model_spec, **options)
    signatures = json_format.MessageToJson(signature_map, **options)
    return '{\n"model_spec":' + spec + ',\n"metadata": {"signature_def": ' + signatures + "}\n}\n"
