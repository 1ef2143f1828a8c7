"""Status codes as TensorFlow Serving reports them: one exception type carrying a canonical code
name (the gRPC/absl code), mapped to HTTP the way the real server's http_server.cc does."""

from __future__ import annotations

import grpc

from imgclf.tf_errors import tf_error_message

# Canonical code name -> HTTP status, as tensorflow_serving/model_servers/http_server.cc maps them.
HTTP_STATUS = {
    "OK": 200,
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
    "UNAUTHENTICATED": 401,
}


class ServingError(Exception):
    """A failed request or load: `code` is a canonical status name such as "NOT_FOUND"."""

    def __init__(self, code: str, message: str):
        if code not in HTTP_STATUS:
            raise ValueError(f"unknown status code name {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.code]

    @property
    def grpc_code(self) -> grpc.StatusCode:
        return grpc.StatusCode[self.code]

    def __str__(self) -> str:
        return self.message


def invalid_argument(message: str) -> ServingError:
    return ServingError("INVALID_ARGUMENT", message)


def not_found(message: str) -> ServingError:
    return ServingError("NOT_FOUND", message)


def from_exception(error: BaseException) -> ServingError:
    """A ServingError for anything raised while loading or running a model. TensorFlow's own
    errors carry the same canonical codes; Python-level signature mismatches are the caller's
    fault (INVALID_ARGUMENT); anything else is INTERNAL."""
    if isinstance(error, ServingError):
        return error
    import tensorflow as tf   # only here: the module stays importable without TensorFlow

    if isinstance(error, tf.errors.OpError):
        return ServingError(tf_code_name(error.error_code), tf_error_message(error.message, one_line=False))
    if isinstance(error, (ValueError, TypeError)):
        return invalid_argument(str(error))
    return ServingError("INTERNAL", f"{type(error).__name__}: {error}")


def tf_code_name(error_code: int) -> str:
    # TensorFlow's error codes use the canonical numbering, which grpc.StatusCode also uses.
    for status in grpc.StatusCode:
        if status.value[0] == error_code:
            return status.name
    return "UNKNOWN"
