"""`imgclf e2e` / `make e2e`: the Docker Compose stack end to end on a real Docker engine.

Builds the images (making a local base image where no registry is reachable, and the stand-in for
tensorflow/serving where that cannot be pulled), trains in the trainer container on a generated
dataset, starts `serving` and waits until it reports the version AVAILABLE, validates from the
client container, then trains again while the client container sends continuous traffic and checks
that the new version took over with zero failed requests. Prints a summary with the time of each
phase and the image sizes, and removes its containers whatever happens.

It runs the repository's own docker-compose.yml as a separate compose project, with its own data
and models folders and free ports, so a stack the user is running is left alone.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path


from imgclf import contract, stack
from imgclf.model_store import open_model
from imgclf.model_status import StatusError, fetch_model_status
from imgclf.polling import poll
from imgclf.settings import StackSettings, settings_parser

TRAFFIC_PASSES_AFTER_TAKEOVER = 2   # full passes over the validation images the new version answers
REST_POLL_SECONDS = 0.5


class E2EFailure(RuntimeError):
    """A check of the end-to-end run failed; the message says which and what was seen."""


@dataclass
class Summary:
    phases: dict[str, float] = field(default_factory=dict)   # phase -> seconds, in order
    images: dict[str, float] = field(default_factory=dict)   # image -> MB
    facts: list[str] = field(default_factory=list)

    def timed(self, phase: str):
        return _Timer(self, phase)

    def format(self) -> str:
        width = max(map(len, [*self.phases, *self.images]), default=0)
        lines = ["", "== e2e summary", "phases:"]
        lines += [f"  {name:<{width}}  {seconds:7.1f} s" for name, seconds in self.phases.items()]
        lines += ["images:"] + [f"  {name:<{width}}  {mb:7.0f} MB" for name, mb in self.images.items()]
        return "\n".join(lines + self.facts)


class _Timer:
    def __init__(self, summary: Summary, phase: str):
        self.summary, self.phase = summary, phase

    def __enter__(self):
        self.started = time.monotonic()
        stack.say_to_stderr(f"-- {self.phase}")
        return self

    def __exit__(self, *exc):
        self.summary.phases[self.phase] = time.monotonic() - self.started
        return False


class ComposeProject:
    """The repository's docker-compose.yml as one compose project with its own name and variables."""

    def __init__(self, root: Path, name: str, variables: dict[str, str]):
        self.root, self.name = root, name
        # Both profiles are active so that `down` also removes the trainer's and client's containers.
        self.env = {**os.environ, **variables, "COMPOSE_PROFILES": "train,validate"}
        self.base = [*stack.compose_command(), "-f", str(root / "docker-compose.yml"), "-p", name]

    def run(self, *args: str, timeout: float | None = None) -> subprocess.CompletedProcess:
        """Runs a compose command; its output goes to our stderr as it comes, and is returned."""
        stack.say_to_stderr("$ compose " + " ".join(shlex.quote(a) for a in args))
        process = subprocess.Popen([*self.base, *args], env=self.env, cwd=self.root, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        lines = []
        try:
            for line in process.stdout:
                lines.append(line)
                sys.stderr.write("   | " + line)
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            raise E2EFailure(f"`compose {' '.join(args)}` took longer than {timeout:.0f} s")
        return subprocess.CompletedProcess(process.args, process.returncode, "".join(lines), "")

    def check(self, *args: str, timeout: float | None = None) -> str:
        result = self.run(*args, timeout=timeout)
        if result.returncode != 0:
            raise E2EFailure(f"`compose {' '.join(args)}` failed with exit status {result.returncode}")
        return result.stdout

    def containers(self, client, service: str | None = None) -> list:
        labels = [f"com.docker.compose.project={self.name}"]
        if service:
            labels.append(f"com.docker.compose.service={service}")
        return client.containers.list(all=True, filters={"label": labels})

    def remove(self, client) -> None:
        """Every container of the project, then its network (what `down` leaves of one-off runs)."""
        for container in self.containers(client):
            container.remove(force=True)
        self.run("down", "--remove-orphans", "--timeout", "5")


# --- the run -----------------------------------------------------------------------------------
def build_images(client, settings: StackSettings, root: Path, summary: Summary) -> dict[str, str]:
    """The compose variables naming the images, after building what needs building."""
    say = stack.say_to_stderr
    present = {name for name in (settings.base_image, stack.PUBLIC_BASE_IMAGE, stack.LOCAL_BASE_IMAGE)
               if name and stack.has_image(client, name)}
    with summary.timed("base image"):
        base = stack.resolve_base_image(client, settings.base_image, say)
    how = ("present already" if base in present else
           "made with debootstrap" if base == stack.LOCAL_BASE_IMAGE else "pulled")
    summary.facts.append(f"base image: {base}, {how}")
    standin = stack.needs_standin_serving(client, settings.serving_image, say)
    services = ["trainer", "client"] + (["serving"] if standin else [])
    with summary.timed("builds"):
        variables = stack.build_images(client, root, services, base,
                                       settings.ca_bundle or stack.default_ca_bundle(), say)
    variables.setdefault("SERVING_IMAGE", settings.serving_image or stack.OFFICIAL_SERVING_IMAGE)
    for name in (base, variables["TRAINER_IMAGE"], variables["CLIENT_IMAGE"], variables["SERVING_IMAGE"]):
        summary.images[name] = stack.image_size_mb(client, name)
    if standin:
        summary.facts.append(f"serving image: {variables['SERVING_IMAGE']}, the stand-in "
                             f"({stack.OFFICIAL_SERVING_IMAGE} could not be pulled)")
    return variables


def prepare_folders(work: Path, settings: StackSettings) -> dict[str, str]:
    from imgclf.sample_data import write_sample_dataset

    data = write_sample_dataset(work / "data", per_class=settings.per_class, seed=1)
    validation = write_sample_dataset(work / "validation", per_class=max(4, settings.per_class // 2), seed=2)
    models = work / "models"
    models.mkdir()
    variables = {"DATA": str(data), "DIR": str(validation), "MODELS": str(models)}
    if os.geteuid() == 0:
        # Let the trainer write as the images' own non-root user, as it does by default.
        os.chown(models, stack.IMAGE_UID, stack.IMAGE_UID)
    else:
        variables["IMGCLF_USER"] = f"{os.getuid()}:{os.getgid()}"
    return variables


def train(project: ComposeProject, settings: StackSettings, seed: int, *extra: str) -> int:
    """Trains in the trainer container; returns the version it published (read from the models
    folder: the container's stdout and stderr arrive interleaved)."""
    store = open_model(project.env["MODELS"], project.env["MODEL_NAME"])
    before = store.latest() or 0
    project.check("run", "--rm", "trainer", "--module", "scratch", "--epochs", str(settings.epochs),
                  "--image-size", str(settings.image_size), "--seed", str(seed),
                  "--progress", "0", *extra, timeout=settings.timeout * 3)
    version = store.latest() or 0
    if version <= before:
        raise E2EFailure(f"the trainer exited 0 but published no new version in {store.location}")
    return version


def version_states(rest_url: str, model_name: str) -> dict[int, str]:
    """Version -> state as the server reports them; empty while it does not answer."""
    try:
        return fetch_model_status(rest_url, model_name).states()
    except StatusError:
        return {}


def wait_until_serving(rest_url: str, model_name: str, version: int, timeout: float,
                       retired: int | None = None) -> None:
    """Until `version` is AVAILABLE and, when given, `retired` no longer is."""
    states: dict[int, str] = {}

    def served_alone() -> bool:
        states.clear()
        states.update(version_states(rest_url, model_name))
        return states.get(version) == "AVAILABLE" and (retired is None or states.get(retired) != "AVAILABLE")

    if not poll(served_alone, timeout, REST_POLL_SECONDS):
        raise E2EFailure(f"version {version} not served alone within {timeout:.0f} s; the server said {states}")


def wait_until_healthy(container, timeout: float) -> None:
    def health() -> str:
        container.reload()
        return container.attrs["State"].get("Health", {}).get("Status", "none")

    if not poll(lambda: health() == "healthy", timeout, 1.0):
        raise E2EFailure(f"the serving container's healthcheck says {health()!r} after {timeout:.0f} s")


# The client container's continuous traffic: validation passes one image per request, no retries
# (a failed request must show), until /tmp/stop exists. One line per pass for `traffic_report`.
TRAFFIC_LOOP = r"""
n=0
while [ ! -e /tmp/stop ]; do
  imgclf validate /data --server http://serving:8501 --model-name {model} --batch 1 --concurrency 2 \
    --retries 0 --wait 0 --no-progress > /tmp/pass.txt 2>&1
  rc=$?; n=$((n + 1))
  echo "pass $n rc=$rc $(grep -E '^(images|model version) ' /tmp/pass.txt | tr '\n' ' ')"
  [ $rc -eq 0 ] || tail -n 15 /tmp/pass.txt
done
"""
PASS_LINE = re.compile(r"^pass \d+ rc=(\d+)(.*)$")
PASS_SUMMARY = re.compile(r"images (\d+) +predicted (\d+) .*?model version (.*)$")


@dataclass
class Traffic:
    passes: int = 0
    failed_passes: int = 0        # exit status not 0, or no summary (the client could not run)
    requests: int = 0             # one image per request
    failed_requests: int = 0
    versions: list[str] = field(default_factory=list)   # what each pass's summary named


def traffic_report(log: str) -> Traffic:
    traffic = Traffic()
    for line in log.splitlines():
        match = PASS_LINE.match(line.strip())
        if not match:
            continue
        traffic.passes += 1
        summary = PASS_SUMMARY.search(match.group(2))
        traffic.failed_passes += match.group(1) != "0" or summary is None
        if summary:
            images, predicted, versions = summary.groups()
            traffic.requests += int(images)
            traffic.failed_requests += int(images) - int(predicted)
        traffic.versions.append(summary.group(3).strip() if summary else "")
    return traffic


def completed_passes(container) -> int:
    return traffic_report(container.logs().decode(errors="replace")).passes


def wait_for_passes(container, count: int, timeout: float) -> None:
    def enough() -> bool:
        if completed_passes(container) >= count:
            return True
        container.reload()
        if container.status == "exited":
            raise E2EFailure("the traffic container stopped:\n" + container.logs().decode(errors="replace")[-2000:])
        return False

    if not poll(enough, timeout, 1.0):
        raise E2EFailure(f"fewer than {count} traffic passes in {timeout:.0f} s")


def train_and_watch_rollout(project: ComposeProject, settings: StackSettings, rest_url: str, old: int,
                            summary: Summary) -> int:
    """Trains the next version while watching the models folder and the server, to time the
    training up to the publish and the rollout from the publish until the new version serves alone."""
    model = project.env["MODEL_NAME"]
    store = open_model(project.env["MODELS"], model)
    outcome: dict = {}

    def train_next() -> None:
        try:
            # FORCE: the rollout is what is tested; a tiny retrained model may score a little lower
            # than the first, and the promotion gate would rightly keep it staged.
            outcome["version"] = train(project, settings, 2, "--force", "1")
        except BaseException as error:  # re-raised below, in the caller's thread
            outcome["error"] = error

    stack.say_to_stderr("-- train again (under traffic)")
    trainer = threading.Thread(target=train_next, daemon=True)
    started = time.monotonic()
    trainer.start()
    published_at = None
    deadline = started + settings.timeout * 4
    while time.monotonic() < deadline and "error" not in outcome:
        newest = max(store.versions(), default=old)
        if published_at is None and newest > old:
            published_at = time.monotonic()
            stack.say_to_stderr(f"-- rollout (version {newest} published)")
        states = version_states(rest_url, model) if published_at else {}
        if states.get(newest) == "AVAILABLE" and states.get(old) != "AVAILABLE":
            summary.phases["train again (under traffic)"] = published_at - started
            summary.phases["rollout"] = time.monotonic() - published_at
            break
        time.sleep(REST_POLL_SECONDS / 5)
    trainer.join(timeout=settings.timeout)
    if "error" in outcome:
        raise outcome["error"]
    new = outcome.get("version")
    if new is None or "rollout" not in summary.phases:
        raise E2EFailure(f"no new version served alone in time; the server said {version_states(rest_url, model)}")
    wait_until_serving(rest_url, model, new, settings.timeout, retired=old)   # the trainer's own word
    return new


def rollout_under_traffic(client, project: ComposeProject, settings: StackSettings, rest_url: str,
                          old: int, summary: Summary) -> tuple[int, Traffic]:
    model = project.env["MODEL_NAME"]
    project.check("run", "-d", "--entrypoint", "bash", "client", "-c",
                  TRAFFIC_LOOP.format(model=shlex.quote(model)), timeout=settings.timeout)
    (traffic_container,) = [c for c in project.containers(client, "client") if c.status == "running"]
    wait_for_passes(traffic_container, 1, settings.timeout)
    new = train_and_watch_rollout(project, settings, rest_url, old, summary)
    taken_over_at = completed_passes(traffic_container) + 1   # the pass running now may mix versions
    wait_for_passes(traffic_container, taken_over_at + TRAFFIC_PASSES_AFTER_TAKEOVER, settings.timeout)
    traffic_container.exec_run(["touch", "/tmp/stop"])
    traffic_container.wait(timeout=settings.timeout)
    log = traffic_container.logs().decode(errors="replace")
    traffic = traffic_report(log)
    if traffic.failed_passes or traffic.failed_requests:
        raise E2EFailure(f"{traffic.failed_requests} failed requests, {traffic.failed_passes} failed passes during the "
                         f"rollout:\n{log[-3000:]}")
    after = traffic.versions[taken_over_at:]
    if not after or not all(str(new) in versions and str(old) not in versions for versions in after):
        raise E2EFailure(f"version {new} did not take over the answers: passes after the switch named {after}")
    return new, traffic


def run(client, settings: StackSettings, root: Path, work: Path) -> Summary:
    summary = Summary()
    variables = build_images(client, settings, root, summary)
    model = contract.DEFAULT_MODEL_NAME
    from imgclf.serving.process import free_port

    variables.update(prepare_folders(work, settings), MODEL_NAME=model,
                     REST_PORT=str(free_port()), GRPC_PORT=str(free_port()))
    rest_url = f"http://127.0.0.1:{variables['REST_PORT']}"
    project = ComposeProject(root, f"imgclf-e2e-{os.getpid()}", variables)
    summary.facts.append(f"compose project: {project.name}")
    try:
        with summary.timed("train"):
            first = train(project, settings, 1)
        with summary.timed("first answer"):
            project.check("up", "-d", "serving", timeout=settings.timeout)
            wait_until_serving(rest_url, model, first, settings.timeout)
        (serving,) = project.containers(client, "serving")
        with summary.timed("healthy"):
            wait_until_healthy(serving, settings.timeout)
        with summary.timed("validate (client container)"):
            report = project.check("run", "--rm", "client", "--no-progress", timeout=settings.timeout)
        accuracy = re.search(r"^accuracy ([0-9.]+)", report, re.MULTILINE)
        new, traffic = rollout_under_traffic(client, project, settings, rest_url, first, summary)
        summary.facts += [
            f"versions: {first} then {new}; validation accuracy of {first}: "
            f"{accuracy.group(1) if accuracy else 'not reported'}",
            f"traffic during the rollout: {traffic.requests} requests in {traffic.passes} passes, "
            f"0 failed; version {new} answered the last {TRAFFIC_PASSES_AFTER_TAKEOVER} passes",
        ]
    except E2EFailure:
        for container in project.containers(client, "serving"):
            stack.say_to_stderr("serving container log (tail):\n" + container.logs(tail=40).decode(errors="replace"))
        raise
    finally:
        project.remove(client)
    return summary


# --- command line ------------------------------------------------------------------------------
def build_parser(command: str = "e2e") -> argparse.ArgumentParser:
    return settings_parser(StackSettings, command, __doc__.split("\n\n")[0], settings_command="e2e")


def main(argv: list[str], command: str = "e2e") -> int:
    settings = StackSettings(**vars(build_parser(command).parse_args(argv)))
    client = stack.connect()
    if client is None:
        print(f"imgclf {command}: no Docker engine is reachable (is dockerd running? may you use its "
              f"socket?)", file=sys.stderr)
        return 3
    work = Path(tempfile.mkdtemp(prefix="imgclf-e2e-"))
    try:
        summary = run(client, settings, stack.repository_root(), work)
    except (E2EFailure, stack.StackError) as error:
        print(f"imgclf {command}: FAILED: {error}", file=sys.stderr)
        return 1
    finally:
        if settings.keep:
            print(f"imgclf {command}: work folder kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(summary.format())
    print(f"imgclf {command}: passed")
    return 0
