"""`imgclf validate DIR [options]`: flags map one to one onto settings.ValidateSettings."""

from __future__ import annotations

import argparse
import sys

from imgclf.settings import ValidateSettings, settings_parser

EPILOG = """\
Prints `label score path` per image (every class with --all), then a summary: images, errors,
throughput, latency p50/p95/p99, the version that answered and, when DIR's sub-folders are named
after the model's labels, accuracy, per-class precision/recall/F1 and the confusion matrix.
Exit status: 0 all good; 1 an image failed or accuracy is below --min-accuracy; 2 bad usage;
3 the server could not be reached or has no such model available.
"""


def build_parser(command: str = "validate") -> argparse.ArgumentParser:
    return settings_parser(
        ValidateSettings, command,
        "Send every image under DIR to the model server and report. "
        "Defaults live in imgclf/settings.py (ValidateSettings).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)


def parse_settings(argv: list[str], command: str = "validate") -> ValidateSettings:
    parser = build_parser(command)
    settings = ValidateSettings(**vars(parser.parse_args(argv)))
    if settings.version is not None and settings.label is not None:
        parser.error("--version and --label: ask by one of them, not both")
    return settings


def main(argv: list[str], command: str = "validate") -> int:
    from imgclf.client.validate import run_validation

    settings = parse_settings(argv, command)
    return run_validation(settings, sys.stdout, sys.stderr)
