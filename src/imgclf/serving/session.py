"""A SavedModel loaded and run as TensorFlow Serving does it: into a TensorFlow session, through
TensorFlow's C API (`TF_LoadSessionFromSavedModel`, `TF_SessionRun`; tensorflow/c/c_api.h),
called with ctypes.

Why not `tf.saved_model.load`: it rebuilds the SavedModel's object graph and its functions in
Python, holding the interpreter lock for much of the load, so the request threads of the server
stall while a new version loads and warms up. Through the C API the whole load, the warmup and every
request run in C++, and ctypes releases the lock for the length of each call. Measured in the
rollout drill and `imgclf bench --parts rollout` (EfficientNet-Lite0 export, two clients, 2 shared
cores): p99 during swaps went from 2.0-4.6 x the steady p99 (median 2.5 x) to 0.96-2.5 x (median
1.4 x); docs/serving.md, "Version swaps".

The C API is TensorFlow's stable one, exported by the `libtensorflow_cc` library that the
`tensorflow` package ships and has already loaded; this module only declares its functions.
"""

from __future__ import annotations

import ctypes
import threading
import weakref
from functools import lru_cache
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from imgclf.serving.errors import ServingError, invalid_argument, tf_code_name
from imgclf.serving.priority import MAX_NICE, lower_this_thread, niced_call

# sizeof(TF_TString) (tensorflow/tsl/platform/ctstring_internal.h): a 24-byte union on every platform.
TSTRING_BYTES = 24
DT_STRING = 7
_p = ctypes.c_void_p


class TF_Output(ctypes.Structure):
    _fields_ = [("oper", _p), ("index", ctypes.c_int)]


class TF_Buffer(ctypes.Structure):
    _fields_ = [("data", _p), ("length", ctypes.c_size_t), ("data_deallocator", _p)]


_BUFFER = ctypes.POINTER(TF_Buffer)
# name: (result type, argument types), as declared in tensorflow/c/c_api.h and tf_tstring.h.
_FUNCTIONS = {
    "TF_NewStatus": (_p, []), "TF_DeleteStatus": (None, [_p]),
    "TF_GetCode": (ctypes.c_int, [_p]), "TF_Message": (ctypes.c_char_p, [_p]),
    "TF_NewGraph": (_p, []), "TF_DeleteGraph": (None, [_p]),
    "TF_GraphOperationByName": (_p, [_p, ctypes.c_char_p]),
    "TF_NewSessionOptions": (_p, []), "TF_DeleteSessionOptions": (None, [_p]),
    "TF_SetConfig": (None, [_p, ctypes.c_char_p, ctypes.c_size_t, _p]),
    "TF_LoadSessionFromSavedModel": (_p, [_p, _BUFFER, ctypes.c_char_p, ctypes.POINTER(ctypes.c_char_p),
                                          ctypes.c_int, _p, _BUFFER, _p]),
    "TF_SessionRun": (None, [_p, _BUFFER, ctypes.POINTER(TF_Output), ctypes.POINTER(_p), ctypes.c_int,
                             ctypes.POINTER(TF_Output), ctypes.POINTER(_p), ctypes.c_int,
                             ctypes.POINTER(_p), ctypes.c_int, _BUFFER, _p]),
    "TF_NewSession": (_p, [_p, _p, _p]), "TF_CloseSession": (None, [_p, _p]), "TF_DeleteSession": (None, [_p, _p]),
    "TF_AllocateTensor": (_p, [ctypes.c_int, ctypes.POINTER(ctypes.c_int64), ctypes.c_int, ctypes.c_size_t]),
    "TF_DeleteTensor": (None, [_p]), "TF_TensorData": (_p, [_p]), "TF_TensorType": (ctypes.c_int, [_p]),
    "TF_NumDims": (ctypes.c_int, [_p]), "TF_Dim": (ctypes.c_int64, [_p, ctypes.c_int]),
    "TF_TensorByteSize": (ctypes.c_size_t, [_p]),
    "TF_StringInit": (None, [_p]), "TF_StringCopy": (None, [_p, ctypes.c_char_p, ctypes.c_size_t]),
    "TF_StringGetDataPointer": (_p, [_p]), "TF_StringGetSize": (ctypes.c_size_t, [_p]),
}


