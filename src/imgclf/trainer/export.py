"""Export: the SavedModel TensorFlow Serving loads, per the serving contract.

`serving_default` takes encoded image files and runs the training preprocessing
(`images.preprocess_batch`), the backbone and the head inside the graph. Beside the graph go the
labels (assets/), the training metadata and the report (assets.extra/); the warmup requests are
written by imgclf.warmup_requests.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Sequence

import tensorflow as tf
import tf_keras as keras

from imgclf import contract, images


class ServingModel(tf.Module):
    def __init__(self, backbone_layer: keras.layers.Layer, head: keras.Model,
                 options: images.Preprocessing, labels: Sequence[str], labels_file: Path):
        super().__init__()
        self.backbone = backbone_layer
        self.head = head
        self.options = options
        self.labels = tf.constant(contract.validate_labels(labels))
        # Tracked as an asset, the file is copied into the SavedModel's assets/ folder.
        self.labels_asset = tf.saved_model.Asset(str(labels_file))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def preprocess(self, encoded_images):
        """The images as the backbone sees them. Saved as a plain function, not a signature (TF
        Serving does not list it), so that anyone can check what the graph does to their bytes."""
        return images.preprocess_batch(encoded_images, self.options)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=contract.INPUT_NAME)])
    def serve(self, encoded_images):
        pictures = self.preprocess(encoded_images)
        scores = self.head(self.backbone(pictures, training=False), training=False)
        classes = tf.tile(self.labels[tf.newaxis, :], [tf.shape(scores)[0], 1])
        return {contract.SCORES_OUTPUT: scores, contract.CLASSES_OUTPUT: classes}


def export_saved_model(target: Path, backbone_layer, head, options: images.Preprocessing,
                       labels: Sequence[str]) -> None:
    """Writes saved_model.pb, variables/ and assets/labels.txt into target (an empty folder)."""
    with tempfile.TemporaryDirectory() as source:
        labels_file = Path(source) / contract.LABELS_FILE
        labels_file.write_text(contract.format_labels_file(labels))
        model = ServingModel(backbone_layer, head, options, labels, labels_file)
        tf.saved_model.save(model, str(target), signatures={contract.SIGNATURE_NAME: model.serve})


def write_extra_json(target: Path, file_name: str, content: dict) -> Path:
    extra = target / contract.ASSETS_EXTRA_DIR
    extra.mkdir(parents=True, exist_ok=True)
    path = extra / file_name
    path.write_text(json.dumps(content, indent=2, sort_keys=False) + "\n")
    return path
