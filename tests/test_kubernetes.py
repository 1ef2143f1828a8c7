"""The Kubernetes manifests (deploy/kubernetes), rendered with the real `kubectl kustomize` and
checked offline: Kubernetes schemas (kubernetes-validate), then the project's own rules. No cluster
is reachable from our machines; what these tests cannot show is listed in docs/scale-out.md.

Skipped only where kubectl is absent; CI installs Debian's kubernetes-client and sets
IMGCLF_REQUIRE_KUBECTL=1, which makes its absence a failure."""

from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path

import pytest

from imgclf import __version__, kube

REPO = Path(__file__).resolve().parents[1]
KUBERNETES = REPO / "deploy" / "kubernetes"
SERVING_SIDE = ("base", "overlays/production")
JOBS = ("jobs", "overlays/production/jobs")


@pytest.fixture(scope="module")
def kubectl() -> str:
    try:
        return kube.kubectl()
    except kube.KubeError as error:
        if os.environ.get("IMGCLF_REQUIRE_KUBECTL") == "1":
            pytest.fail(f"IMGCLF_REQUIRE_KUBECTL=1 but {error}")
        pytest.skip(str(error))


@pytest.fixture(scope="module")
def rendered(kubectl) -> dict[str, list[dict]]:
    return {name: kube.render(KUBERNETES / name) for name in SERVING_SIDE + JOBS}


def by_kind(objects: list[dict], kind: str, name: str) -> dict:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"].startswith(name)]
    return found


def test_every_kustomization_is_checked_and_passes(kubectl):
    folders = kube.kustomizations(KUBERNETES)
    assert sorted(str(f.relative_to(KUBERNETES)) for f in folders) == sorted(SERVING_SIDE + JOBS)
    for folder in folders:
        objects, findings = kube.check(folder, REPO)
        assert objects and findings == [], (folder, findings)


def test_the_serving_side_holds_what_the_issue_lists(rendered):
    for name in SERVING_SIDE:
        kinds = sorted((o["kind"], o["metadata"]["name"].split("-")[0] if o["kind"] == "ConfigMap"
                        else o["metadata"]["name"]) for o in rendered[name])
        assert kinds == sorted([
            ("ConfigMap", "serving"), ("Deployment", "balancer"), ("Deployment", "serving"),
            ("HorizontalPodAutoscaler", "serving"), ("PersistentVolumeClaim", "data"),
            ("PersistentVolumeClaim", "models"), ("PodDisruptionBudget", "serving"),
            ("Service", "balancer"), ("Service", "serving"), ("Service", "serving-replicas")]), name
    jobs = sorted(o["metadata"]["name"] for o in rendered["jobs"])
    assert jobs == ["imgclf-train", "imgclf-validate"]


def test_the_overlay_pins_images_to_its_registry_and_scales_up(rendered):
    production = rendered["overlays/production"] + rendered["overlays/production/jobs"]
    images = sorted(c["image"] for o in production if o["kind"] in ("Deployment", "Job")
                    for c in o["spec"]["template"]["spec"]["containers"])
    assert images == sorted([f"registry.example.com/imgclf/{name}:{__version__}"
                             for name in ("balancer", "client", "trainer")] + ["tensorflow/serving:2.20.0"])
    assert all(o["metadata"]["namespace"] == "imgclf" for o in production)
    assert by_kind(production, "HorizontalPodAutoscaler", "serving")["spec"]["minReplicas"] == 3
    for claim in ("models", "data"):
        assert by_kind(production, "PersistentVolumeClaim", claim)["spec"]["storageClassName"] == "nfs-client"


def test_a_pin_renames_the_config_map_and_so_rolls_the_pods(rendered, tmp_path):
    """The Deployment mounts the generated ConfigMap by its hashed name; a changed models.config
    (what `make pin` writes) gives it a new name, which changes the pod template: a rolling update."""
    from imgclf.rollout.pinning import model_entry, read_models_config, set_pinned, write_models_config

    def config_name(objects):
        name = by_kind(objects, "ConfigMap", "serving-config")["metadata"]["name"]
        volumes = by_kind(objects, "Deployment", "serving")["spec"]["template"]["spec"]["volumes"]
        assert {"name": "config", "configMap": {"name": name}} in volumes
        return name

    shutil.copytree(KUBERNETES / "base", tmp_path / "base")
    config_file = tmp_path / "base" / "config" / "models.config"
    config = read_models_config(config_file)
    set_pinned(model_entry(config, "image_classifier", "/models/image_classifier"), {"stable": 17})
    write_models_config(config_file, config)
    assert config_name(kube.render(tmp_path / "base")) != config_name(rendered["base"])


def test_config_copies_match_the_repository_serving_folder():
    for name in ("models.config", "monitoring.config", "session.config"):
        assert (KUBERNETES / "base/config" / name).read_text() == (REPO / "serving" / name).read_text()


def test_the_production_models_config_is_a_config_the_servers_read(tmp_path):
    from imgclf.rollout.pinning import read_models_config

    config = read_models_config(KUBERNETES / "overlays/production/models.config")
    assert [(c.name, c.base_path) for c in config.model_config_list.config] == \
        [("image_classifier", "/models/image_classifier")]


