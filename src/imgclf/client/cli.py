"""`imgclf validate DIR [options]`: flags map one to one onto settings.ValidateSettings."""

from __future__ import annotations

import argparse
import sys

from imgclf.settings import ValidateSettings

EPILOG = """\
Prints `label score path` per image (every class with --all), then a summary: images, errors,
throughput, latency p50/p95/p99, the version that answered and, when DIR's sub-folders are named
after the model's labels, accuracy, per-class precision/recall/F1 and the confusion matrix.
Exit status: 0 all good; 1 an image failed or accuracy is below --min-accuracy; 2 bad usage;
3 the server could not be reached or has no such model available.
"""


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text}: give a fraction between 0 and 1 (0.9 for 90%)")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: must be 1 or more")
    return value


def _non_negative(kind):
    def parse(text: str):
        value = kind(text)
        if value < 0:
            raise argparse.ArgumentTypeError(f"{text}: must not be negative")
        return value
    return parse


def _shard(text: str) -> str:
    from imgclf.client.base import ClientError
    from imgclf.client.shards import parse_shard

    if not text.strip():
        return ""          # the whole folder
    try:
        parse_shard(text)
    except ClientError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text.replace(" ", "")


def build_parser(command: str = "validate") -> argparse.ArgumentParser:
    d = ValidateSettings()
    parser = argparse.ArgumentParser(
        prog=f"imgclf {command}", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Send every image under DIR to the model server and report.")
    parser.add_argument("dir", metavar="DIR", help="folder of .jpg/.jpeg/.png/.pdf files, searched recursively; "
                        "sub-folders named after the labels give accuracy")
    parser.add_argument("--server", default=d.server, help=f"REST endpoint (default {d.server})")
    parser.add_argument("--grpc-server", default=d.grpc_server,
                        help=f"gRPC host:port (default {d.grpc_server})")
    parser.add_argument("--protocol", choices=("rest", "grpc"), default=d.protocol,
                        help=f"default {d.protocol}; grpc needs the imgclf[grpc] extra (TensorFlow)")
    parser.add_argument("--model-name", default=d.model_name, help=f"default {d.model_name}")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--version", type=int, default=d.version, help="ask this version")
    which.add_argument("--label", default=d.label, help="ask the version with this label (stable, canary)")
    parser.add_argument("--batch", type=_positive_int, default=d.batch,
                        help=f"images per request (default {d.batch})")
    parser.add_argument("--concurrency", type=_positive_int, default=d.concurrency,
                        help=f"requests in flight (default {d.concurrency})")
    parser.add_argument("--output", default=d.output, help="write every score to this .csv or .jsonl")
    parser.add_argument("--all", dest="all_classes", action="store_true", default=d.all_classes,
                        help="print one line per class, not only the top one")
    parser.add_argument("--min-accuracy", type=_fraction, default=d.min_accuracy,
                        help="exit 1 when accuracy is below this fraction")
    parser.add_argument("--wait", type=_non_negative(float), default=d.wait,
                        help=f"seconds to wait for the model to be AVAILABLE (default {d.wait:g})")
    parser.add_argument("--timeout", type=_non_negative(float), default=d.timeout,
                        help=f"per-request timeout in seconds (default {d.timeout:g})")
    parser.add_argument("--retries", type=_non_negative(int), default=d.retries,
                        help=f"retries with backoff on connection errors and 503/UNAVAILABLE (default {d.retries})")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=d.progress,
                        help="progress bar on stderr (default: when stderr is a terminal)")
    parser.add_argument("--pdf-renderer", default=d.pdf_renderer,
                        help=f"how PDFs under DIR become their first page's image (default {d.pdf_renderer}; "
                             "docs/pdfs.md)")
    parser.add_argument("--pdf-cache", default=d.pdf_cache,
                        help="where rendered pages are kept (default ~/.cache/imgclf/pages)")
    parser.add_argument("--shard", type=_shard, default=d.shard, metavar="i/N",
                        help="send only shard i of N (0 <= i < N) of DIR's files, chosen by a hash of each "
                             "file's path relative to DIR; with --output, writes <name>.shard-<i>-of-<N><ext> "
                             "for `imgclf merge-results` to merge")
    return parser


def parse_settings(argv: list[str], command: str = "validate") -> ValidateSettings:
    return ValidateSettings(**vars(build_parser(command).parse_args(argv)))


def main(argv: list[str], command: str = "validate") -> int:
    from imgclf.client.validate import run_validation

    settings = parse_settings(argv, command)
    return run_validation(settings, sys.stdout, sys.stderr)
