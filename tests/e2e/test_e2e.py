"""The Docker Compose stack on a real Docker engine: the README's `make e2e`, and the compose file
and runner it relies on. Skipped only where no Docker engine answers (CI starts one)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from imgclf import runner, stack

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e


def compose_config(*profiles: str) -> str:
    env = {**os.environ, "COMPOSE_PROFILES": ",".join(profiles)}
    result = subprocess.run([*stack.compose_command(), "-f", str(REPO / "docker-compose.yml"), "config"],
                            capture_output=True, text=True, env=env, cwd=REPO)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_compose_file_is_valid_and_serving_binds_loopback(docker_engine):
    config = compose_config("train", "validate")
    for service in ("trainer:", "serving:", "client:"):
        assert service in config
    assert "tensorflow/serving:2.20.0" in config
    assert "127.0.0.1" in config and "0.0.0.0" not in config
    assert "condition: service_healthy" in config


def test_every_service_is_hardened(docker_engine):
    """Row 16 of the hardening issue: read-only root filesystem, no capabilities, no privilege gain,
    a non-root user, /tmp in memory."""
    import yaml

    services = yaml.safe_load(compose_config("train", "validate"))["services"]
    for name in ("trainer", "serving", "client"):
        service = services[name]
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"], name
        assert service["security_opt"] == ["no-new-privileges:true"], name
        assert service["user"] == "10001:10001" and any(t.startswith("/tmp") for t in service["tmpfs"]), name
        assert all(volume.endswith(":ro") for volume in service["volumes"] if "/models" not in volume), name
    assert services["serving"]["volumes"][0].endswith("/models:ro")


def test_serving_image_variable_selects_the_stand_in(docker_engine, monkeypatch):
    monkeypatch.setenv("SERVING_IMAGE", stack.IMAGES["serving"].default_name)
    config = compose_config()
    assert stack.IMAGES["serving"].default_name in config
    assert "tensorflow/serving" not in config


def test_runner_turns_host_paths_into_mounts(tmp_path):
    data, models, module = tmp_path / "data", tmp_path / "models", tmp_path / "module"
    data.mkdir()
    module.mkdir()
    invocation = runner.train_invocation(["--data", str(data), "--models", str(models), "--module", str(module),
                                          "--epochs", "3"])
    assert invocation.variables["DATA"] == str(data) and invocation.variables["MODELS"] == str(models)
    # Made here for the user, so the container writes as its owner: the user, or, when root runs
    # make, the images' own non-root user.
    assert models.is_dir()
    expected = stack.IMAGE_UID if os.geteuid() == 0 else os.getuid()
    assert invocation.variables["IMGCLF_USER"] == f"{expected}:{stack.IMAGE_UID if os.geteuid() == 0 else os.getgid()}"
    assert invocation.mounts == ["-v", f"{module}:/module:ro"]
    assert invocation.flags == ["--module", "/module", "--epochs", "3"]
    hub = runner.train_invocation(["--data", str(data), "--models", str(models), "--module", "scratch"])
    assert hub.mounts == [] and hub.flags == ["--module", "scratch"]


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can make a folder owned by root")
def test_runner_refuses_a_root_owned_models_folder_with_the_fix(tmp_path):
    data, models = tmp_path / "data", tmp_path / "models"
    data.mkdir()
    (models / "image_classifier").mkdir(parents=True)   # made by root, before the runner
    with pytest.raises(stack.StackError, match=r"owned by root.*chown -R 10001:10001"):
        runner.train_invocation(["--data", str(data), "--models", str(models)])
    os.chown(models, 1234, 1234)   # a user's folder, but a version folder inside left by root
    with pytest.raises(stack.StackError, match=f"{models / 'image_classifier'} is owned by root"):
        runner.train_invocation(["--data", str(data), "--models", str(models)])
    os.chown(models / "image_classifier", 1234, 1234)
    assert runner.train_invocation(["--data", str(data), "--models", str(models)]).variables["IMGCLF_USER"] == "1234:1234"


def test_runner_shows_host_paths_for_container_paths():
    mounts = {"/models": "/home/u/models"}
    assert runner.to_host_path("/models/image_classifier/17\n", mounts) == "/home/u/models/image_classifier/17\n"
    assert runner.to_host_path("/modelsX/1\n", mounts) == "/modelsX/1\n"
    assert runner.to_host_path("accuracy 0.9\n", mounts) == "accuracy 0.9\n"


def test_local_runner_runs_the_command_itself(tmp_path, capsys):
    assert runner.main(["--runner", "local", "train"]) == 2
    assert "imgclf train: --data is required" in capsys.readouterr().err
    assert runner.main(["--runner", "local", "validate", str(tmp_path / "absent")]) == 2
    assert f"DIR {tmp_path / 'absent'}: no such folder" in capsys.readouterr().err


def test_make_e2e_trains_serves_validates_and_rolls_out_without_a_failed_request(docker_engine, run_make):
    """The README's command, as a user runs it; its output is shown (the phase times, image sizes)."""
    result, summary = run_make("e2e", "== e2e summary")
    assert "imgclf e2e: passed" in result.stdout
    traffic = re.search(r"traffic during the rollout: (\d+) requests in (\d+) passes, 0 failed", summary)
    assert traffic and int(traffic.group(1)) > 0, summary
    for phase in ("base image", "builds", "train", "first answer", "validate", "rollout"):
        assert phase in summary
    # Its own project only: other e2e runs may share the engine.
    project = re.search(r"compose project: (\S+)", summary)
    assert project, summary
    leftovers = docker_engine.containers.list(
        all=True, filters={"label": f"com.docker.compose.project={project.group(1)}"})
    assert not [c.name for c in leftovers]


