"""Small real SavedModels for the serving tests, built with tf.Module: nothing here knows the
project's image model, as the server must not either."""

from __future__ import annotations

import os
from pathlib import Path

from imgclf.tf_logging import quiet_tensorflow_logs

quiet_tensorflow_logs()

import tensorflow as tf  # noqa: E402


class ToyModel(tf.Module):
    """serving_default: x float32 [-1, 3] -> y = x * scale, total = sum(y), tag_bytes (bytes),
    tag (text). "pair": a int64 [-1], b float32 [-1] -> sum. "image": png/jpeg bytes -> mean.
    "classify" / "regress": serialized tf.Examples with a float feature "f"."""

    def __init__(self, scale: float):
        super().__init__()
        self.scale = tf.Variable(scale, dtype=tf.float32)

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
    def serve(self, x):
        y = x * self.scale
        batch = tf.shape(x)[0]
        tag = tf.strings.as_string(self.scale, precision=1)
        return {
            "y": y,
            "total": tf.reduce_sum(y, axis=1),
            "tag_bytes": tf.fill([batch], tf.strings.join([b"\x00\xff", tag])),
            "tag": tf.fill([batch], tf.strings.join(["scale ", tag])),
        }

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name="a"),
                                  tf.TensorSpec([None], tf.float32, name="b")])
    def pair(self, a, b):
        return {"sum": tf.cast(a, tf.float32) + b * self.scale}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def image(self, image_bytes):
        def mean(data):
            pixels = tf.image.decode_image(data, channels=1, expand_animations=False)
            return tf.reduce_mean(tf.cast(pixels, tf.float32))

        return {"mean": tf.map_fn(mean, image_bytes, fn_output_signature=tf.float32) * self.scale}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def classify(self, inputs):
        f = tf.io.parse_example(inputs, {"f": tf.io.FixedLenFeature([], tf.float32)})["f"]
        high = tf.sigmoid(f * self.scale)
        batch = tf.shape(inputs)[0]
        return {"scores": tf.stack([1.0 - high, high], axis=1),
                "classes": tf.tile([["low", "high"]], [batch, 1])}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def regress(self, inputs):
        f = tf.io.parse_example(inputs, {"f": tf.io.FixedLenFeature([], tf.float32)})["f"]
        return {"outputs": f * self.scale}


def export_toy_model(base_path: Path, version: int, scale: float | None = None, warmup: bool = False) -> Path:
    """base_path/<version>/ with the toy model; `scale` defaults to the version number, so the
    answers tell which version replied."""
    module = ToyModel(float(version if scale is None else scale))
    target = Path(base_path) / str(version)
    tf.saved_model.save(module, str(target), signatures={
        "serving_default": module.serve.get_concrete_function(),
        "pair": module.pair.get_concrete_function(),
        "image": module.image.get_concrete_function(),
        "classify": module.classify.get_concrete_function(),
        "regress": module.regress.get_concrete_function(),
    })
    if warmup:
        write_warmup(target)
    return target


def write_warmup(version_dir: Path, records: int = 3) -> Path:
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    path = version_dir / "assets.extra" / "tf_serving_warmup_requests"
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for i in range(records):
            request = predict_pb2.PredictRequest()
            request.model_spec.signature_name = "serving_default"
            request.inputs["x"].CopyFrom(tf.make_tensor_proto([[i, i, i]], dtype=tf.float32))
            writer.write(prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)).SerializeToString())
    return path


def write_broken_version(base_path: Path, version: int) -> Path:
    """A version folder whose saved_model.pb is not a SavedModel: loading must fail."""
    target = Path(base_path) / str(version)
    target.mkdir(parents=True)
    (target / "saved_model.pb").write_bytes(b"this is not a protobuf \xff\x00")
    return target


def publish(staged: Path, base_path: Path, version: int) -> Path:
    """Atomic publish as the project does it: build elsewhere, rename() into a numeric name."""
    target = Path(base_path) / str(version)
    os.rename(staged, target)
    return target


class CheckedModel(tf.Module):
    """serving_default: x float32 [-1, 3] -> y = 2x, refusing negative x with an Assert (which
    Grappler's debug stripper, off by default, would remove)."""

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
    def serve(self, x):
        with tf.control_dependencies([tf.debugging.assert_non_negative(x, message="x must not be negative")]):
            return {"y": tf.identity(x) * 2.0}


def export_checked_model(base_path: Path, version: int) -> Path:
    module = CheckedModel()
    target = Path(base_path) / str(version)
    tf.saved_model.save(module, str(target), signatures={"serving_default": module.serve.get_concrete_function()})
    return target
