"""One loaded version of a SavedModel: its SignatureDefs (as the server reports them in metadata)
and a way to run a signature on named numpy inputs.

Nothing here knows the project's model: names, dtypes and shapes all come from the SavedModel.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import tensorflow as tf
from google.protobuf import text_format
from google.protobuf.message import DecodeError
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

from imgclf.serving.errors import ServingError, invalid_argument
from imgclf.serving.program import program_key
from imgclf.serving.session import SavedModelSession
from imgclf.serving.standby import StandbySessions

log = logging.getLogger(__name__)

DEFAULT_SIGNATURE = "serving_default"
SERVE_TAG = "serve"
PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
INIT_OP_SIGNATURE = "__saved_model_init_op"


def dtype_string(dtype_enum: int) -> str:
    """TensorFlow's DataTypeString: DT_FLOAT -> "float", DT_STRING -> "string"."""
    return types_pb2.DataType.Name(dtype_enum)[len("DT_"):].lower()


def numpy_dtype(dtype_enum: int):
    return object if dtype_enum == types_pb2.DT_STRING else tf.dtypes.as_dtype(dtype_enum).as_numpy_dtype


def read_meta_graph(export_dir: Path, tags: Sequence[str]) -> meta_graph_pb2.MetaGraphDef:
    """The MetaGraphDef whose tag set is `tags`, from saved_model.pb (or .pbtxt)."""
    saved_model = saved_model_pb2.SavedModel()
    pb, pbtxt = export_dir / "saved_model.pb", export_dir / "saved_model.pbtxt"
    if pb.is_file():
        try:
            saved_model.ParseFromString(pb.read_bytes())
        except DecodeError as error:
            raise ServingError("DATA_LOSS", f"Can't parse {pb} as binary proto") from error
    elif pbtxt.is_file():
        text_format.Parse(pbtxt.read_text(), saved_model)
    else:
        raise ServingError(
            "NOT_FOUND",
            f"Could not find SavedModel .pb or .pbtxt at supplied export directory path: {export_dir}",
        )
    wanted = set(tags)
    for meta_graph in saved_model.meta_graphs:
        if set(meta_graph.meta_info_def.tags) == wanted:
            return meta_graph
    available = [sorted(m.meta_info_def.tags) for m in saved_model.meta_graphs]
    raise ServingError(
        "NOT_FOUND",
        f"Could not find meta graph def matching supplied tags: {{ {' '.join(sorted(wanted))} }}. "
        f"To inspect available tag-sets in the SavedModel, please use the SavedModel CLI: "
        f"`saved_model_cli` (available: {available}) in {export_dir}",
    )


def check_variables_present(export_dir: Path, meta_graph: meta_graph_pb2.MetaGraphDef) -> None:
    """A graph that restores variables needs variables/variables.index. TensorFlow's loader would
    load it without (and leave the variables unset); a folder still being copied must fail the load
    instead, so that it is retried once complete."""
    index = export_dir / "variables" / "variables.index"
    if meta_graph.saver_def.restore_op_name and not index.is_file():
        raise ServingError("NOT_FOUND", f"SavedModel at {export_dir} is incomplete: {index} does not exist "
                                        "(still being copied?)")


