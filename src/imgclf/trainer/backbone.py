"""The backbone: a TF Hub feature-vector module (handle, URL or local folder), or `scratch`, a small
convolutional network trained from scratch for machines that cannot reach TF Hub."""

from __future__ import annotations

import dataclasses
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


# Parts of the features: what the network sees of the image (and layout_part(grid), the ink map).
WHOLE, QUADRANTS, CENTRE, TILES = "whole", "quadrants", "centre", "tiles"
_PASSES = {WHOLE: 1, QUADRANTS: 4, CENTRE: 4, TILES: 16}     # backbone passes per image
_VIEWS_KEPT = {WHOLE: 1, QUADRANTS: 4, CENTRE: 1, TILES: 1}  # feature vectors kept (pooled: their mean)
_TILE_GRID = 4
_CENTRE_TILES = (5, 6, 9, 10)                                # of the 4x4 grid, row by row
_TILES_AT_ONCE = 1   # the tile loop's parallel_iterations: see FeatureParts._mean_over_tiles
# A recipe's view: the parts the network reads.
VIEWS = {"whole": (WHOLE,), "centre": (CENTRE,), "whole+centre": (WHOLE, CENTRE),
         "whole+quadrants": (WHOLE, QUADRANTS), "tiles": (TILES,)}


def layout_part(grid: int) -> str:
    return f"layout{grid}"


@dataclass
class Backbone:
    """A feature-vector network and the parts of the features the classifier reads.

    The features of an image are its parts side by side, in order: what the network sees of it
    (its view: see VIEWS and FeatureParts), then the page's ink map (layout_part(grid)). Each part is cached on its own, so recipes that share a part share its
    cost; `layer` computes all of them, in the exported graph as in training."""

    module: str                      # as the user gave it
    network: keras.layers.Layer      # images [N, size, size, 3] in [0, 1] -> [N, view_dim]
    image_size: int
    view_dim: int
    # Identifies the weights: part of the feature-cache key. None when the backbone has no fixed
    # weights (scratch), whose features therefore cannot be cached.
    fingerprint: str | None
    parts: tuple[str, ...] = (WHOLE,)
    layer: keras.layers.Layer = None     # images -> all parts' features [N, feature_dim]

    def __post_init__(self):
        if self.layer is None:
            self.layer = FeatureParts(self.network, self.image_size, self.parts, name="features")

    @property
    def is_scratch(self) -> bool:
        return self.fingerprint is None

    def part_dim(self, part: str) -> int:
        return _VIEWS_KEPT[part] * self.view_dim if part in _PASSES else int(part[len("layout"):]) ** 2

    @property
    def feature_dim(self) -> int:
        return sum(self.part_dim(part) for part in self.parts)

    @property
    def layout_dim(self) -> int:
        """The last layout_dim features are the page's ink map, read by a head of its own."""
        return sum(self.part_dim(part) for part in self.parts if part not in _PASSES)

    @property
    def passes(self) -> int:
        """Backbone passes per image: what serving one image costs, in units of the network."""
        return sum(_PASSES.get(part, 0) for part in self.parts)


def load_backbone(module: str, image_size: int = 0, trainable: bool = False, view: str = "whole",
                  layout_grid: int = 0) -> Backbone:
    """image_size 0 takes the module's own size; a module that fixes its size refuses another.
    view and layout_grid choose the parts of the features: see with_parts."""
    return with_parts(_load_network(module, image_size, trainable), view, layout_grid)


def with_parts(backbone: Backbone, view: str, layout_grid: int) -> Backbone:
    """The same network (no reload, shared weights) reading another view of the image (VIEWS),
    with the page's ink map on a layout_grid x layout_grid grid when layout_grid > 0. The scratch
    backbone learns its own scales: it sees the whole image only."""
    parts = VIEWS["whole" if backbone.is_scratch else view]
    return dataclasses.replace(backbone, parts=parts + ((layout_part(layout_grid),) if layout_grid else ()),
                               layer=None)


def _load_network(module: str, image_size: int, trainable: bool) -> Backbone:
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
    return Backbone(module, layer, size, feature_dim, _fingerprint(resolved))


