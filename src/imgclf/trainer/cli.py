"""`imgclf train`: every TrainSettings field is a flag of the same name (`--learning-rate`), so the
Makefile's variables map one to one. The last line on stdout is the published version's folder."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys

from imgclf.settings import TrainSettings

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def parse_bool(text: str) -> bool:
    value = str(text).strip().lower()
    if value in _TRUE | _FALSE:
        return value in _TRUE
    raise argparse.ArgumentTypeError(f"expected 1/0, true/false or yes/no, got {text!r}")


def optional_float(text: str) -> float | None:
    return None if text.strip().lower() in ("", "none") else float(text)


_PARSERS = {"str": str, "int": int, "float": float, "float | None": optional_float}


def build_parser(command: str = "train") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"imgclf {command}",
        description="Train an image classifier on class folders and publish it as the next version. "
                    "Defaults live in imgclf/settings.py (TrainSettings).")
    defaults = TrainSettings()
    for field in dataclasses.fields(TrainSettings):
        flag = "--" + field.name.replace("_", "-")
        default = getattr(defaults, field.name)
        if field.type == "bool":
            # Both `--fine-tune 1` (what the Makefile passes) and a bare `--force` work.
            parser.add_argument(flag, dest=field.name, type=parse_bool, nargs="?", const=True,
                                default=default, metavar="1|0", help=f"default {int(default)}")
        else:
            parser.add_argument(flag, dest=field.name, type=_PARSERS[field.type], default=default,
                                help=f"default {default!r}")
    return parser


def main(argv: list[str], command: str = "train") -> int:
    arguments = build_parser(command).parse_args(argv)
    settings = TrainSettings(**vars(arguments))
    if not settings.data:
        print(f"imgclf {command}: --data is required (one sub-folder of images per class)", file=sys.stderr)
        return 2
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s", stream=sys.stderr)
    logging.getLogger("imgclf").setLevel(logging.INFO)
    # A head batch on cached features takes ~2 ms, so Keras calls any progress bar "slow"; noise.
    logging.getLogger("tensorflow").addFilter(
        lambda record: "is slow compared to the batch time" not in record.getMessage())
    from imgclf.contract import ContractError
    from imgclf.rollout.publish import PublishError
    from imgclf.trainer.backbone import ModuleError
    from imgclf.trainer.data import DataError
    from imgclf.trainer.pipeline import train

    try:
        result = train(settings)
    except (DataError, ModuleError, ContractError, PublishError) as error:
        # The gate's refusal (a PublishError) says itself where the staged model waits.
        print(f"imgclf {command}: error: {error}", file=sys.stderr)
        return 1
    print(result.version_dir, flush=True)
    return 0
