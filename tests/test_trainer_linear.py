"""Ridge heads, their cross-validation from Gram matrices, temperature scaling and calibration
error: numpy only, on synthetic features."""

import numpy as np
import pytest

from imgclf.trainer.linear import (class_weights, cross_validated_scores, expected_calibration_error, fit_ridge,
                                   fit_scale, nll, softmax, stratified_folds)


def blobs(n=120, d=30, k=3, seed=0, spread=1.0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=[k, d]) * 2
    labels = rng.integers(k, size=n)
    return (centres[labels] + spread * rng.normal(size=[n, d])).astype(np.float32), labels


@pytest.mark.parametrize("balanced", [False, True])
def test_gram_cross_validation_equals_fitting_each_fold(balanced):
    x, y = blobs(n=90, d=40)            # fewer rows than columns in each fold: the dual form
    folds = stratified_folds(y, 5, seed=3)
    scores = cross_validated_scores(x.astype(np.float64) @ x.T.astype(np.float64), y, 3, 0.7, folds, balanced)
    for fold in range(5):
        kept = folds != fold
        fit = fit_ridge(x[kept], y[kept], 3, 0.7, class_weights(y[kept], 3, balanced))
        np.testing.assert_allclose(scores[folds == fold], fit.scores(x[folds == fold]), rtol=1e-6, atol=1e-8)


def test_primal_and_dual_forms_agree():
    x, y = blobs(n=60, d=20)
    wide = fit_ridge(x[:15], y[:15], 3, 1.0)         # 15 rows, 20 columns: dual
    # the same 15 rows twice at half weight: the same problem, 30 rows, so solved in the primal
    tall = fit_ridge(np.repeat(x[:15], 2, 0), np.repeat(y[:15], 2), 3, 1.0, np.full(30, 0.5))
    np.testing.assert_allclose(wide.scores(x), tall.scores(x), rtol=1e-6, atol=1e-8)


def test_ridge_separates_blobs_and_balancing_lifts_the_rare_class():
    x, y = blobs(n=400, spread=3.5, seed=1)
    rare = np.where(y == 2)[0][20:]              # class 2 keeps only 20 images
    keep = np.setdiff1d(np.arange(len(y)), rare)
    test_x, test_y = blobs(n=600, spread=3.5, seed=1)
    plain = fit_ridge(x[keep], y[keep], 3, 1.0).scores(test_x).argmax(1)
    balanced = fit_ridge(x[keep], y[keep], 3, 1.0, class_weights(y[keep], 3, True)).scores(test_x).argmax(1)
    assert np.mean(plain == test_y) > 0.7
    assert np.mean(balanced[test_y == 2] == 2) > np.mean(plain[test_y == 2] == 2)


def test_stratified_folds_deal_every_class_over_every_fold():
    y = np.repeat([0, 1, 2], [50, 10, 5])
    folds = stratified_folds(y, 5, seed=0)
    for label, count in ((0, 10), (1, 2), (2, 1)):
        assert np.bincount(folds[y == label], minlength=5).tolist() == [count] * 5


def test_temperature_scaling_finds_the_true_scale_and_lowers_calibration_error():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=[4000, 4]) * 2
    labels = np.array([rng.choice(4, p=p) for p in softmax(logits)])
    overconfident = logits * 3          # the truth is softmax(logits): a = 1/3 undoes it
    scale = fit_scale(overconfident, labels)
    assert scale == pytest.approx(1 / 3, rel=0.1)
    assert nll(scale * overconfident, labels) < nll(overconfident, labels)
    before = expected_calibration_error(softmax(overconfident), labels)
    after = expected_calibration_error(softmax(scale * overconfident), labels)
    assert after < 0.03 < before


def test_calibration_error_of_perfectly_calibrated_and_of_certain_wrong_scores():
    probabilities = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert expected_calibration_error(probabilities, np.array([0, 1])) == 0.0
    assert expected_calibration_error(probabilities, np.array([1, 0])) == 1.0
    assert expected_calibration_error(np.zeros([0, 2]), np.array([], int)) is None