@lru_cache(maxsize=1)
def c_api() -> ctypes.CDLL:
    """The C API of the TensorFlow this process imported (the same runtime, devices and pools)."""
    import tensorflow as tf

    folder = Path(tf.sysconfig.get_lib())
    for candidate in sorted(folder.glob("libtensorflow_cc*")) + sorted(folder.glob("python/_pywrap_tensorflow_internal*")):
        library = ctypes.CDLL(str(candidate))
        if hasattr(library, "TF_LoadSessionFromSavedModel"):
            for name, (result, arguments) in _FUNCTIONS.items():
                function = getattr(library, name)
                function.restype, function.argtypes = result, arguments
            return library
    raise ServingError("INTERNAL", f"TensorFlow's C API (TF_LoadSessionFromSavedModel) was not found under {folder}")


class _Status:
    """A TF_Status for one call; raises its code and message as a ServingError."""

    def __enter__(self):
        self.pointer = c_api().TF_NewStatus()
        return self.pointer

    def __exit__(self, *exc):
        lib = c_api()
        code, message = lib.TF_GetCode(self.pointer), lib.TF_Message(self.pointer)
        lib.TF_DeleteStatus(self.pointer)
        if code and exc[0] is None:
            raise ServingError(tf_code_name(code), message.decode("utf-8", errors="replace"))


# --- tensors -----------------------------------------------------------------------------------
def new_tensor(array: np.ndarray, dtype_enum: int) -> int:
    """A TF_Tensor holding a copy of `array` (already of the dtype `dtype_enum` stands for)."""
    lib = c_api()
    dims = (ctypes.c_int64 * max(1, array.ndim))(*array.shape)
    if dtype_enum == DT_STRING:
        values = [_as_bytes(value) for value in array.reshape(-1)]
        tensor = lib.TF_AllocateTensor(DT_STRING, dims, array.ndim, TSTRING_BYTES * len(values))
        base = lib.TF_TensorData(tensor)
        for index, value in enumerate(values):
            lib.TF_StringInit(base + index * TSTRING_BYTES)
            lib.TF_StringCopy(base + index * TSTRING_BYTES, value, len(value))
        return tensor
    data = np.ascontiguousarray(array)
    tensor = lib.TF_AllocateTensor(dtype_enum, dims, array.ndim, data.nbytes)
    if data.nbytes:
        ctypes.memmove(lib.TF_TensorData(tensor), data.ctypes.data, data.nbytes)
    return tensor


def _as_bytes(value) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    raise invalid_argument(f"Expected a string (bytes) value, got {type(value).__name__}")


def tensor_to_numpy(tensor: int) -> np.ndarray:
    """A numpy copy of a TF_Tensor: bytes objects for strings, the matching dtype otherwise."""
    import tensorflow as tf

    lib = c_api()
    dtype_enum = lib.TF_TensorType(tensor)
    shape = tuple(lib.TF_Dim(tensor, i) for i in range(lib.TF_NumDims(tensor)))
    base = lib.TF_TensorData(tensor)
    if dtype_enum == DT_STRING:
        values = np.empty(int(np.prod(shape, dtype=np.int64)), dtype=object)
        for index in range(values.size):
            item = base + index * TSTRING_BYTES
            values[index] = ctypes.string_at(lib.TF_StringGetDataPointer(item), lib.TF_StringGetSize(item))
        return values.reshape(shape)
    try:
        dtype = np.dtype(tf.dtypes.as_dtype(dtype_enum).as_numpy_dtype)
    except TypeError as error:   # resource, variant: nothing a client could receive
        raise ServingError("INTERNAL", f"output of dtype {tf.dtypes.as_dtype(dtype_enum).name} cannot be returned") from error
    array = np.empty(shape, dtype=dtype)
    if array.nbytes:
        ctypes.memmove(array.ctypes.data, base, min(array.nbytes, lib.TF_TensorByteSize(tensor)))
    return array


# --- the session -------------------------------------------------------------------------------
def _session_options(config):
    """TF_SessionOptions holding `config` (a ConfigProto; None = TensorFlow's defaults)."""
    lib = c_api()
    options = lib.TF_NewSessionOptions()
    if config is not None:
        blob = config.SerializeToString()
        try:
            with _Status() as status:
                lib.TF_SetConfig(options, blob, len(blob), status)
        except BaseException:
            lib.TF_DeleteSessionOptions(options)
            raise
    return options


