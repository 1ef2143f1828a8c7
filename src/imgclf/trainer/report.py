"""The training report: accuracy per split, per-class precision/recall/F1, the confusion matrix
(printed and as a PNG) and the misclassified test files with their scores."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


def split_metrics(probabilities: np.ndarray, label_indices: Sequence[int], labels: Sequence[str]) -> dict:
    """Accuracy, per-class precision/recall/F1/support and the confusion matrix (rows: true
    class, columns: predicted class) of one split."""
    truth = np.asarray(label_indices, dtype=np.int64)
    k = len(labels)
    confusion = np.zeros([k, k], dtype=np.int64)
    if len(truth):
        predicted = np.argmax(probabilities, axis=1)
        np.add.at(confusion, (truth, predicted), 1)
    per_class = {}
    for i, label in enumerate(labels):
        hits, predicted_as, actual = confusion[i, i], confusion[:, i].sum(), confusion[i, :].sum()
        precision = hits / predicted_as if predicted_as else 0.0
        recall = hits / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[label] = {"precision": round(float(precision), 4), "recall": round(float(recall), 4),
                            "f1": round(float(f1), 4), "support": int(actual)}
    total = int(confusion.sum())
    accuracy = float(np.trace(confusion) / total) if total else None
    return {"accuracy": None if accuracy is None else round(accuracy, 4), "count": total,
            "per_class": per_class, "confusion": confusion.tolist()}


def misclassified(paths: Sequence[Path], probabilities: np.ndarray, label_indices: Sequence[int],
                  labels: Sequence[str]) -> list[dict]:
    """The files whose top class is wrong, most confidently wrong first."""
    wrong = []
    for path, scores, truth in zip(paths, probabilities, label_indices):
        guess = int(np.argmax(scores))
        if guess != truth:
            wrong.append({"file": str(path), "label": labels[truth], "predicted": labels[guess],
                          "scores": {label: round(float(s), 4) for label, s in zip(labels, scores)}})
    return sorted(wrong, key=lambda w: -w["scores"][w["predicted"]])


def format_report(report: dict) -> str:
    """The report as the text printed at the end of training."""
    labels = report["labels"]
    lines = []
    for split, metrics in report["splits"].items():
        if not metrics["count"]:
            lines.append(f"{split}: no images")
            continue
        lines.append(f"{split}: accuracy {metrics['accuracy']:.4f} on {metrics['count']} images")
        for label, m in metrics["per_class"].items():
            lines.append(f"  {label:<20} precision {m['precision']:.3f}  recall {m['recall']:.3f}  "
                         f"f1 {m['f1']:.3f}  ({m['support']})")
    test = report["splits"].get("test")
    if test and test["count"]:
        width = max(len(label) for label in labels) + 2
        lines.append("confusion matrix on test (rows: true, columns: predicted)")
        lines.append(" " * width + "".join(f"{label:>{width}}" for label in labels))
        for label, row in zip(labels, test["confusion"]):
            lines.append(f"{label:<{width}}" + "".join(f"{n:>{width}}" for n in row))
    if report["skipped"]:
        lines.append(f"skipped {report['skipped']} unusable file(s) (see warnings above)")
    wrong = report["misclassified_test"]
    lines.append(f"misclassified test files: {len(wrong)}")
    for w in wrong:
        scores = ", ".join(f"{k} {v:.3f}" for k, v in w["scores"].items())
        lines.append(f"  {w['file']}: {w['label']} taken for {w['predicted']} ({scores})")
    return "\n".join(lines)


def save_confusion_png(confusion: Sequence[Sequence[int]], labels: Sequence[str], path: Path,
                       title: str = "confusion matrix (test split)") -> None:
    import matplotlib

    matplotlib.use("Agg")   # no display needed; safe on servers and in containers
    import matplotlib.pyplot as plt

    matrix = np.asarray(confusion)
    size = 1.2 + 0.9 * len(labels)
    figure, axes = plt.subplots(figsize=(size + 1, size))
    shown = axes.imshow(matrix, cmap="Blues")
    axes.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    threshold = matrix.max() / 2 if matrix.size else 0
    for (row, column), n in np.ndenumerate(matrix):
        axes.text(column, row, str(n), ha="center", va="center",
                  color="white" if n > threshold else "black")
    figure.colorbar(shown, ax=axes)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