@pytest.fixture(scope="module")
def images(docker_engine) -> dict[str, str]:
    """The three images, built as `make e2e` builds them (cached layers: seconds when up to date)."""
    settings = stack.settings_from_environment()
    quiet = lambda message: None  # noqa: E731
    base = stack.resolve_base_image(docker_engine, settings.base_image, quiet)
    return stack.build_images(docker_engine, REPO, ["trainer", "client", "serving"], base,
                              settings.ca_bundle or stack.default_ca_bundle(), quiet)


def test_images_run_as_non_root_and_the_client_carries_no_tensorflow(docker_engine, images):
    for variable in ("TRAINER_IMAGE", "CLIENT_IMAGE", "SERVING_IMAGE"):
        assert docker_engine.images.get(images[variable]).attrs["Config"]["User"] == "10001:10001"
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('{}') is None)"
    for image, module, present in ((images["CLIENT_IMAGE"], "tensorflow", False),
                                   (images["CLIENT_IMAGE"], "requests", True),
                                   (images["TRAINER_IMAGE"], "tensorflow", True)):
        container = docker_engine.containers.run(image, entrypoint=["python3", "-c", probe.format(module)],
                                                 detach=True)
        try:
            assert container.wait(timeout=60)["StatusCode"] == (0 if present else 1), (image, module)
        finally:
            container.remove(force=True)


def test_the_trainer_image_refuses_to_run_as_root(docker_engine, images):
    container = docker_engine.containers.run(images["TRAINER_IMAGE"], ["--data", "/tmp"], user="0:0", detach=True)
    try:
        assert container.wait(timeout=120)["StatusCode"] == 2
        assert "refusing to run as root" in container.logs().decode()
    finally:
        container.remove(force=True)