class FeatureParts(keras.layers.Layer):
    """images -> the named parts of their features, side by side.

    - WHOLE: the network's features of the image.
    - QUADRANTS: its features of each quarter of the image enlarged to full size. ImageNet modules
      see a page at 224 px as a few grey blocks; at twice the scale the texture of title, columns,
      formulas and figures shows. Four more backbone passes per image.
    - CENTRE: the mean of its features of the four central tiles of a 4x4 grid, each enlarged to
      full size: the middle of the image at four times the scale, where a page's body text is.
      Pages from sources never seen were told apart best this way (docs/training.md). 4 passes.
    - TILES: the same mean over all 16 tiles of the grid. 16 passes per image.
    - layout<grid>: how much ink each cell of a grid x grid map of the page holds. ImageNet
      features describe texture; where the text, title, columns and figures sit is a cue of its
      own, and one a linear head reads straight from the map. Costs no backbone pass.
    """

    def __init__(self, network: keras.layers.Layer, image_size: int, parts: tuple[str, ...], **kwargs):
        super().__init__(**kwargs)
        self.network = network
        self.image_size = image_size
        self.parts = tuple(parts)

    def call(self, pictures, training=None):
        return tf.concat([self._part(part, pictures, training) for part in self.parts], axis=1)

    def _part(self, part: str, pictures, training):
        if part == WHOLE:
            return self.network(pictures, training=training)
        if part == QUADRANTS:
            views = self._tiles(pictures, 2)
            features = self.network(tf.concat(views, axis=0), training=training)
            return tf.concat(tf.split(features, len(views), axis=0), axis=1)
        if part in (CENTRE, TILES):
            return self._mean_over_tiles(pictures, _CENTRE_TILES if part == CENTRE else range(_TILE_GRID ** 2),
                                         training)
        grid = int(part[len("layout"):])
        ink = 1.0 - tf.reduce_mean(pictures, axis=-1, keepdims=True)
        cells = tf.image.resize(ink, [grid, grid], method="area")
        return tf.reshape(cells, [-1, grid * grid])

    def _mean_over_tiles(self, pictures, which, training):
        """The mean of the network's features of the tiles numbered in which (of the 4x4 grid).

        One tile at a time, in a graph loop: all at once would hold 16x the activations, and a
        Python loop put a copy of the network into the graph per tile, which every server inlines
        and optimizes when it loads a version (whole + centre: 5 copies, now 2; the Lite0 export's
        serving graph, inlined, 2,836 nodes, now 1,444; a version swap 0.35-0.55 CPU-s cheaper:
        docs/serving.md). One tile at a time (_TILES_AT_ONCE): 2 cost the same CPU per request
        and swap, and hold twice the activations. The sum is tf.add_n over the tiles in order, as
        before, so features are bit for bit the same (and cached ones stay valid)."""
        which = tuple(which)

        def features(index):
            return self.network(self._tile(pictures, _TILE_GRID, index), training=training)

        per_tile = tf.map_fn(features, tf.constant(which, tf.int32), parallel_iterations=_TILES_AT_ONCE,
                             fn_output_signature=tf.float32)
        return tf.add_n(tf.unstack(per_tile, num=len(which))) / float(len(which))

    def _tile(self, pictures, grid: int, index):
        """Tile number index (an int, or a scalar tensor inside a graph loop; row by row) of the
        grid x grid grid, enlarged to full size."""
        step = self.image_size // grid
        corner = tf.stack([0, (index // grid) * step, (index % grid) * step, 0])
        tile = tf.slice(pictures, corner, [-1, step, step, -1])
        return tf.image.resize(tile, [self.image_size, self.image_size], antialias=True)

    def _tiles(self, pictures, grid: int, which: tuple[int, ...] | None = None) -> list:
        """The grid x grid tiles of the pictures (those numbered in which, row by row), each
        enlarged to full size."""
        return [self._tile(pictures, grid, i) for i in (which if which is not None else range(grid * grid))]


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
    # Named layers: a retrain must export the same graph (model.build_head).
    layers = [keras.layers.InputLayer(input_shape=(image_size, image_size, 3), name="scratch_pixels"),
              keras.layers.Rescaling(2.0, offset=-1.0, name="scratch_rescale")]
    for index, filters in enumerate(_SCRATCH_FILTERS):
        layers.append(keras.layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu",
                                          name=f"scratch_conv{index}"))
    layers.append(keras.layers.GlobalAveragePooling2D(name="scratch_pool"))
    network = keras.Sequential(layers, name="backbone")
    return Backbone(SCRATCH_MODULE, network, image_size, _SCRATCH_FILTERS[-1], None)
