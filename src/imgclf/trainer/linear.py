"""Ridge heads on cached features, their cross-validation, and calibration.

A ridge head is a linear layer fitted in closed form to the one-hot classes (least squares with an
L2 penalty), then a softmax whose temperature is fitted on held-out images. It has no seed, no
epochs and no early stopping on a small validation split, and fits in well under a second on
thousands of images, so a recipe can be measured by cross-validation in seconds. Measured against
the dropout + softmax head on unseen sources and styles it generalised as well or better (see
docs/training.md). Plain numpy: the fitted weights become a Dense layer in the exported graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_ECE_BINS = 15


@dataclass(frozen=True)
class LinearFit:
    """scores = features @ weights + bias; probabilities = softmax(scale * scores)."""

    weights: np.ndarray      # [D, K]
    bias: np.ndarray         # [K]
    scale: float = 1.0

    def scores(self, features: np.ndarray) -> np.ndarray:
        return np.asarray(features, np.float64) @ self.weights + self.bias

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        return softmax(self.scale * self.scores(features))


def class_weights(labels: np.ndarray, num_classes: int, balanced: bool) -> np.ndarray:
    """Per-example weights: each class weighs as much as any other when balanced, else 1 each."""
    if not balanced:
        return np.ones(len(labels))
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    return (len(labels) / (num_classes * np.maximum(counts, 1)))[labels]


def fit_ridge(features: np.ndarray, labels: np.ndarray, num_classes: int, strength: float,
              weights: np.ndarray | None = None) -> LinearFit:
    """Weighted least squares to the one-hot classes with an L2 penalty of strength times the
    mean squared norm of the centred features (so one strength suits any feature scale). Solved
    in whichever of the primal (D x D) or dual (N x N) form is smaller."""
    x = np.asarray(features, np.float64)
    w = np.ones(len(x)) if weights is None else np.asarray(weights, np.float64)
    targets = np.eye(num_classes)[labels]
    mean_x, mean_t = w @ x / w.sum(), w @ targets / w.sum()
    root = np.sqrt(w)[:, None]
    a, t = (x - mean_x) * root, (targets - mean_t) * root
    penalty = strength * float(np.sum(a * a)) / w.sum()
    if len(a) <= a.shape[1]:
        coefficients = a.T @ np.linalg.solve(a @ a.T + penalty * np.eye(len(a)), t)
    else:
        coefficients = np.linalg.solve(a.T @ a + penalty * np.eye(a.shape[1]), a.T @ t)
    return LinearFit(coefficients, mean_t - mean_x @ coefficients)


def cross_validated_scores(gram: np.ndarray, labels: np.ndarray, num_classes: int, strength: float,
                           folds: np.ndarray, balanced: bool) -> np.ndarray:
    """Out-of-fold ridge scores [N, K] from the Gram matrix of the features (gram = X X^T), one
    fit per fold id in folds. Working from the Gram matrix makes every fold an N x N solve and
    lets recipes that add parts add their Gram matrices, so no fold touches the features again."""
    scores = np.zeros([len(labels), num_classes])
    for fold in np.unique(folds):
        held, kept = folds == fold, folds != fold
        scores[held] = _dual_fold(gram, labels, num_classes, strength, kept, held, balanced)
    return scores


def _dual_fold(gram, labels, num_classes, strength, kept, held, balanced) -> np.ndarray:
    """fit_ridge in the dual on the kept rows, from Gram entries only; scores of the held rows."""
    w = class_weights(labels[kept], num_classes, balanced)
    targets = np.eye(num_classes)[labels[kept]]
    mean_t = w @ targets / w.sum()
    g_kept, g_cross = gram[np.ix_(kept, kept)], gram[np.ix_(held, kept)]
    # x_i . mean for kept and held rows, and mean . mean: what centring subtracts from each entry.
    to_mean_kept, to_mean_held = g_kept @ w / w.sum(), g_cross @ w / w.sum()
    mean_sq = w @ to_mean_kept / w.sum()
    centred = g_kept - to_mean_kept[:, None] - to_mean_kept[None, :] + mean_sq
    cross = g_cross - to_mean_held[:, None] - to_mean_kept[None, :] + mean_sq
    root = np.sqrt(w)
    penalty = strength * float(w @ np.diag(centred)) / w.sum()
    system = root[:, None] * centred * root[None, :] + penalty * np.eye(len(w))
    alpha = np.linalg.solve(system, (targets - mean_t) * root[:, None])
    return cross @ (root[:, None] * alpha) + mean_t


def stratified_folds(labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """A fold id per example, each class dealt round-robin over the folds in a shuffled order."""
    rng = np.random.default_rng(seed)
    folds = np.zeros(len(labels), np.int64)
    order = rng.permutation(len(labels))
    for label in np.unique(labels):
        members = order[labels[order] == label]
        folds[members] = (np.arange(len(members)) + rng.integers(count)) % count
    return folds


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def fit_scale(logits: np.ndarray, labels: np.ndarray) -> float:
    """The factor a minimising the negative log-likelihood of softmax(a * logits) (temperature
    scaling, a = 1/T): a convex problem in a, solved by golden-section search over log a."""
    if not len(labels):
        return 1.0
    low, high = np.log(1e-3), np.log(1e3)
    ratio = (np.sqrt(5) - 1) / 2
    for _ in range(60):
        left, right = high - ratio * (high - low), low + ratio * (high - low)
        if nll(np.exp(left) * logits, labels) <= nll(np.exp(right) * logits, labels):
            high = right
        else:
            low = left
    return float(np.exp((low + high) / 2))


def nll(logits: np.ndarray, labels: np.ndarray) -> float:
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probabilities = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-np.mean(log_probabilities[np.arange(len(labels)), labels]))


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = _ECE_BINS) -> float | None:
    """Mean |accuracy - confidence| over equal-width bins of the top score, weighted by the
    images in each bin: how far "0.9" is from being right nine times in ten."""
    if not len(labels):
        return None
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    which = np.minimum((confidence * bins).astype(np.int64), bins - 1)
    gap = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            gap += members.sum() * abs(correct[members].mean() - confidence[members].mean())
    return float(gap / len(labels))
