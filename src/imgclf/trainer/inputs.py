"""The trainer's tf.data inputs: the one pipeline that turns image files into decoded images
(for features, for training on images and for scoring), and batches of cached features."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf

from imgclf import images
from imgclf.settings import TrainSettings


def image_dataset(paths: Sequence[str], options: images.Preprocessing,
                  parallel_decodes: int = TrainSettings.decode_parallelism, targets: np.ndarray | None = None, *,
                  shuffle_seed: int | None = None, augment: bool = False) -> tf.data.Dataset:
    """Decoded images [size, size, 3] (with their targets when given), one per path, in order
    unless shuffled. Files are read and decoded parallel_decodes at a time; names are shuffled,
    not decoded images, so no big buffer is held.

    For whoever reworks this pipeline: keep the parallelism of the map that decodes a bounded
    number, never AUTOTUNE. Only the images inside that map exist at full size (up to
    contract.MAX_IMAGE_PIXELS each, ~1.4 GB as floats); what follows holds resized ones."""
    files = tf.data.Dataset.from_tensor_slices([str(p) for p in paths])
    elements = files if targets is None else tf.data.Dataset.zip((files, tf.data.Dataset.from_tensor_slices(targets)))
    if shuffle_seed is not None:
        elements = elements.shuffle(len(paths), seed=shuffle_seed, reshuffle_each_iteration=True)

    def load(path, *target):
        image = images.decode_and_resize(tf.io.read_file(path), options)
        image = augment_image(image) if augment else image
        return (image, *target) if target else image

    return elements.map(load, num_parallel_calls=parallel_decodes, deterministic=True)


def image_batches(paths: Sequence[str], targets: np.ndarray, options: images.Preprocessing, batch_size: int,
                  parallel_decodes: int = TrainSettings.decode_parallelism, *, shuffle_seed: int | None = None,
                  augment: bool = False) -> tf.data.Dataset:
    """(images, targets) batches for training and scoring on images."""
    batches = image_dataset(paths, options, parallel_decodes, targets, shuffle_seed=shuffle_seed, augment=augment)
    return batches.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def feature_batches(features: np.ndarray, targets: np.ndarray, batch_size: int, *,
                    shuffle_seed: int | None = None) -> tf.data.Dataset:
    """(features, targets) batches for training heads on cached features."""
    batches = tf.data.Dataset.from_tensor_slices((features, targets))
    if shuffle_seed is not None:
        batches = batches.shuffle(len(features), seed=shuffle_seed, reshuffle_each_iteration=True)
    return batches.batch(batch_size).prefetch(tf.data.AUTOTUNE)


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


def one_hot(label_indices: Sequence[int], num_classes: int) -> np.ndarray:
    return np.eye(num_classes, dtype=np.float32)[np.asarray(label_indices, dtype=np.int64)]
