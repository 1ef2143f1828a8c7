"""A real multi-node Docker Swarm on one machine, for `make swarm-e2e`: Docker engines in containers
(Debian's docker.io on the local base image) on a network of their own, joined with the swarm API,
and an image registry (Debian's docker-registry) that the nodes pull from.

The host's engine never enters swarm mode: it only runs these containers, so the host (and CI) keep
their state, and removing the containers, their volumes and the network removes the whole cluster,
with every image the nodes pulled. `--privileged` fails on kernels that withhold CAP_SYS_RESOURCE,
so a node gets every other capability (../shared/docs/machine-notes.md). The host reaches each
node's engine through a socket the node writes into a folder of the host's.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from imgclf import stack

NODE_CONTEXT = Path("deploy") / "swarm" / "e2e" / "node"
REGISTRY_CONTEXT = Path("deploy") / "swarm" / "e2e" / "registry"
REGISTRY_ALIAS = "registry"
REGISTRY = f"{REGISTRY_ALIAS}:5000"        # as the nodes name it
LABEL = "org.imgclf.swarm-e2e"             # on every container, volume and network it makes
NODE_SOCKET_FOLDER = "/imgclf-node"        # where a node's engine also listens, seen by the host
# Every capability but CAP_SYS_RESOURCE, which this kind of kernel does not grant to containers.
NODE_CAPABILITIES = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
    "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
    "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
    "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE",
    "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ")
ENGINE_START_SECONDS = 90


class ClusterError(RuntimeError):
    """The test cluster could not be built; the message says which step and what the engine said."""


@dataclass
class Node:
    name: str          # the container's name on the host
    hostname: str      # the node's name in the swarm
    socket: Path       # the node engine's socket, on the host
    address: str = ""  # on the cluster's network

    def client(self, timeout: float = 60.0):
        import docker

        return docker.DockerClient(base_url=f"unix://{self.socket}", timeout=timeout)


class Cluster:
    """One run's cluster: its network, registry and nodes, all labelled with the run's id."""

    def __init__(self, host, root: Path, work: Path, say: stack.Say, run_id: str = ""):
        self.host, self.root, self.work, self.say = host, root, work, say
        self.run_id = run_id or uuid.uuid4().hex[:8]
        self.prefix = f"imgclf-swarm-{self.run_id}"
        self.labels = {LABEL: self.run_id}
        self.shared = work / "shared"
        self.nodes: list[Node] = []
        self.registry_port = 0
        self.pushed_tags: list[str] = []
        self.network = None

    # --- images --------------------------------------------------------------------------------
    def build_rig_images(self, base: str) -> dict[str, str]:
        """The node and registry images, from the local base (or the public one)."""
        tag = os.environ.get("IMGCLF_IMAGE_TAG") or "e2e"
        names = {}
        for kind, context in (("node", NODE_CONTEXT), ("registry", REGISTRY_CONTEXT)):
            name = f"imgclf-swarm-{kind}:{tag}"
            stack.build_image(self.host, self.root / context, stack.ImageSpec(kind, "Dockerfile", ""), name,
                              base, "", self.say)
            names[kind] = name
        return names

    # --- network and registry ------------------------------------------------------------------
    def create_network(self) -> None:
        self.network = self.host.networks.create(self.prefix, driver="bridge", labels=self.labels)

    def start_registry(self, image: str) -> None:
        """The registry, as `registry:5000` on the cluster's network and on a free port of the
        host's loopback (which the host's engine pushes to: loopback needs no TLS)."""
        container = self.host.containers.create(image, name=f"{self.prefix}-registry", labels=self.labels,
                                                ports={"5000/tcp": ("127.0.0.1", None)}, detach=True)
        self.network.connect(container, aliases=[REGISTRY_ALIAS])
        container.start()
        deadline = time.monotonic() + 30
        while not self.registry_port:
            container.reload()
            bound = (container.attrs["NetworkSettings"]["Ports"] or {}).get("5000/tcp")
            if bound:
                self.registry_port = int(bound[0]["HostPort"])
            elif time.monotonic() > deadline:
                raise ClusterError(f"the registry did not start: {container.logs(tail=20).decode(errors='replace')}")
            else:
                time.sleep(0.5)

    def push(self, image: str) -> str:
        """Pushes a host image to the registry; returns the name the nodes pull it by."""
        repository, _, tag = image.rpartition(":") if ":" in image.rsplit("/", 1)[-1] else (image, "", "latest")
        local = f"127.0.0.1:{self.registry_port}/{repository.rsplit('/', 1)[-1]}"
        self.host.images.get(image).tag(local, tag)
        self.pushed_tags.append(f"{local}:{tag}")
        started = time.monotonic()
        for chunk in self.host.images.push(local, tag, stream=True, decode=True):
            if "error" in chunk:
                raise ClusterError(f"pushing {image}: {chunk['error']}")
        self.say(f"pushed {image} to the registry in {time.monotonic() - started:.0f} s")
        return f"{REGISTRY}/{repository.rsplit('/', 1)[-1]}:{tag}"

    # --- nodes ---------------------------------------------------------------------------------
    def start_node(self, image: str, hostname: str) -> Node:
        name = f"{self.prefix}-{hostname}"
        sockets = self.work / "nodes" / hostname
        sockets.mkdir(parents=True)
        self.host.volumes.create(f"{name}-docker", labels=self.labels)
        self.host.containers.run(
            image, name=name, hostname=hostname, detach=True, labels=self.labels, network=self.network.name,
            cap_add=list(NODE_CAPABILITIES), security_opt=["seccomp=unconfined", "apparmor=unconfined"],
            device_cgroup_rules=["a *:* rwm"], tmpfs={"/run": ""},
            volumes={"/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "rw"},
                     str(sockets): {"bind": NODE_SOCKET_FOLDER, "mode": "rw"},
                     # the shared folder at the same path on every node, as a real share is mounted
                     str(self.shared): {"bind": str(self.shared), "mode": "rw"},
                     f"{name}-docker": {"bind": "/var/lib/docker", "mode": "rw"}},
            # no-new-privileges for every container the node runs: `docker stack deploy` cannot
            # set it per service (it drops security_opt).
            command=["-H", "unix:///var/run/docker.sock", "-H", f"unix://{NODE_SOCKET_FOLDER}/docker.sock",
                     "--insecure-registry", REGISTRY, "--no-new-privileges"])
        node = Node(name, hostname, sockets / "docker.sock")
        self._wait_for_engine(node)
        container = self.host.containers.get(name)
        node.address = container.attrs["NetworkSettings"]["Networks"][self.network.name]["IPAddress"]
        self.nodes.append(node)
        return node

    def _wait_for_engine(self, node: Node) -> None:
        deadline = time.monotonic() + ENGINE_START_SECONDS
        while True:
            try:
                if node.socket.exists():
                    client = node.client(timeout=10)
                    client.ping()
                    client.close()
                    return
            except Exception:   # not listening yet
                pass
            if time.monotonic() > deadline:
                logs = self.host.containers.get(node.name).logs(tail=20).decode(errors="replace")
                raise ClusterError(f"the engine of node {node.hostname} did not start:\n{logs}")
            time.sleep(1)

    def form_swarm(self) -> None:
        """The first node initialises the swarm and manages it; the others join as workers."""
        manager, *workers = self.nodes
        client = manager.client()
        client.swarm.init(advertise_addr=manager.address, listen_addr="0.0.0.0:2377")
        token = client.swarm.attrs["JoinTokens"]["Worker"]
        client.close()
        for worker in workers:
            joining = worker.client()
            joining.swarm.join(remote_addrs=[f"{manager.address}:2377"], join_token=token,
                               advertise_addr=worker.address)
            joining.close()

    @property
    def manager(self) -> Node:
        return self.nodes[0]

    def kill(self, node: Node) -> None:
        """Removes a node's container at once, as a machine that dies (no leaving the swarm)."""
        self.host.containers.get(node.name).remove(force=True)

    # --- cleanup -------------------------------------------------------------------------------
    def remove(self) -> list[str]:
        """Removes every container, volume and network labelled with this run, and the tags made to
        push; returns what it could not remove."""
        filters = {"label": f"{LABEL}={self.run_id}"}
        steps = [(f"container {c.name}", lambda c=c: c.remove(force=True, v=True))
                 for c in self.host.containers.list(all=True, filters=filters)]
        steps += [(f"volume {v.name}", lambda v=v: v.remove(force=True)) for v in self.host.volumes.list(filters=filters)]
        steps += [(f"network {n.name}", n.remove) for n in self.host.networks.list(filters=filters)]
        steps += [(f"image tag {t}", lambda t=t: self.host.images.remove(t, noprune=True)) for t in self.pushed_tags]
        left = []
        for what, step in steps:
            try:
                step()
            except Exception as error:   # a timeout or an API error: say what is left, go on
                left.append(f"{what}: {getattr(error, 'explanation', None) or error}")
        shutil.rmtree(self.work / "nodes", ignore_errors=True)
        return left
