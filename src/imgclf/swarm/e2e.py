"""`imgclf swarm-e2e` / `make swarm-e2e`: the Swarm deployment on a real multi-node swarm.

Builds a swarm of Docker engines in containers on this machine (one manager, two workers, a
registry: imgclf.swarm.cluster), pushes the images to the registry, trains two small
versions, and deploys deploy/swarm with `imgclf swarm-deploy`. Then, under continuous REST and gRPC
traffic through the balancer, it publishes a version, rolls it back, scales 1 -> 3, measures how
requests spread over the replicas, rolls the service over (start-first) and kills a worker node,
counting failed requests and retries, and asking every replica directly what it serves. It prints
a summary and removes everything it created.

The shared models folder is a host folder bind-mounted into every node: the stand-in for an NFS
mount, because this kernel has no NFS client (docs/scale-out.md says what was tried).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from imgclf import contract, model_store, stack, swarm
from imgclf.data_folders import iter_image_files
from imgclf.settings import SwarmE2ESettings, SwarmSettings, settings_parser
from imgclf.swarm.cluster import Cluster
from imgclf.swarm.traffic import Counts, Traffic, clients_for

POLL_SECONDS = 0.25
SETTLE_SECONDS = 2.0        # traffic kept running after a change has converged
HOST_TIMEOUT_SECONDS = 300  # removing a node's container (an engine with its images) takes a while
UPDATE_ENDS = {"completed", "paused", "rollback_completed", "rollback_paused"}
BAD_FLAG = "--no-such-flag"   # TensorFlow Serving (and the stand-in) refuse to start with it


class SwarmE2EFailure(RuntimeError):
    """A check failed; the message says which and what was seen."""


@dataclass
class Report:
    phases: dict[str, float] = field(default_factory=dict)   # phase -> seconds
    figures: dict[str, dict] = field(default_factory=dict)   # phase -> what it measured
    lines: list[str] = field(default_factory=list)

    @contextlib.contextmanager
    def phase(self, name: str):
        stack.say_to_stderr(f"-- {name}")
        started = time.monotonic()
        try:
            yield
        finally:
            self.phases[name] = time.monotonic() - started

    def add(self, phase: str, line: str, **figures) -> None:
        self.lines.append(f"{phase}: {line}")
        self.figures.setdefault(phase, {}).update(figures)
        stack.say_to_stderr(f"   {phase}: {line}")

    def format(self) -> str:
        width = max(map(len, self.phases), default=0)
        out = ["", "== swarm e2e summary", *self.lines, "phase times:"]
        out += [f"  {name:<{width}}  {seconds:7.1f} s" for name, seconds in self.phases.items()]
        return "\n".join(out)


@contextlib.contextmanager
def docker_host(socket: Path):
    """DOCKER_HOST pointed at a node's engine, for the library and the tools it runs."""
    before = os.environ.get("DOCKER_HOST")
    os.environ["DOCKER_HOST"] = f"unix://{socket}"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("DOCKER_HOST", None)
        else:
            os.environ["DOCKER_HOST"] = before


