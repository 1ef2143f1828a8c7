"""The classifier head, the training loops (on cached features, or end to end on images), and the
callbacks around them: early stopping with the best weights restored, TensorBoard, progress."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import tensorflow as tf
import tf_keras as keras
from tqdm import tqdm

from imgclf import images
from imgclf.settings import TrainSettings
from imgclf.trainer.backbone import Backbone


def build_head(feature_dim: int, num_classes: int, dropout: float, seed: int,
               name: str = "head") -> keras.Model:
    """features -> dropout -> softmax over the classes."""
    return keras.Sequential([
        keras.Input((feature_dim,)),
        keras.layers.Dropout(dropout, seed=seed),
        keras.layers.Dense(num_classes, activation="softmax",
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


def build_classifier_head(feature_dim: int, layout_dim: int, num_classes: int, dropout: float,
                          seed: int, layout_weight: float) -> tuple[keras.Model, list[Branch]]:
    """The head to export and the branches inside it.

    Without a layout map that is one softmax head. With one, a texture head reads the backbone's
    features and a layout head the ink map, and the scores are their probabilities mixed with
    layout_weight. On cached features each branch is fitted on its own, with its own early
    stopping: fitted jointly, the mix scored lower (0.968 against 0.971 mean validation accuracy
    over six seeds on the shared pages)."""
    if not layout_dim:
        head = build_head(feature_dim, num_classes, dropout, seed)
        return head, [Branch("head", head, slice(0, feature_dim))]
    if not 0.0 <= layout_weight <= 1.0:
        raise ValueError(f"layout_weight={layout_weight}: must lie between 0 and 1")
    texture_dim = feature_dim - layout_dim
    branches = [
        Branch("head-texture", build_head(texture_dim, num_classes, dropout, seed, "texture_head"),
               slice(0, texture_dim)),
        Branch("head-layout", build_head(layout_dim, num_classes, dropout, seed + 1, "layout_head"),
               slice(texture_dim, feature_dim)),
    ]
    features = keras.Input((feature_dim,))
    scores = MixScores([1.0 - layout_weight, layout_weight], name="mix_scores")(
        [branch.model(features[:, branch.columns]) for branch in branches])
    return keras.Model(features, scores, name="head"), branches


def build_full_model(backbone: Backbone, head: keras.Model) -> keras.Model:
    """images -> backbone -> head: what end-to-end training and fine-tuning fit.

    The backbone always runs in inference mode: fine-tuning still moves its weights, but batch
    normalisation keeps the module's statistics. Batch statistics of a few small batches of pages
    wreck them (validation accuracy fell from 0.95 to 0.75 in one epoch when they were used)."""
    size = backbone.image_size
    pictures = keras.Input((size, size, 3))
    return keras.Model(pictures, head(backbone.layer(pictures, training=False)), name="classifier")


def compile_for_training(model: keras.Model, learning_rate: float, label_smoothing: float) -> None:
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
        metrics=["accuracy"],
    )


class EpochProgress(keras.callbacks.Callback):
    """A tqdm bar per epoch (tqdm's own Keras callback binds to Keras 3, not to tf_keras)."""

    def __init__(self, steps: int, epochs: int, phase: str, enabled: bool = True):
        super().__init__()
        self.steps, self.epochs, self.phase, self.enabled = steps, epochs, phase, enabled
        self.bar = None

    def on_epoch_begin(self, epoch, logs=None):
        self.bar = tqdm(total=self.steps, desc=f"{self.phase} epoch {epoch + 1}/{self.epochs}",
                        unit="batch", disable=not self.enabled, leave=True, mininterval=0.5)

    def on_train_batch_end(self, batch, logs=None):
        self.bar.update(1)

    def on_epoch_end(self, epoch, logs=None):
        shown = {k: f"{v:.4f}" for k, v in (logs or {}).items()}
        self.bar.set_postfix(shown, refresh=False)
        self.bar.close()


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
        progress: bool, min_delta: float = 0.0) -> FitResult:
    """Fits with early stopping on the validation loss (the training loss when there is no
    validation data), restoring the weights of the best epoch."""
    monitor = "val_loss" if validation is not None else "loss"
    timer = EpochTimer()
    stopper = keras.callbacks.EarlyStopping(monitor=monitor, patience=patience, min_delta=min_delta,
                                            restore_best_weights=True)
    callbacks = [
        stopper,
        EpochProgress(steps, epochs, phase, progress),
        timer,
    ]
    if log_dir:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=f"{log_dir}/{phase}", profile_batch=0,
                                                     write_graph=False))
    history = model.fit(train, validation_data=validation, epochs=epochs, callbacks=callbacks, verbose=0)
    return FitResult(timer.seconds, history.history, stopper.best_epoch + 1)


def one_hot(label_indices: Sequence[int], num_classes: int) -> np.ndarray:
    return np.eye(num_classes, dtype=np.float32)[np.asarray(label_indices, dtype=np.int64)]


def feature_batches(features: np.ndarray, targets: np.ndarray, batch_size: int, *,
                    shuffle_seed: int | None) -> tf.data.Dataset:
    batches = tf.data.Dataset.from_tensor_slices((features, targets))
    if shuffle_seed is not None:
        batches = batches.shuffle(len(features), seed=shuffle_seed, reshuffle_each_iteration=True)
    return batches.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def image_batches(paths: Sequence[str], targets: np.ndarray, options: images.Preprocessing,
                  batch_size: int, *, shuffle_seed: int | None, augment: bool,
                  parallel_decodes: int = TrainSettings.decode_parallelism) -> tf.data.Dataset:
    """Decoded (and, when asked, augmented) images with their targets; parallel_decodes images are
    decoded at a time. Keep that bounded, never AUTOTUNE: each may be up to
    contract.MAX_IMAGE_PIXELS at full size (see features.image_dataset)."""
    batches = tf.data.Dataset.from_tensor_slices(([str(p) for p in paths], targets))
    if shuffle_seed is not None:   # shuffle names, not decoded images: no big buffer
        batches = batches.shuffle(len(paths), seed=shuffle_seed, reshuffle_each_iteration=True)

    def load(path, target):
        image = images.decode_and_resize(tf.io.read_file(path), options)
        return (augment_image(image) if augment else image), target

    return batches.map(load, num_parallel_calls=parallel_decodes).batch(batch_size).prefetch(tf.data.AUTOTUNE)


def augment_image(image: tf.Tensor) -> tf.Tensor:
    """Small shifts and zooms, brightness and contrast: how scans and renderings of the same
    kind of page differ. No flips: a mirrored page is not a page."""
    size = tf.shape(image)[0]
    scale = tf.random.uniform([], 1.0, 1.15)
    grown = tf.cast(tf.cast(size, tf.float32) * scale, tf.int32)
    image = tf.image.resize(image, [grown, grown], antialias=True)
    image = tf.image.random_crop(image, [size, size, 3])
    image = tf.image.random_brightness(image, 0.1)
    image = tf.image.random_contrast(image, 0.8, 1.2)
    return tf.clip_by_value(image, 0.0, 1.0)


def steps_per_epoch(count: int, batch_size: int) -> int:
    return max(1, -(-count // batch_size))
