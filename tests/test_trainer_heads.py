"""The page's ink map beside the backbone's features, and the head that mixes a texture head with a
layout head."""

import numpy as np
import pytest
import tensorflow as tf

from imgclf.trainer.backbone import load_backbone
from imgclf.trainer.model import build_classifier_head

SIZE = 32


@pytest.fixture(scope="module")
def scratch_with_map():
    return load_backbone("scratch", SIZE, layout_grid=4)


def test_ink_map_follows_the_page_after_the_backbone_features(scratch_with_map):
    backbone = scratch_with_map
    assert backbone.layout_dim == 16
    texture_dim = backbone.feature_dim - backbone.layout_dim
    white = np.ones([SIZE, SIZE, 3], np.float32)
    top_inked = white.copy()
    top_inked[: SIZE // 2] = 0.0              # black upper half
    left_grey = white.copy()
    left_grey[:, : SIZE // 4] = 0.5           # mid-grey first column of cells
    features = backbone.layer(tf.constant(np.stack([white, top_inked, left_grey])), training=False).numpy()
    assert features.shape == (3, backbone.feature_dim)
    maps = features[:, texture_dim:].reshape(3, 4, 4)
    np.testing.assert_allclose(maps[0], 0.0, atol=1e-6)
    np.testing.assert_allclose(maps[1][:2], 1.0, atol=1e-6)
    np.testing.assert_allclose(maps[1][2:], 0.0, atol=1e-6)
    np.testing.assert_allclose(maps[2][:, 0], 0.5, atol=1e-6)
    np.testing.assert_allclose(maps[2][:, 1:], 0.0, atol=1e-6)


def test_layout_map_is_optional():
    plain = load_backbone("scratch", SIZE)
    assert plain.layout_dim == 0
    assert load_backbone("scratch", SIZE, layout_grid=8).feature_dim == plain.feature_dim + 64


def test_mixed_scores_are_the_weighted_mean_of_the_branches():
    head, branches = build_classifier_head(feature_dim=10, layout_dim=4, num_classes=3, dropout=0.5,
                                           seed=7, layout_weight=0.25)
    assert [(b.name, b.columns) for b in branches] == [("head-texture", slice(0, 6)), ("head-layout", slice(6, 10))]
    features = np.random.default_rng(0).normal(size=[5, 10]).astype(np.float32)
    texture = branches[0].model(features[:, :6], training=False).numpy()
    layout = branches[1].model(features[:, 6:], training=False).numpy()
    mixed = head(features, training=False).numpy()
    np.testing.assert_allclose(mixed, 0.75 * texture + 0.25 * layout, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mixed.sum(axis=1), 1.0, rtol=1e-5)
    assert not np.allclose(texture, layout)   # two heads, not one seen twice


def test_without_layout_features_the_head_is_one_branch_over_all_features():
    head, branches = build_classifier_head(feature_dim=10, layout_dim=0, num_classes=2, dropout=0.5,
                                           seed=7, layout_weight=0.33)
    assert len(branches) == 1 and branches[0].model is head and branches[0].columns == slice(0, 10)
    assert branches[0].name == "head"
