"""The flags of `imgclf train`: every TrainSettings field is a flag of the same name
(`--learning-rate`), so the Makefile's variables map one to one. The command itself (train, then
the promotion gate, then publish) is imgclf.rollout.training: the trainer does not publish."""

from __future__ import annotations

import argparse
import logging
import sys

from imgclf.settings import TrainSettings, add_settings_flags
from imgclf.tf_logging import quiet_tensorflow_logs


def build_parser(command: str = "train") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"imgclf {command}",
        description="Train an image classifier on class folders and publish it as the next version. "
                    "Defaults live in imgclf/settings.py (TrainSettings).")
    add_settings_flags(parser, TrainSettings)
    return parser


def settings_problem(settings: TrainSettings) -> str | None:
    """What is wrong with the settings before anything loads, naming the flag; None when nothing."""
    if not settings.data:
        return "--data is required (one sub-folder of images per class)"
    if settings.layout_grid < 0:
        return f"--layout-grid {settings.layout_grid}: must be 0 (off) or a grid side such as 32"
    if not 0.0 <= settings.layout_weight <= 1.0:
        return f"--layout-weight {settings.layout_weight}: must lie between 0 and 1"
    if settings.decode_parallelism < 1:
        return f"--decode-parallelism {settings.decode_parallelism}: must be 1 or more"
    return None


def configure_logging() -> None:
    """Warnings (skipped files) and the trainer's own progress notes on stderr; no noise."""
    quiet_tensorflow_logs()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s", stream=sys.stderr)
    logging.getLogger("imgclf").setLevel(logging.INFO)
    # A head batch on cached features takes ~2 ms, so Keras calls any progress bar "slow"; noise.
    logging.getLogger("tensorflow").addFilter(
        lambda record: "is slow compared to the batch time" not in record.getMessage())
