"""The REST JSON <-> tensor conversions of TensorFlow Serving (its util/json_tensor.cc), in Python:
row ("instances") and columnar ("inputs") requests, {"b64": ...} strings, NaN/Infinity, and the
same error messages, so a client sees the same answer from this server and the real one."""

from __future__ import annotations

import base64
import binascii
import json
import math
from typing import Callable, Mapping

import numpy as np
from tensorflow.core.framework import types_pb2

from imgclf.serving.errors import ServingError, invalid_argument
from imgclf.serving.servable import dtype_string, numpy_dtype

ROW, COLUMNAR = "row", "columnar"
B64_KEY = "b64"
BYTES_SUFFIX = "_bytes"       # string outputs named like this are sent back as {"b64": ...}
_MAX_DEBUG_CHARS = 256

_INT_RANGES = {
    types_pb2.DT_INT8: (-(2**31), 2**31 - 1),     # rapidjson's IsInt(): int32 range for all small ints
    types_pb2.DT_INT16: (-(2**31), 2**31 - 1),
    types_pb2.DT_INT32: (-(2**31), 2**31 - 1),
    types_pb2.DT_UINT8: (-(2**31), 2**31 - 1),
    types_pb2.DT_INT64: (-(2**63), 2**63 - 1),
    types_pb2.DT_UINT32: (0, 2**32 - 1),
    types_pb2.DT_UINT64: (0, 2**64 - 1),
}


# --- requests ----------------------------------------------------------------------------------
def parse_json_object(body: bytes) -> dict:
    """The request body as a JSON object; NaN, Infinity and -Infinity are accepted."""
    if not body:
        raise invalid_argument("JSON Parse error: The document is empty")
    try:
        doc = json.loads(body)
    except UnicodeDecodeError as error:
        raise invalid_argument(f"JSON Parse error: Invalid encoding in string. at offset: {error.start}")
    except json.JSONDecodeError as error:
        raise invalid_argument(f"JSON Parse error: {error.msg} at offset: {error.pos}")
    except RecursionError:
        raise invalid_argument("JSON Parse error: The document is nested too deeply") from None
    if not isinstance(doc, dict):
        raise invalid_argument(f"JSON Value: {debug_string(doc)} Is not object")
    return doc


def signature_name_of(doc: dict) -> str:
    name = doc.get("signature_name", "")
    if not isinstance(name, str):
        raise invalid_argument(
            f"JSON Value: {debug_string(doc)} not formatted correctly. 'signature_name' key must be a string value."
        )
    return name


def parse_predict_request(body: bytes, input_dtypes_for: Callable[[str], Mapping[str, int]],
                          check_instances: Callable[[int], None] | None = None):
    """(signature_name, {input name: ndarray}, ROW|COLUMNAR) from a :predict body.

    `input_dtypes_for(signature_name)` gives the signature's input names and dtype enums; it is
    called after the JSON parsed, as in the real server (so bad JSON is a 400 even for an unknown
    model). `check_instances(count)` may refuse the batch size before any value is converted."""
    doc = parse_json_object(body)
    if check_instances is not None:
        check_instances(batch_size_of(doc))
    signature_name = signature_name_of(doc)
    input_dtypes = input_dtypes_for(signature_name)
    if not input_dtypes:
        raise invalid_argument(f"Failed to get input map for signature: {signature_name or 'DEFAULT'}")
    has_instances, has_inputs = "instances" in doc, "inputs" in doc
    if has_instances and has_inputs:
        raise invalid_argument(
            f"JSON Value: {debug_string(doc)} Not formatted correctly expecting only one of 'inputs' or "
            f"'instances' keys to exist "
        )
    if has_instances:
        instances = doc["instances"]
        if not isinstance(instances, list):
            raise invalid_argument(f"JSON Value: {debug_string(doc)} Expecting 'instances' to be an list/array")
        if not instances:
            raise invalid_argument(f"JSON Value: {debug_string(doc)} No values in 'instances' array")
        return signature_name, tensors_from_instances(instances, input_dtypes), ROW
    if has_inputs:
        return signature_name, tensors_from_inputs(doc["inputs"], input_dtypes), COLUMNAR
    raise invalid_argument("Missing 'inputs' or 'instances' key")


