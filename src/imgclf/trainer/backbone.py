"""The backbone: a TF Hub feature-vector module (handle, URL or local folder), or `scratch`, a small
convolutional network trained from scratch for machines that cannot reach TF Hub."""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path

import tensorflow as tf
import tf_keras as keras

with warnings.catch_warnings():  # tensorflow-hub 0.16.1 still imports pkg_resources (setuptools<81 is pinned)
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
    import tensorflow_hub as hub

from imgclf.settings import SCRATCH_MODULE

SCRATCH_IMAGE_SIZE = 224
_SCRATCH_FILTERS = (16, 32, 64, 128)


class ModuleError(RuntimeError):
    """A module that cannot be fetched or used; the message says what to do instead."""


@dataclass
class Backbone:
    module: str                  # as the user gave it
    layer: keras.layers.Layer    # images [N, size, size, 3] in [0, 1] -> features [N, feature_dim]
    image_size: int
    feature_dim: int
    # Identifies the weights: part of the feature-cache key. None when the backbone has no fixed
    # weights (scratch), whose features therefore cannot be cached.
    fingerprint: str | None
    # The last layout_dim features are the page's ink map (see LayoutMap), read by a head of its own.
    layout_dim: int = 0

    @property
    def is_scratch(self) -> bool:
        return self.fingerprint is None


def load_backbone(module: str, image_size: int = 0, trainable: bool = False,
                  quadrants: bool = False, layout_grid: int = 0) -> Backbone:
    """image_size 0 takes the module's own size; a module that fixes its size refuses another.
    quadrants adds the features of each quarter of the image, enlarged (see QuadrantViews); the
    scratch backbone learns its own scales and ignores it. layout_grid > 0 appends the page's ink
    map on a layout_grid x layout_grid grid (see LayoutMap)."""
    if layout_grid < 0:
        raise ValueError(f"layout_grid={layout_grid}: must be 0 (off) or a grid side such as 32")
    backbone = _load_features(module, image_size, trainable, quadrants)
    return with_layout_map(backbone, layout_grid) if layout_grid else backbone


def _load_features(module: str, image_size: int, trainable: bool, quadrants: bool) -> Backbone:
    if module == SCRATCH_MODULE:
        return scratch_backbone(image_size or SCRATCH_IMAGE_SIZE)
    resolved = _resolve(module)
    loaded = hub.load(str(resolved))
    fixed_size, feature_dim = _module_shapes(loaded)
    if fixed_size and image_size and image_size != fixed_size:
        raise ModuleError(f"module {module} takes {fixed_size}x{fixed_size} images; "
                          f"image_size={image_size} does not fit (use 0 for the module's own size)")
    size = fixed_size or image_size or SCRATCH_IMAGE_SIZE
    layer = hub.KerasLayer(loaded, trainable=trainable, name="backbone")
    if feature_dim is None:
        feature_dim = int(layer(tf.zeros([1, size, size, 3])).shape[-1])
    fingerprint = _fingerprint(resolved)
    if quadrants:
        layer = QuadrantViews(layer, size, name="quadrant_views")
        feature_dim *= QuadrantViews.VIEWS
        fingerprint += "+quadrants"
    return Backbone(module, layer, size, feature_dim, fingerprint)


