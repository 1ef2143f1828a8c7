"""The serving stack on a Docker Swarm: deploy, status, scale, down, and one-off jobs.

    imgclf swarm-deploy | swarm-status | swarm-down [options]    (make swarm-deploy | ...)

The Docker engine asked is the one DOCKER_HOST names: a manager of the swarm. Deploying runs the
standard tools on the repository's files: `docker stack deploy` with deploy/swarm/stack.yml (the
`serving` replicas, the shared models volume, the attachable overlay network) and compose with
deploy/swarm/balancer.yml (HAProxy on this manager, its ports on BIND). It then waits until every
replica serves the same version. Everything else goes through the Docker SDK.

A replica is asked directly, not through the balancer, from inside the balancer's container: it is
on the overlay network that the replicas' addresses belong to, and it has bash, whose /dev/tcp
makes an HTTP request without any tool the official images lack.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from imgclf import __version__, contract, stack
from imgclf.settings import SwarmSettings, settings_parser, knobs

STACK_FILE = Path("deploy") / "swarm" / "stack.yml"
BALANCER_FILE = Path("deploy") / "swarm" / "balancer.yml"
BALANCER_CONTEXT = Path("deploy") / "balancer"
SERVICE = "serving"
MODELS_CONFIG = Path(".serving") / "models.config"   # in the shared models folder: `make pin` edits it
MODEL_STATUS = "/v1/models/{model}"
METRICS = "/monitoring/prometheus/metrics"
POLL_SECONDS = 1.0
Say = stack.Say


class SwarmError(RuntimeError):
    """The swarm cannot do what was asked; the message says what is missing or what it saw."""


# --- the engine and the files' variables --------------------------------------------------------
def manager(timeout: float = 30.0):
    """A Docker SDK client of a swarm manager (DOCKER_HOST), or SwarmError saying why not."""
    client = stack.connect(timeout=timeout)
    if client is None:
        raise SwarmError("no Docker engine is reachable (DOCKER_HOST names a manager of the swarm)")
    swarm = client.info().get("Swarm", {})
    if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
        client.close()
        raise SwarmError("this Docker engine is not a swarm manager (`docker swarm init`, or point "
                         "DOCKER_HOST at a manager)")
    return client


def settings_from_environment(**given) -> SwarmSettings:
    """SwarmSettings whose `environment` fields come from the variables of their Make names (STACK,
    NETWORK, MODELS, TRAINER_IMAGE, CLIENT_IMAGE, SHARDS, WAIT), as Make passes them to a RUNNER=swarm
    job, then `given`."""
    values = {}
    for knob in knobs(SwarmSettings):
        text = os.environ.get(knob.name.upper())
        if knob.meta.get("environment") and text:
            values[knob.name] = {"int": int, "float": float}.get(knob.type, str)(text)
    return SwarmSettings(**{**values, **given})


def default_image(kind: str) -> str:
    return f"imgclf-{kind}:{os.environ.get('IMGCLF_IMAGE_TAG') or __version__}"


def models_volume(settings: SwarmSettings) -> dict[str, str]:
    """The local volume driver's options for the shared models folder: an NFS mount each engine
    makes itself, or a bind of the path where every node mounts the shared filesystem."""
    if settings.nfs:
        server, _, export = settings.nfs.partition(":")
        if not server or not export.startswith("/"):
            raise SwarmError(f"NFS {settings.nfs!r}: give server:/export/path")
        return {"type": "nfs", "o": f"addr={server},{settings.nfs_options}", "device": f":{export}"}
    return {"type": "none", "o": "bind", "device": str(Path(settings.models_device or settings.models).resolve())}


def variables(settings: SwarmSettings) -> dict[str, str]:
    """What deploy/swarm/stack.yml and balancer.yml read from the environment."""
    volume = models_volume(settings)
    return {
        "REPLICAS": str(settings.replicas), "MODEL_NAME": contract.validate_model_name(settings.model_name),
        "SERVING_IMAGE": settings.serving_image or stack.OFFICIAL_SERVING_IMAGE,
        "BALANCER_IMAGE": settings.balancer_image or default_image("balancer"),
        "MODELS_VOLUME_TYPE": volume["type"], "MODELS_VOLUME_OPTIONS": volume["o"],
        "MODELS_VOLUME_DEVICE": volume["device"], "SERVING_CPUS": settings.serving_cpus,
        "SERVING_MEMORY": settings.serving_memory, "SERVING_CPUS_RESERVED": settings.serving_cpus_reserved,
        "SERVING_MEMORY_RESERVED": settings.serving_memory_reserved, "NETWORK": settings.network, "BIND": settings.bind,
        "REST_PORT": str(settings.rest_port), "GRPC_PORT": str(settings.grpc_port),
        "BALANCER_MONITOR_PORT": str(settings.monitor_port),
    }


def service_name(settings: SwarmSettings) -> str:
    return f"{settings.stack}_{SERVICE}"


def balancer_project(settings: SwarmSettings) -> str:
    return f"{settings.stack}-balancer"


def run_tool(command: list[str], settings: SwarmSettings, root: Path, say: Say) -> str:
    """Runs docker/compose with the files' variables; its output goes to say; SwarmError on failure."""
    say("$ " + " ".join(command))
    result = subprocess.run(command, cwd=root, env={**os.environ, **variables(settings)},
                            capture_output=True, text=True)
    for line in (result.stdout + result.stderr).splitlines():
        say("   | " + line)
    if result.returncode != 0:
        raise SwarmError(f"`{' '.join(command[:3])} ...` failed with exit status {result.returncode}")
    return result.stdout


