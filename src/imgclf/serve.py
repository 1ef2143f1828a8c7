"""`imgclf serve` / `make serve`: the local TF-Serving-compatible server (imgclf.serving), or the
Docker Compose `serving` service (the official tensorflow/serving image, or the stand-in built from
serving/ where it cannot be pulled). SERVING=local|docker chooses; empty means docker when a
Docker engine is reachable and no --model_base_path/--model_config_file was given, else local.

This dispatch lives above both the server and the Docker code, so that the serving package never
imports Docker code.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from imgclf.serving import cli as serving_cli
from imgclf.settings import ServeSettings


def build_parser(command: str = "serve") -> argparse.ArgumentParser:
    parser = serving_cli.build_parser(command)
    parser.description = ("Serve SavedModels as TensorFlow Serving does (REST and gRPC), or run the Docker "
                          "Compose 'serving' service.")
    parser.add_argument("--serving", choices=("", "local", "docker"), default=ServeSettings().serving,
                        help="SERVING: local, docker, or empty = docker when an engine is reachable "
                             "and no --model_base_path/--model_config_file is given")
    return parser


def main(argv: list[str], command: str = "serve") -> int:
    args = build_parser(command).parse_args(argv)
    if args.version:
        return serving_cli.print_version()
    if args.serving != "docker" and not serving_cli.use_allocator(args.allocator):
        return 1
    # Compose serves its own config, so explicit model paths always mean the local server.
    explicit_model = bool(args.model_base_path or args.model_config_file)
    serving_cli.apply_make_defaults(args)
    mode = args.serving or ("docker" if not explicit_model and _engine_reachable() else "local")
    if mode == "docker":
        return run_compose_serving(args)
    return serving_cli.run_local(args)


def _engine_reachable() -> bool:
    from imgclf.stack import engine_reachable

    return engine_reachable()


def run_compose_serving(args: argparse.Namespace) -> int:
    """`docker compose up serving`, passing the Make variables through the environment that the
    compose file interpolates (MODELS, MODEL_NAME, REST_PORT, GRPC_PORT), with the stand-in image
    where the official one cannot be pulled."""
    from imgclf import runner, stack

    env = dict(os.environ)
    if args.models:
        env["MODELS"] = str(Path(args.models).absolute())
    env["MODEL_NAME"] = args.model_name if args.model_name != "default" else ServeSettings().model_name
    env["REST_PORT"] = str(args.rest_api_port)
    env["GRPC_PORT"] = str(args.port)
    root = stack.repository_root()
    try:
        env.update(runner.prepare_images("serving", stack.settings_from_environment(), root))
        command = [*stack.compose_command(), "-f", str(root / "docker-compose.yml"), "up", "serving"]
    except stack.StackError as error:
        print(f"imgclf serve: {error}", file=sys.stderr)
        return 1
    print("imgclf serve: Docker engine reachable, running: " + " ".join(command), file=sys.stderr)
    return subprocess.call(command, env=env, cwd=root)
