"""`imgclf train`: train, then the promotion gate, then publish.

The trainer (imgclf.trainer) returns a sealed export staged in the model store; this command prints
its report, takes it through the gate on the held-out split it was trained with (and VALIDATE, when
given) and publishes it. The last line on stdout is the published version's folder. A refused
candidate stays staged, for `make publish FORCE=1` to overrule when the refusal is for accuracy.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from imgclf import model_store
from imgclf.settings import RolloutSettings, SettingsError, TrainSettings


@dataclass
class Published:
    version: int
    version_dir: Path
    base_path: Path
    labels: list[str]
    report: dict
    metadata: dict


def train_and_publish(settings: TrainSettings, say: Callable[[str], None] = lambda text: None) -> Published:
    """Trains, gates and publishes; raises GateRefused (a StoreError) when the gate refuses."""
    from imgclf.trainer.pipeline import train

    return publish_trained(train(settings), settings, say)


def publish_trained(result, settings: TrainSettings, say: Callable[[str], None] = lambda text: None) -> Published:
    """Takes a trainer's staged export (a TrainResult) through the gate and publishes it."""
    from imgclf.rollout.publish import promote

    store = model_store.open_store(result.base_path)
    tolerance = settings.tolerance if settings.tolerance is not None else RolloutSettings().tolerance
    version = promote(store, result.staged, result.held_out, tolerance=tolerance, force=settings.force,
                      validate_dir=settings.validate or None, say=say)
    return Published(version, store.version_path(version), result.base_path, result.labels,
                     result.report, result.metadata)


def root_refused() -> str | None:
    """Where the trainer image asks for it (IMGCLF_REFUSE_ROOT=1), running as root is refused."""
    if os.environ.get("IMGCLF_REFUSE_ROOT") == "1" and os.geteuid() == 0:
        return ("refusing to run as root in the trainer container: run it as the owner of the models "
                "folder (compose: IMGCLF_USER=uid:gid, which `make train` sets; the image's own user "
                "is 10001:10001)")
    return None


def main(argv: list[str], command: str = "train") -> int:
    from imgclf.trainer.cli import build_parser, configure_logging

    settings = TrainSettings(**vars(build_parser(command).parse_args(argv)))
    problem = settings.problem() or root_refused()
    if problem:
        print(f"imgclf {command}: {problem}", file=sys.stderr)
        return 2
    configure_logging()   # before TensorFlow is imported
    from imgclf.contract import ContractError
    from imgclf.data_folders import DataError
    from imgclf.trainer.backbone import ModuleError
    from imgclf.trainer.pipeline import timing_summary, train
    from imgclf.trainer.report import format_report

    try:
        result = train(settings)
        print(format_report(result.report), flush=True)
        print(timing_summary(result.metadata), flush=True)
        published = publish_trained(result, settings, say=lambda text: print(text, file=sys.stderr))
    except (DataError, ModuleError, ContractError, SettingsError, model_store.StoreError) as error:
        # The gate's refusal (a StoreError) says itself where the staged model waits.
        print(f"imgclf {command}: error: {error}", file=sys.stderr)
        return 1
    print(published.version_dir, flush=True)
    return 0