# --- deploy ------------------------------------------------------------------------------------
def seed_models_config(settings: SwarmSettings, say: Say) -> Path:
    """MODELS/.serving/models.config, the config every replica polls, written (serve the highest
    version) when missing; an existing one (a pin) is kept."""
    from imgclf.rollout.pinning import unpin

    path = Path(settings.models) / MODELS_CONFIG
    if not path.exists():
        if not Path(settings.models).is_dir():
            raise SwarmError(f"MODELS {settings.models}: no such folder (the shared models folder, "
                             f"as this host mounts it)")
        unpin(path, settings.model_name, f"/models/{settings.model_name}", say=say)
    return path


def ensure_balancer_image(client, settings: SwarmSettings, root: Path, say: Say) -> str:
    """The balancer's image on this manager (the only node that runs it): built from
    deploy/balancer when it is the default name and missing."""
    name = settings.balancer_image or default_image("balancer")
    if stack.has_image(client, name) or (settings.balancer_image and stack.pull(client, name, say)):
        return name
    base = stack.resolve_base_image(client, stack.settings_from_environment().base_image, say)
    spec = stack.ImageSpec("balancer", "Dockerfile", "BALANCER_IMAGE")
    stack.build_image(client, root / BALANCER_CONTEXT, spec, name, base, "", say)
    return name


def deploy(settings: SwarmSettings, root: Path, say: Say) -> "SwarmStatus":
    client = manager()
    try:
        ensure_balancer_image(client, settings, root, say)
        seed_models_config(settings, say)
        run_tool(["docker", "stack", "deploy", "--with-registry-auth", "-c", str(STACK_FILE), settings.stack],
                 settings, root, say)
        run_tool([*stack.compose_command(), "-f", str(BALANCER_FILE), "-p", balancer_project(settings),
                  "up", "-d"], settings, root, say)
        return wait_until_converged(client, settings, settings.replicas, settings.wait, say)
    finally:
        client.close()


