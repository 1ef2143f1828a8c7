"""The classifier head, the training loops (on cached features, or end to end on images), and the
callbacks around them: early stopping with the best weights restored, TensorBoard, progress."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

import tensorflow as tf
import tf_keras as keras

from imgclf.progress import Progress
from imgclf.trainer.backbone import Backbone

log = logging.getLogger(__name__)


def build_head(feature_dim: int, num_classes: int, dropout: float, seed: int,
               name: str = "head") -> keras.Model:
    """features -> dropout -> softmax over the classes."""
    # Every layer named: Keras numbers unnamed ones per process (dense, dense_1, ...), and the
    # export's graph, which a retrain must reproduce (serving/standby.py), would carry the numbers.
    return keras.Sequential([
        keras.Input((feature_dim,), name=f"{name}_features"),
        keras.layers.Dropout(dropout, seed=seed, name=f"{name}_dropout"),
        keras.layers.Dense(num_classes, activation="softmax", name=f"{name}_dense",
                           kernel_initializer=keras.initializers.GlorotUniform(seed=seed)),
    ], name=name)


@dataclass
class Branch:
    """One head of the classifier and the columns of the features it reads."""

    name: str               # also the name of its training phase (timing, TensorBoard)
    model: keras.Model
    columns: slice


class MixScores(keras.layers.Layer):
    """The weighted mean of the branches' probabilities: still probabilities that sum to 1."""

    def __init__(self, shares: Sequence[float], **kwargs):
        super().__init__(**kwargs)
        self.shares = tuple(float(share) for share in shares)

    def call(self, branch_scores):
        return tf.add_n([share * scores for share, scores in zip(self.shares, branch_scores)])


def branch_columns(feature_dim: int, layout_dim: int) -> list[tuple[str, slice]]:
    """(name, columns) of each head: one over all features, or, with a layout map, a texture head
    over the backbone's features and a layout head over the ink map. The name is also that of its
    training phase."""
    if not layout_dim:
        return [("head", slice(0, feature_dim))]
    texture_dim = feature_dim - layout_dim
    return [("head-texture", slice(0, texture_dim)), ("head-layout", slice(texture_dim, feature_dim))]


def combine_branches(branches: list[Branch], feature_dim: int, layout_weight: float) -> keras.Model:
    """The head to export: the one branch, or the texture and layout branches' probabilities mixed
    with layout_weight. Each branch is fitted on its own: fitted jointly, the mix scored lower
    (0.968 against 0.971 mean validation accuracy over six seeds on the shared pages)."""
    if len(branches) == 1:
        return branches[0].model
    features = keras.Input((feature_dim,), name="mixed_features")
    scores = MixScores([1.0 - layout_weight, layout_weight], name="mix_scores")(
        [branch.model(features[:, branch.columns]) for branch in branches])
    return keras.Model(features, scores, name="head")


def build_classifier_head(feature_dim: int, layout_dim: int, num_classes: int, dropout: float,
                          seed: int, layout_weight: float) -> tuple[keras.Model, list[Branch]]:
    """Dropout + softmax branches (see branch_columns) and the head that combines them."""
    branches = [Branch(name, build_head(columns.stop - columns.start, num_classes, dropout, seed + i,
                                        name.replace("-", "_")), columns)
                for i, (name, columns) in enumerate(branch_columns(feature_dim, layout_dim))]
    return combine_branches(branches, feature_dim, layout_weight), branches


class ScaledSoftmax(keras.layers.Layer):
    """softmax(scale * x): x are a linear head's scores, or (from_probabilities) log-probabilities,
    which makes it temperature scaling (scale = 1/T) of any head's output."""

    def __init__(self, scale: float, from_probabilities: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.scale, self.from_probabilities = float(scale), bool(from_probabilities)

    def build(self, input_shape):
        # A (non-trainable) variable, not a constant in the graph: retrains of one model then export
        # the same program with other variables, which the local server swaps in by restoring a
        # checkpoint into a warm session (serving/standby.py) instead of loading a new one.
        self.scale_variable = self.add_weight(name="scale", shape=(), trainable=False,
                                              initializer=keras.initializers.Constant(self.scale))
        super().build(input_shape)

    def call(self, inputs):
        logits = tf.math.log(tf.maximum(inputs, 1e-12)) if self.from_probabilities else inputs
        return tf.nn.softmax(self.scale_variable * logits, axis=-1)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "from_probabilities": self.from_probabilities}


