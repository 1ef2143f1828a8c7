"""`imgclf demo` / `make demo`: the whole loop on one machine, offline and without Docker.

Writes sample pages, trains a model with the scratch backbone and publishes it, starts the local
TF-Serving-compatible server on free ports, validates pages the model never saw, prints the report
and stops the server. Each step prints the command that does it on its own."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from imgclf import contract
from imgclf.model_store import open_model
from imgclf.settings import SCRATCH_MODULE, DemoSettings, ValidateSettings, settings_parser


def build_parser(command: str = "demo") -> argparse.ArgumentParser:
    return settings_parser(DemoSettings, command, __doc__.split("\n\n")[0])


def step(number: int, text: str) -> None:
    print(f"\n== {number}/4 {text}", flush=True)


def write_pages(settings: DemoSettings, workdir: Path) -> tuple[Path, Path]:
    from imgclf.sample_data import write_sample_dataset

    train_dir, held_out_dir = workdir / "pages" / "train", workdir / "pages" / "held-out"
    # Different seeds: the held-out pages are new drawings, not copies of training pages.
    write_sample_dataset(train_dir, per_class=settings.per_class, seed=0)
    write_sample_dataset(held_out_dir, per_class=settings.held_out_per_class, seed=1)
    return train_dir, held_out_dir


def run_demo(settings: DemoSettings) -> int:
    from imgclf.client.validate import EXIT_UNREACHABLE, run_validation
    from imgclf.rollout import training

    started = time.monotonic()
    workdir = Path(settings.workdir)
    models_dir = workdir / "models"
    store = open_model(models_dir)
    base_path = Path(store.location)

    step(1, f"sample pages in {workdir / 'pages'}")
    train_dir, held_out_dir = write_pages(settings, workdir)
    print(f"{settings.per_class} per class in {train_dir}, {settings.held_out_per_class} per class "
          f"in {held_out_dir}")

    train_args = ["--data", str(train_dir), "--module", SCRATCH_MODULE, "--models", str(models_dir)]
    if settings.image_size:
        train_args += ["--image-size", str(settings.image_size)]
    step(2, "train and publish: imgclf train " + " ".join(train_args))
    code = training.main(train_args, command="train")
    if code != 0 or not store.versions():
        print(f"imgclf demo: training failed (exit {code}); see the messages above", file=sys.stderr)
        return code or 1

    from imgclf.serving.process import LocalServer, ServerStartError

    step(3, f"serve {base_path} with the local TF-Serving-compatible server (imgclf serve)")
    try:
        with LocalServer(base_path, contract.DEFAULT_MODEL_NAME) as server:
            print(f"REST {server.rest_url}   gRPC {server.grpc_target}   "
                  f"version {store.latest()} AVAILABLE", flush=True)
            validate = ValidateSettings(dir=str(held_out_dir), server=server.rest_url,
                                        grpc_server=server.grpc_target, protocol=settings.protocol,
                                        output=str(workdir / "results.csv"))
            step(4, f"validate: imgclf validate {held_out_dir} --protocol {settings.protocol} "
                    f"--server {server.rest_url} --output {validate.output}")
            code = run_validation(validate)
    except ServerStartError as error:
        print(f"imgclf demo: the local server did not start: {error}", file=sys.stderr)
        return EXIT_UNREACHABLE
    print(f"\n== done in {time.monotonic() - started:.0f} s; the server is stopped. Models are in "
          f"{models_dir}: `make serve MODELS={models_dir}` serves them again, "
          f"`make validate DIR=...` checks any folder of pages.", flush=True)
    return code


def main(argv: list[str], command: str = "demo") -> int:
    settings = DemoSettings(**vars(build_parser(command).parse_args(argv)))
    return run_demo(settings)
