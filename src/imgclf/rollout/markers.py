"""Marker models: tiny SavedModels that keep the serving contract and tell who answered.

The drill publishes many versions while traffic flows, and a REST predict reply does not name the
version that produced it. A marker model decodes every image it is sent (so bad input fails as it
would with a real model) and answers fixed scores that encode its marker, so each reply says which
version answered. They also serve as a deliberately useless candidate for the promotion gate: they
always rank the first label highest.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from imgclf import contract
from imgclf.warmup_requests import write_warmup_requests

DEFAULT_LABELS = ("other", "research")
# The marker is the score of the second label; it stays below one half so the first label wins.
MARKER_STEP = 0.01
MAX_MARKERS = 49


def marker_score(index: int) -> float:
    if not 1 <= index <= MAX_MARKERS:
        raise ValueError(f"marker index {index}: must be 1..{MAX_MARKERS}")
    return round(index * MARKER_STEP, 4)


def marker_of(scores: Sequence[float]) -> int:
    """The marker index that produced a reply's scores (inverse of marker_score)."""
    return int(round(scores[1] / MARKER_STEP))


def write_marker_model(model_dir: str | os.PathLike, index: int, labels: Sequence[str] = DEFAULT_LABELS,
                       warmup_images: Sequence[bytes] = (), carry: str | os.PathLike | None = None) -> Path:
    """Saves a marker SavedModel (serving_default per the contract) into model_dir.

    With `carry`, the marker model also holds that SavedModel's graph and variables and runs it on
    every request (its answer is discarded): loading, warming up and serving then cost what the
    real model costs, while the reply still names the marker."""
    import tensorflow as tf

    labels = contract.validate_labels(labels)
    scores = [0.0] * len(labels)
    scores[1] = marker_score(index)
    scores[0] = 1.0 - scores[1]

    class Marker(tf.Module):
        def __init__(self):
            super().__init__()
            # A variable: every marker model of one drill is then the same program with other
            # variables, as retrains of one model are (the server's standby sessions).
            self.scores = tf.Variable(scores, dtype=tf.float32, trainable=False)
            self.labels = tf.constant(labels)
            self.carried = tf.saved_model.load(str(carry)) if carry else None

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=contract.INPUT_NAME)])
        def serve(self, images):
            if self.carried is not None:
                work = self.carried.signatures[contract.SIGNATURE_NAME](**{contract.INPUT_NAME: images})
                done = work[contract.SCORES_OUTPUT]
            else:
                # Decode every image so that bad bytes fail as they would in a real model.
                done = tf.map_fn(
                    lambda data: tf.shape(tf.io.decode_image(data, channels=3, expand_animations=False)),
                    images, fn_output_signature=tf.int32)
            count = tf.shape(images)[0]
            # A control dependency alone did not keep the carried model running (its call was
            # pruned: 2 ms instead of 45 ms a request); adding 0 x its result does.
            used = 0.0 * tf.reduce_sum(tf.cast(done, tf.float32))
            with tf.control_dependencies([done]):
                return {
                    contract.SCORES_OUTPUT: tf.tile(self.scores[None], [count, 1]) + used,
                    contract.CLASSES_OUTPUT: tf.tile(self.labels[None], [count, 1]),
                }

    module = Marker()
    model_dir = Path(model_dir)
    tf.saved_model.save(module, str(model_dir), signatures={contract.SIGNATURE_NAME: module.serve})
    (model_dir / contract.ASSETS_DIR).mkdir(exist_ok=True)
    (model_dir / contract.ASSETS_DIR / contract.LABELS_FILE).write_text(contract.format_labels_file(labels))
    if warmup_images:
        write_warmup_requests(model_dir, warmup_images)
    return model_dir