def batch_size_of(doc: dict) -> int:
    """How many examples a predict body carries: the length of "instances", else the largest
    first dimension among the "inputs" (0 when neither is a list)."""
    if isinstance(doc.get("instances"), list):
        return len(doc["instances"])
    inputs = doc.get("inputs")
    values = inputs.values() if isinstance(inputs, dict) and not _is_b64_object(inputs) else [inputs]
    return max((len(v) for v in values if isinstance(v, list)), default=0)


def _is_b64_object(value) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get(B64_KEY), str)


def _is_named_object(value) -> bool:
    return isinstance(value, dict) and not _is_b64_object(value)


def tensors_from_instances(instances: list, input_dtypes: Mapping[str, int]) -> dict[str, np.ndarray]:
    if not isinstance(instances[0], dict) and len(input_dtypes) > 1:
        raise invalid_argument(
            "instances is a plain list, but expecting list of objects as multiple input tensors required "
            "as per tensorinfo_map"
        )
    named = _is_named_object(instances[0])
    input_names = sorted(input_dtypes)
    values: dict[str, list] = {}
    shapes: dict[str, list[int]] = {}
    for index, element in enumerate(instances):
        if named:
            if not _is_named_object(element):
                raise invalid_argument(f"Expecting object but got list at item {index} of input list")
            for name, item in element.items():
                try:
                    _add_instance_item(item, name, input_dtypes, values, shapes)
                except ServingError as error:
                    raise invalid_argument(
                        f"Failed to process element: {index} key: {name} of 'instances' list. "
                        f"Error: {error.code}: {error.message}"
                    )
            if sorted(element) != input_names:
                raise invalid_argument(
                    f"Failed to process element: {index} of 'instances' list. JSON object: "
                    f"{debug_string(element)} keys must be equal to: {','.join(input_names)}"
                )
        else:
            if _is_named_object(element):
                raise invalid_argument(f"Expecting value/list but got object at item {index} of input list")
            try:
                _add_instance_item(element, input_names[0], input_dtypes, values, shapes)
            except ServingError as error:
                raise invalid_argument(
                    f"Failed to process element: {index} of 'instances' list. Error: {error.code}: {error.message}"
                )
    count = len(instances)
    return {
        name: _as_array(flat, [count] + shapes[name], input_dtypes[name]) for name, flat in values.items()
    }


def _add_instance_item(item, name: str, input_dtypes, values: dict, shapes: dict) -> None:
    if name not in input_dtypes:
        raise invalid_argument(f"JSON object: does not have named input: {name}")
    shape = dense_shape(item)
    flat: list = []
    _fill(item, 0, shape, input_dtypes[name], flat)
    if name not in shapes:
        shapes[name], values[name] = shape, flat
        return
    expected = shapes[name]
    if math.prod(expected) != len(flat):
        raise invalid_argument(f"Expecting tensor size: {math.prod(expected)} but got: {len(flat)}")
    if expected != shape:
        raise invalid_argument(f"Expecting shape {_shape_string(expected)} but got: {_shape_string(shape)}")
    values[name].extend(flat)


def tensors_from_inputs(value, input_dtypes: Mapping[str, int]) -> dict[str, np.ndarray]:
    if not isinstance(value, dict) or _is_b64_object(value):
        if len(input_dtypes) > 1:
            raise invalid_argument(
                "inputs is a plain value/list, but expecting an object as multiple input tensors required "
                "as per tensorinfo_map"
            )
        (name, dtype), = input_dtypes.items()
        return {name: _to_array(value, dtype)}
    tensors = {}
    for name in sorted(input_dtypes):   # extra keys are ignored, as by the real server
        if name not in value:
            raise invalid_argument(f"Missing named input: {name} in 'inputs' object.")
        tensors[name] = _to_array(value[name], input_dtypes[name])
    return tensors


