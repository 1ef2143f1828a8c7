"""Reading and probing image files, and the feature cache.

A frozen backbone maps the same bytes to the same features every time, so they are computed once
per image and part (whole image, quadrants, ink map) and kept on disk, keyed by the file's
content, the module's weights, the preprocessing options and the part: later epochs, later runs on
the same images and every recipe that reads the same part train only the head.
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

from imgclf import images
from imgclf.progress import Progress
from imgclf.settings import TrainSettings
from imgclf.tf_errors import tf_error_message
from imgclf.trainer import inputs
from imgclf.trainer.backbone import WHOLE, Backbone, FeatureParts
from imgclf.trainer.data import Example

_CACHE_FORMAT = 2   # bump when what a cached file holds changes (2: one folder per part)


class FeatureCache:
    """<root>/<key>/<part>/<sha256 of the image file>.npy, one float32 vector per image and part."""

    def __init__(self, root: str | Path, backbone: Backbone, options: images.Preprocessing):
        key = json.dumps({"format": _CACHE_FORMAT, "module": backbone.fingerprint,
                          "preprocessing": options.as_dict()}, sort_keys=True)
        self.folder = Path(root) / hashlib.sha256(key.encode()).hexdigest()[:24]

    def path(self, part: str, digest: str) -> Path:
        return self.folder / part / f"{digest}.npy"

    def has(self, part: str, digest: str) -> bool:
        return self.path(part, digest).is_file()

    def load(self, part: str, digest: str) -> np.ndarray:
        return np.load(self.path(part, digest))

    def store(self, part: str, digest: str, vector: np.ndarray) -> None:
        """Written under a temporary name and renamed, so a killed run never leaves half a file."""
        target = self.path(part, digest)
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
        with os.fdopen(handle, "wb") as out:
            np.save(out, np.asarray(vector, np.float32))
        os.replace(tmp, target)


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
        if self.cache is not None and self.cache.has(WHOLE, digest):
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
                     cache: FeatureCache, batch_size: int, progress: bool = False,
                     parallel_decodes: int = TrainSettings.decode_parallelism) -> np.ndarray:
    """Features [N, feature_dim] in the order of examples: every part of the backbone's, side by
    side. progress: shown per part (a bar on a terminal, a line per tenth in a log)."""
    if not examples:
        return np.zeros([0, backbone.feature_dim], np.float32)
    return np.concatenate([part_features(examples, backbone, part, options, cache, batch_size, progress,
                                         parallel_decodes) for part in backbone.parts], axis=1)


def part_features(examples: Sequence[Example], backbone: Backbone, part: str, options: images.Preprocessing,
                  cache: FeatureCache, batch_size: int, progress: bool = False,
                  parallel_decodes: int = TrainSettings.decode_parallelism) -> np.ndarray:
    """One part's features [N, part_dim]; the backbone runs only on images not in the cache."""
    missing = {e.digest: e.path for e in examples if not cache.has(part, e.digest)}
    if missing:
        digests = list(missing)
        batches = inputs.image_dataset([missing[d] for d in digests], options, parallel_decodes).batch(batch_size)
        batches = batches.prefetch(tf.data.AUTOTUNE)
        # Called eagerly: the module's own call is a graph function already, and a tf.function per
        # part and colour would be retraced for each and warned about.
        layer = FeatureParts(backbone.network, backbone.image_size, (part,))
        done = 0
        with Progress(len(digests), f"features ({part})", "img", enabled=progress) as shown:
            for batch in batches:
                vectors = layer(batch, training=False).numpy()
                for digest, vector in zip(digests[done:done + len(vectors)], vectors):
                    cache.store(part, digest, vector)
                done += len(vectors)
                shown.update(len(vectors))
    return np.stack([cache.load(part, e.digest) for e in examples])