def down(settings: SwarmSettings, root: Path, say: Say) -> None:
    """Removes the balancer and the stack, and waits until the network is gone. The shared models
    folder is untouched; each node keeps its `models` volume definition (a mount, no data)."""
    client = manager()
    try:
        run_tool([*stack.compose_command(), "-f", str(BALANCER_FILE), "-p", balancer_project(settings),
                  "down", "--timeout", "5"], settings, root, say)
        run_tool(["docker", "stack", "rm", settings.stack], settings, root, say)
        deadline = time.monotonic() + 120
        while client.networks.list(names=[settings.network]) and time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)
    finally:
        client.close()


def scale(settings: SwarmSettings, replicas: int, root: Path, say: Say) -> None:
    """`docker service scale`: only the replica count changes. (The SDK's Service.scale() sends the
    task template back with defaults filled in, which swarm takes for a new template: it replaces
    every task.)"""
    run_tool(["docker", "service", "scale", "--detach", f"{service_name(settings)}={replicas}"], settings, root, say)


# --- asking the replicas -----------------------------------------------------------------------
def balancer_container(client, settings: SwarmSettings):
    """The balancer's container on this manager, or None."""
    labels = [f"com.docker.compose.project={balancer_project(settings)}", "com.docker.compose.service=balancer"]
    found = client.containers.list(filters={"label": labels})
    return found[0] if found else None


# bash's /dev/tcp: one HTTP/1.0 GET; the status line, the blank line after the headers and the body
# lines matching $3 (all of them by default) on stdout.
_HTTP_GET = ('exec 3<>"/dev/tcp/$0/$1" && printf "GET %s HTTP/1.0\\r\\nHost: %s\\r\\n\\r\\n" "$2" "$0" >&3 '
             '&& grep -a -E "^(HTTP/|.?$)|$3" <&3')
HTTP_TIMEOUT_SECONDS = 5   # a replica whose node died never answers: connect and read bounded


def http_get(container, address: str, port: int, path: str, lines: str = ".") -> tuple[int, str]:
    """(status code, body) of GET path on address:port, asked from inside container; with `lines`
    (an extended regular expression) only the body lines that match it, so that a long page
    (Prometheus) never has to cross the exec stream whole."""
    result = container.exec_run(["timeout", str(HTTP_TIMEOUT_SECONDS), "bash", "-c", _HTTP_GET, address,
                                 str(port), path, lines])
    text = result.output.decode(errors="replace").replace("\r\n", "\n")
    head, _, body = text.partition("\n\n")
    try:
        if not head.startswith("HTTP/"):
            raise ValueError(head)
        return int(head.split()[1]), body
    except (IndexError, ValueError):
        why = f"no answer within {HTTP_TIMEOUT_SECONDS} s" if result.exit_code == 124 else "connection failed"
        raise SwarmError(f"no HTTP reply from {address}:{port}{path}: {text.strip()[:200] or why}")


def model_states(container, address: str, model: str) -> dict[int, str]:
    """Version -> state, as the replica at address reports them."""
    code, body = http_get(container, address, 8501, MODEL_STATUS.format(model=model))
    if code != 200:
        raise SwarmError(f"{address}: HTTP {code}: {body.strip()[:200]}")
    return {int(v["version"]): v.get("state", "") for v in json.loads(body).get("model_version_status", [])}


COUNT_ATTEMPTS = 3   # one ask of a healthy replica's metrics failed in a swarm-e2e run at load 12


def request_counts(container, address: str, model: str) -> dict[str, int]:
    """Predict requests the replica at address has counted, by entrypoint (its Prometheus page).
    Asked up to COUNT_ATTEMPTS times: the counts only grow, so asking again is harmless."""
    from imgclf.serving.metrics import REQUEST_COUNT

    for attempt in range(1, COUNT_ATTEMPTS + 1):
        try:
            code, body = http_get(container, address, 8501, METRICS, lines="^" + re.escape(REQUEST_COUNT))
            break
        except SwarmError:
            if attempt == COUNT_ATTEMPTS:
                raise
            time.sleep(POLL_SECONDS)
    if code != 200:
        raise SwarmError(f"{address}: {METRICS}: HTTP {code}")
    return predict_counts(body, model)


