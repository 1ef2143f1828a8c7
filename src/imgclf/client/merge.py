"""`imgclf merge-results --output OUTPUT [--inputs SHARD_FILE ...]`: the outputs of `imgclf validate
--shard i/N --output OUTPUT` (one per shard, from any number of processes or hosts) merged into OUTPUT.

Without --inputs it takes `<name>.shard-<i>-of-<N><ext>` beside OUTPUT and refuses unless all N
are there and complete. Rows come out in the order one unsharded run writes them (the folder walk's
order), streamed: memory does not grow with the number of files. A file in two shards, or shards
scored by models with different labels, is an error. Prints the merged summary (images, errors,
versions, accuracy when the folders are named after the labels). Exit status: 0 merged; 1 an image
had failed in a shard (merged all the same); 2 the shards cannot be merged.
"""

from __future__ import annotations

import argparse
import csv
import heapq
import json
import sys
from pathlib import Path, PurePath
from typing import Iterator

from imgclf.client.base import ClientError, ImageResult, Prediction
from imgclf.client.metrics import RunMetrics
from imgclf.client.output import FIXED_COLUMNS, check_output_path, open_writer
from imgclf.client.report import accuracy_lines
from imgclf.client.shards import shard_files
from imgclf.settings import MergeSettings, settings_parser


def walk_key(path: str) -> tuple:
    """Sorts paths as data_folders.iter_image_files yields them: in each folder its files (by name)
    before its sub-folders (by name), depth first."""
    parts = PurePath(path).parts
    return tuple((1, part) for part in parts[:-1]) + ((0, parts[-1]),)


def _csv_results(path: Path) -> tuple[list[str], Iterator[ImageResult]]:
    handle = open(path, newline="", encoding="utf-8")
    reader = csv.reader(handle)
    header = next(reader, None)
    if header is None or header[:len(FIXED_COLUMNS)] != FIXED_COLUMNS:
        handle.close()
        raise ClientError(f"{path}: not an output of imgclf validate (header {header})")
    labels = header[len(FIXED_COLUMNS):]

    def rows() -> Iterator[ImageResult]:
        with handle:
            for row in reader:
                fixed = dict(zip(FIXED_COLUMNS, row))
                scores = row[len(FIXED_COLUMNS):]
                prediction = Prediction(tuple(labels), tuple(map(float, scores))) if fixed["predicted"] else None
                yield _result(fixed, prediction)
    return labels, rows()


def _jsonl_results(path: Path) -> tuple[list[str], Iterator[ImageResult]]:
    with open(path, encoding="utf-8") as handle:
        records = (json.loads(line) for line in handle if line.strip())
        first = next((record for record in records if record.get("scores")), None)
    labels = list(first["scores"]) if first else []

    def rows() -> Iterator[ImageResult]:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    record = json.loads(line)
                    scores = record.get("scores")
                    prediction = Prediction(tuple(scores), tuple(scores.values())) if scores else None
                    yield _result({k: "" if record.get(k) is None else record[k] for k in FIXED_COLUMNS}, prediction)
    return labels, rows()


def _result(fixed: dict, prediction: Prediction | None) -> ImageResult:
    version = str(fixed["version"])
    return ImageResult(str(fixed["path"]), fixed["true_label"] or None, prediction, fixed["error"] or None,
                       int(version) if version.isdigit() else None)


READERS = {".csv": _csv_results, ".jsonl": _jsonl_results, ".ndjson": _jsonl_results}


def merge(output: str, inputs: list[Path]) -> tuple[Path, RunMetrics, dict[str, int]]:
    """Merges the inputs into output; returns it, the merged metrics and the rows per input."""
    check_output_path(output)
    suffix = Path(output).suffix.lower()
    opened = []
    for path in inputs:
        if path.suffix.lower() != suffix:
            raise ClientError(f"{path}: a {path.suffix} file cannot merge into a {suffix} output")
        opened.append((path, *READERS[suffix](path)))
    label_sets = {tuple(labels) for _, labels, _ in opened if labels}
    if len(label_sets) > 1:
        raise ClientError(f"the shards were scored with different labels: {sorted(label_sets)}")
    counts = {str(path): 0 for path in inputs}

    def counted(path: Path, rows: Iterator[ImageResult]) -> Iterator[ImageResult]:
        for result in rows:
            counts[str(path)] += 1
            yield result

    merged = heapq.merge(*(counted(p, rows) for p, _, rows in opened), key=lambda r: walk_key(r.path))
    metrics = RunMetrics()
    return write_merged(output, merged, metrics), metrics, counts


def write_merged(output: str, results: Iterator[ImageResult], metrics: RunMetrics) -> Path:
    """Writes the results to output (complete only when all went well) and counts them."""
    writer, previous = open_writer(output), None
    try:
        for result in results:
            if result.path == previous:
                raise ClientError(f"{result.path} is in two shards: were they made with the same --shard N?")
            previous = result.path
            writer.write(result)
            _add(metrics, result)
    except BaseException:
        writer.close(complete=False)
        raise
    metrics.finish()
    return writer.close(complete=True)


def _add(metrics: RunMetrics, result: ImageResult) -> None:
    if result.prediction is None:
        metrics.add_error()
        return
    label, score = result.prediction.top
    metrics.add_prediction(result.path, result.folder, result.prediction.classes, label, score, 0, result.version)


# --- command line ------------------------------------------------------------------------------
def summary(path: Path, metrics: RunMetrics, counts: dict[str, int]) -> str:
    lines = [f"merged {len(counts)} shard outputs into {path}:"]
    lines += [f"  {name}: {rows} rows" for name, rows in counts.items()]
    lines.append(f"images {metrics.images}   predicted {metrics.predicted}   errors {metrics.errors}")
    if metrics.versions:
        lines.append("model version " + ", ".join(f"{v} ({n} images)" for v, n in sorted(metrics.versions.items())))
    return "\n".join(lines + accuracy_lines(metrics))


def build_parser(command: str = "merge-results") -> argparse.ArgumentParser:
    return settings_parser(MergeSettings, command, __doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                           formatter_class=argparse.RawDescriptionHelpFormatter)


def main(argv: list[str], command: str = "merge-results") -> int:
    args = build_parser(command).parse_args(argv)
    try:
        inputs = [Path(p) for p in args.inputs] or shard_files(args.output)
        path, metrics, counts = merge(args.output, inputs)
    except (ClientError, OSError, ValueError) as error:
        print(f"imgclf {command}: {error}", file=sys.stderr)
        return 2
    print(summary(path, metrics, counts))
    return 1 if metrics.errors else 0
