"""The Docker side of the product, shared by `imgclf e2e` and the `make train|validate` runner:
whether an engine is reachable, which compose to call, and building the images.

The images are built through the Docker SDK from the same Dockerfiles and context that
docker-compose.yml names, for one reason compose cannot serve: an optional CA bundle (for machines
behind a TLS-intercepting proxy) goes into the build context as `build-ca.crt` without ever being
written into the checkout. Where no image registry is reachable, the Python base image is made
locally with debootstrap.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from imgclf import __version__
from imgclf.settings import StackSettings, from_environment

PUBLIC_BASE_IMAGE = "python:3.11-slim-bookworm"      # the Dockerfiles' BASE_IMAGE default
LOCAL_BASE_IMAGE = "imgclf-base:bookworm"            # made with debootstrap when that cannot be pulled
OFFICIAL_SERVING_IMAGE = "tensorflow/serving:2.20.0"  # docker-compose.yml's SERVING_IMAGE default
CA_FILE_IN_CONTEXT = "build-ca.crt"                  # the Dockerfiles' optional build input
IMAGE_UID = 10001                                    # the images' non-root user (and group)
DEBOOTSTRAP_PACKAGES = "python3,python3-venv,python3-pip,ca-certificates"
# What a debootstrap root holds that a slim image does not: apt's caches and lists, docs, locales.
DEBOOTSTRAP_TRIM = ("var/cache/apt", "var/lib/apt/lists", "usr/share/doc", "usr/share/man",
                    "usr/share/locale", "usr/share/info")

Say = Callable[[str], None]


def say_to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class StackError(RuntimeError):
    """The Docker side cannot go on; the message says what is missing and how to get it."""


@dataclass(frozen=True)
class ImageSpec:
    service: str      # the compose service
    dockerfile: str   # relative to the repository root, which is the build context
    variable: str     # the compose variable naming the image

    @property
    def default_name(self) -> str:
        # IMGCLF_IMAGE_TAG keeps builds of two checkouts on one engine apart (default: the version).
        return f"imgclf-{self.service}:{os.environ.get('IMGCLF_IMAGE_TAG') or __version__}"


IMAGES = {
    "trainer": ImageSpec("trainer", "trainer/Dockerfile", "TRAINER_IMAGE"),
    "client": ImageSpec("client", "client/Dockerfile", "CLIENT_IMAGE"),
    # The stand-in for tensorflow/serving, used only where the official image cannot be pulled.
    "serving": ImageSpec("serving", "serving/Dockerfile", "SERVING_IMAGE"),
}


def settings_from_environment() -> StackSettings:
    """StackSettings whose image choices come from the variables compose reads too (BASE_IMAGE,
    SERVING_IMAGE, also CA_BUNDLE and RUNNER), so one `make ... SERVING_IMAGE=x` reaches both."""
    return from_environment(StackSettings)


# --- engine and compose ------------------------------------------------------------------------
def connect(timeout: float = 10.0):
    """A Docker SDK client whose engine answered a ping, or None when no engine is reachable."""
    try:
        import docker

        client = docker.from_env(timeout=timeout)
        client.ping()
        return client
    except Exception:  # no SDK, no socket, no permission, no answer: all mean "not reachable"
        return None


def engine_reachable() -> bool:
    client = connect(timeout=5.0)
    if client is None:
        return False
    client.close()
    return True


def compose_command() -> list[str]:
    """`docker compose` (v2) when installed, else `docker-compose` (v1, 1.28+ for profiles)."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise StackError("neither `docker compose` nor `docker-compose` is installed "
                     "(Debian: apt-get install docker-compose)")


def repository_root(start: str | os.PathLike = ".") -> Path:
    """The checkout holding docker-compose.yml: start or one of its parents."""
    start = Path(start).resolve()
    for folder in (start, *start.parents):
        if (folder / "docker-compose.yml").is_file():
            return folder
    raise StackError(f"no docker-compose.yml in {start} or above: run this from the project checkout")


# --- images ------------------------------------------------------------------------------------
def has_image(client, name: str) -> bool:
    import docker.errors

    try:
        client.images.get(name)
        return True
    except docker.errors.ImageNotFound:
        return False


def pull(client, name: str, say: Say) -> bool:
    """Pulls name unless present; False when no registry can give it."""
    import docker.errors

    if has_image(client, name):
        return True
    say(f"pulling {name} ...")
    try:
        client.images.pull(name)
        return True
    except docker.errors.APIError as error:
        say(f"cannot pull {name}: {error.explanation or error}")
        return False


def image_size_mb(client, name: str) -> float:
    return client.images.get(name).attrs["Size"] / 1e6


