"""Writing every image's scores to OUTPUT: CSV or JSON Lines, chosen by the file's extension.

Rows go to `<OUTPUT>.partial` as they arrive and the file takes its final name only when the run
completes, so a run cut short never leaves a file that looks complete."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from imgclf.client.base import ClientError, ImageResult

FIXED_COLUMNS = ["path", "true_label", "predicted", "score", "version", "error"]
PARTIAL_SUFFIX = ".partial"


class ResultWriter:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.partial_path = self.path.with_name(self.path.name + PARTIAL_SUFFIX)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.partial_path, "w", newline="", encoding="utf-8")

    def write(self, result: ImageResult) -> None:
        raise NotImplementedError

    def close(self, complete: bool) -> Path:
        """Returns where the rows are: OUTPUT when complete, OUTPUT.partial otherwise."""
        self._flush_pending()
        self._file.close()
        if complete:
            os.replace(self.partial_path, self.path)
            return self.path
        return self.partial_path

    def _flush_pending(self) -> None:
        pass


def _fixed_fields(result: ImageResult) -> dict:
    label, score = result.prediction.top if result.prediction else ("", "")
    return {"path": result.path, "true_label": result.folder or "", "predicted": label,
            "score": score, "version": "" if result.version is None else result.version,
            "error": result.error or ""}


class CsvWriter(ResultWriter):
    """One row per image; one score column per class, named after the label. The header needs the
    labels, which the first prediction brings, so rows before it (failures) wait in memory."""

    def __init__(self, path):
        super().__init__(path)
        self._writer = csv.writer(self._file)
        self._labels: list[str] | None = None
        self._waiting: list[ImageResult] = []

    def write(self, result: ImageResult) -> None:
        if self._labels is None:
            if result.prediction is None:
                self._waiting.append(result)
                return
            self._start(list(result.prediction.classes))
        self._write_row(result)

    def _start(self, labels: list[str]) -> None:
        self._labels = labels
        self._writer.writerow(FIXED_COLUMNS + labels)
        for waiting in self._waiting:
            self._write_row(waiting)
        self._waiting.clear()

    def _write_row(self, result: ImageResult) -> None:
        scores = dict(zip(result.prediction.classes, result.prediction.scores)) if result.prediction else {}
        fixed = _fixed_fields(result)
        self._writer.writerow([fixed[c] for c in FIXED_COLUMNS] +
                              [scores.get(label, "") for label in self._labels])

    def _flush_pending(self) -> None:
        if self._labels is None:   # no image got a prediction: no score columns
            self._start([])


class JsonLinesWriter(ResultWriter):
    def write(self, result: ImageResult) -> None:
        record = _fixed_fields(result)
        for key in ("predicted", "score", "version", "error", "true_label"):
            if record[key] == "":
                record[key] = None
        record["scores"] = (dict(zip(result.prediction.classes, result.prediction.scores))
                            if result.prediction else None)
        self._file.write(json.dumps(record) + "\n")


WRITERS = {".csv": CsvWriter, ".jsonl": JsonLinesWriter, ".ndjson": JsonLinesWriter}


def check_output_path(path: str) -> None:
    """Fails early, before any request, on an OUTPUT the run could not write."""
    suffix = Path(path).suffix.lower()
    if suffix not in WRITERS:
        raise ClientError(f"OUTPUT {path}: name it .csv or .jsonl (the extension picks the format)")
    if Path(path).is_dir():
        raise ClientError(f"OUTPUT {path}: is a folder")


def open_writer(path: str) -> ResultWriter:
    check_output_path(path)
    return WRITERS[Path(path).suffix.lower()](path)
