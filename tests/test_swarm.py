"""The Swarm deployment's files and library without a swarm: the stack and balancer files against
what the library passes them, the replica bookkeeping, and the counted traffic against a live local
server. The multi-node run itself is tests/e2e/test_swarm_e2e.py (`make swarm-e2e`)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import requests
import yaml

from imgclf import contract, swarm
from imgclf.data_folders import iter_image_files
from imgclf.settings import SwarmSettings
from imgclf.swarm.traffic import Counts, Traffic, clients_for

REPO = Path(__file__).resolve().parents[1]
STACK = REPO / swarm.STACK_FILE
BALANCER = REPO / swarm.BALANCER_FILE


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def test_variables_bind_the_shared_folder_or_mount_nfs(tmp_path):
    bound = swarm.variables(SwarmSettings(models=str(tmp_path), models_device="/mnt/share/models"))
    assert (bound["MODELS_VOLUME_TYPE"], bound["MODELS_VOLUME_OPTIONS"], bound["MODELS_VOLUME_DEVICE"]) == \
        ("none", "bind", "/mnt/share/models")
    assert swarm.variables(SwarmSettings(models=str(tmp_path)))["MODELS_VOLUME_DEVICE"] == str(tmp_path.resolve())
    nfs = swarm.variables(SwarmSettings(nfs="10.0.0.5:/export/models"))
    assert nfs["MODELS_VOLUME_TYPE"] == "nfs" and nfs["MODELS_VOLUME_DEVICE"] == ":/export/models"
    assert nfs["MODELS_VOLUME_OPTIONS"].startswith("addr=10.0.0.5,nfsvers=4.1")
    with pytest.raises(swarm.SwarmError, match="server:/export"):
        swarm.variables(SwarmSettings(nfs="10.0.0.5"))
    with pytest.raises(contract.ContractError):
        swarm.variables(SwarmSettings(model_name="../x"))


def test_the_files_read_exactly_the_variables_the_library_passes():
    passed = set(swarm.variables(SwarmSettings()))
    read = set()
    for path in (STACK, BALANCER):
        read |= set(re.findall(r"\$\{([A-Z_]+)", path.read_text()))
    assert read <= passed, read - passed
    assert passed <= read, passed - read


def test_stack_serving_is_replicated_dnsrr_rolled_start_first_and_hardened():
    serving = load(STACK)["services"]["serving"]
    deploy = serving["deploy"]
    assert deploy["endpoint_mode"] == "dnsrr" and "ports" not in serving   # no routing mesh, no VIP
    assert deploy["replicas"] == "${REPLICAS:-2}"
    assert deploy["update_config"]["order"] == "start-first"
    assert deploy["update_config"]["failure_action"] == "rollback"
    assert deploy["rollback_config"]["order"] == "start-first"
    assert deploy["restart_policy"]["condition"] == "any"
    assert set(deploy["resources"]) == {"limits", "reservations"}
    assert all(set(v) == {"cpus", "memory"} for v in deploy["resources"].values())
    assert serving["read_only"] is True and serving["cap_drop"] == ["ALL"] and serving["user"] == "10001:10001"
    mounts = {m["target"]: m for m in serving["volumes"]}
    assert mounts["/models"]["read_only"] is True and mounts["/tmp"]["type"] == "tmpfs"
    assert "--model_config_file=/models/.serving/models.config" in serving["command"]
    network = load(STACK)["networks"]["serving"]
    assert network["driver"] == "overlay" and network["attachable"] is True


def test_stack_healthcheck_is_the_compose_files():
    """One readiness rule: healthy = an AVAILABLE version, asked the same way everywhere."""
    compose = load(REPO / "docker-compose.yml")["services"]["serving"]["healthcheck"]["test"]
    assert load(STACK)["services"]["serving"]["healthcheck"]["test"] == compose


def compose_config(env: dict) -> dict:
    from imgclf import stack

    result = subprocess.run([*stack.compose_command(), "-f", str(BALANCER), "config"], capture_output=True,
                            text=True, env={"PATH": "/usr/bin:/bin:/usr/local/bin", **env}, cwd=REPO)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)["services"]["balancer"]


def test_balancer_binds_loopback_unless_told_and_is_hardened():
    pytest.importorskip("docker")
    try:
        default = compose_config(swarm.variables(SwarmSettings()))
    except Exception as error:  # no compose installed at all
        pytest.skip(f"compose: {error}")
    addresses = {p["host_ip"] if isinstance(p, dict) else p.split(":")[0] for p in default["ports"]}
    assert addresses == {"127.0.0.1"}, default["ports"]
    published = compose_config(swarm.variables(SwarmSettings(bind="0.0.0.0", rest_port=9501)))
    assert any("9501" in str(p) for p in published["ports"])
    assert {p["host_ip"] if isinstance(p, dict) else p.split(":")[0] for p in published["ports"]} == {"0.0.0.0"}
    assert default["read_only"] is True and default["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in default["security_opt"]


def test_balancer_config_balances_both_protocols_over_the_dns_name():
    config = (REPO / swarm.BALANCER_CONTEXT / "haproxy.cfg").read_text()
    dockerfile = (REPO / swarm.BALANCER_CONTEXT / "Dockerfile").read_text()
    assert "bind :8500 proto h2" in config and "bind :8501" in config
    assert config.count('server-template serving "1-${SERVING_SLOTS}" "${SERVING_HOST}') == 2
    assert "http-check expect string AVAILABLE" in config and "mode http" in config
    for variable in set(re.findall(r"\$\{([A-Z_]+)\}", config)):
        assert f"{variable}=" in dockerfile, f"{variable} has no default in the Dockerfile"


# --- replica bookkeeping --------------------------------------------------------------------------
def replica(node: str, state: str = "running", versions=None, desired: str = "running") -> swarm.Replica:
    return swarm.Replica(task=node, slot=1, node=node, state=state, desired=desired,
                         versions=versions if versions is not None else {7: "AVAILABLE"})


def test_converged_needs_every_replica_running_and_serving_the_same_versions():
    status = swarm.SwarmStatus("s", replicas=[replica("a"), replica("b")])
    assert status.converged(2) and not status.converged(3)
    status.replicas.append(replica("c", state="starting", versions={}))
    assert not status.converged(2)                       # a third task still wanted
    status.replicas[-1] = replica("c", state="shutdown", desired="shutdown", versions={})
    assert status.converged(2)                           # one going away does not count
    status.replicas[1] = replica("b", versions={7: "END", 8: "AVAILABLE"})
    assert not status.converged(2)                       # two versions served


def test_render_names_every_replica_its_node_state_and_version():
    status = swarm.SwarmStatus("imgclf_serving", image="tensorflow/serving:2.20.0", wanted=2,
                               replicas=[replica("node-a"), replica("node-b", state="starting", versions={})],
                               nodes=[{"hostname": "node-a", "role": "manager", "state": "ready", "availability": "active"}])
    text = swarm.render(status)
    assert "node-a" in text and "running" in text and " 7 " in text and "starting" in text
    assert "balancer: not running here" in text


# --- against a live local server ------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(trained_model):
    from imgclf.serving.process import LocalServer

    monitoring = REPO / "serving" / "monitoring.config"
    with LocalServer(trained_model.base_path, trained_model.model_name,
                     extra_args=[f"--monitoring_config_file={monitoring}"]) as running:
        yield running


def page_images(trained_model, count: int = 4) -> list[bytes]:
    return [p.read_bytes() for p in sorted(iter_image_files(trained_model.data_dir))[:count]]


@pytest.mark.slow
def test_traffic_counts_answers_by_version_and_the_server_counts_them_too(server, trained_model):
    before = swarm.predict_counts(requests.get(server.rest_url + swarm.METRICS).text, trained_model.model_name)
    traffic = Traffic(clients_for(server.rest_url, server.grpc_target, trained_model.model_name, 2, 10.0),
                      page_images(trained_model), pause=0.01, retries=0)
    traffic.start()
    import time

    time.sleep(2)
    traffic.stop()
    counts = traffic.snapshot()
    assert counts["rest"].requests > 5 and counts["grpc"].requests > 2
    assert counts["rest"].failed == counts["grpc"].failed == 0
    assert counts["grpc"].versions == {trained_model.version: counts["grpc"].requests}
    after = swarm.predict_counts(requests.get(server.rest_url + swarm.METRICS).text, trained_model.model_name)
    assert after["REST"] - before.get("REST", 0) == counts["rest"].requests
    assert after["GRPC"] - before.get("GRPC", 0) == counts["grpc"].requests


@pytest.mark.slow
def test_traffic_counts_retries_and_failures_when_nothing_answers(trained_model):
    from imgclf.serving.process import free_port

    traffic = Traffic(clients_for(f"http://127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}",
                                  trained_model.model_name, 1, 1.0), page_images(trained_model, 1),
                      pause=0.0, retries=1)
    traffic.start()
    import time

    time.sleep(1.5)
    traffic.stop()
    for protocol, counts in traffic.snapshot().items():
        assert counts.requests >= 1 and counts.failed == counts.requests, (protocol, counts)
        assert counts.retried == counts.requests and counts.retries == counts.requests
    assert "cannot reach" in traffic.errors[0] or "unavailable" in traffic.errors[0]


def test_counts_subtract_per_version():
    later = Counts(10, 1, 2, 3, {5: 4, 6: 5})
    earlier = Counts(4, 1, 1, 1, {5: 4})
    assert later.minus(earlier) == Counts(6, 0, 1, 2, {6: 5})
