"""The summary printed after the per-image lines."""

from __future__ import annotations

from pathlib import Path

from imgclf.client.metrics import RunMetrics
from imgclf.settings import ValidateSettings


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]


def describe_versions(metrics: RunMetrics, from_metadata: list[int]) -> str:
    """Which version answered. gRPC replies name it; REST replies do not, so the metadata taken
    before and after the run stands in (a swap in between shows as two numbers)."""
    if metrics.versions:
        return ", ".join(f"{v} ({n} images)" for v, n in sorted(metrics.versions.items()))
    if len(from_metadata) == 2 and from_metadata[0] != from_metadata[1]:
        return (f"{from_metadata[0]} at the start, {from_metadata[1]} at the end "
                f"(a new version was swapped in during the run)")
    if from_metadata:
        return f"{from_metadata[0]} (from the model metadata; REST replies do not name the version)"
    return "unknown"


def format_report(metrics: RunMetrics, settings: ValidateSettings, endpoint: str,
                  versions_from_metadata: list[int], saved: Path | None, failure: str | None) -> str:
    lines = ["", f"== {endpoint} ({settings.protocol}, batch {settings.batch}, "
                 f"concurrency {settings.concurrency}" + (f", shard {settings.shard})" if settings.shard else ")")]
    if failure:
        lines.append(f"STOPPED EARLY: {failure}")
    lines.append(f"images {metrics.images}   predicted {metrics.predicted}   errors {metrics.errors}")
    lines.append(f"throughput {metrics.throughput:.1f} images/s ({metrics.seconds:.2f} s)")
    if metrics.latencies:
        p = metrics.latency_percentiles()
        lines.append(f"latency per request ({len(metrics.latencies)} requests): p50 {p[50] * 1000:.1f} ms"
                     f"   p95 {p[95] * 1000:.1f} ms   p99 {p[99] * 1000:.1f} ms")
    if metrics.predicted:
        lines.append(f"request bytes per image {metrics.request_bytes / metrics.predicted:.0f}"
                     f" (file bytes per image {metrics.file_bytes / metrics.predicted:.0f})")
    lines.append(f"model version {describe_versions(metrics, versions_from_metadata)}")
    if metrics.labels:
        lines.append(f"labels {', '.join(metrics.labels)}")
    lines += accuracy_lines(metrics)
    if saved:
        state = "all results" if saved.suffix != ".partial" else "results so far (run incomplete)"
        lines.append(f"{state} written to {saved}")
    return "\n".join(lines)


def accuracy_lines(metrics: RunMetrics) -> list[str]:
    report = metrics.report()
    if report is None:
        if metrics.labels:
            return [f"no accuracy: no image sits in a sub-folder named after a label ({', '.join(metrics.labels)})"]
        return []
    lines = ["", f"accuracy {report.accuracy:.4f} ({report.scored} images in folders named after the labels"
                 + (f"; {metrics.unlabelled} others not scored)" if metrics.unlabelled else ")")]
    rows = [["class", "precision", "recall", "f1", "support"]]
    for label, scores in report.per_class.items():
        rows.append([label, f"{scores.precision:.4f}", f"{scores.recall:.4f}", f"{scores.f1:.4f}",
                     str(scores.support)])
    lines += _table(rows)
    lines += ["", "confusion matrix (rows: true class, columns: predicted)"]
    lines += _table([["", *report.labels]] +
                    [[label, *map(str, row)] for label, row in zip(report.labels, report.matrix)])
    if metrics.misclassified_total:
        lines += ["", f"misclassified ({metrics.misclassified_total}):"]
        lines += [f"  {path}  true {true} predicted {predicted} {score:.4f}"
                  for path, true, predicted, score in metrics.misclassified]
        hidden = metrics.misclassified_total - len(metrics.misclassified)
        if hidden:
            lines.append(f"  ... and {hidden} more (every result is in OUTPUT)")
    return lines
