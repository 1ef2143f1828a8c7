"""`make train` and `make validate`: through the Docker Compose stack when a Docker engine is
reachable, in this Python environment otherwise; RUNNER=docker|local decides instead (RUNNER=swarm:
one-off jobs on a Docker Swarm, which imgclf.cli adds from imgclf.swarm.jobs).

    imgclf run [--runner docker|local|swarm] train|validate [the command's own flags]

With Docker, host paths among the flags become mounts (DATA, MODELS and DIR through the compose
file's variables, a local MODULE, CACHE_DIR, LOG_DIR, VALIDATE and OUTPUT's folder as extra mounts)
and every other flag goes to the container unchanged. The image is (re)built first: layer caching
makes that a matter of seconds when nothing changed, and it never runs stale code.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from imgclf import contract, stack
from imgclf.settings import StackSettings, TrainSettings, settings_parser

# Runners that layers above add (imgclf.cli composes them in): name -> main(target, flags).
EXTRA_RUNNERS: dict = {}
COMMANDS = ("train", "validate")


class Invocation:
    """A compose `run` being put together: variables, extra mounts and the flags for the container."""

    def __init__(self) -> None:
        self.variables: dict[str, str] = {}
        self.mounts: list[str] = []
        self.flags: list[str] = []

    def mount(self, host_path: str, container_path: str, flag: str, read_only: bool = True) -> None:
        self.mounts += ["-v", f"{Path(host_path).resolve()}:{container_path}{':ro' if read_only else ''}"]
        self.flags += [flag, container_path]


def owner(path: Path) -> str:
    """uid:gid owning path, so that what a container writes there belongs to the same user."""
    status = path.stat()
    return f"{status.st_uid}:{status.st_gid}"


def writable_folder(path: Path, what: str, inside: tuple[str, ...] = ()) -> str:
    """The non-root uid:gid a container writes `path` (and the given folders inside it, where they
    exist) as: its owner. A folder made here by root is given to the images' own user; an existing
    one owned by root is refused with the fix: the trainer and client containers never run as root."""
    if not path.exists():
        path.mkdir(parents=True)
        if os.geteuid() == 0:
            os.chown(path, stack.IMAGE_UID, stack.IMAGE_UID)
    for folder in [path, *(path / name for name in inside if (path / name).exists())]:
        if folder.stat().st_uid == 0:
            raise stack.StackError(
                f"{what}: {folder} is owned by root, and the containers never run as root. Give it to a "
                f"non-root user: `chown -R {stack.IMAGE_UID}:{stack.IMAGE_UID} {path}` (the images' own user), "
                f"or `chown -R $USER {path}` and run make as that user; or use RUNNER=local")
    return owner(path)


def train_invocation(argv: list[str]) -> Invocation:
    paths = argparse.ArgumentParser(prog="imgclf train", add_help=False)
    for flag in ("--data", "--models", "--module", "--cache-dir", "--log-dir", "--validate", "--model-name",
                 "--pdf-cache"):
        paths.add_argument(flag)
    known, rest = paths.parse_known_args(argv)
    if not known.data:
        raise stack.StackError("train: --data is required (one sub-folder of images per class)")
    models = Path(known.models or TrainSettings().models)
    model_name = contract.validate_model_name(known.model_name or TrainSettings().model_name)
    user = writable_folder(models, "MODELS", inside=(model_name, ".cache", ".logs"))
    invocation = Invocation()
    invocation.variables.update(DATA=str(Path(known.data).resolve()), MODELS=str(models.resolve()),
                                IMGCLF_USER=user)
    if known.model_name:
        invocation.variables["MODEL_NAME"] = contract.validate_model_name(known.model_name)
    if known.module and Path(known.module).exists():
        invocation.mount(known.module, "/module", "--module")
    elif known.module:
        invocation.flags += ["--module", known.module]   # a TF Hub handle, a URL or "scratch"
    for flag, inside in (("cache_dir", "/cache"), ("log_dir", "/logs"), ("pdf_cache", "/pdf-cache")):
        if getattr(known, flag):
            folder_user = writable_folder(Path(getattr(known, flag)), flag.upper())
            if folder_user != user:
                raise stack.StackError(f"{flag.upper()} {getattr(known, flag)} belongs to {folder_user}, MODELS to "
                                       f"{user}: the trainer writes both as one user; give them one owner")
            invocation.mount(getattr(known, flag), inside, "--" + flag.replace("_", "-"), read_only=False)
    if known.validate:
        invocation.mount(known.validate, "/validate", "--validate")
    invocation.flags += rest
    return invocation


def validate_invocation(argv: list[str]) -> Invocation:
    paths = argparse.ArgumentParser(prog="imgclf validate", add_help=False)
    paths.add_argument("dir")
    paths.add_argument("--output")
    paths.add_argument("--model-name")
    paths.add_argument("--pdf-cache")
    known, rest = paths.parse_known_args(argv)
    invocation = Invocation()
    invocation.variables["DIR"] = str(Path(known.dir).resolve())
    writers = set()   # the one non-root user the client writes its folders as
    if known.pdf_cache:   # rendered pages outlive the container
        writers.add(writable_folder(Path(known.pdf_cache), "PDF_CACHE"))
        invocation.mount(known.pdf_cache, "/pdf-cache", "--pdf-cache", read_only=False)
    if known.model_name:
        invocation.variables["MODEL_NAME"] = contract.validate_model_name(known.model_name)
    if known.output:
        folder = Path(known.output).resolve().parent
        writers.add(writable_folder(folder, "OUTPUT's folder"))
        invocation.mounts += ["-v", f"{folder}:/output"]
        invocation.flags += ["--output", f"/output/{Path(known.output).name}"]
    if len(writers) > 1:
        raise stack.StackError(f"PDF_CACHE and OUTPUT's folder belong to different users ({', '.join(sorted(writers))}): "
                               f"the client writes both as one user; give them one owner")
    if writers:
        invocation.variables["IMGCLF_USER"] = writers.pop()
    invocation.flags += rest
    return invocation


def prepare_images(service: str, settings: StackSettings, root: Path) -> dict[str, str]:
    """Builds the service's image (cached layers make this quick) and, for the client and serving,
    makes sure `serving` has an image: the official one, or the stand-in where that cannot be pulled.
    Returns the compose variables that name the images."""
    client = stack.connect()
    if client is None:
        raise stack.StackError("no Docker engine is reachable (RUNNER=local runs without one)")
    say = stack.say_to_stderr
    base = stack.resolve_base_image(client, settings.base_image, say)
    services = [] if service == "serving" else [service]
    if service in ("client", "serving") and stack.needs_standin_serving(client, settings.serving_image, say):
        services.append("serving")
    ca_bundle = settings.ca_bundle or stack.default_ca_bundle()
    return stack.build_images(client, root, services, base, ca_bundle, say)


def run_in_docker(command: str, argv: list[str], settings: StackSettings) -> int:
    service = {"train": "trainer", "validate": "client"}[command]
    invocation = train_invocation(argv) if command == "train" else validate_invocation(argv)
    root = stack.repository_root()
    variables = {**prepare_images(service, settings, root), **invocation.variables}
    compose = [*stack.compose_command(), "-f", str(root / "docker-compose.yml")]
    env = {**os.environ, **variables}
    lines = [[*compose, "run", "--rm", *invocation.mounts, service, *invocation.flags]]
    if service == "client":
        # `up` first: `run` would start a stopped `serving` with its old settings (ports, models,
        # image), where `up` recreates it when they changed. The client waits for the model itself.
        lines = [[*compose, "up", "-d", "serving"],
                 [*compose, "run", "--rm", "--no-deps", *invocation.mounts, service, *invocation.flags]]
    for line in lines:
        stack.say_to_stderr("imgclf run: " + " ".join(line))
        status = run_showing_host_paths(line, env, root, {"/models": variables.get("MODELS", "")})
        if status != 0:
            return status
    return 0


def run_showing_host_paths(command: list[str], env: dict, cwd: Path, mounts: dict[str, str]) -> int:
    """Runs command, passing its stdout through with container paths of the given mounts turned
    back into host paths: `make train` ends by printing the published version's path, and the user
    wants the one on their disk, not /models/... inside the container."""
    with subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.PIPE, text=True, bufsize=1) as process:
        for text in process.stdout:
            print(to_host_path(text, mounts), end="", flush=True)
    return process.returncode


def to_host_path(text: str, mounts: dict[str, str]) -> str:
    for inside, outside in mounts.items():
        if outside and (text == inside or text.startswith(inside + "/")):
            return outside + text[len(inside):]
    return text


def choose_runner(requested: str) -> str:
    if requested:
        return requested
    return "docker" if stack.engine_reachable() else "local"


def run_locally(target: str, flags: list[str]) -> int:
    if target == "train":
        from imgclf.rollout import training as cli
    else:
        from imgclf.client import cli
    return int(cli.main(flags, command=target) or 0)


def build_parser(command: str = "run") -> argparse.ArgumentParser:
    parser = settings_parser(StackSettings, command, __doc__.split("\n\n")[0], settings_command="run")
    parser.add_argument("target", choices=COMMANDS)
    parser.add_argument("flags", nargs=argparse.REMAINDER)
    return parser


def main(argv: list[str], command: str = "run") -> int:
    args = build_parser(command).parse_args(argv)
    runner = choose_runner(args.runner)
    if runner in EXTRA_RUNNERS:   # e.g. swarm: one-off jobs on the swarm the stack runs on
        return EXTRA_RUNNERS[runner](args.target, args.flags)
    if runner == "local":
        return run_locally(args.target, args.flags)
    try:
        return run_in_docker(args.target, args.flags, stack.settings_from_environment())
    except (stack.StackError, contract.ContractError) as error:
        print(f"imgclf {command}: {error}", file=sys.stderr)
        return 1
