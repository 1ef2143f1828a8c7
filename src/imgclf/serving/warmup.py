"""Replay a version's warmup requests (assets.extra/tf_serving_warmup_requests) before it is
marked AVAILABLE, as TF Serving does: at most 1000 PredictionLog records; any failure fails the
load."""

from __future__ import annotations

import logging
from pathlib import Path

import tensorflow as tf
from tensorflow.python.util import deprecation
from tensorflow_serving.apis import prediction_log_pb2

from imgclf import contract
from imgclf.serving.errors import ServingError, invalid_argument

log = logging.getLogger(__name__)


def warmup_path(version_dir: str | Path) -> Path:
    return Path(version_dir) / contract.ASSETS_EXTRA_DIR / contract.WARMUP_FILE


def replay_warmup(servable, version_dir: str | Path, predict_log_runner=None, max_records: int | None = None) -> int:
    """Run every warmup record (or the first `max_records`) against `servable`; returns how many
    were replayed.

    `predict_log_runner(servable, log_entry)` runs one PredictionLog; the default handles
    predict logs and refuses the other kinds (this server answers Predict only)."""
    path = warmup_path(version_dir)
    if not path.is_file():
        return 0
    runner = predict_log_runner or run_prediction_log
    count = 0
    try:
        for record in read_records(path):
            if max_records is not None and count == max_records:
                break
            count += 1
            if count > contract.MAX_WARMUP_RECORDS:
                raise invalid_argument(
                    f"Number of warmup records exceeds the maximum ({contract.MAX_WARMUP_RECORDS}) at {path}"
                )
            entry = prediction_log_pb2.PredictionLog()
            try:
                entry.ParseFromString(record)
            except Exception as error:
                raise invalid_argument(f"Failed to parse warmup record from {path}: {error}") from error
            runner(servable, entry)
    except tf.errors.DataLossError as error:
        raise ServingError("DATA_LOSS", f"{error.message} ({path}). Please verify your warmup data is in "
                                        "TFRecord format.")
    log.info("Finished reading warmup data for model at %s. Number of warmup records read: %d.", path, count)
    return count


def read_records(path: Path):
    """The records of a TFRecord file, one at a time, read by TensorFlow's record reader (as the
    real server's warmup does) rather than through tf.data: a tf.data iterator's teardown waited
    up to 0.7 s after the last record in 3 of 5 swaps of the EfficientNet-Lite0 export (warmup
    1.27 s against 0.56-0.83 s, the same CPU), and that wait is part of every swap's rename ->
    answering (docs/serving.md, "Version swaps"). tf_record_iterator is TF 1's name for that
    reader, deprecated in favour of tf.data, hence its warning silenced."""
    with deprecation.silence():
        iterator = tf.compat.v1.io.tf_record_iterator(str(path))
    yield from iterator


def run_prediction_log(servable, entry: prediction_log_pb2.PredictionLog) -> None:
    kind = entry.WhichOneof("log_type")
    if kind != "predict_log":
        raise ServingError("UNIMPLEMENTED", f"Unsupported log_type for warmup: {kind}")
    request = entry.predict_log.request
    inputs = {name: tf.make_ndarray(proto) for name, proto in request.inputs.items()}
    servable.predict(request.model_spec.signature_name, inputs, list(request.output_filter))