def predict_counts(page: str, model: str) -> dict[str, int]:
    """From a Prometheus page of TF Serving (or the local server): the model's Predict requests by
    entrypoint (REST, GRPC), every status, from the `:tensorflow:serving:request_count` series."""
    from imgclf.serving.metrics import REQUEST_COUNT

    counts: dict[str, int] = {}
    for line in page.splitlines():
        if not line.startswith(REQUEST_COUNT + "{"):
            continue
        labels = dict(pair.split("=", 1) for pair in line[line.index("{") + 1:line.rindex("}")].split(","))
        labels = {key: value.strip('"') for key, value in labels.items()}
        if labels.get("model_name") == model and labels.get("API", "").lower() == "predict":
            entrypoint = labels.get("entrypoint", "").upper()
            counts[entrypoint] = counts.get(entrypoint, 0) + int(float(line.rsplit(" ", 1)[1]))
    return counts


# --- status ------------------------------------------------------------------------------------
@dataclass
class Replica:
    task: str
    slot: int | None
    node: str
    state: str                       # the task's state: running, starting, failed, ...
    desired: str
    address: str = ""
    versions: dict[int, str] = field(default_factory=dict)   # what the replica reports
    error: str = ""

    @property
    def serving(self) -> list[int]:
        return sorted(v for v, state in self.versions.items() if state == "AVAILABLE")


@dataclass
class SwarmStatus:
    service: str
    image: str = ""
    wanted: int = 0
    nodes: list[dict] = field(default_factory=list)      # hostname, role, state, availability, address
    replicas: list[Replica] = field(default_factory=list)
    balancer: dict = field(default_factory=dict)         # name, status, health
    update: str = ""                                     # the service's last update state, if any

    def available(self) -> list[Replica]:
        return [r for r in self.replicas if r.state == "running" and r.serving]

    def converged(self, replicas: int) -> bool:
        """replicas tasks running, each serving, all the same versions."""
        ready = self.available()
        return len(ready) == replicas == len([r for r in self.replicas if r.desired == "running"]) \
            and len({tuple(r.serving) for r in ready}) == 1


def task_address(task: dict, network: str) -> str:
    for attachment in task.get("NetworksAttachments", []):
        if attachment["Network"]["Spec"]["Name"] == network and attachment.get("Addresses"):
            return attachment["Addresses"][0].split("/")[0]
    return ""


def gather(client, settings: SwarmSettings) -> SwarmStatus:
    import docker.errors

    status = SwarmStatus(service_name(settings))
    nodes = {n.id: n.attrs for n in client.nodes.list()}
    status.nodes = [{"hostname": n["Description"]["Hostname"], "role": n["Spec"]["Role"],
                     "state": n["Status"]["State"], "availability": n["Spec"]["Availability"],
                     "address": n["Status"].get("Addr", "")} for n in nodes.values()]
    try:
        service = client.services.get(status.service)
    except docker.errors.NotFound:
        return status
    spec = service.attrs["Spec"]
    status.image = spec["TaskTemplate"]["ContainerSpec"]["Image"].split("@")[0]
    status.wanted = spec["Mode"].get("Replicated", {}).get("Replicas", 0)
    status.update = service.attrs.get("UpdateStatus", {}).get("State", "")
    balancer = balancer_container(client, settings)
    if balancer is not None:
        status.balancer = {"name": balancer.name, "status": balancer.status,
                           "health": balancer.attrs["State"].get("Health", {}).get("Status", "")}
    for task in service.tasks(filters={"desired-state": ["running", "shutdown"]}):
        if task["DesiredState"] != "running" and task["Status"]["State"] in ("shutdown", "complete"):
            continue   # history: tasks replaced long ago
        status.replicas.append(_replica(task, nodes, settings, balancer))
    status.replicas.sort(key=lambda r: (r.slot or 0, r.desired != "running"))
    return status