@dataclass
class Servable:
    """A loaded model version. Immutable once built; safe to call from many threads at once."""

    name: str
    version: int
    path: Path
    signature_defs: Mapping[str, meta_graph_pb2.SignatureDef]
    _session: SavedModelSession = field(repr=False)
    run_batch_size: int = 0          # most examples per model call; larger requests run in slices
    tags: tuple[str, ...] = (SERVE_TAG,)
    restored_into_standby: bool = False   # loaded by restoring its variables into a standby session

    @classmethod
    def load(cls, name: str, version: int, path: str | os.PathLike, tags: Sequence[str] = (SERVE_TAG,),
             run_batch_size: int = 0, session_config=None, standby: StandbySessions | None = None) -> "Servable":
        """A new session for the version, or, with `standby`, a standby session of the same
        program with this version's variables restored into it (standby.py); once the servable
        is gone its session becomes a standby in turn."""
        path = Path(path)
        meta_graph = read_meta_graph(path, tags)
        check_variables_present(path, meta_graph)
        standby = standby if standby is not None and standby.per_model else None
        key = standby_key(meta_graph, path, tags) if standby is not None else None
        session = standby.take(name, key) if standby is not None else None
        restored = session is not None
        if restored:
            restore_into(session, path, meta_graph)   # on failure the half-restored session goes
        else:
            session = SavedModelSession(path, list(tags), config=session_config)
        servable = cls(name=name, version=version, path=path, signature_defs=dict(meta_graph.signature_def),
                       _session=session, run_batch_size=run_batch_size, tags=tuple(tags),
                       restored_into_standby=restored)
        if standby is not None:
            standby.on_release(servable, name, key, session)
        return servable

    def prepare_restore(self) -> None:
        """Restore this version's own variables into its session once, so that TensorFlow builds
        (and keeps) what runs the restore step before the session is ever a standby. Nothing may
        run on the servable meanwhile."""
        restore_into(self._session, self.path, read_meta_graph(self.path, self.tags))

    def keep_session_as_standby(self, standby: StandbySessions) -> None:
        """Offer this (warmed-up) servable's session as a standby now, its restore step prepared:
        the start-up spare (standby.py). The servable must not serve."""
        meta_graph = read_meta_graph(self.path, self.tags)
        restore_into(self._session, self.path, meta_graph)
        standby.keep(self.name, standby_key(meta_graph, self.path, self.tags), self._session)

    # --- signatures --------------------------------------------------------------------------
    def signature_def(self, signature_name: str) -> meta_graph_pb2.SignatureDef:
        """The named signature; an empty name means serving_default (as in the real server)."""
        key = signature_name or DEFAULT_SIGNATURE
        if key not in self.signature_defs:
            raise ServingError("FAILED_PRECONDITION", f'Serving signature key "{key}" not found.')
        return self.signature_defs[key]

    # --- inference ---------------------------------------------------------------------------
    def predict(self, signature_name: str, inputs: Mapping[str, np.ndarray],
                output_filter: Sequence[str] = ()) -> dict[str, np.ndarray]:
        """Run a signature. Inputs are checked against the SignatureDef the way TF Serving's
        predict_util does, so a wrong name or dtype gives its message and INVALID_ARGUMENT."""
        key = signature_name or DEFAULT_SIGNATURE
        signature = self.signature_def(key)
        check_input_names(signature, inputs)
        outputs = list(output_filter) or sorted(signature.outputs)
        check_output_filter(signature, output_filter)
        tensors = {}
        for index, (alias, value) in enumerate(sorted(inputs.items())):
            tensors[alias] = to_tensor(value, signature.inputs[alias].dtype, index)
        check_input_shapes(signature, tensors)
        rows = sliceable_rows(signature, tensors)
        size = self.run_batch_size
        if not size or rows is None or rows <= size:
            return self._run(key, tensors, outputs)
        # Memory measured on an EfficientNet-Lite0 export: ~70 MB per example in one call, kept
        # afterwards by TensorFlow's oneDNN allocator (a BFC pool that never shrinks); slices
        # bound that high-water mark, at no cost in throughput (docs/serving.md).
        parts = [self._run(key, {alias: t[start:start + size] for alias, t in tensors.items()}, outputs)
                 for start in range(0, rows, size)]
        return {alias: np.concatenate([part[alias] for part in parts]) for alias in outputs}

    def _run(self, key: str, tensors: Mapping[str, np.ndarray], outputs: Sequence[str]) -> dict[str, np.ndarray]:
        signature = self.signature_defs[key]
        feeds = {tensor_name(signature.inputs[alias], alias): (array, signature.inputs[alias].dtype)
                 for alias, array in tensors.items()}
        fetches = [tensor_name(signature.outputs[alias], alias) for alias in outputs]
        return dict(zip(outputs, self._session.run(feeds, fetches)))


def restore_into(session: SavedModelSession, export_dir: Path, meta_graph: meta_graph_pb2.MetaGraphDef) -> None:
    """What TensorFlow's SavedModel loader runs in a new session, run in `session`, which already
    runs the same program (program.py): the saver's restore op fed the checkpoint's prefix, then
    the init op fed the paths of the version's assets (loader.cc: RunRestore, RunInitOp). The
    graph and the executors TensorFlow built for it stay; the variables change."""
    saver = meta_graph.saver_def
    if saver.restore_op_name:
        prefix = str(export_dir / "variables" / "variables").encode()
        session.run({saver.filename_tensor_name: (np.array(prefix, dtype=object), types_pb2.DT_STRING)}, [],
                    targets=[saver.restore_op_name])
    init_op = init_op_name(meta_graph)
    if init_op:
        assets = {asset.tensor_info.name: (np.array(str(export_dir / "assets" / asset.filename).encode(),
                                                    dtype=object), types_pb2.DT_STRING)
                  for asset in meta_graph.asset_file_def}
        session.run(assets, [], targets=[init_op])


def init_op_name(meta_graph: meta_graph_pb2.MetaGraphDef) -> str:
    """The op TensorFlow's loader runs after restoring (loader_util.cc GetInitOp): the
    __saved_model_init_op signature's, else the main_op or legacy_init_op collection's; "" if none."""
    signature = meta_graph.signature_def.get(INIT_OP_SIGNATURE)
    if signature is not None and INIT_OP_SIGNATURE in signature.outputs:
        return signature.outputs[INIT_OP_SIGNATURE].name.partition(":")[0]
    for collection in ("saved_model_main_op", "legacy_init_op"):
        if collection in meta_graph.collection_def and meta_graph.collection_def[collection].node_list.value:
            return meta_graph.collection_def[collection].node_list.value[0].partition(":")[0]
    return ""


