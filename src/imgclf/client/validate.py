"""One validation run: wait for the model, stream the folder's images to it in batches with a
bounded number of requests in flight, print a line per image, write every score, report."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from imgclf import contract
from imgclf.batches import run_batch_or_each
from imgclf.client import files, shards
from imgclf.client.base import (
    ClientError,
    ImageResult,
    RequestRejected,
    RequestTimedOut,
    wait_until_available,
)
from imgclf.client.metrics import RunMetrics
from imgclf.client.output import ResultWriter, check_output_path, open_writer
from imgclf.client.report import format_report
from imgclf.pdf import store as pdf_store
from imgclf.progress import Progress
from imgclf.settings import ValidateSettings
from imgclf.tf_errors import tf_error_message

EXIT_OK = 0
EXIT_FAILED = 1        # an image failed, or accuracy is below --min-accuracy
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3   # the server could not be reached or has no such model available
EXIT_INTERRUPTED = 130


def make_client(settings: ValidateSettings):
    if settings.protocol == "rest":
        from imgclf.client.rest import RestClient

        return RestClient(settings.server, settings.model_name, settings.version, settings.label,
                          settings.timeout, settings.retries, pool_size=settings.concurrency)
    if settings.protocol == "grpc":
        # Imported here: tensorflow-serving-api imports TensorFlow, which the REST path must not.
        try:
            from imgclf.client.grpc import GrpcClient
        except ImportError as error:
            raise ClientError(f"--protocol grpc needs the grpc extra (pip install 'imgclf[grpc]'): "
                              f"{error}") from None

        return GrpcClient(settings.grpc_server, settings.model_name, settings.version,
                          settings.label, settings.timeout, settings.retries)
    raise ClientError(f"--protocol {settings.protocol!r}: use rest or grpc")


@dataclass
class BatchOutcome:
    results: list[ImageResult]
    requests: list[tuple[float, int]] = field(default_factory=list)   # (seconds, request bytes)


def predict_batch(client, root: Path, paths: list[Path], read=files.read_file) -> BatchOutcome:
    """Predictions for one batch of files, in the order given.

    When the server rejects the batch (one bad file fails the whole request), each image is sent
    on its own so that the good ones still get predictions and the bad one gets the server's
    message. Errors that concern the whole server (unreachable, model gone) propagate."""
    outcome = BatchOutcome([ImageResult(str(path), files.true_label(path, root)) for path in paths])
    readable: list[tuple[ImageResult, bytes]] = []
    for result, path in zip(outcome.results, paths):
        data, problem = read(path)   # a PDF's bytes are its first page's JPEG
        if problem:
            result.error = problem
        else:
            result.file_bytes = len(data)
            readable.append((result, data))

    def send(group: list[tuple[ImageResult, bytes]]) -> None:
        started = time.perf_counter()
        reply = client.predict([data for _, data in group])
        outcome.requests.append((time.perf_counter() - started, reply.request_bytes))
        for (result, _), prediction in zip(group, reply.predictions):
            result.prediction, result.version = prediction, reply.version

    def failed(item: tuple[ImageResult, bytes], error: BaseException) -> None:
        item[0].error = str(error)

    try:
        run_batch_or_each(readable, send, fall_back_on=(RequestRejected,), on_failure=failed,
                          item_errors=(RequestRejected, RequestTimedOut))
    except RequestTimedOut as error:   # a whole batch timed out: sending each alone would too
        for item in readable:
            failed(item, error)
    return outcome


def image_lines(result: ImageResult, all_classes: bool) -> list[str]:
    """`label score path` lines, as the original tool printed them (every class with --all)."""
    if result.prediction is None:
        return [f"ERROR - {result.path}: {tf_error_message(result.error)}"]
    ranked = result.prediction.ranked() if all_classes else [result.prediction.top]
    return [f"{label} {score:.7f} {result.path}" for label, score in ranked]


class Run:
    def __init__(self, settings: ValidateSettings, stdout: TextIO, stderr: TextIO):
        self.settings = settings
        self.stdout, self.stderr = stdout, stderr
        self.root = Path(settings.dir)
        self.metrics = RunMetrics()
        self.writer: ResultWriter | None = None
        self.output = shards.shard_output(settings.output, settings.shard)   # shard i writes its own file
        self.versions_from_metadata: list[int] = []
        self.failure: str | None = None      # why the run stopped early

    def note(self, message: str) -> None:
        print(message, file=self.stderr, flush=True)

    def execute(self) -> int:
        settings = self.settings
        if not self.root.is_dir():
            self.note(f"imgclf validate: DIR {settings.dir}: no such folder")
            return EXIT_USAGE
        try:
            if self.output:
                check_output_path(self.output)
            client = make_client(settings)
        except ClientError as error:
            self.note(f"imgclf validate: {error}")
            return EXIT_USAGE
        pdfs = pdf_store.for_command(settings.pdf_renderer, settings.pdf_cache, progress=False)
        try:
            return self._execute(client, pdfs)
        finally:
            pdfs.close()
            client.close()

    def _execute(self, client, pdfs) -> int:
        settings = self.settings
        try:
            version = wait_until_available(
                client, settings.wait,
                on_wait=lambda why: self.note(f"waiting up to {settings.wait:g} s for the model: {why}"))
            self.versions_from_metadata.append(client.metadata_version())
        except ClientError as error:
            self.note(f"imgclf validate: {error}")
            return EXIT_UNREACHABLE
        self.note(f"model {settings.model_name} version {version} AVAILABLE at {client.endpoint}")

        try:
            self.writer = open_writer(self.output) if self.output else None
        except OSError as error:
            self.note(f"imgclf validate: OUTPUT {self.output}: {error.strerror or error}")
            return EXIT_USAGE
        wanted = self.settings.progress is not False
        total = files.count_image_files(self.root, settings.shard, with_pdfs=True) if wanted else None
        progress = Progress(total, "validate", "img", enabled=wanted, stream=self.stderr)
        self.metrics = RunMetrics()
        batches = files.iter_batches(files.image_files(self.root, settings.shard, with_pdfs=True), settings.batch)
        outcomes = files.ordered_bounded_map(
            lambda paths: predict_batch(client, self.root, paths, pdfs.image_bytes), batches, settings.concurrency)
        interrupted = False
        try:
            for outcome in outcomes:
                self._take(outcome, progress)
        except ClientError as error:   # unreachable, model gone, contract broken: stop
            self.failure = str(error)
        except KeyboardInterrupt:
            interrupted, self.failure = True, "interrupted"
        finally:
            outcomes.close()
            self.metrics.finish()
            progress.close()
        if self.failure is None:
            try:
                self.versions_from_metadata.append(client.metadata_version())
            except ClientError as error:
                self.failure = f"after the run: {error}"
        saved = self.writer.close(complete=self.failure is None) if self.writer else None
        self._report(client, saved)
        if interrupted:
            return EXIT_INTERRUPTED
        if self.failure is not None:
            self.note(f"imgclf validate: stopped early: {self.failure}")
            return EXIT_UNREACHABLE
        return self._verdict()

    def _take(self, outcome: BatchOutcome, progress: Progress) -> None:
        for seconds, request_bytes in outcome.requests:
            self.metrics.add_request(seconds, request_bytes)
        lines = []
        for result in outcome.results:
            if result.prediction is None:
                self.metrics.add_error()
            else:
                label, score = result.prediction.top
                self.metrics.add_prediction(result.path, result.folder, result.prediction.classes,
                                            label, score, result.file_bytes, result.version)
            if self.writer:
                self.writer.write(result)
            lines += image_lines(result, self.settings.all_classes)
        progress.write("\n".join(lines), file=self.stdout)
        progress.update(len(outcome.results))

    # --- the report -----------------------------------------------------------------------------
    def _report(self, client, saved: Path | None) -> None:
        text = format_report(self.metrics, self.settings, client.endpoint, self.versions_from_metadata,
                             saved, self.failure)
        print(text, file=self.stdout, flush=True)

    def _verdict(self) -> int:
        metrics, settings = self.metrics, self.settings
        code = EXIT_OK
        if metrics.images == 0:
            self.note(f"imgclf validate: no {'/'.join(contract.IMAGE_EXTENSIONS + contract.PDF_EXTENSIONS)} "
                      f"files under {settings.dir}")
            code = EXIT_FAILED
        if metrics.errors:
            self.note(f"imgclf validate: {metrics.errors} of {metrics.images} images failed (lines ERROR)")
            code = EXIT_FAILED
        if settings.min_accuracy is not None:
            report = metrics.report()
            if report is None:
                self.note(f"imgclf validate: --min-accuracy {settings.min_accuracy:g} needs sub-folders "
                          f"of {settings.dir} named after the labels {metrics.labels}")
                code = EXIT_FAILED
            elif report.accuracy < settings.min_accuracy:
                self.note(f"imgclf validate: accuracy {report.accuracy:.4f} is below "
                          f"--min-accuracy {settings.min_accuracy:g}")
                code = EXIT_FAILED
        return code


def run_validation(settings: ValidateSettings, stdout: TextIO | None = None,
                   stderr: TextIO | None = None) -> int:
    return Run(settings, stdout or sys.stdout, stderr or sys.stderr).execute()
