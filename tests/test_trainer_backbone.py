"""The parts of the features as exported: one copy of the network in the serving graph per part,
however many tiles it reads, and the same features as the network run on each tile in turn."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from tensorflow.core.protobuf import saved_model_pb2

from imgclf import contract, images
from imgclf.trainer.backbone import CENTRE, QUADRANTS, TILES, WHOLE, FeatureParts, scratch_backbone
from imgclf.trainer.export import export_saved_model

SIZE = 32
CONVOLUTIONS_PER_PASS = 4   # the scratch network's Conv2D layers


@pytest.fixture(scope="module")
def network():
    return scratch_backbone(SIZE).network


@pytest.fixture(scope="module")
def pictures():
    return tf.random.stateless_uniform([3, SIZE, SIZE, 3], seed=[1, 2])


def reference_tiles(pictures, grid: int, which=None) -> list:
    """The grid x grid tiles (those numbered in which, row by row), each cut by plain slicing and
    enlarged to full size: the cut FeatureParts makes, computed apart from it."""
    step = SIZE // grid
    return [tf.image.resize(pictures[:, (i // grid) * step:(i // grid + 1) * step, (i % grid) * step:(i % grid + 1) * step],
                            [SIZE, SIZE], antialias=True)
            for i in (which if which is not None else range(grid * grid))]


def per_tile_reference(layer: FeatureParts, pictures, which) -> np.ndarray:
    """The network run on each tile in turn, summed in order: what the export computed before."""
    tiles = reference_tiles(pictures, 4, which)
    return tf.add_n([layer.network(tile, training=False) for tile in tiles]) / float(len(tiles))


@pytest.mark.parametrize("part, which", [(CENTRE, (5, 6, 9, 10)), (TILES, None)])
def test_tiles_give_bit_for_bit_the_per_tile_features_eagerly_and_in_a_graph(network, pictures, part, which):
    layer = FeatureParts(network, SIZE, (part,))
    assert np.array_equal(layer(pictures, training=False).numpy(), per_tile_reference(layer, pictures, which).numpy())
    # In a graph both sides get Grappler's fusions, which round differently from eager kernels.
    graph = tf.function(lambda batch: layer(batch, training=False))
    reference = tf.function(lambda batch: per_tile_reference(layer, batch, which))
    assert np.array_equal(graph(pictures).numpy(), reference(pictures).numpy())


def serving_op_counts(version_dir: Path) -> Counter:
    """Ops of the serving signature as if every function it calls were inlined, call by call (what
    Grappler optimizes on a server's first run): a function called n times counts n times."""
    saved = saved_model_pb2.SavedModel.FromString((version_dir / "saved_model.pb").read_bytes())
    graph = saved.meta_graphs[0].graph_def
    library = {function.signature.name: function.node_def for function in graph.library.function}
    signature = saved.meta_graphs[0].signature_def[contract.SIGNATURE_NAME]
    output_nodes = {info.name.split(":")[0] for info in signature.outputs.values()}
    by_name = {node.name: node for node in graph.node}

    def expand(nodes) -> Counter:
        counts = Counter()
        for node in nodes:
            counts[node.op] += 1
            called = [value.func.name for value in node.attr.values() if value.HasField("func")]
            called += [node.op] if node.op in library else []
            for name in called:
                counts += expand(library[name])
        return counts

    return expand([by_name[name] for name in output_nodes])


def test_the_export_holds_one_copy_of_the_network_per_part(network, tmp_path):
    head = keras.Sequential([keras.Input((3 * 128,)), keras.layers.Dense(2, activation="softmax")])
    parts = (WHOLE, CENTRE, TILES)
    layer = FeatureParts(network, SIZE, parts)
    export_saved_model(tmp_path, layer, head, images.Preprocessing(SIZE), ["a", "b"])
    # Before: one copy per tile, 1 + 4 + 16 = 21 copies of the network.
    assert serving_op_counts(tmp_path)["Conv2D"] == len(parts) * CONVOLUTIONS_PER_PASS
    # And the export answers as the per-tile reference does.
    image = tf.io.encode_png(tf.cast(tf.random.stateless_uniform([40, 50, 3], [3, 4], maxval=255), tf.uint8))
    loaded = tf.saved_model.load(str(tmp_path))
    pictures = loaded.preprocess(tf.stack([image]))
    features = np.concatenate([network(pictures, training=False).numpy(),
                               per_tile_reference(layer, pictures, (5, 6, 9, 10)).numpy(),
                               per_tile_reference(layer, pictures, None).numpy()], axis=1)
    scores = loaded.signatures[contract.SIGNATURE_NAME](tf.stack([image]))[contract.SCORES_OUTPUT]
    np.testing.assert_allclose(scores.numpy(), head(features).numpy(), rtol=0, atol=1e-6)


def test_quadrants_stay_one_pass_of_four_views(network, pictures):
    layer = FeatureParts(network, SIZE, (QUADRANTS,))
    views = reference_tiles(pictures, 2)
    expected = np.concatenate([network(view, training=False).numpy() for view in views], axis=1)
    np.testing.assert_allclose(layer(pictures, training=False).numpy(), expected, rtol=0, atol=1e-6)