def standby_key(meta_graph: meta_graph_pb2.MetaGraphDef, path: Path, tags: Sequence[str]) -> str:
    """Which standby sessions can serve the version: same program (program.py), same tag set."""
    return program_key(meta_graph, path) + ":" + ",".join(sorted(tags))


def tensor_name(info: meta_graph_pb2.TensorInfo, alias: str) -> str:
    """The graph tensor a signature's input or output stands for (dense tensors only, as the real
    server's Predict)."""
    if info.WhichOneof("encoding") != "name":
        raise ServingError("UNIMPLEMENTED", f"tensor {alias}: only dense tensors are supported, not "
                                            f"{info.WhichOneof('encoding')}")
    return info.name


def _batch_major(info) -> bool:
    """A TensorInfo whose first dimension is declared as the (unknown) batch size."""
    shape = info.tensor_shape
    return not shape.unknown_rank and len(shape.dim) > 0 and shape.dim[0].size == -1


def sliceable_rows(signature: meta_graph_pb2.SignatureDef, tensors: Mapping[str, np.ndarray]) -> int | None:
    """The batch size when the request may run in slices: every input and output of the signature
    declares its first dimension as the batch, and the inputs agree on it; else None."""
    infos = list(signature.inputs.values()) + list(signature.outputs.values())
    if not infos or not all(_batch_major(info) for info in infos):
        return None
    sizes = {int(t.shape[0]) if t.ndim else None for t in tensors.values()}
    if len(sizes) != 1 or None in sizes:
        return None
    return sizes.pop()


def check_input_names(signature: meta_graph_pb2.SignatureDef, inputs: Mapping[str, object]) -> None:
    request_inputs, signature_inputs = set(inputs), set(signature.inputs)
    if request_inputs == signature_inputs:
        return
    if len(request_inputs) != len(signature_inputs):
        raise invalid_argument(
            f"input size does not match signature: {len(request_inputs)}!={len(signature_inputs)} "
            f"len({{{','.join(sorted(request_inputs))}}}) != len({{{','.join(sorted(signature_inputs))}}}). "
            f"Sent extra: {{{','.join(sorted(request_inputs - signature_inputs))}}}. "
            f"Missing but required: {{{','.join(sorted(signature_inputs - request_inputs))}}}."
        )
    unknown = sorted(request_inputs - signature_inputs)[0]
    raise invalid_argument(
        f"input tensor alias not found in signature: {unknown}. "
        f"Inputs expected to be in the set {{{','.join(sorted(signature_inputs))}}}."
    )


def check_output_filter(signature: meta_graph_pb2.SignatureDef, output_filter: Sequence[str]) -> None:
    seen = set()
    for alias in output_filter:
        if alias not in signature.outputs:
            raise invalid_argument(
                f"output tensor alias not found in signature: {alias} Outputs expected to be in the "
                f"set {{{','.join(sorted(signature.outputs))}}}."
            )
        if alias in seen:
            raise invalid_argument(f"duplicate output tensor alias: {alias}")
        seen.add(alias)


def check_input_shapes(signature: meta_graph_pb2.SignatureDef, tensors: Mapping[str, np.ndarray]) -> None:
    """Every input's shape against the signature's (-1 is any size), before the graph sees it."""
    for alias, array in sorted(tensors.items()):
        shape = signature.inputs[alias].tensor_shape
        if shape.unknown_rank:
            continue
        wanted = [dim.size for dim in shape.dim]
        if len(wanted) != array.ndim or any(w not in (-1, got) for w, got in zip(wanted, array.shape)):
            raise invalid_argument(f"input {alias}: shape {list(array.shape)} does not match the signature's "
                                   f"{wanted} (-1: any size)")


def to_tensor(value: np.ndarray, dtype_enum: int, index: int) -> np.ndarray:
    """An array of the signature's dtype; numeric widening (int -> float) is allowed as the JSON
    path already produced the right dtype, anything else is the caller's error."""
    want = tf.dtypes.as_dtype(dtype_enum)
    array = np.asarray(value)
    if want == tf.string:
        if array.dtype.kind not in ("O", "S", "U"):
            raise invalid_argument(f"Expects arg[{index}] to be string but {tf.dtypes.as_dtype(array.dtype).name} is provided")
        return array.astype(object)
    if array.dtype.kind in ("O", "S", "U"):
        raise invalid_argument(f"Expects arg[{index}] to be {dtype_string(dtype_enum)} but string is provided")
    if array.dtype != want.as_numpy_dtype:
        got = tf.dtypes.as_dtype(array.dtype)
        raise invalid_argument(
            f"Expects arg[{index}] to be {dtype_string(dtype_enum)} but {dtype_string(got.as_datatype_enum)} is provided"
        )
    return array