def test_the_trainer_container_in_4_gib_skips_huge_images_and_publishes(docker_engine, images, trained_model,
                                                                        tmp_path):
    """Rows 12 and 13 of the hardening issue: a 20000x20000 JPEG and a 23000x23000 PNG among the
    training images, the trainer hardened as compose runs it and limited to 4 GiB."""
    from hostile_files import huge_jpeg, huge_png

    data, models = tmp_path / "data", tmp_path / "models"
    shutil.copytree(trained_model.data_dir, data)
    data.chmod(0o755)   # a pytest folder is private to its owner; the trainer runs as 10001
    huge_jpeg(data / trained_model.labels[0] / "huge.jpg")
    huge_png(data / trained_model.labels[1] / "huge.png")
    models.mkdir()
    user = f"{os.getuid()}:{os.getgid()}"
    if os.geteuid() == 0:
        os.chown(models, stack.IMAGE_UID, stack.IMAGE_UID)
        user = f"{stack.IMAGE_UID}:{stack.IMAGE_UID}"
    container = docker_engine.containers.run(
        images["TRAINER_IMAGE"], ["--data", "/data", "--models", "/models", "--module", "scratch",
                                  "--image-size", "32", "--epochs", "2", "--progress", "0"],
        user=user, mem_limit="4g", memswap_limit="4g", read_only=True, tmpfs={"/tmp": ""}, cap_drop=["ALL"],
        security_opt=["no-new-privileges:true"], detach=True,
        volumes={str(data): {"bind": "/data", "mode": "ro"}, str(models): {"bind": "/models", "mode": "rw"}})
    try:
        status = container.wait(timeout=900)
        container.reload()
        logs = container.logs().decode(errors="replace")
        assert status["StatusCode"] == 0 and not container.attrs["State"]["OOMKilled"], logs[-3000:]
    finally:
        container.remove(force=True)
    for side in (20000, 23000):
        assert f"image too large: {side}x{side} pixels" in logs
    assert re.search(r"^/models/image_classifier/\d+$", logs, re.MULTILINE), logs[-2000:]


def test_stand_in_honours_the_official_entrypoint_contract(docker_engine, images, trained_model, tmp_path):
    """MODEL_NAME and MODEL_BASE_PATH from the environment, REST on 8501, flags after the image
    appended (here --model_name, which then wins, as with tensorflow_model_server)."""
    import requests

    from imgclf.serving.process import free_port

    models = tmp_path / "models"
    shutil.copytree(trained_model.base_path, models / trained_model.model_name)
    rest_port = free_port()
    container = docker_engine.containers.run(
        images["SERVING_IMAGE"], command=["--model_name=renamed"], detach=True,
        environment={"MODEL_NAME": trained_model.model_name, "MODEL_BASE_PATH": "/srv/models"},
        volumes={str(models): {"bind": "/srv/models", "mode": "ro"}},
        ports={"8501/tcp": ("127.0.0.1", rest_port)})
    try:
        deadline = time.monotonic() + 120
        states = None
        while time.monotonic() < deadline and states is None:
            try:
                reply = requests.get(f"http://127.0.0.1:{rest_port}/v1/models/renamed", timeout=5)
                if reply.status_code == 200 and "AVAILABLE" in reply.text:
                    states = reply.json()["model_version_status"]
            except requests.ConnectionError:
                pass
            container.reload()
            assert container.status == "running", container.logs().decode()[-2000:]
            time.sleep(0.5)
        assert states == [{"version": str(trained_model.version), "state": "AVAILABLE",
                           "status": {"error_code": "OK", "error_message": ""}}], container.logs().decode()[-2000:]
    finally:
        container.remove(force=True)


def test_traffic_report_counts_a_pass_without_summary_as_failed():
    """A pass where the client could not even run (no summary line) must not vanish from the count."""
    from imgclf.e2e import traffic_report

    log = ("pass 1 rc=0 images 24   predicted 24   errors 0 model version 17 (from the model metadata)\n"
           "pass 2 rc=3 \nimgclf validate: cannot reach http://serving:8501\n"
           "pass 3 rc=1 images 24   predicted 23   errors 1 model version 17 at the start, 18 at the end\n")
    traffic = traffic_report(log)
    assert (traffic.passes, traffic.failed_passes, traffic.requests, traffic.failed_requests) == (3, 2, 48, 1)
    assert traffic.versions[2].endswith("18 at the end")


def test_runner_gives_the_client_the_owner_of_the_folders_it_writes(tmp_path):
    pages, cache, output = tmp_path / "pages", tmp_path / "pdf-cache", tmp_path / "out" / "results.csv"
    pages.mkdir()
    invocation = runner.validate_invocation([str(pages), "--pdf-cache", str(cache), "--output", str(output)])
    expected = f"{stack.IMAGE_UID}:{stack.IMAGE_UID}" if os.geteuid() == 0 else f"{os.getuid()}:{os.getgid()}"
    assert invocation.variables["IMGCLF_USER"] == expected   # made here: never root-owned
    assert cache.is_dir() and output.parent.is_dir()
    assert invocation.flags == ["--pdf-cache", "/pdf-cache", "--output", "/output/results.csv"]
