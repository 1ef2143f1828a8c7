"""What a validation run measures: accuracy, per-class precision/recall/F1, the confusion matrix,
latency percentiles and throughput. Counts only, so memory does not grow with the number of images
(the misclassified list is capped; every result is in the output file)."""

from __future__ import annotations

import math
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field

MAX_MISCLASSIFIED_KEPT = 1000


def latency_percentiles(latencies: list[float]) -> dict[int, float]:
    """p50/p95/p99, interpolating between closest ranks (numpy's default method)."""
    if len(latencies) < 2:
        value = latencies[0] if latencies else math.nan
        return {q: value for q in (50, 95, 99)}
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return {q: cuts[q - 1] for q in (50, 95, 99)}


@dataclass
class ClassScores:
    precision: float
    recall: float
    f1: float
    support: int


@dataclass
class ClassificationReport:
    labels: list[str]
    matrix: list[list[int]]          # rows: true label, columns: predicted label, in label order
    accuracy: float
    per_class: dict[str, ClassScores]
    scored: int                      # images whose folder is one of the labels


def classification_report(confusion: Counter, labels: list[str]) -> ClassificationReport | None:
    """From counts of (true, predicted) pairs; pairs whose true label is not a label are left out.
    None when no image sits in a folder named after a label."""
    matrix = [[confusion.get((t, p), 0) for p in labels] for t in labels]
    scored = sum(map(sum, matrix))
    if scored == 0:
        return None
    correct = sum(matrix[i][i] for i in range(len(labels)))
    per_class = {}
    for i, label in enumerate(labels):
        true_positive = matrix[i][i]
        predicted = sum(row[i] for row in matrix)
        actual = sum(matrix[i])
        precision = true_positive / predicted if predicted else 0.0
        recall = true_positive / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[label] = ClassScores(precision, recall, f1, actual)
    return ClassificationReport(labels, matrix, correct / scored, per_class, scored)


@dataclass
class RunMetrics:
    """Accumulates a run as results arrive."""

    images: int = 0                  # files attempted
    predicted: int = 0
    errors: int = 0
    unlabelled: int = 0              # predicted images outside folders named after a label
    labels: list[str] = field(default_factory=list)      # from the first prediction
    confusion: Counter = field(default_factory=Counter)
    misclassified: list[tuple[str, str, str, float]] = field(default_factory=list)
    misclassified_total: int = 0
    latencies: list[float] = field(default_factory=list)  # seconds per request (one float each)
    request_bytes: int = 0
    file_bytes: int = 0
    versions: Counter = field(default_factory=Counter)   # version -> images it answered
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    def add_request(self, seconds: float, request_bytes: int) -> None:
        self.latencies.append(seconds)
        self.request_bytes += request_bytes

    def add_error(self) -> None:
        self.images += 1
        self.errors += 1

    def add_prediction(self, path: str, folder: str | None, classes, predicted: str,
                       score: float, file_bytes: int, version: int | None) -> None:
        self.images += 1
        self.predicted += 1
        self.file_bytes += file_bytes
        if version is not None:
            self.versions[version] += 1
        if not self.labels:
            self.labels = list(classes)
        if folder is None or folder not in classes:
            self.unlabelled += 1
            return
        self.confusion[(folder, predicted)] += 1
        if folder != predicted:
            self.misclassified_total += 1
            if len(self.misclassified) < MAX_MISCLASSIFIED_KEPT:
                self.misclassified.append((path, folder, predicted, score))

    def finish(self) -> None:
        self.finished = time.monotonic()

    @property
    def seconds(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    @property
    def throughput(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def latency_percentiles(self) -> dict[int, float]:
        return latency_percentiles(self.latencies)

    def report(self) -> ClassificationReport | None:
        return classification_report(self.confusion, self.labels) if self.labels else None