def linear_branch(weights: np.ndarray, bias: np.ndarray, scale: float, name: str) -> keras.Model:
    """A fitted linear head (see linear.LinearFit) as layers: features -> Dense -> softmax(scale * .)."""
    dense = keras.layers.Dense(weights.shape[1], name=f"{name}_dense")
    head = keras.Sequential([keras.Input((weights.shape[0],)), dense, ScaledSoftmax(scale, name=f"{name}_softmax")],
                            name=name)
    dense.set_weights([np.asarray(weights, np.float32), np.asarray(bias, np.float32)])
    return head


def calibrated(head: keras.Model, scale: float) -> keras.Model:
    """The head followed by temperature scaling of its probabilities."""
    features = keras.Input(head.input_shape[1:], name="calibrated_features")
    return keras.Model(features, ScaledSoftmax(scale, from_probabilities=True, name="temperature")(head(features)),
                       name="calibrated_head")


def build_full_model(backbone: Backbone, head: keras.Model) -> keras.Model:
    """images -> backbone -> head: what end-to-end training and fine-tuning fit.

    The backbone always runs in inference mode: fine-tuning still moves its weights, but batch
    normalisation keeps the module's statistics. Batch statistics of a few small batches of pages
    wreck them (validation accuracy fell from 0.95 to 0.75 in one epoch when they were used)."""
    size = backbone.image_size
    pictures = keras.Input((size, size, 3), name="pictures")
    return keras.Model(pictures, head(backbone.layer(pictures, training=False)), name="classifier")


def compile_for_training(model: keras.Model, learning_rate: float, label_smoothing: float) -> None:
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
        metrics=["accuracy"],
    )


class EpochProgress(keras.callbacks.Callback):
    """Each epoch a Progress of its batches: a bar on a terminal, one line in a log (tqdm's own
    Keras callback binds to Keras 3, not to tf_keras)."""

    def __init__(self, steps: int, epochs: int, phase: str):
        super().__init__()
        self.steps, self.epochs, self.phase = steps, epochs, phase
        self.progress = None

    def on_epoch_begin(self, epoch, logs=None):
        self.progress = Progress(self.steps, f"{self.phase} epoch {epoch + 1}/{self.epochs}", "batch")

    def on_train_batch_end(self, batch, logs=None):
        self.progress.update(1)

    def on_epoch_end(self, epoch, logs=None):
        self.progress.set_postfix(**{k: float(v) for k, v in (logs or {}).items()})
        self.progress.close()


class EpochTimer(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


@dataclass
class FitResult:
    epoch_seconds: list[float]
    history: dict = field(default_factory=dict)
    best_epoch: int = 0            # 1-based epoch whose weights were kept


def fit(model: keras.Model, train: tf.data.Dataset, validation: tf.data.Dataset | None, *,
        steps: int, epochs: int, patience: int, log_dir: str | None, phase: str,
        progress: bool, min_delta: float = 0.0, class_weight: dict[int, float] | None = None) -> FitResult:
    """Fits with early stopping on the validation loss (the training loss when there is no
    validation data), restoring the weights of the best epoch. progress: each epoch shown (a bar
    on a terminal, a line in a log). class_weight: the loss weight of each class's images."""
    monitor = "val_loss" if validation is not None else "loss"
    timer = EpochTimer()
    stopper = keras.callbacks.EarlyStopping(monitor=monitor, patience=patience, min_delta=min_delta,
                                            restore_best_weights=True)
    callbacks = [stopper, timer]
    if progress:
        callbacks.append(EpochProgress(steps, epochs, phase))
    if log_dir:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=f"{log_dir}/{phase}", profile_batch=0,
                                                     write_graph=False))
    history = model.fit(train, validation_data=validation, epochs=epochs, callbacks=callbacks, verbose=0,
                        class_weight=class_weight)
    return FitResult(timer.seconds, history.history, stopper.best_epoch + 1)


def steps_per_epoch(count: int, batch_size: int) -> int:
    return max(1, -(-count // batch_size))