class QuadrantViews(keras.layers.Layer):
    """The module's features of the whole image and of each quarter enlarged to full size, side by
    side. ImageNet modules see a page at 224 px as a few grey blocks; at twice the scale the
    texture of title, columns, formulas and figures shows, which tells pages from sources never
    seen apart better (see docs/training.md). One backbone pass over five views per image."""

    VIEWS = 5

    def __init__(self, backbone: keras.layers.Layer, image_size: int, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone
        self.image_size = image_size

    def call(self, pictures, training=None):
        size, half = self.image_size, self.image_size // 2
        views = [pictures] + [
            tf.image.resize(pictures[:, top:top + half, left:left + half], [size, size], antialias=True)
            for top in (0, half) for left in (0, half)
        ]
        features = self.backbone(tf.concat(views, axis=0), training=training)
        return tf.concat(tf.split(features, self.VIEWS, axis=0), axis=1)


class LayoutMap(keras.layers.Layer):
    """The backbone's features, then how much ink each cell of a grid x grid map of the page holds.

    ImageNet features describe texture; where the text, title, columns and figures sit is a cue of
    its own, and one a linear head reads straight from the map. Alone it generalises worse than the
    texture (it takes LaTeX package manuals for papers), but averaged with the texture head it
    fixes pages the texture gets confidently wrong (see docs/training.md). Costs no backbone pass."""

    def __init__(self, backbone: keras.layers.Layer, grid: int, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone
        self.grid = grid

    def call(self, pictures, training=None):
        features = self.backbone(pictures, training=training)
        ink = 1.0 - tf.reduce_mean(pictures, axis=-1, keepdims=True)
        cells = tf.image.resize(ink, [self.grid, self.grid], method="area")
        return tf.concat([features, tf.reshape(cells, [-1, self.grid * self.grid])], axis=1)


def with_layout_map(backbone: Backbone, grid: int) -> Backbone:
    layer = LayoutMap(backbone.layer, grid, name="layout_map")
    fingerprint = None if backbone.fingerprint is None else f"{backbone.fingerprint}+layout{grid}"
    layout_dim = grid * grid
    return Backbone(backbone.module, layer, backbone.image_size, backbone.feature_dim + layout_dim,
                    fingerprint, layout_dim)


def _resolve(module: str) -> Path:
    local = Path(module).expanduser()
    if local.exists():
        if not (local / "saved_model.pb").is_file():
            raise ModuleError(f"{local}: not a TF Hub module (no saved_model.pb inside)")
        return local
    if "://" not in module and not module.startswith(("tfhub.dev", "www.kaggle.com")):
        raise ModuleError(f"module {module!r}: no such folder, and not a TF Hub handle or URL")
    try:
        return Path(hub.resolve(module))
    except Exception as error:   # network, HTTP and format errors all end here
        raise ModuleError(
            f"cannot fetch TF Hub module {module} ({type(error).__name__}: {error}).\n"
            "Download it on a machine with internet (or from Kaggle Models), unpack it and pass the "
            "folder instead: MODULE=/path/to/module (flag --module). Or train without a pretrained "
            f"module, at lower accuracy: MODULE={SCRATCH_MODULE}.") from error


def _module_shapes(loaded) -> tuple[int | None, int | None]:
    """(fixed square input size or None, feature size or None) from the module's call signature."""
    try:
        concrete = loaded.__call__.concrete_functions[0]
        spec = concrete.structured_input_signature[0][0]
        height, width = spec.shape[1], spec.shape[2]
        out = concrete.structured_outputs
        feature_dim = out.shape[-1] if isinstance(out, tf.TensorSpec) else None
    except (AttributeError, IndexError, TypeError):
        return None, None
    fixed = height if height is not None and height == width else None
    return fixed, feature_dim


def _fingerprint(resolved: Path) -> str:
    """sha256 over the graph and the variables index (which holds a checksum of every tensor)."""
    digest = hashlib.sha256()
    for name in ("saved_model.pb", "variables/variables.index"):
        part = resolved / name
        if part.is_file():
            digest.update(name.encode() + b"\0" + part.read_bytes())
    return digest.hexdigest()


def scratch_backbone(image_size: int) -> Backbone:
    """A few strided conv blocks and global pooling: learns simple layouts from a few hundred
    images, with no download. Lower accuracy than a pretrained module."""
    # No batch normalisation: with a few hundred images its moving averages lag far behind the
    # weights within the few steps training takes, and the exported model scores badly.
    layers = [keras.layers.InputLayer(input_shape=(image_size, image_size, 3)),
              keras.layers.Rescaling(2.0, offset=-1.0)]
    for filters in _SCRATCH_FILTERS:
        layers.append(keras.layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu"))
    layers.append(keras.layers.GlobalAveragePooling2D())
    network = keras.Sequential(layers, name="backbone")
    return Backbone(SCRATCH_MODULE, network, image_size, _SCRATCH_FILTERS[-1], None)