# --- the checks themselves fail where they should --------------------------------------------------
def serving_container(objects: list[dict]) -> dict:
    return by_kind(objects, "Deployment", "serving")["spec"]["template"]["spec"]["containers"][0]


def mutated(objects: list[dict], change) -> list[dict]:
    objects = copy.deepcopy(objects)
    change(objects)
    return objects


BREAKAGES = {
    "is not pinned to a tag": lambda o: serving_container(o).update(image="tensorflow/serving:latest"),
    "is not the package version": lambda o: by_kind(o, "Deployment", "balancer")["spec"]["template"]["spec"]
    ["containers"][0].update(image="imgclf-balancer:0.0.9"),
    "may run as root": lambda o: serving_container(o)["securityContext"].update(runAsUser=0),
    "root filesystem is writable": lambda o: serving_container(o)["securityContext"].update(readOnlyRootFilesystem=False),
    "allowPrivilegeEscalation": lambda o: serving_container(o)["securityContext"].pop("allowPrivilegeEscalation"),
    "does not drop ALL": lambda o: serving_container(o)["securityContext"]["capabilities"].update(drop=[]),
    "claim models mounted writable": lambda o: serving_container(o)["volumeMounts"][0].pop("readOnly"),
    "maxUnavailable must be 0": lambda o: by_kind(o, "Deployment", "serving")["spec"]["strategy"]
    ["rollingUpdate"].update(maxUnavailable=1),
    "which the HorizontalPodAutoscaler owns": lambda o: by_kind(o, "Deployment", "serving")["spec"].update(replicas=2),
    "readiness probe": lambda o: serving_container(o).pop("readinessProbe"),
    "no liveness probe": lambda o: serving_container(o).pop("livenessProbe"),
    "ports": lambda o: serving_container(o)["ports"][0].update(containerPort=9000),
    "minReplicas of 2": lambda o: by_kind(o, "HorizontalPodAutoscaler", "serving")["spec"].update(minReplicas=1),
    "ReadWriteMany": lambda o: by_kind(o, "PersistentVolumeClaim", "models")["spec"].update(accessModes=["ReadWriteOnce"]),
    "no limits": lambda o: serving_container(o)["resources"].pop("limits"),
    "a subPath never updates": lambda o: serving_container(o)["volumeMounts"][1].update(subPath="models.config"),
    "service-account token": lambda o: by_kind(o, "Deployment", "serving")["spec"]["template"]["spec"]
    .pop("automountServiceAccountToken"),
    "8500->grpc": lambda o: by_kind(o, "Service", "serving-replicas")["spec"]["ports"].pop(),
}


@pytest.mark.parametrize("expected", sorted(BREAKAGES))
def test_project_rules_catch_a_broken_manifest(rendered, expected):
    broken = mutated(rendered["base"], BREAKAGES[expected])
    findings = kube.project_findings(broken)
    assert any(expected in finding for finding in findings), findings


def test_job_arguments_are_parsed_by_the_commands_own_parsers(rendered):
    def misspell(objects):
        by_kind(objects, "Job", "imgclf-validate")["spec"]["template"]["spec"]["containers"][0]["args"] += ["--shards", "2"]

    findings = kube.project_findings(mutated(rendered["jobs"], misspell))
    assert len(findings) == 1 and "imgclf validate" in findings[0] and "--shards" in findings[0], findings


def test_the_schemas_catch_a_wrong_type_and_an_unknown_field(rendered):
    def wrong_type(objects):
        by_kind(objects, "HorizontalPodAutoscaler", "serving")["spec"]["minReplicas"] = "two"

    def unknown_field(objects):
        serving_container(objects)["readinessProbe"]["periodSecond"] = 5

    for change, word in ((wrong_type, "minReplicas"), (unknown_field, "periodSecond")):
        findings = kube.schema_findings(mutated(rendered["base"], change))
        assert len(findings) == len(kube.SCHEMA_VERSIONS), findings
        assert all(word in f or "'two'" in f for f in findings), findings


def test_fields_newer_than_kubectl_1_20s_kustomize_are_reported(tmp_path):
    (tmp_path / "kustomization.yaml").write_text("resources: [a.yaml]\nlabels: []\npatches: []\n")
    findings = kube.old_kustomize_findings(tmp_path)
    assert [f.split("`")[1] for f in findings] == ["labels", "patches"]


def test_k8s_check_command_passes_on_the_repository(kubectl, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    assert kube.main([]) == 0
    out = capsys.readouterr().out
    assert out.count(": ok") == len(SERVING_SIDE + JOBS), out


def test_k8s_check_command_fails_on_a_broken_kustomization(kubectl, tmp_path, capsys, monkeypatch):
    shutil.copytree(KUBERNETES / "base", tmp_path / "base")
    serving = tmp_path / "base" / "serving.yaml"
    serving.write_text(serving.read_text().replace("readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false"))
    monkeypatch.chdir(REPO)
    assert kube.main([str(tmp_path / "base")]) == 1
    assert "root filesystem is writable" in capsys.readouterr().out