def _replica(task: dict, nodes: dict, settings: SwarmSettings, balancer) -> Replica:
    node = nodes.get(task.get("NodeID", ""), {})
    replica = Replica(task["ID"][:12], task.get("Slot"), node.get("Description", {}).get("Hostname", "-"),
                      task["Status"]["State"], task["DesiredState"], task_address(task, settings.network),
                      error=task["Status"].get("Err", ""))
    if replica.state == "running" and replica.address and balancer is not None:
        try:
            replica.versions = model_states(balancer, replica.address, settings.model_name)
        except SwarmError as error:
            replica.error = str(error)
    return replica


def status_view(args) -> tuple[str, str, dict] | None:
    """For `imgclf status`: every replica of the stack (STACK, default imgclf) with its node, its
    task state and the versions it serves, when the Docker engine is a swarm manager running it;
    None otherwise (no engine, not a swarm, not a manager, no such stack)."""
    import docker.errors

    settings = settings_from_environment(model_name=args.model_name)
    client = stack.connect(timeout=10)
    if client is None:
        return None
    try:
        swarm_state = client.info().get("Swarm", {})
        if not swarm_state.get("ControlAvailable"):
            return None
        try:
            client.services.get(service_name(settings))
        except docker.errors.NotFound:
            return None
        status = gather(client, settings)
    finally:
        client.close()
    return "swarm", "swarm " + render(status), as_json(status)


def wait_until_converged(client, settings: SwarmSettings, replicas: int, timeout: float, say: Say,
                         versions: list[int] | None = None, watch=None, poll: float = POLL_SECONDS) -> SwarmStatus:
    """Until `replicas` replicas run and each serves the same versions (`versions` when given);
    watch(status), when given, sees every status gathered on the way."""
    deadline = time.monotonic() + timeout
    shown = ""
    while True:
        status = gather(client, settings)
        if watch is not None:
            watch(status)
        done = status.converged(replicas) and (versions is None or status.available()[0].serving == versions)
        if done:
            return status
        line = ", ".join(f"{r.node}:{r.state}:{r.serving or '-'}" for r in status.replicas)
        if line != shown:
            say(f"waiting for {replicas} replicas serving {versions or 'one version'}: {line or 'no task yet'}")
            shown = line
        if time.monotonic() > deadline:
            raise SwarmError(f"not converged after {timeout:.0f} s:\n{render(status)}")
        time.sleep(poll)


def render(status: SwarmStatus) -> str:
    lines = [f"service {status.service}: {status.image or 'not deployed'}, {status.wanted} replicas wanted"
             + (f", last update {status.update}" if status.update else "")]
    table = [("replica", "node", "task state", "serving", "address", "error")]
    for r in status.replicas:
        serving = ",".join(map(str, r.serving)) or ("-" if not r.versions else
                                                     ",".join(f"{v}:{s}" for v, s in sorted(r.versions.items())))
        table.append((f"{r.slot or '-'} {r.task}", r.node, r.state + ("" if r.desired == "running" else f" (->{r.desired})"),
                      serving, r.address or "-", r.error.splitlines()[0] if r.error else ""))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]) - 1)]
    lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1] for row in table]
    nodes = ", ".join(f"{n['hostname']} ({n['role']}, {n['state']}, {n['availability']})" for n in status.nodes)
    lines.append(f"nodes: {nodes or '-'}")
    b = status.balancer
    lines.append(f"balancer: {b['name']} {b['status']}, health {b['health'] or '-'}" if b else "balancer: not running here")
    return "\n".join(lines)


def as_json(status: SwarmStatus) -> dict:
    return dataclasses.asdict(status)