def start_thread_pools(config=None) -> None:
    """Create TensorFlow's process-wide thread pools (inter-op, and the CPU device's intra-op pool)
    now, on the calling thread, sized by `config` as every later session is. TensorFlow creates them
    with the first session, and threads inherit their creator's priority: a server whose first
    session is made by a version loading at a lower priority (priority.py) would run every request
    at that priority. An empty session makes them."""
    lib = c_api()
    graph = lib.TF_NewGraph()
    options = _session_options(config)
    try:
        with _Status() as status:
            session = lib.TF_NewSession(graph, options, status)
        _delete_session(session, graph)
    except BaseException:
        lib.TF_DeleteGraph(graph)
        raise
    finally:
        lib.TF_DeleteSessionOptions(options)


class SavedModelSession:
    """A loaded SavedModel: its graph and session, closed when the last reference goes (requests
    still running on it keep it alive). Safe to run from many threads at once."""

    def __init__(self, export_dir: str | Path, tags: Sequence[str], config=None):
        """`config`: a ConfigProto for the session (thread pools); None = TensorFlow's defaults."""
        lib = c_api()
        options = _session_options(config)
        self._graph = lib.TF_NewGraph()
        tag_array = (ctypes.c_char_p * len(tags))(*[tag.encode() for tag in tags])
        try:
            with _Status() as status:
                self._session = niced_call(lib.TF_LoadSessionFromSavedModel, options, None, str(export_dir).encode(),
                                           tag_array, len(tags), self._graph, None, status)
        except BaseException:
            lib.TF_DeleteGraph(self._graph)
            raise
        finally:
            lib.TF_DeleteSessionOptions(options)
        self._close = weakref.finalize(self, _retire, self._session, self._graph)
        self._close.atexit = False     # an exiting process frees its sessions with it

    def endpoint(self, tensor_name: str) -> TF_Output:
        """"op:index" -> TF_Output; a missing op is the SavedModel's fault."""
        op, _, index = tensor_name.partition(":")
        return TF_Output(self.operation(op), int(index or 0))

    def operation(self, name: str) -> int:
        operation = c_api().TF_GraphOperationByName(self._graph, name.encode())
        if not operation:
            raise ServingError("INTERNAL", f"operation {name} named in the SavedModel is not in the graph")
        return operation

    def run(self, feeds: Mapping[str, tuple[np.ndarray, int]], fetches: Sequence[str],
            targets: Sequence[str] = ()) -> list[np.ndarray]:
        """feeds: tensor name -> (array, dtype enum); returns the fetched tensors in order, after
        also running the `targets` operations."""
        lib = c_api()
        names = list(feeds)
        inputs = (TF_Output * len(names))(*[self.endpoint(name) for name in names])
        outputs = (TF_Output * len(fetches))(*[self.endpoint(name) for name in fetches])
        operations = (_p * len(targets))(*[self.operation(name) for name in targets])
        values = (_p * len(names))()
        results = (_p * len(fetches))()
        try:
            for index, name in enumerate(names):
                values[index] = new_tensor(*feeds[name])
            with _Status() as status:
                niced_call(lib.TF_SessionRun, self._session, None, inputs, values, len(names), outputs, results,
                           len(fetches), operations, len(targets), None, status)
            return [tensor_to_numpy(result) for result in results]
        finally:
            for tensor in list(values) + list(results):
                if tensor:
                    lib.TF_DeleteTensor(tensor)


def _retire(session: int, graph: int) -> None:
    """Delete a session on a thread of its own. The last reference to an unloaded version is often
    dropped by the request that was still running on it, and deleting the session there (17 ms of
    CPU for the EfficientNet-Lite0 export on a quiet machine, more under load) would hold back that
    request's reply. The thread is not a daemon: an exiting server waits for it."""
    try:
        threading.Thread(target=_delete_in_background, args=(session, graph), name="session-close").start()
    except RuntimeError:           # no new threads (the interpreter is shutting down)
        _delete_session(session, graph)


def _delete_in_background(session: int, graph: int) -> None:
    """At the lowest priority (nice 19, this thread only): freeing an old version's memory waits for
    CPU that requests leave."""
    lower_this_thread(MAX_NICE)
    _delete_session(session, graph)


def _delete_session(session: int, graph: int) -> None:
    lib = c_api()
    with _Status() as status:
        lib.TF_CloseSession(session, status)
    with _Status() as status:
        lib.TF_DeleteSession(session, status)
    lib.TF_DeleteGraph(graph)
