"""`imgclf publish | rollback | pin | unpin | status | clean-staged`: thin commands over the rollout
functions.

Every command takes --models and --model-name like `imgclf train`, and works the same whether the
official tensorflow/serving image or the local server serves the base path. Exit status: 0 done,
1 refused or failed (the message says why), 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import os
import posixpath
import sys

from imgclf import contract, model_store
from imgclf.settings import RolloutSettings, settings_parser


def _parser(command: str) -> argparse.ArgumentParser:
    return settings_parser(RolloutSettings, command, "Defaults live in imgclf/settings.py (RolloutSettings).")


def _say(text: str) -> None:
    print(text, file=sys.stderr)


def run_publish(args, store) -> int:
    from imgclf.rollout.gate import recorded_held_out
    from imgclf.rollout.publish import GateRefused, only_staged, promote

    staged = args.staged or only_staged(store)
    held_out, note = recorded_held_out(staged)
    _say(note)
    try:
        version = promote(store, staged, held_out, args.tolerance, args.force,
                          validate_dir=args.validate or None, say=_say)
    except GateRefused as refused:
        _say(f"imgclf publish: refused: {refused}")
        return 1
    print(version)
    return 0


def run_rollback(args, store) -> int:
    from imgclf.rollout.pinning import pinned_versions, read_models_config
    from imgclf.rollout.publish import rollback

    version, retired = rollback(store, allow_last=args.force)
    remaining = store.versions()
    _say(f"rolled back version {version} to {retired} (nothing deleted); "
         f"the server falls back to {remaining[-1] if remaining else 'nothing'}")
    pinned = pinned_versions(read_models_config(args.models_config), args.model_name)
    if pinned is not None and version in pinned:
        _say(f"warning: {args.models_config} pins versions {pinned}; version {version} can no longer be "
             f"served: `make pin VERSION=…` another one, or `make unpin`")
    return 0


def run_clean_staged(args, store) -> int:
    from imgclf.rollout.publish import clean_staged

    for staged in clean_staged(store, args.older_than, include_sealed=args.sealed):
        _say(f"removed {staged.path} ({'sealed' if staged.sealed else 'incomplete'}, "
             f"unchanged for {staged.age():.0f} s)")
    for staged in store.staged():
        why = (f"changed {staged.age():.0f} s ago, less than --older-than {args.older_than:g} s"
               if staged.age() < args.older_than else "sealed: a candidate the gate refused (--sealed removes it)")
        _say(f"kept {staged.path}: {why}")
    return 0


def serving_base_path(args) -> str:
    """The base path as the server sees it: written into the model config."""
    return posixpath.join(args.serving_models or os.path.abspath(args.models), args.model_name)


def run_pin(args, store) -> int:
    from imgclf.rollout.pinning import pin

    pin(args.models_config, args.model_name, store, serving_base_path(args), args.version, args.canary,
        server=args.server, wait=args.wait, say=_say)
    return 0


def run_unpin(args, store) -> int:
    from imgclf.rollout.pinning import unpin

    unpin(args.models_config, args.model_name, serving_base_path(args), say=_say)
    return 0


# Views that layers above rollout add to `imgclf status` (imgclf.cli composes them; rollout imports
# none of them): each takes the parsed arguments and returns None, or (key, text, JSON-able data).
STATUS_VIEWS: list = []


def run_status(args, store) -> int:
    from imgclf.rollout.status import as_json, gather, render

    status = gather(args.models, args.model_name, args.server, args.models_config, args.docker_service)
    views = [view for view in (add(args) for add in STATUS_VIEWS) if view]
    if args.json:
        print(json.dumps({**as_json(status), **{key: data for key, _, data in views}}, indent=2))
    else:
        print("\n".join([render(status)] + [text for _, text, _ in views]))
    return 0


COMMANDS = {"publish": run_publish, "rollback": run_rollback, "pin": run_pin, "unpin": run_unpin,
            "status": run_status, "clean-staged": run_clean_staged}


def main(argv: list[str], command: str) -> int:
    from imgclf.data_folders import DataError
    from imgclf.rollout.pinning import PinError

    args = _parser(command).parse_args(argv)
    try:
        return COMMANDS[command](args, model_store.open_model(args.models, args.model_name))
    except (contract.ContractError, DataError, model_store.StoreError, PinError) as error:
        _say(f"imgclf {command}: {error}")
        return 1
