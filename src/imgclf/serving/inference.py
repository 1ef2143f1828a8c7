"""Classify and Regress: tf.Example inputs fed to a signature with one input named "inputs", as
TF Serving's classifier.cc / regressor.cc do, with the same checks and messages. A predict-only
signature (such as an image model's) is refused with the real server's INVALID_ARGUMENT."""

from __future__ import annotations

import numpy as np
from google.protobuf import text_format
from tensorflow.core.example import example_pb2, feature_pb2
from tensorflow_serving.apis import classification_pb2, input_pb2, regression_pb2

from imgclf.serving import json_tensor
from imgclf.serving.errors import invalid_argument
from imgclf.serving.servable import DEFAULT_SIGNATURE

INPUTS, CLASSES, SCORES, OUTPUTS = "inputs", "classes", "scores", "outputs"


# --- JSON requests -----------------------------------------------------------------------------
def examples_from_json(doc: dict) -> input_pb2.Input:
    """The request's "context" and "examples" as an Input proto."""
    request_input = input_pb2.Input()
    has_context = "context" in doc
    if has_context:
        _example_from_json(doc["context"], request_input.example_list_with_context.context)
    if "examples" not in doc:
        raise invalid_argument(
            f"JSON Value: {json_tensor.debug_string(doc)} When method is classify, key 'examples' is expected "
            f"and was not found"
        )
    examples = doc["examples"]
    if not isinstance(examples, list):
        raise invalid_argument(f"JSON Value: {json_tensor.debug_string(doc)} Expecting 'examples' value to be an list/array")
    if not examples:
        raise invalid_argument(f"JSON Value: {json_tensor.debug_string(doc)} 'examples' value is an empty array")
    target = request_input.example_list_with_context.examples if has_context else request_input.example_list.examples
    for value in examples:
        _example_from_json(value, target.add())
    return request_input


def _example_from_json(value, example: example_pb2.Example) -> None:
    if not isinstance(value, dict):
        raise invalid_argument(f"Example must be JSON object but got JSON {json_tensor.json_type_name(value)}")
    for name, content in value.items():
        feature = feature_pb2.Feature()
        for item in content if isinstance(content, list) else [content]:
            _add_feature_value(item, name, feature)
        example.features.feature[name].CopyFrom(feature)


def _add_feature_value(value, name: str, feature: feature_pb2.Feature) -> None:
    kind = feature.WhichOneof("kind")

    def require(wanted: str):
        if kind not in (None, wanted):
            raise invalid_argument(f"Unexpected element type in feature: {name} expecting type: "
                                   f"{kind.replace('_list', '')}")

    if isinstance(value, bool):
        require("int64_list")
        feature.int64_list.value.append(int(value))
    elif isinstance(value, str):
        require("bytes_list")
        feature.bytes_list.value.append(value.encode("utf-8"))
    elif isinstance(value, dict) and json_tensor._is_b64_object(value):
        require("bytes_list")
        feature.bytes_list.value.append(json_tensor.decode_b64_object(value))
    elif isinstance(value, float):
        require("float_list")
        feature.float_list.value.append(value)
    elif isinstance(value, int):
        require("int64_list")
        if value >= 2**63:
            raise invalid_argument(f"Feature: {name} has uint64_t element. Only int64_t is supported.")
        feature.int64_list.value.append(value)
    else:
        raise invalid_argument(
            f"Feature: {name} has element with unexpected JSON type: {json_tensor.json_type_name(value)}"
        )


def serialized_examples(request_input: input_pb2.Input) -> np.ndarray:
    kind = request_input.WhichOneof("kind")
    if kind == "example_list":
        examples = list(request_input.example_list.examples)
    elif kind == "example_list_with_context":
        context = request_input.example_list_with_context.context
        examples = []
        for example in request_input.example_list_with_context.examples:
            merged = example_pb2.Example()
            merged.MergeFrom(context)
            merged.MergeFrom(example)     # the example's own features win, as in the real server
            examples.append(merged)
    else:
        raise invalid_argument("Input is empty.")
    if not examples:
        raise invalid_argument("Input is empty.")
    array = np.empty(len(examples), dtype=object)
    array[:] = [e.SerializeToString() for e in examples]
    return array


# --- signatures --------------------------------------------------------------------------------
def _signature(servable, signature_name: str):
    key = signature_name or DEFAULT_SIGNATURE
    if key not in servable.signature_defs:
        raise invalid_argument(f"No signature was found with the name: {key}")
    return servable.signature_defs[key], key