def _to_array(value, dtype: int) -> np.ndarray:
    shape = dense_shape(value)
    flat: list = []
    _fill(value, 0, shape, dtype, flat)
    return _as_array(flat, shape, dtype)


def _as_array(flat: list, shape: list[int], dtype: int) -> np.ndarray:
    np_dtype = numpy_dtype(dtype)
    if np_dtype is object:
        array = np.empty(len(flat), dtype=object)
        array[:] = flat
    else:
        array = np.array(flat, dtype=np_dtype)
    return array.reshape(shape)


MAX_RANK = 32          # deeper nesting is refused before any conversion (numpy's limit was 32)


def dense_shape(value) -> list[int]:
    """The shape implied by the first element at every level of nested lists."""
    shape = []
    while isinstance(value, list):
        if len(shape) == MAX_RANK:
            raise invalid_argument(f"JSON value is nested more than {MAX_RANK} lists deep; tensors of "
                                   f"rank above {MAX_RANK} are not accepted")
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _fill(value, level: int, shape: list[int], dtype: int, out: list) -> None:
    rank = len(shape)
    if not isinstance(value, list):
        if level != rank:
            raise invalid_argument(
                f"JSON Value: {debug_string(value)} found at incorrect level: {level + 1} in the JSON DOM. "
                f"Expected at level: {rank}"
            )
        out.append(_scalar(value, dtype))
        return
    if level >= rank:
        raise invalid_argument(f"Encountered list at unexpected level: {level} expected < {rank}")
    if len(value) != shape[level]:
        raise invalid_argument(
            f"Encountered list at unexpected size: {len(value)} at level: {level} expected size: {shape[level]}"
        )
    if level == rank - 1 and _extend_plain_leaves(value, dtype, out):
        return
    for item in value:
        _fill(item, level + 1, shape, dtype, out)


_PLAIN_LEAF_TYPES = {
    types_pb2.DT_FLOAT: {int, float},
    types_pb2.DT_DOUBLE: {int, float},
    types_pb2.DT_BOOL: {bool},
    **{dtype: {int} for dtype in _INT_RANGES},
}


def _extend_plain_leaves(values: list, dtype: int, out: list) -> bool:
    """Fast path for a last-level list of plain numbers (type() checks run in C); False sends
    the caller to the element-by-element path, which produces the exact error."""
    allowed = _PLAIN_LEAF_TYPES.get(dtype)
    if allowed is None or not values or not set(map(type, values)) <= allowed:
        return False
    if dtype in _INT_RANGES:
        low, high = _INT_RANGES[dtype]
        if min(values) < low or max(values) > high:
            return False
    out.extend(values)
    return True


