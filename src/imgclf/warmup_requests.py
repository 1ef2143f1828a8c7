"""The one writer of a version's warmup requests (assets.extra/tf_serving_warmup_requests), for the
trainer's exports and the drill's marker models: one PredictionLog per image, each a predict
request of that one image, as TensorFlow Serving replays them (and the local server, serving/warmup.py)
before the version goes AVAILABLE."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from imgclf import contract


def write_warmup_requests(model_dir: str | os.PathLike, images: Iterable[bytes], model_name: str = "") -> int:
    """Writes at most contract.MAX_WARMUP_RECORDS records; returns how many."""
    import tensorflow as tf
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    path = Path(model_dir) / contract.ASSETS_EXTRA_DIR / contract.WARMUP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with tf.io.TFRecordWriter(str(path)) as writer:
        for image in images:
            if count == contract.MAX_WARMUP_RECORDS:
                break
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name=contract.SIGNATURE_NAME))
            request.inputs[contract.INPUT_NAME].CopyFrom(tf.make_tensor_proto([image], dtype=tf.string))
            record = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(record.SerializeToString())
            count += 1
    return count
