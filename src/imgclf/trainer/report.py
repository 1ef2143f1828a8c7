"""The training report: accuracy per split, per-class precision/recall/F1, the confusion matrix
(printed and as a PNG) and the misclassified test files with their scores."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from imgclf.trainer.linear import expected_calibration_error

_MISCLASSIFIED_SHOWN = 20     # printed; the report file keeps them all


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
    recalls = [m["recall"] for m in per_class.values() if m["support"]]
    ece = expected_calibration_error(np.asarray(probabilities, np.float64), truth) if total else None
    return {"accuracy": None if accuracy is None else round(accuracy, 4),
            "balanced_accuracy": round(float(np.mean(recalls)), 4) if recalls else None,
            "ece": None if ece is None else round(ece, 4), "count": total,
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
    lines = format_recipe(report["recipe"]) if report.get("recipe") else []
    calibration = report.get("calibration") or {}
    if calibration.get("scale") is not None:
        lines.append(f"calibration: temperature {1 / calibration['scale']:.3f} fitted on validation "
                     f"(validation ECE {calibration['validation_ece_before']:.3f} -> "
                     f"{calibration['validation_ece_after']:.3f})")
    for split, metrics in report["splits"].items():
        lines += format_split(split, metrics, split in report.get("fitted_on", ["train"]))
    lines += format_confusion(report["labels"], report["splits"].get("test"))
    if report["skipped"]:
        lines.append(f"skipped {report['skipped']} unusable file(s) (see warnings above)")
    wrong = report["misclassified_test"]
    lines.append(f"misclassified test files: {len(wrong)}" +
                 (f" (the {_MISCLASSIFIED_SHOWN} most confident below, all in the report file)"
                  if len(wrong) > _MISCLASSIFIED_SHOWN else ""))
    for w in wrong[:_MISCLASSIFIED_SHOWN]:
        top = sorted(w["scores"].items(), key=lambda item: -item[1])[:3]
        lines.append(f"  {w['file']}: {w['label']} taken for {w['predicted']} "
                     f"({', '.join(f'{k} {v:.3f}' for k, v in top)})")
    return "\n".join(lines)


def format_recipe(recipe: dict) -> list[str]:
    """What RECIPE=auto tried, at what cost, and what it chose and why."""
    lines = [f"recipe ({recipe['mode']}): {recipe['description']}, {recipe['passes']} backbone pass(es) per "
             f"image: {recipe['reason']}"]
    if recipe["tried"]:
        lines.append(f"  cross-validated on {recipe['images']} train + validation images (s.e.: of the per-image "
                     "difference from the stage's best in 1, from the reference in 2):")
        width = max(len(trial["description"]) for trial in recipe["tried"]) + 2
        lines.append(f"  {'stage':<6}{'candidate':<{width}}{'accuracy':>9}{'s.e.':>8}{'passes':>7}{'ms/image':>10}")
        for trial in recipe["tried"]:
            ms = "" if trial["ms_per_image"] is None else f"{trial['ms_per_image']:.1f}"
            error = f"{trial['standard_error']:.4f}" if trial["standard_error"] else "-"
            lines.append(f"  {trial['stage']:<6}{trial['description']:<{width}}{trial['cv_accuracy']:>9.4f}"
                         f"{error:>8}{trial['passes']:>7}{ms:>10}"
                         + ("  <- chosen" if trial["chosen"] else ""))
    return lines


def format_split(split: str, metrics: dict, fitted: bool) -> list[str]:
    if not metrics["count"]:
        return [f"{split}: no images"]
    lines = [f"{split}: accuracy {metrics['accuracy']:.4f}, balanced {metrics['balanced_accuracy']:.4f}, "
             f"calibration error {metrics['ece']:.4f} on {metrics['count']} images"
             + (" (the head was fitted on them)" if fitted else "")]
    width = max(len(label) for label in metrics["per_class"]) + 2
    for label, m in metrics["per_class"].items():
        lines.append(f"  {label:<{width}} precision {m['precision']:.3f}  recall {m['recall']:.3f}  "
                     f"f1 {m['f1']:.3f}  ({m['support']})")
    return lines


def format_confusion(labels: list[str], test: dict | None) -> list[str]:
    """Rows named, columns numbered like the rows: stays readable with many or long class names."""
    if not test or not test["count"]:
        return []
    name_width = max(len(label) for label in labels) + 5
    cell = max(4, len(str(max(max(row) for row in test["confusion"]))) + 2)
    lines = ["confusion matrix on test (rows: true, columns: predicted, numbered as the rows)",
             " " * name_width + "".join(f"{i + 1:>{cell}}" for i in range(len(labels)))]
    for i, (label, row) in enumerate(zip(labels, test["confusion"])):
        lines.append(f"{i + 1:>2}. {label:<{name_width - 4}}" + "".join(f"{n:>{cell}}" for n in row))
    return lines


def save_confusion_png(confusion: Sequence[Sequence[int]], labels: Sequence[str], path: Path,
                       title: str = "confusion matrix (test split)") -> None:
    import matplotlib

    matplotlib.use("Agg")   # no display needed; safe on servers and in containers
    import matplotlib.pyplot as plt

    matrix = np.asarray(confusion)
    # Colour by the share of each true class's images (its recall on the diagonal), so that large
    # classes do not drown small ones when classes are unbalanced; the cells show the counts.
    totals = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)
    size = 1.2 + 0.9 * len(labels)
    figure, axes = plt.subplots(figsize=(size + 1, size))
    shown = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    axes.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    axes.set_yticks(range(len(labels)), [f"{label} ({int(total)})" for label, total in zip(labels, totals[:, 0])])
    axes.set_xlabel("predicted")
    axes.set_ylabel("true (images)")
    axes.set_title(title)
    for (row, column), n in np.ndenumerate(matrix):
        axes.text(column, row, str(n), ha="center", va="center",
                  color="white" if shares[row, column] > 0.5 else "black")
    figure.colorbar(shown, ax=axes, label="share of the true class's images")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