class Run:
    """One e2e run: the cluster, the stack's settings, the traffic, the report."""

    def __init__(self, host, settings: SwarmE2ESettings, root: Path, work: Path):
        self.host, self.settings, self.root, self.work = host, settings, root, work
        self.say = stack.say_to_stderr
        self.report = Report()
        self.cluster = Cluster(host, root, work, self.say)
        self.models = self.cluster.shared / "models"
        self.store = model_store.open_model(self.models, contract.DEFAULT_MODEL_NAME)
        self.stack_settings = SwarmSettings(stack=f"imgclf-e2e-{self.cluster.run_id}", replicas=settings.replicas,
                                            models=str(self.models),
                                            network=f"imgclf-e2e-{self.cluster.run_id}", bind="0.0.0.0",
                                            wait=settings.timeout)
        self.trained: list[Path] = []
        self.traffic: Traffic | None = None
        self.manager = None   # SDK client of the manager node's engine

    # --- set-up ---------------------------------------------------------------------------------
    def build_and_start_cluster(self) -> None:
        config = stack.settings_from_environment()
        with self.report.phase("images"):
            base = stack.resolve_base_image(self.host, config.base_image, self.say)
            rig = self.cluster.build_rig_images(base)
            serving = self.serving_image(base, config)
            jobs = stack.build_images(self.host, self.root, ["trainer", "client"], base,
                                      config.ca_bundle or stack.default_ca_bundle(), self.say) if self.settings.jobs else {}
            balancer = swarm.default_image("balancer")
            stack.build_image(self.host, self.root / swarm.BALANCER_CONTEXT,
                              stack.ImageSpec("balancer", "Dockerfile", ""), balancer, base, "", self.say)
        with self.report.phase("cluster"):
            self.cluster.shared.mkdir(parents=True)
            self.cluster.create_network()
            self.cluster.start_registry(rig["registry"])
            for name in ("manager", "worker1", "worker2"):
                self.cluster.start_node(rig["node"], name)
            self.cluster.form_swarm()
            self.manager = self.cluster.manager.client()
        with self.report.phase("push to the registry"):
            self.stack_settings.serving_image = self.cluster.push(serving)
            self.stack_settings.balancer_image = self.cluster.push(balancer)
            if self.settings.jobs:
                self.stack_settings.trainer_image = self.cluster.push(jobs["TRAINER_IMAGE"])
                self.stack_settings.client_image = self.cluster.push(jobs["CLIENT_IMAGE"])
        sizes = {name: stack.image_size_mb(self.host, name) for name in (serving, balancer, rig["node"])}
        self.report.add("cluster", f"{len(self.cluster.nodes)} Docker engines in containers (1 manager, "
                        f"{len(self.cluster.nodes) - 1} workers), {self.manager.version()['Version']}; images "
                        f"pulled by every node from a registry (Debian docker-registry): "
                        + ", ".join(f"{n} {mb:.0f} MB" for n, mb in sizes.items()),
                        nodes=[n.hostname for n in self.cluster.nodes], images_mb=sizes)

    def serving_image(self, base: str, config) -> str:
        """The official image where it can be pulled, else the stand-in built from serving/."""
        if not stack.needs_standin_serving(self.host, config.serving_image, self.say):
            return config.serving_image or stack.OFFICIAL_SERVING_IMAGE
        built = stack.build_images(self.host, self.root, ["serving"], base,
                                   config.ca_bundle or stack.default_ca_bundle(), self.say)
        return built["SERVING_IMAGE"]

    def train_versions(self) -> None:
        """Two small versions (scratch backbone) with the product's `imgclf train`, outside the
        shared folder: the e2e publishes them there itself, to time the rename."""
        from imgclf.sample_data import write_sample_dataset

        s = self.settings
        with self.report.phase("train two versions"):
            data = write_sample_dataset(self.work / "data", per_class=s.per_class, seed=1)
            for seed in (1, 2):
                models = self.work / f"trained-{seed}"
                command = [sys.executable, "-m", "imgclf", "train", "--data", str(data), "--models", str(models),
                           "--module", "scratch", "--image-size", str(s.image_size), "--epochs", str(s.epochs),
                           "--seed", str(seed), "--progress", "0"]
                result = subprocess.run(command, capture_output=True, text=True, timeout=s.timeout)
                if result.returncode != 0:
                    raise SwarmE2EFailure(f"training failed:\n{result.stderr[-3000:]}")
                self.trained.append(Path(result.stdout.strip().splitlines()[-1]))
        self.images = [p.read_bytes() for p in sorted(iter_image_files(data))[:16]]

    def publish(self, trained: Path) -> int:
        """A copy of a trained version staged and sealed in the shared store, then published: one
        rename, the moment every replica can see it."""
        staged = self.store.stage()
        shutil.copytree(trained, staged, dirs_exist_ok=True)
        self.store.seal(staged)
        return self.store.publish(staged)

    # --- waiting on the replicas ----------------------------------------------------------------
    def converge(self, replicas: int, versions: list[int], since: float) -> tuple[swarm.SwarmStatus, dict[str, float]]:
        """Waits until `replicas` replicas serve exactly `versions`; returns the status and, per
        replica (task), the seconds from `since` to the first time it was seen serving them."""
        first_seen: dict[str, float] = {}

        def watch(status: swarm.SwarmStatus) -> None:
            for replica in status.available():
                if replica.serving == versions:
                    first_seen.setdefault(f"{replica.node}/{replica.task}", time.monotonic() - since)

        status = swarm.wait_until_converged(self.manager, self.stack_settings, replicas, self.settings.timeout,
                                            self.say, versions, watch=watch, poll=POLL_SECONDS)
        return status, first_seen

    def window(self, before: dict[str, Counts]) -> dict[str, Counts]:
        after = self.traffic.snapshot()
        return {protocol: after[protocol].minus(before[protocol]) for protocol in after}

    def check_no_failures(self, phase: str, counts: dict[str, Counts]) -> None:
        if any(c.failed for c in counts.values()):
            raise SwarmE2EFailure(f"{phase}: failed requests: " + "; ".join(
                f"{p} {c.describe()}" for p, c in counts.items()) + "\n" + "\n".join(self.traffic.errors))

    # --- the phases -----------------------------------------------------------------------------
    def deploy(self) -> None:
        first = self.publish(self.trained[0])
        with self.report.phase("deploy"), docker_host(self.cluster.manager.socket):
            status = swarm.deploy(self.stack_settings, self.root, self.say)
        nodes = sorted({r.node for r in status.available()})
        if len(nodes) < 2 or status.available()[0].serving != [first]:
            raise SwarmE2EFailure(f"after deploy:\n{swarm.render(status)}")
        self.report.add("deploy", f"{len(status.available())} replicas on {len(nodes)} nodes ({', '.join(nodes)}), "
                        f"all AVAILABLE on version {first}", replicas=len(status.available()), nodes=nodes,
                        version=first)
        self.check_hardening(status)
        self.version = first
        self.check_status_command(status)

    def check_status_command(self, status: swarm.SwarmStatus) -> None:
        """`make status` (imgclf status) pointed at the swarm: every replica, its node, its task
        state and the version it serves, besides the versions in the shared folder."""
        env = {**os.environ, "DOCKER_HOST": f"unix://{self.cluster.manager.socket}", "STACK": self.stack_settings.stack,
               "NETWORK": self.stack_settings.network}
        manager = self.cluster.manager.address
        result = subprocess.run([sys.executable, "-m", "imgclf", "status", "--models", str(self.models),
                                 "--server", f"http://{manager}:{self.stack_settings.rest_port}",
                                 "--models-config", str(self.models / swarm.MODELS_CONFIG), "--docker-service", ""],
                                capture_output=True, text=True, env=env, timeout=120)
        self.say(result.stdout)
        rows = [line for line in result.stdout.splitlines()
                if any(f" {r.task} " in line and r.node in line and "running" in line and str(self.version) in line
                       for r in status.available())]
        if result.returncode != 0 or len(rows) != len(status.available()):
            raise SwarmE2EFailure(f"`imgclf status` does not show every replica:\n{result.stdout}{result.stderr[-2000:]}")
        self.report.add("status", f"`make status` lists the {len(rows)} replicas with node, task state and version "
                        f"({'; '.join(' '.join(row.split()[1:5]) for row in rows)})")

    def check_hardening(self, status: swarm.SwarmStatus) -> None:
        """A serving task's container as its node's engine made it: read-only root, no
        capabilities, non-root, no new privileges."""
        replica = status.available()[0]
        node = next(n for n in self.cluster.nodes if n.hostname == replica.node)
        client = node.client()
        try:
            task_containers = [c for c in client.containers.list()
                               if c.labels.get("com.docker.swarm.service.name") == swarm.service_name(self.stack_settings)]
            container = task_containers[0]
            host_config, config = container.attrs["HostConfig"], container.attrs["Config"]
            no_new = container.exec_run(["grep", "NoNewPrivs", "/proc/1/status"]).output.decode().split()[-1]
        finally:
            client.close()
        facts = {"read_only_root": host_config["ReadonlyRootfs"], "cap_drop": host_config.get("CapDrop"),
                 "user": config["User"], "no_new_privs": no_new}
        if not (facts["read_only_root"] and facts["cap_drop"] == ["ALL"] and facts["user"] == "10001:10001"
                and no_new == "1"):
            raise SwarmE2EFailure(f"the serving container is not hardened: {facts}")
        self.report.add("hardening", f"serving task on {replica.node}: read-only root filesystem, CapDrop ALL, "
                        f"user 10001:10001, NoNewPrivs 1", **facts)

    def start_traffic(self) -> None:
        manager = self.cluster.manager.address
        clients = clients_for(f"http://{manager}:{self.stack_settings.rest_port}",
                              f"{manager}:{self.stack_settings.grpc_port}", contract.DEFAULT_MODEL_NAME,
                              self.settings.rest_clients, timeout=10.0)
        self.traffic = Traffic(clients, self.images, pause=self.settings.pause, retries=self.settings.retries)
        self.traffic.start()

    def change_under_traffic(self, phase: str, change, replicas: int, versions_after) -> dict:
        """Runs change() under traffic, waits for `replicas` replicas serving versions_after(result)
        and a little more; returns the figures. Every request must have succeeded."""
        before = self.traffic.snapshot()
        with self.report.phase(phase):
            result = change()
            changed_at = time.monotonic()
            versions = versions_after(result)
            status, first_seen = self.converge(replicas, versions, changed_at)
            converged = time.monotonic() - changed_at
            time.sleep(SETTLE_SECONDS)
        counts = self.window(before)
        self.check_no_failures(phase, counts)
        return {"result": result, "versions": versions, "seconds": converged, "per_replica": first_seen,
                "counts": counts, "status": status}

    def publish_under_traffic(self) -> None:
        figures = self.change_under_traffic("publish under traffic", lambda: self.publish(self.trained[1]),
                                            self.settings.replicas, lambda version: [version])
        new = figures["result"]
        grpc_versions = figures["counts"]["grpc"].versions
        self.report.add("publish under traffic", f"rename -> all {self.settings.replicas} replicas answering "
                        f"version {new}: {figures['seconds']:.1f} s (each replica asked directly: "
                        + ", ".join(f"{k.split('/')[0]} {v:.1f} s" for k, v in figures["per_replica"].items())
                        + f"); {self._counts_text(figures['counts'])}; gRPC answers by version {grpc_versions}",
                        version=new, seconds=figures["seconds"], per_replica=figures["per_replica"],
                        traffic=self._counts_json(figures["counts"]))
        self.previous, self.version = self.version, new

    def rollback_under_traffic(self) -> None:
        from imgclf.rollout.publish import rollback

        figures = self.change_under_traffic("rollback under traffic", lambda: rollback(self.store)[0],
                                            self.settings.replicas, lambda _: [self.previous])
        self.report.add("rollback under traffic", f"version {figures['result']} retired -> all "
                        f"{self.settings.replicas} replicas back on {self.previous}: {figures['seconds']:.1f} s; "
                        f"{self._counts_text(figures['counts'])}", seconds=figures["seconds"],
                        traffic=self._counts_json(figures["counts"]))
        self.version = self.previous

    def scale_under_traffic(self) -> None:
        before = self.traffic.snapshot()
        with self.report.phase("scale to 1"):
            self.scale(1)
            self.converge(1, [self.version], time.monotonic())
            self.wait_until_stopped()
        down = self.window(before)
        self.traffic.stop()
        self.batch_through_the_balancer()       # one replica: the figure to compare with three
        self.traffic.start()
        figures = self.change_under_traffic(
            "scale 1 -> 3 under traffic", lambda: self.scale(3), 3,
            lambda _: [self.version])
        nodes = sorted({r.node for r in figures["status"].available()})
        self.report.add("scale 1 -> 3 under traffic", f"3 replicas AVAILABLE on {len(nodes)} nodes in "
                        f"{figures['seconds']:.1f} s; {self._counts_text(figures['counts'])} (scaling 2 -> 1 "
                        f"before: {self._counts_text(down)})", seconds=figures["seconds"],
                        traffic=self._counts_json(figures["counts"]), scale_down_traffic=self._counts_json(down))

    def scale(self, replicas: int) -> None:
        with docker_host(self.cluster.manager.socket):
            swarm.scale(self.stack_settings, replicas, self.root, self.say)

    def wait_until_stopped(self) -> None:
        """Until no task that swarm is taking away is still running."""
        service = self.manager.services.get(swarm.service_name(self.stack_settings))
        deadline = time.monotonic() + self.settings.timeout
        while any(t["DesiredState"] != "running" and t["Status"]["State"] == "running" for t in service.tasks()):
            if time.monotonic() > deadline:
                raise SwarmE2EFailure("a task scaled away is still running")
            time.sleep(POLL_SECONDS)
        time.sleep(SETTLE_SECONDS)

    def measure_spread(self) -> None:
        """Each replica's own request counts (Prometheus, asked directly) over a window of steady
        traffic: REST from several keep-alive clients, gRPC from one long-lived channel."""
        balancer = swarm.balancer_container(self.manager, self.stack_settings)
        with self.report.phase("spread"):
            status = swarm.gather(self.manager, self.stack_settings)
            replicas = {f"{r.node}/{r.task}": r.address for r in status.available()}
            before = {name: swarm.request_counts(balancer, address, contract.DEFAULT_MODEL_NAME)
                      for name, address in replicas.items()}
            time.sleep(self.settings.spread_seconds)
            after = {name: swarm.request_counts(balancer, address, contract.DEFAULT_MODEL_NAME)
                     for name, address in replicas.items()}
        spread = {protocol: {name: after[name].get(key, 0) - before[name].get(key, 0) for name in replicas}
                  for protocol, key in (("rest", "REST"), ("grpc", "GRPC"))}
        for protocol, counts in spread.items():
            total = sum(counts.values())
            if len([n for n in counts.values() if n > 0]) < len(replicas):
                raise SwarmE2EFailure(f"{protocol} requests reached only some replicas: {counts}")
            shares = ", ".join(f"{name.split('/')[0]} {n} ({n / total:.0%})" for name, n in counts.items())
            who = f"{self.settings.rest_clients} keep-alive clients" if protocol == "rest" else "one long-lived channel"
            self.report.add(f"spread ({protocol}, {who})", f"{total} requests in {self.settings.spread_seconds:g} s "
                            f"over {len(replicas)} replicas: {shares}", counts=counts)

    def batch_folder(self) -> Path:
        """BATCH_FILES links to the generated pages, in their class folders (made once)."""
        folder = self.work / "batch"
        if not folder.exists():
            sources = sorted(iter_image_files(self.work / "data"))
            for index in range(self.settings.batch_files):
                source = sources[index % len(sources)]
                link = folder / source.parent.name / f"{index:07d}{source.suffix}"
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(source)
        return folder

    def batch_through_the_balancer(self) -> None:
        """`make validate` of a big folder (BATCH_FILES links to the generated pages) from this host
        through the balancer, alone: its throughput, the share each replica served (its own counts),
        and what the client process cost per image (CPU, peak memory)."""
        folder = self.batch_folder()
        balancer = swarm.balancer_container(self.manager, self.stack_settings)
        replicas = {f"{r.node}/{r.task}": r.address for r in swarm.gather(self.manager, self.stack_settings).available()}
        before = {n: swarm.request_counts(balancer, a, contract.DEFAULT_MODEL_NAME).get("REST", 0) for n, a in replicas.items()}
        manager = self.cluster.manager.address
        command = [sys.executable, "-m", "imgclf", "validate", str(folder), "--server",
                   f"http://{manager}:{self.stack_settings.rest_port}", "--batch", "16", "--concurrency", "8",
                   "--output", str(self.work / "batch.csv"), "--no-progress"]
        log = self.work / "batch.log"
        phase = f"batch through the balancer ({len(replicas)} replica{'s' if len(replicas) > 1 else ''})"
        with self.report.phase(phase), open(log, "w") as out:
            started = time.monotonic()
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
            peak_kib = peak_rss_until_exit(process)
            _, wait_status, cost = os.wait4(process.pid, 0)   # this child's own CPU time
            process.returncode = os.waitstatus_to_exitcode(wait_status)
            seconds = time.monotonic() - started
        after = {n: swarm.request_counts(balancer, a, contract.DEFAULT_MODEL_NAME).get("REST", 0) for n, a in replicas.items()}
        rows = sum(1 for _ in open(self.work / "batch.csv")) - 1 if (self.work / "batch.csv").exists() else 0
        if process.returncode != 0 or rows != self.settings.batch_files:
            raise SwarmE2EFailure(f"validate of {self.settings.batch_files} files: exit {process.returncode}, "
                                  f"{rows} rows\n{log.read_text()[-3000:]}")
        requests_per_replica = {n.split("/")[0]: after[n] - before[n] for n in replicas}
        total = sum(requests_per_replica.values())
        cpu = cost.ru_utime + cost.ru_stime
        self.report.add(phase, f"`imgclf validate` of {rows} files (batch 16, 8 in flight): "
                        f"{rows / seconds:.0f} images/s; {total} requests over {len(replicas)} replicas: "
                        + ", ".join(f"{n} {c} ({c / total:.0%})" for n, c in requests_per_replica.items())
                        + f"; client CPU {cpu / rows * 1000:.2f} ms per image, peak RSS "
                        f"{peak_kib / 1024:.0f} MiB", files=rows, seconds=seconds, images_per_second=rows / seconds,
                        per_replica=requests_per_replica, client_cpu_ms_per_image=cpu / rows * 1000,
                        client_peak_rss_mib=peak_kib / 1024)

    def update_service(self, service, *flags: str, ends: str) -> str:
        """`docker service update --detach <flags>`, as an operator runs it, then waits until this
        update's state is `ends` (completed, rollback_completed); SwarmE2EFailure if it ends otherwise."""
        service.reload()
        earlier = service.attrs.get("UpdateStatus", {}).get("StartedAt")
        with docker_host(self.cluster.manager.socket):
            swarm.run_tool(["docker", "service", "update", "--detach", *flags, service.name],
                           self.stack_settings, self.root, self.say)
        deadline = time.monotonic() + self.settings.timeout
        while True:
            service.reload()
            update = service.attrs.get("UpdateStatus", {})
            state = update.get("State", "") if update.get("StartedAt") != earlier else ""
            if state == ends:
                return state
            if state in UPDATE_ENDS or time.monotonic() > deadline:
                raise SwarmE2EFailure(f"the update {' '.join(flags)} ended {state or 'nowhere'}, not {ends}")
            time.sleep(POLL_SECONDS)

    def running_tasks(self, service) -> set[str]:
        return {t["ID"] for t in service.tasks(filters={"desired-state": "running"})}

    def rolling_update_under_traffic(self) -> None:
        """`docker service update --force`: every task replaced, start-first, each new one healthy
        before its old one stops."""
        service = self.manager.services.get(swarm.service_name(self.stack_settings))
        before_tasks = self.running_tasks(service)
        figures = self.change_under_traffic("rolling update under traffic",
                                            lambda: self.update_service(service, "--force", ends="completed"), 3,
                                            lambda _: [self.version])
        replaced = before_tasks.isdisjoint(self.running_tasks(service))
        self.report.add("rolling update under traffic", f"every task replaced start-first "
                        f"({'all new' if replaced else 'NOT all new'}) in {self.report.phases['rolling update under traffic']:.1f} s; "
                        f"{self._counts_text(figures['counts'])}", traffic=self._counts_json(figures["counts"]))

    def failed_update_under_traffic(self) -> None:
        """An update whose new task cannot start (serving given an unknown flag): swarm rolls the
        service back by itself (update_config failure_action: rollback) while the old tasks answer."""
        phase = "failed update rolled back under traffic"
        service = self.manager.services.get(swarm.service_name(self.stack_settings))
        before_tasks = self.running_tasks(service)
        figures = self.change_under_traffic(
            phase, lambda: self.update_service(service, f"--args={BAD_FLAG}", ends="rollback_completed"), 3,
            lambda _: [self.version])
        service.reload()
        if BAD_FLAG in (service.attrs["Spec"]["TaskTemplate"]["ContainerSpec"].get("Args") or []):
            raise SwarmE2EFailure(f"{phase}: the service still has {BAD_FLAG} after the rollback")
        kept = len(before_tasks & self.running_tasks(service))
        self.report.add(phase, f"`docker service update --args={BAD_FLAG}`: the new task failed and swarm "
                        f"rolled the service back by itself in {self.report.phases[phase]:.1f} s; {kept} of "
                        f"{len(before_tasks)} old tasks kept running; {self._counts_text(figures['counts'])}",
                        old_tasks_kept=kept, traffic=self._counts_json(figures["counts"]))

    def kill_node_under_traffic(self) -> None:
        status = swarm.gather(self.manager, self.stack_settings)
        victim_name = next(r.node for r in status.available() if r.node != self.cluster.manager.hostname)
        victim = next(n for n in self.cluster.nodes if n.hostname == victim_name)
        before = self.traffic.snapshot()
        with self.report.phase("worker node killed under traffic"):
            killed_at = time.monotonic()
            self.cluster.kill(victim)
            marked_down = self.wait_node_down(victim.hostname, killed_at)
            status, _ = self.converge(3, [self.version], killed_at)
            full_strength = time.monotonic() - killed_at
            time.sleep(SETTLE_SECONDS)
        counts = self.window(before)
        nodes = sorted({r.node for r in status.available()})
        self.report.add("worker node killed under traffic", f"{victim.hostname} removed (docker rm -f); swarm marked it "
                        f"down after {marked_down:.1f} s; back to 3 replicas AVAILABLE (on {', '.join(nodes)}) "
                        f"{full_strength:.1f} s after the kill; {self._counts_text(counts)}",
                        node_down_seconds=marked_down, full_strength_seconds=full_strength,
                        traffic=self._counts_json(counts))
        if sum(c.failed for c in counts.values()) > self.settings.allowed_failures_on_node_loss:
            raise SwarmE2EFailure(f"the service did not keep answering: {self._counts_text(counts)}\n"
                                  + "\n".join(self.traffic.errors))

    def make(self, *arguments: str) -> str:
        """`make <arguments>` as a user on the manager runs it (DOCKER_HOST, the stack's names and
        images as Make variables); its output; SwarmE2EFailure unless it exits 0."""
        variables = {"STACK": self.stack_settings.stack, "NETWORK": self.stack_settings.network,
                     "MODELS": str(self.models), "TRAINER_IMAGE": self.stack_settings.trainer_image,
                     "CLIENT_IMAGE": self.stack_settings.client_image, "RUNNER": "swarm"}
        command = ["make", "--no-print-directory", *arguments, *(f"{k}={v}" for k, v in variables.items())]
        self.say("$ " + " ".join(command))
        result = subprocess.run(command, cwd=self.root, capture_output=True, text=True, timeout=self.settings.timeout,
                                env={**os.environ, "DOCKER_HOST": f"unix://{self.cluster.manager.socket}"})
        self.say("\n".join("   | " + line for line in (result.stdout + result.stderr).splitlines()[-40:]))
        if result.returncode != 0:
            raise SwarmE2EFailure(f"`make {' '.join(arguments)}` exited {result.returncode}:\n{result.stderr[-3000:]}")
        return result.stdout

    def train_job_under_traffic(self) -> None:
        """`make train RUNNER=swarm`: the trainer as a one-off job on any node, reading its data from
        the shared folder and publishing into the shared models volume; every replica takes the
        version up."""
        data = self.cluster.shared / "data"
        shutil.copytree(self.work / "data", data)
        subprocess.run(["chown", "-R", "10001:10001", str(self.models)], check=True)   # the job's user writes

        def train() -> int:
            output = self.make("train", f"DATA={data}", "MODULE=scratch", f"IMAGE_SIZE={self.settings.image_size}",
                               f"EPOCHS={self.settings.epochs}", "SEED=3", "FORCE=1")
            published = re.findall(rf"^{re.escape(str(self.store.location))}/(\d+)$", output, re.MULTILINE)
            if not published:
                raise SwarmE2EFailure(f"`make train RUNNER=swarm` printed no published version:\n{output[-3000:]}")
            return int(published[-1])

        figures = self.change_under_traffic("train job under traffic", train, 3, lambda version: [version])
        self.report.add("train job under traffic", f"`make train RUNNER=swarm` (a swarm job) published version "
                        f"{figures['result']} into the shared volume; all 3 replicas answering it "
                        f"{figures['seconds']:.1f} s after the job ended; {self._counts_text(figures['counts'])}",
                        version=figures["result"], traffic=self._counts_json(figures["counts"]))
        self.version = figures["result"]

    def sharded_validate_jobs(self) -> None:
        """`make validate RUNNER=swarm SHARDS=2 OUTPUT=...`: two client jobs through the balancer,
        each its shard of the folder, merged into one output."""
        from imgclf.client import merge

        results = self.cluster.shared / "results"
        results.mkdir()
        subprocess.run(["chown", "10001:10001", str(results)], check=True)
        with self.report.phase("sharded validate jobs"):
            self.make("validate", f"DIR={self.cluster.shared / 'data'}", "SHARDS=2", f"OUTPUT={results / 'results.csv'}")
        rows = {path.name: sum(1 for _ in open(path)) - 1 for path in sorted(results.glob("results.shard-*"))}
        merged = list(merge.READERS[".csv"](results / "results.csv")[1])
        expected = sum(1 for _ in iter_image_files(self.work / "data"))
        if len(merged) != expected or any(r.error for r in merged) or len(rows) != 2:
            raise SwarmE2EFailure(f"merged {len(merged)} results from {rows}, expected {expected} without errors")
        self.report.add("sharded validate jobs", f"`make validate RUNNER=swarm SHARDS=2`: 2 client jobs through the "
                        f"balancer wrote {', '.join(str(n) for n in rows.values())} rows, merged into {len(merged)} "
                        f"results, 0 errors", rows=list(rows.values()))

    def wait_node_down(self, hostname: str, since: float) -> float:
        deadline = time.monotonic() + self.settings.timeout
        while time.monotonic() < deadline:
            states = {n.attrs["Description"]["Hostname"]: n.attrs["Status"]["State"] for n in self.manager.nodes.list()}
            if states.get(hostname) == "down":
                return time.monotonic() - since
            time.sleep(POLL_SECONDS)
        raise SwarmE2EFailure(f"the manager never marked {hostname} down")

    # --- helpers --------------------------------------------------------------------------------
    @staticmethod
    def _counts_text(counts: dict[str, Counts]) -> str:
        return "; ".join(f"{'REST' if p == 'rest' else 'gRPC'} {c.describe()}" for p, c in counts.items())

    @staticmethod
    def _counts_json(counts: dict[str, Counts]) -> dict:
        return {p: dataclasses.asdict(c) for p, c in counts.items()}

    def execute(self) -> Report:
        self.build_and_start_cluster()
        self.train_versions()
        self.deploy()
        self.start_traffic()
        try:
            self.publish_under_traffic()
            self.rollback_under_traffic()
            self.scale_under_traffic()
            self.measure_spread()
            self.traffic.stop()
            self.batch_through_the_balancer()
            self.traffic.start()
            self.rolling_update_under_traffic()
            self.failed_update_under_traffic()
            self.kill_node_under_traffic()
            if self.settings.jobs:
                self.train_job_under_traffic()
                self.sharded_validate_jobs()
        finally:
            self.traffic.stop()
        total = self.traffic.snapshot()
        self.report.add("all traffic", self._counts_text(total), traffic=self._counts_json(total))
        self.take_down()
        return self.report

    def take_down(self) -> None:
        """`imgclf swarm-down`: the balancer, the service and its network are gone afterwards."""
        with self.report.phase("down"), docker_host(self.cluster.manager.socket):
            swarm.down(self.stack_settings, self.root, self.say)
        left = [s.name for s in self.manager.services.list()] + \
               [n.name for n in self.manager.networks.list(names=[self.stack_settings.network])]
        if left or swarm.balancer_container(self.manager, self.stack_settings) is not None:
            raise SwarmE2EFailure(f"`swarm-down` left {left or 'the balancer'}")
        self.report.add("down", "balancer, service and overlay network removed")

    def show_logs(self) -> None:
        """The balancer's log (which replica it saw go up or down, and when), for a failed run."""
        balancer = swarm.balancer_container(self.manager, self.stack_settings) if self.manager else None
        if balancer is not None:
            self.say("balancer log (tail):\n" + balancer.logs(tail=60, timestamps=True).decode(errors="replace"))

    def clean_up(self) -> list[str]:
        if self.traffic is not None:
            self.traffic.stop()
        if self.manager is not None:
            self.manager.close()
        return self.cluster.remove()


