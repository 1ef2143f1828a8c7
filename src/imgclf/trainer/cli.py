"""The flags of `imgclf train`: every TrainSettings field is a flag of the same name
(`--learning-rate`), so the Makefile's variables map one to one. The command itself (train, then
the promotion gate, then publish) is imgclf.rollout.training: the trainer does not publish."""

from __future__ import annotations

import argparse
import logging
import sys

from imgclf.settings import TrainSettings, settings_parser
from imgclf.tf_logging import quiet_tensorflow_logs


def build_parser(command: str = "train") -> argparse.ArgumentParser:
    return settings_parser(
        TrainSettings, command,
        "Train an image classifier on class folders and publish it as the next version. "
        "Defaults live in imgclf/settings.py (TrainSettings).")


def configure_logging() -> None:
    """Warnings (skipped files) and the trainer's own progress notes on stderr; no noise."""
    quiet_tensorflow_logs()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s", stream=sys.stderr)
    logging.getLogger("imgclf").setLevel(logging.INFO)
    # A head batch on cached features takes ~2 ms, so Keras calls any progress bar "slow"; noise.
    logging.getLogger("tensorflow").addFilter(
        lambda record: "is slow compared to the batch time" not in record.getMessage())