def make_local_base_image(client, name: str, say: Say) -> None:
    """A Debian bookworm image with Python 3.11, pip and venv, made with debootstrap (needs root and
    the Debian mirror; about a minute) and imported. Apt's caches and docs are left out."""
    if os.geteuid() != 0 or not shutil.which("debootstrap"):
        raise StackError(
            "no image registry is reachable and the local base image cannot be made: that needs root "
            "and debootstrap (apt-get install debootstrap). Or pass BASE_IMAGE=<an image with python3>.")
    repository, _, tag = name.partition(":")
    with tempfile.TemporaryDirectory(prefix="imgclf-base-") as work:
        root = Path(work) / "root"
        say(f"making {name} with debootstrap (bookworm, {DEBOOTSTRAP_PACKAGES}) ...")
        run = subprocess.run(["debootstrap", "--variant=minbase", f"--include={DEBOOTSTRAP_PACKAGES}",
                              "bookworm", str(root)], capture_output=True, text=True)
        if run.returncode != 0:
            raise StackError(f"debootstrap failed ({run.returncode}):\n{_tail(run.stdout + run.stderr)}")
        for relative in DEBOOTSTRAP_TRIM:
            for child in (root / relative).glob("*"):
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        archive = Path(work) / "root.tar"
        subprocess.run(["tar", "-C", str(root), "-cf", str(archive), "."], check=True)
        client.api.import_image_from_file(str(archive), repository=repository, tag=tag or "latest",
                                          changes=["ENV LANG=C.UTF-8"])
    say(f"made {name} ({image_size_mb(client, name):.0f} MB)")


def resolve_base_image(client, requested: str, say: Say) -> str:
    """requested when given; else the public Python image when present or pullable; else the
    locally made one (reused when an earlier run made it)."""
    if requested:
        if not pull(client, requested, say):
            raise StackError(f"BASE_IMAGE {requested} is neither present nor pullable")
        return requested
    if pull(client, PUBLIC_BASE_IMAGE, say):
        return PUBLIC_BASE_IMAGE
    if not has_image(client, LOCAL_BASE_IMAGE):
        make_local_base_image(client, LOCAL_BASE_IMAGE, say)
    else:
        say(f"using the local base image {LOCAL_BASE_IMAGE} made earlier")
    return LOCAL_BASE_IMAGE


def needs_standin_serving(client, requested: str, say: Say) -> bool:
    """Whether the serving image must be built from serving/Dockerfile: asked for by name, or the
    official image is wanted but cannot be pulled."""
    if requested and requested == IMAGES["serving"].default_name:
        return True
    return not pull(client, requested or OFFICIAL_SERVING_IMAGE, say)


def default_ca_bundle() -> str:
    """The CA bundle pip trusts on this machine, which the build stages then need too: $PIP_CERT,
    else pip's configured `cert` (e.g. /etc/pip.conf); "" when pip uses its own."""
    candidate = os.environ.get("PIP_CERT", "")
    if not candidate:
        listing = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True)
        for line in listing.stdout.splitlines():   # global.cert='/etc/ssl/certs/ca-certificates.crt'
            key, _, value = line.partition("=")
            if key.endswith(".cert") and not key.startswith(":env:"):
                candidate = value.strip("'\"")
    return candidate if candidate and Path(candidate).is_file() else ""


def build_context(root: Path, spec: ImageSpec, ca_bundle: str):
    """The build context as docker would send it (.dockerignore applied), plus the CA bundle under
    its context name when given. Returns an open temporary file."""
    from docker.utils.build import create_archive, exclude_paths

    ignore_file = root / ".dockerignore"
    patterns = []
    if ignore_file.is_file():
        lines = (line.strip() for line in ignore_file.read_text().splitlines())
        patterns = [line for line in lines if line and not line.startswith("#")]
    extra = []
    if ca_bundle:
        extra.append((CA_FILE_IN_CONTEXT, Path(ca_bundle).read_text()))
    files = sorted(exclude_paths(str(root), patterns, dockerfile=spec.dockerfile))
    return create_archive(str(root), files=files, extra_files=extra)


def build_image(client, root: Path, spec: ImageSpec, name: str, base_image: str, ca_bundle: str,
                say: Say) -> None:
    """Builds one image, showing each Dockerfile step; on failure the error and the last output."""
    import docker.errors

    started = time.monotonic()
    say(f"building {name} from {spec.dockerfile} (base {base_image}"
        f"{', extra CA bundle' if ca_bundle else ''}) ...")
    output: list[str] = []
    with build_context(root, spec, ca_bundle) as context:
        try:
            stream = client.api.build(fileobj=context, custom_context=True, dockerfile=spec.dockerfile,
                                      tag=name, buildargs={"BASE_IMAGE": base_image}, rm=True,
                                      forcerm=True, decode=True)
            for chunk in stream:
                if "error" in chunk:
                    raise StackError(f"building {name} failed: {chunk['error'].strip()}\n{_tail(''.join(output))}")
                text = chunk.get("stream", "")
                output.append(text)
                if text.startswith("Step "):
                    say("  " + text.strip())
        except docker.errors.APIError as error:
            raise StackError(f"building {name} failed: {error.explanation or error}") from error
    say(f"built {name} in {time.monotonic() - started:.0f} s ({image_size_mb(client, name):.0f} MB)")


_TERMINAL_CODES = re.compile(r"\x1b\[[0-9;]*m")


def build_images(client, root: Path, services: list[str], base_image: str, ca_bundle: str,
                 say: Say) -> dict[str, str]:
    """Builds the services' images; returns the compose variables that name them."""
    variables = {"BASE_IMAGE": base_image}
    for service in services:
        spec = IMAGES[service]
        build_image(client, root, spec, spec.default_name, base_image, ca_bundle, say)
        variables[spec.variable] = spec.default_name
    return variables


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(_TERMINAL_CODES.sub("", text).strip().splitlines()[-lines:])