# --- command line ------------------------------------------------------------------------------
def build_parser(command: str = "swarm-e2e") -> argparse.ArgumentParser:
    return settings_parser(SwarmE2ESettings, command, __doc__.split("\n\n")[0])


def main(argv: list[str], command: str = "swarm-e2e") -> int:
    settings = SwarmE2ESettings(**vars(build_parser(command).parse_args(argv)))
    host = stack.connect(timeout=HOST_TIMEOUT_SECONDS)
    if host is None:
        print(f"imgclf {command}: no Docker engine is reachable", file=sys.stderr)
        return 3
    signal.signal(signal.SIGTERM, stop_on_terminate)   # a CI timeout still removes the cluster
    work = Path(tempfile.mkdtemp(prefix="imgclf-swarm-e2e-"))
    run = Run(host, settings, stack.repository_root(), work)
    started = time.monotonic()
    try:
        report = run.execute()
    except KeyboardInterrupt:   # Ctrl-C or SIGTERM: the cluster is removed all the same (finally)
        print(f"imgclf {command}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:   # a failed check, or anything unexpected: say it, clean up
        run.show_logs()
        print(f"imgclf {command}: FAILED: {error}", file=sys.stderr)
        return 1
    finally:
        left = run.clean_up()
        if left:
            print(f"imgclf {command}: FAILED to remove what it created: {left}", file=sys.stderr)
        if settings.keep:
            print(f"imgclf {command}: work folder kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    if left:
        return 1
    report.phases["total"] = time.monotonic() - started
    print(report.format())
    if settings.output:
        Path(settings.output).write_text(json.dumps({"phases": report.phases, "figures": report.figures},
                                                    indent=2, default=str))
    print(f"imgclf {command}: passed")
    return 0


def stop_on_terminate(signum, frame) -> None:
    """SIGTERM as Ctrl-C: the run stops where it is and its `finally` removes the cluster (the
    default action would end the process at once and leave the nodes running)."""
    raise KeyboardInterrupt(f"signal {signum}")


def peak_rss_until_exit(process: subprocess.Popen, every: float = 0.2) -> int:
    """The child's peak resident memory (VmHWM, KiB), read until it exits; the child is left for
    the caller to reap. (getrusage's ru_maxrss would count the memory of this process, which the
    child shared between fork and exec.)"""
    peak = 0
    status = Path(f"/proc/{process.pid}/status")
    while True:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
        except (OSError, ValueError):
            pass
        if os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            return peak
        time.sleep(every)