def _scalar(value, dtype: int):
    if isinstance(value, dict):
        if dtype != types_pb2.DT_STRING:
            raise _type_error(value, dtype)
        return decode_b64_object(value)
    if dtype in (types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _type_error(value, dtype)
        return value
    if dtype in _INT_RANGES:
        low, high = _INT_RANGES[dtype]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise _type_error(value, dtype)
        return value
    if dtype == types_pb2.DT_STRING:
        if not isinstance(value, str):
            raise _type_error(value, dtype)
        return value.encode("utf-8")
    if dtype == types_pb2.DT_BOOL:
        if not isinstance(value, bool):
            raise _type_error(value, dtype)
        return value
    raise ServingError("UNIMPLEMENTED", f"Conversion of JSON Value: {debug_string(value)} to type: {dtype_string(dtype)}")


def decode_b64_object(value) -> bytes:
    if not _is_b64_object(value):
        raise invalid_argument(f"JSON Value: {debug_string(value)} not formatted correctly for base64 data")
    text = value[B64_KEY]
    padded = text + "=" * (-len(text) % 4)     # absl::Base64Unescape accepts missing padding
    for altchars in (None, b"-_"):
        try:
            return base64.b64decode(padded, altchars=altchars, validate=True)
        except (binascii.Error, ValueError):
            continue
    raise invalid_argument("Unable to base64 decode")


def _type_error(value, dtype: int) -> ServingError:
    return invalid_argument(
        f"JSON Value: {debug_string(value)} Type: {json_type_name(value)} is not of expected type: {dtype_string(dtype)}"
    )


def json_type_name(value) -> str:
    if value is None:
        return "Null"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


def debug_string(value) -> str:
    """The value as compact JSON, cut at 256 characters (only for error messages)."""
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    except RecursionError:
        return "<a value nested too deeply to show>"
    return text[:_MAX_DEBUG_CHARS]


def _shape_string(shape: list[int]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


# --- replies -----------------------------------------------------------------------------------
def predict_response_json(outputs: Mapping[str, np.ndarray], fmt: str) -> str:
    if not outputs:
        raise invalid_argument("Cannot convert empty tensor map to JSON")
    names = sorted(outputs)
    if fmt == COLUMNAR:
        if len(names) == 1:
            body = _json_values(outputs[names[0]], names[0])
        else:
            body = "{" + ", ".join(f"{json.dumps(n)}: {_json_values(outputs[n], n)}" for n in names) + "}"
        return '{\n    "outputs": ' + body + "\n}"
    batch_size = -1
    for name in names:
        array = outputs[name]
        if array.ndim == 0:
            raise invalid_argument(f"Tensor name: {name} has no shape information ")
        if batch_size >= 0 and array.shape[0] != batch_size:
            raise invalid_argument(
                f"Tensor name: {name} has inconsistent batch size: {array.shape[0]} expecting: {batch_size}"
            )
        batch_size = array.shape[0]
    rows = []
    for item in range(batch_size):
        if len(names) == 1:
            rows.append(_json_values(outputs[names[0]][item], names[0]))
        else:
            rows.append("{" + ", ".join(f"{json.dumps(n)}: {_json_values(outputs[n][item], n)}" for n in names) + "}")
    return '{\n    "predictions": [' + ", ".join(rows) + "]\n}"


def _json_values(array, name: str) -> str:
    array = np.asarray(array)
    as_b64 = array.dtype.kind in ("O", "S") and name.endswith(BYTES_SUFFIX)
    writer = _value_writer(array.dtype, as_b64)
    if array.ndim == 0:
        return writer(array.item())
    return _nested(array.tolist(), writer)


def _nested(value, writer) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_nested(v, writer) for v in value) + "]"
    return writer(value)


def _value_writer(dtype: np.dtype, as_b64: bool):
    if dtype == np.float32:
        return lambda v: format_float(v, single=True)
    if dtype == np.float64:
        return lambda v: format_float(v, single=False)
    if dtype == np.bool_:
        return lambda v: "true" if v else "false"
    if dtype.kind in ("O", "S"):
        if as_b64:
            return lambda v: '{"b64": "' + base64.b64encode(_as_bytes(v)).decode("ascii") + '"}'
        return lambda v: json.dumps(_as_bytes(v).decode("utf-8", errors="replace"), ensure_ascii=False)
    return lambda v: str(int(v))


def _as_bytes(value) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode("utf-8")


def format_float(value: float, single: bool) -> str:
    """Shortest %g text that reads back to the same float (as the real server writes numbers),
    with ".0" on whole numbers, and NaN / Infinity / -Infinity."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "-Infinity" if value < 0 else "Infinity"
    text = "%g" % value
    same = (np.float32(float(text)) == np.float32(value)) if single else (float(text) == value)
    if not same:
        text = "%.*g" % (9 if single else 17, value)
    if "." not in text and "e" not in text:
        text += ".0"
    return text


def error_json(message: str) -> str:
    return '{ "error": ' + json.dumps(message, ensure_ascii=False) + " }"