def classify_proto(servable, signature_name: str, request_input, result: classification_pb2.ClassificationResult):
    signature, key = _signature(servable, signature_name)
    if len(signature.inputs) != 1:
        raise invalid_argument("Expected one input Tensor.")
    if len(signature.outputs) not in (1, 2):
        raise invalid_argument(f"Expected one or two output Tensors, found {len(signature.outputs)}")
    if INPUTS not in signature.inputs:
        raise invalid_argument(f"No classification inputs found in SignatureDef: {text_format.MessageToString(signature)}")
    wanted = [name for name in (CLASSES, SCORES) if name in signature.outputs]
    if not wanted:
        raise invalid_argument(
            f'Expected classification signature outputs to contain at least one of "{CLASSES}" or "{SCORES}". '
            f"Signature was: {text_format.MessageToString(signature)}"
        )
    examples = serialized_examples(request_input)
    outputs = servable.predict(key, {INPUTS: examples}, wanted)
    classes, scores = outputs.get(CLASSES), outputs.get(SCORES)
    for name, tensor, kind in ((CLASSES, classes, "O"), (SCORES, scores, "f")):
        if tensor is None:
            continue
        if tensor.ndim != 2:
            raise invalid_argument(f"Expected Tensor shape: [batch_size num_classes] but got {list(tensor.shape)}")
        if tensor.shape[0] != len(examples):
            raise invalid_argument(f"Expected {name} output batch size of {len(examples)}. Got: {tensor.shape[0]}")
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise invalid_argument(f"Tensors class and score should match in dim_size(1). Got {classes.shape[1]} vs. "
                               f"{scores.shape[1]}")
    num_classes = (classes if classes is not None else scores).shape[1]
    for i in range(len(examples)):
        classifications = result.classifications.add()
        for c in range(num_classes):
            entry = classifications.classes.add()
            if classes is not None:
                entry.label = classes[i, c].decode("utf-8", errors="replace") if isinstance(classes[i, c], bytes) else str(classes[i, c])
            if scores is not None:
                entry.score = float(scores[i, c])


def regress_proto(servable, signature_name: str, request_input, result: regression_pb2.RegressionResult):
    signature, key = _signature(servable, signature_name)
    if len(signature.inputs) != 1:
        raise invalid_argument("Expected one input Tensor.")
    if len(signature.outputs) != 1:
        raise invalid_argument("Expected one output Tensor.")
    if INPUTS not in signature.inputs:
        raise invalid_argument(f"No regression inputs found in SignatureDef: {text_format.MessageToString(signature)}")
    if OUTPUTS not in signature.outputs:
        raise invalid_argument(f"No regression outputs found in SignatureDef: {text_format.MessageToString(signature)}")
    examples = serialized_examples(request_input)
    values = servable.predict(key, {INPUTS: examples}, [OUTPUTS])[OUTPUTS]
    if not (values.ndim == 1 or (values.ndim == 2 and values.shape[1] == 1)):
        raise invalid_argument(f"Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got "
                               f"{list(values.shape)}")
    if values.shape[0] != len(examples):
        raise invalid_argument(f"Input batch size did not match output batch size: {len(examples)} vs. {values.shape[0]}")
    for value in values.reshape(-1):
        result.regressions.add().value = float(value)


# --- JSON replies ------------------------------------------------------------------------------
def classify_json(result: classification_pb2.ClassificationResult) -> str:
    if not result.classifications:
        raise invalid_argument("Cannot convert empty ClassificationResults to JSON")
    rows = []
    for classifications in result.classifications:
        pairs = ", ".join(f"[{_json_string(c.label)}, {json_tensor.format_float(c.score, single=True)}]"
                          for c in classifications.classes)
        rows.append(f"[{pairs}]")
    return '{\n    "results": [' + ", ".join(rows) + "]\n}"


def regress_json(result: regression_pb2.RegressionResult) -> str:
    if not result.regressions:
        raise invalid_argument("Cannot convert empty RegressionResults to JSON")
    values = ", ".join(json_tensor.format_float(r.value, single=True) for r in result.regressions)
    return '{\n    "results": [' + values + "]\n}"


def _json_string(text: str) -> str:
    import json

    return json.dumps(text, ensure_ascii=False)
