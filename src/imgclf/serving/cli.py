"""The local TF-Serving-compatible server's command line (`imgclf serve --serving=local`; the
top-level imgclf.serve decides between it and the Docker Compose `serving` service).

Takes tensorflow_model_server's flags (see flags.py) plus conveniences for the Makefile:
--models DIR (the folder the container sees as /models: --model_base_path becomes DIR/MODEL_NAME
and config base paths under /models map into DIR), --models_config (serving/models.config, used as
compose uses it) and --host (default 127.0.0.1).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from imgclf.serving import allocator
from imgclf.serving.flags import add_model_server_flags
from imgclf.settings import ServeSettings, add_setting_flag, session_config_file

log = logging.getLogger("imgclf.serve")


def build_parser(command: str = "serve") -> argparse.ArgumentParser:
    defaults = ServeSettings()
    parser = argparse.ArgumentParser(
        prog=f"imgclf {command}",
        description="Serve SavedModels as TensorFlow Serving does (REST and gRPC).",
    )
    conveniences = parser.add_argument_group("conveniences (Make variables)")
    conveniences.add_argument("--models", default=None,
                              help=f"MODELS: folder that holds <model_name>/<version>/ and stands for the "
                                   f"container's /models (Make default {defaults.models})")
    conveniences.add_argument("--host", default=defaults.host,
                              help="HOST: address to bind (default %(default)s; 0.0.0.0 to accept other machines)")
    conveniences.add_argument("--models_config", "--models-config", dest="models_config",
                              default=defaults.models_config,
                              help="MODELS_CONFIG: used when neither --model_base_path nor --model_config_file "
                                   "is given and it lists the model (default %(default)s)")
    add_setting_flag(conveniences, ServeSettings, "allocator")
    add_model_server_flags(parser)
    # The REST port defaults to 8501 as in the official image's entrypoint; the model name is
    # decided in main() (image_classifier with --models, else tensorflow_model_server's "default").
    parser.set_defaults(rest_api_port=defaults.rest_port, port=defaults.grpc_port, model_name=None)
    return parser


def main(argv: list[str], command: str = "serve") -> int:
    args = build_parser(command).parse_args(argv)
    if args.version:
        return print_version()
    if not use_allocator(args.allocator):
        return 1
    apply_make_defaults(args)
    return run_local(args)


def use_allocator(choice: str) -> bool:
    """Re-execute under the allocator asked for (before TensorFlow is imported); False, with the
    reason printed, when it cannot be had."""
    try:
        allocator.reexecute_with(choice)
    except allocator.AllocatorError as error:
        print(f"imgclf serve: {error}", file=sys.stderr)
        return False
    return True


def print_version() -> int:
    from imgclf.serving.app import version_text

    print(version_text())
    return 0


def apply_make_defaults(args: argparse.Namespace) -> None:
    """Without --model_base_path or --model_config_file, serve MODELS/MODEL_NAME the way the compose
    stack does: the sessions' ConfigProto of serving/session.config, and MODELS_CONFIG (re-read every
    few seconds, so pins apply) when it lists the model, with the monitoring config; otherwise the
    model's base path under MODELS."""
    defaults = ServeSettings()
    explicit = bool(args.model_base_path or args.model_config_file)
    if not explicit and not args.models:
        args.models = defaults.models
    if args.model_name is None:
        args.model_name = defaults.model_name if args.models else "default"
    if explicit:
        return
    if not args.tensorflow_session_config_file:
        args.tensorflow_session_config_file = session_config_file(defaults.session_config)
    if config_lists_model(args.models_config, args.model_name, args.models):
        args.model_config_file = args.models_config
        if not args.model_config_file_poll_wait_seconds:
            args.model_config_file_poll_wait_seconds = defaults.models_config_poll_seconds
        if not args.monitoring_config_file and Path(defaults.monitoring_config).is_file():
            args.monitoring_config_file = defaults.monitoring_config


def config_lists_model(path: str, model_name: str, models_root: str) -> bool:
    if not path or not Path(path).is_file():
        return False
    from imgclf.serving.config import ConfigError, read_model_server_config

    try:
        specs = read_model_server_config(path, models_root=models_root)
    except ConfigError as error:
        log.warning("ignoring %s: %s", path, error)
        return False
    return any(spec.name == model_name for spec in specs)


# --- local -------------------------------------------------------------------------------------
def run_local(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname).1s %(name)s] %(message)s")
    from imgclf.serving.app import LocalModelServer, StartupError

    log.info("Memory allocator: %s", allocator.in_use())
    try:
        server = LocalModelServer.from_args(args)
        server.start()
    except StartupError as error:
        print(f"imgclf serve: {error}", file=sys.stderr)
        return 1
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    server.stop()
    return 0


if __name__ == "__main__":      # how LocalServer starts it: the serving package's own command line
    sys.exit(main(sys.argv[1:]))
