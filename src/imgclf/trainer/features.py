"""Reading and probing image files, and the feature cache.

A frozen backbone maps the same bytes to the same features every time, so they are computed once
per image and kept on disk, keyed by the file's content, the module's weights and the
preprocessing options: later epochs, and later runs on the same images, train only the head.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from imgclf import images
from imgclf.settings import TrainSettings
from imgclf.tf_errors import tf_error_message
from imgclf.trainer.backbone import Backbone
from imgclf.trainer.data import Example

_CACHE_FORMAT = 1   # bump when what a cached file holds changes


def image_dataset(paths: Sequence[str | Path], options: images.Preprocessing,
                  parallel_decodes: int = TrainSettings.decode_parallelism) -> tf.data.Dataset:
    """Decoded images [size, size, 3], one per path in order; files are read and decoded
    parallel_decodes at a time.

    For whoever reworks this pipeline: keep the parallelism of the map that decodes a bounded
    number, never AUTOTUNE. Only the images inside that map exist at full size (up to
    contract.MAX_IMAGE_PIXELS each, ~1.4 GB as floats); what follows holds resized ones."""
    files = tf.data.Dataset.from_tensor_slices([str(p) for p in paths])
    return files.map(lambda path: images.decode_and_resize(tf.io.read_file(path), options),
                     num_parallel_calls=parallel_decodes, deterministic=True)


class FeatureCache:
    """<root>/<key>/<sha256 of the image file>.npy, one float32 vector per image."""

    def __init__(self, root: str | Path, backbone: Backbone, options: images.Preprocessing):
        key = json.dumps({"format": _CACHE_FORMAT, "module": backbone.fingerprint,
                          "preprocessing": options.as_dict()}, sort_keys=True)
        self.folder = Path(root) / hashlib.sha256(key.encode()).hexdigest()[:24]

    def path(self, digest: str) -> Path:
        return self.folder / f"{digest}.npy"

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def load(self, digest: str) -> np.ndarray:
        return np.load(self.path(digest))

    def store(self, digest: str, vector: np.ndarray) -> None:
        """Written under a temporary name and renamed, so a killed run never leaves half a file."""
        self.folder.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(dir=self.folder, suffix=".tmp")
        with os.fdopen(handle, "wb") as out:
            np.save(out, np.asarray(vector, np.float32))
        os.replace(tmp, self.path(digest))


class FileProbe:
    """probe(path) -> (sha256, None) for a decodable image, else (sha256 or "", why not).

    Decodes with the training preprocessing itself, so a file passes exactly when training can
    use it. Files whose features are already cached were decoded before and are not decoded again.
    """

    def __init__(self, options: images.Preprocessing, cache: FeatureCache | None = None):
        self.cache = cache
        self._decode = tf.function(lambda data: images.decode_and_resize(data, options),
                                   input_signature=[tf.TensorSpec([], tf.string)])

    def __call__(self, path: Path) -> tuple[str, str | None]:
        try:
            data = path.read_bytes()
        except OSError as error:
            return "", f"cannot read ({error.strerror or error})"
        digest = hashlib.sha256(data).hexdigest()
        if not data:
            return digest, "empty file"
        if self.cache is not None and self.cache.has(digest):
            return digest, None
        try:
            # The graph reads the size from the header first and refuses an oversized image
            # before decoding it: a 20000x20000 JPEG is never decoded (it took 7 GB).
            self._decode(tf.constant(data))
        except tf.errors.OpError as error:
            refused = images.refusal(error)
            if refused:
                return digest, refused
            return digest, f"not a decodable image ({tf_error_message(error.message) or type(error).__name__})"
        return digest, None


def compute_features(examples: Sequence[Example], backbone: Backbone, options: images.Preprocessing,
                     cache: FeatureCache, batch_size: int, progress: bool = True,
                     parallel_decodes: int = TrainSettings.decode_parallelism) -> np.ndarray:
    """Features [N, D] in the order of examples; the backbone runs only on images not in the cache."""
    missing = {e.digest: e.path for e in examples if not cache.has(e.digest)}
    if missing:
        digests = list(missing)
        batches = image_dataset([missing[d] for d in digests], options, parallel_decodes).batch(batch_size)
        batches = batches.prefetch(tf.data.AUTOTUNE)
        extract = tf.function(lambda batch: backbone.layer(batch, training=False), reduce_retracing=True)
        done = 0
        with tqdm(total=len(digests), desc="features", unit="img", disable=not progress) as bar:
            for batch in batches:
                vectors = extract(batch).numpy()
                for digest, vector in zip(digests[done:done + len(vectors)], vectors):
                    cache.store(digest, vector)
                done += len(vectors)
                bar.update(len(vectors))
    if not examples:
        return np.zeros([0, backbone.feature_dim], np.float32)
    return np.stack([cache.load(e.digest) for e in examples])