# --- one-off jobs: `make train|validate RUNNER=swarm` --------------------------------------------
JOB_TERMINAL = {"complete", "failed", "rejected", "shutdown", "orphaned", "remove"}
JOB_USER = "10001:10001"   # the images' own non-root user


@dataclass
class Job:
    """One task the swarm schedules on any node: an image, its command, what it mounts."""
    name: str
    image: str
    args: list[str]
    binds: dict[str, bool] = field(default_factory=dict)   # node path -> read-only
    models: bool = False                                   # mount the shared models volume at /models


def job_mounts(job: Job, settings: SwarmSettings) -> list:
    from docker.types import DriverConfig, Mount

    mounts = [Mount("/tmp", None, type="tmpfs")]
    mounts += [Mount(path, path, type="bind", read_only=read_only) for path, read_only in job.binds.items()]
    if job.models:
        volume = models_volume(settings)
        mounts.append(Mount("/models", f"{settings.stack}_models", type="volume",
                            driver_config=DriverConfig("local", volume)))
    return mounts


def start_job(client, settings: SwarmSettings, job: Job, say: Say):
    """The job as a one-task replicated job on the stack's overlay network (so that it reaches the
    balancer as `balancer`), hardened like the stack's services: non-root, read-only root, no
    capabilities. Returns its service. Its first task is final: a failure is reported, not retried."""
    from docker.types import RestartPolicy, ServiceMode

    say(f"job {job.name}: {job.image} {' '.join(job.args)}")
    return client.services.create(
        job.image, args=job.args, name=job.name, mode=ServiceMode("replicated-job", replicas=1),
        restart_policy=RestartPolicy(condition="none"), networks=[settings.network],
        mounts=job_mounts(job, settings), user=JOB_USER, read_only=True, cap_drop=["ALL"],
        env=["PYTHONUNBUFFERED=1"], labels={"org.imgclf.job": job.name})


def finish_job(service, timeout: float) -> tuple[int, str]:
    """Waits for the job's task to end, takes its output and removes the job: (exit code, output)."""
    try:
        task = _wait_for_task(service, timeout)
        output = b"".join(service.logs(stdout=True, stderr=True)).decode(errors="replace")
    finally:
        service.remove()
    code = task["Status"].get("ContainerStatus", {}).get("ExitCode")
    if code is None:
        raise SwarmError(f"job {service.name} did not run: {task['Status'].get('Err') or task['Status']['State']}")
    return int(code), output


def _wait_for_task(service, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = [t for t in service.tasks() if t["Status"]["State"] in JOB_TERMINAL]
        if done:
            return done[0]
        time.sleep(POLL_SECONDS)
    raise SwarmError(f"job {service.name} did not finish within {timeout:.0f} s")


def job_name(settings: SwarmSettings, kind: str) -> str:
    return f"{settings.stack}_{kind}-{int(time.time())}-{os.getpid()}"


# --- command line ------------------------------------------------------------------------------
def build_parser(command: str = "swarm-status") -> argparse.ArgumentParser:
    return settings_parser(SwarmSettings, command, __doc__.split("\n\n")[0],
                           epilog="Defaults live in imgclf/settings.py (SwarmSettings).")


def main(argv: list[str], command: str = "swarm-status") -> int:
    """`imgclf swarm-deploy | swarm-status | swarm-down`."""
    settings = SwarmSettings(**vars(build_parser(command).parse_args(argv)))
    say = stack.say_to_stderr
    try:
        if command == "swarm-deploy":
            print(render(deploy(settings, stack.repository_root(), say)))
        elif command == "swarm-down":
            down(settings, stack.repository_root(), say)
        else:
            client = manager()
            try:
                status = gather(client, settings)
            finally:
                client.close()
            print(json.dumps(as_json(status), indent=2) if settings.json else render(status))
    except (SwarmError, stack.StackError, contract.ContractError) as error:
        print(f"imgclf {command}: {error}", file=sys.stderr)
        return 1
    return 0
