"""The Kubernetes manifests (deploy/kubernetes), rendered and checked offline, for want of a cluster.

    imgclf k8s-check [FOLDER ...]     (make k8s-check)

Each kustomization is rendered with `kubectl kustomize` (Debian's kubernetes-client or any newer
kubectl), every object is validated against the Kubernetes JSON schemas that the PyPI package
kubernetes-validate carries (no network), and the project's own rules are checked: images pinned,
no root, no privilege escalation, read-only root filesystems and mounts, the serving probes, ports,
rolling update, resources, HPA, PDB and the shared models claim. Exit status 1 lists what failed.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from imgclf import __version__, contract
from imgclf.settings import KubeSettings, settings_parser

KUBERNETES_FOLDER = Path("deploy") / "kubernetes"
# What Debian's kubectl 1.20 (its kustomize v2.0.3) understands; newer ones only warn about some.
KUSTOMIZE_V2_FIELDS = frozenset({
    "apiVersion", "kind", "resources", "bases", "namespace", "namePrefix", "nameSuffix",
    "commonLabels", "commonAnnotations", "patchesStrategicMerge", "patchesJson6902", "images",
    "configMapGenerator", "secretGenerator", "generatorOptions", "vars", "crds"})
# The schemas checked: the oldest and newest Kubernetes that kubernetes-validate carries and that
# has every API used (autoscaling/v2 and policy/v1 need 1.23 or newer).
SCHEMA_VERSIONS = ("1.25", "1.37")
SERVING_PORTS = {"grpc": 8500, "http": 8501}
MODELS_CLAIM = "models"
# Mounts a container may write to: the trainer publishes into the models, the client writes its
# results into the data claim; emptyDir scratch space (/tmp) everywhere.
WRITERS = {("trainer", "models"), ("client", "data")}


class KubeError(RuntimeError):
    """kubectl is missing or cannot render a kustomization; the message says which."""


def kubectl() -> str:
    """The kubectl to render with: $KUBECTL, else the one on PATH."""
    found = os.environ.get("KUBECTL") or shutil.which("kubectl")
    if not found:
        raise KubeError("kubectl is not installed (Debian: apt-get install kubernetes-client)")
    return found


def render(folder: str | os.PathLike) -> list[dict]:
    """The objects `kubectl kustomize FOLDER` renders."""
    import yaml

    result = subprocess.run([kubectl(), "kustomize", str(folder)], capture_output=True, text=True)
    if result.returncode != 0:
        raise KubeError(f"kubectl kustomize {folder} failed: {result.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def kustomizations(root: str | os.PathLike) -> list[Path]:
    """Every folder under root holding a kustomization.yaml, sorted."""
    return sorted(path.parent for path in Path(root).rglob("kustomization.yaml"))


def old_kustomize_findings(folder: str | os.PathLike) -> list[str]:
    """Fields of FOLDER's kustomization.yaml that kustomize v2.0.3 (kubectl 1.20) does not know."""
    import yaml

    fields = yaml.safe_load((Path(folder) / "kustomization.yaml").read_text()) or {}
    return [f"{folder}/kustomization.yaml: `{name}` is newer than kubectl 1.20's kustomize"
            for name in sorted(set(fields) - KUSTOMIZE_V2_FIELDS)]


def schema_findings(objects: list[dict], versions=SCHEMA_VERSIONS) -> list[str]:
    """Schema violations (strict: unknown fields count) of each object, for each Kubernetes version."""
    import kubernetes_validate

    findings = []
    for version in versions:
        for obj in objects:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except (kubernetes_validate.ValidationError, kubernetes_validate.SchemaNotFoundError) as error:
                message = getattr(error, "message", str(error)).splitlines()[0]
                findings.append(f"{describe(obj)}: Kubernetes {version} schema: {message}")
    return findings


def describe(obj: dict) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


# --- the project's own rules ---------------------------------------------------------------------
@dataclass
class Workload:
    """A Deployment or Job: its pod spec and the component (app.kubernetes.io/name) it runs."""
    obj: dict

    @property
    def name(self) -> str:
        return describe(self.obj)

    @property
    def component(self) -> str:
        return self.obj["spec"]["template"]["metadata"].get("labels", {}).get("app.kubernetes.io/name", "")

    @property
    def pod(self) -> dict:
        return self.obj["spec"]["template"]["spec"]


def workloads(objects: list[dict]) -> list[Workload]:
    return [Workload(o) for o in objects if o.get("kind") in ("Deployment", "Job", "StatefulSet", "DaemonSet")]


def image_findings(workload: Workload) -> list[str]:
    """Every image carries a tag (never latest) or a digest; the project's own images carry the
    package version, the official serving image the tag docker-compose.yml pins."""
    from imgclf.stack import OFFICIAL_SERVING_IMAGE

    findings = []
    for container in workload.pod.get("containers", []) + workload.pod.get("initContainers", []):
        image = container.get("image", "")
        name, _, tag = image.rpartition(":") if ":" in image.rsplit("/", 1)[-1] else (image, "", "")
        if "@sha256:" in image:
            continue
        if not tag or tag == "latest":
            findings.append(f"{workload.name}: image {image!r} is not pinned to a tag")
        elif name.rsplit("/", 1)[-1].startswith("imgclf-") or "/imgclf/" in name:
            if tag != __version__:
                findings.append(f"{workload.name}: image {image!r} is not the package version {__version__}")
        elif name.endswith("tensorflow/serving") and image != OFFICIAL_SERVING_IMAGE:
            findings.append(f"{workload.name}: image {image!r}, but the trainer's TensorFlow pairs with "
                            f"{OFFICIAL_SERVING_IMAGE}")
    return findings


def security_findings(workload: Workload) -> list[str]:
    """Non-root, no privilege escalation, every capability dropped, read-only root filesystem,
    no service-account token."""
    pod_context = workload.pod.get("securityContext", {})
    findings = []
    if workload.pod.get("automountServiceAccountToken") is not False:
        findings.append(f"{workload.name}: mounts a service-account token it does not need")
    for container in workload.pod.get("containers", []):
        context = {**pod_context, **container.get("securityContext", {})}
        where = f"{workload.name} container {container['name']}"
        if context.get("runAsNonRoot") is not True or context.get("runAsUser", 0) == 0:
            findings.append(f"{where}: may run as root (runAsNonRoot and a non-zero runAsUser wanted)")
        if context.get("allowPrivilegeEscalation") is not False:
            findings.append(f"{where}: allowPrivilegeEscalation is not false")
        if context.get("privileged"):
            findings.append(f"{where}: privileged")
        if "ALL" not in context.get("capabilities", {}).get("drop", []):
            findings.append(f"{where}: does not drop ALL capabilities")
        if context.get("readOnlyRootFilesystem") is not True:
            findings.append(f"{where}: root filesystem is writable")
    return findings


def mount_findings(workload: Workload) -> list[str]:
    """Claims mounted read-only (volume and mount both), except what the component writes."""
    claims = {v["name"]: v for v in workload.pod.get("volumes", []) if "persistentVolumeClaim" in v}
    findings = []
    for container in workload.pod.get("containers", []):
        for mount in container.get("volumeMounts", []):
            volume = claims.get(mount["name"])
            if volume is None:
                continue
            claim = volume["persistentVolumeClaim"]["claimName"]
            read_only = mount.get("readOnly") is True and volume["persistentVolumeClaim"].get("readOnly") is True
            if not read_only and (workload.component, claim) not in WRITERS:
                findings.append(f"{workload.name}: claim {claim} mounted writable at {mount['mountPath']}")
    return findings


def resource_findings(workload: Workload) -> list[str]:
    findings = []
    for container in workload.pod.get("containers", []):
        resources = container.get("resources", {})
        for kind in ("requests", "limits"):
            missing = {"cpu", "memory"} - set(resources.get(kind, {}))
            if missing:
                findings.append(f"{workload.name} container {container['name']}: no {kind} for {sorted(missing)}")
    return findings


def serving_findings(objects: list[dict]) -> list[str]:
    """The serving Deployment: ports, probes on the model's REST status, rolling update without
    unavailability, replicas left to the HPA, the models claim read-only, config as a folder."""
    deployments = [w for w in workloads(objects) if w.obj["kind"] == "Deployment" and w.component == "serving"]
    if len(deployments) != 1:
        return [f"expected one serving Deployment, found {len(deployments)}"]
    serving = deployments[0]
    (container,) = serving.pod["containers"]
    findings = []
    ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
    if ports != SERVING_PORTS:
        findings.append(f"{serving.name}: ports {ports}, expected {SERVING_PORTS}")
    readiness = " ".join(container.get("readinessProbe", {}).get("exec", {}).get("command", []))
    if "/v1/models/" not in readiness or "AVAILABLE" not in readiness or "8501" not in readiness:
        findings.append(f"{serving.name}: the readiness probe does not ask the model's REST status for AVAILABLE")
    if not container.get("livenessProbe"):
        findings.append(f"{serving.name}: no liveness probe")
    update = serving.obj["spec"].get("strategy", {})
    if update.get("type") != "RollingUpdate" or update.get("rollingUpdate", {}).get("maxUnavailable") != 0:
        findings.append(f"{serving.name}: the rolling update may take replicas away (maxUnavailable must be 0)")
    if "replicas" in serving.obj["spec"]:
        findings.append(f"{serving.name}: sets replicas, which the HorizontalPodAutoscaler owns")
    mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in serving.pod.get("volumes", [])
              if "persistentVolumeClaim" in v}
    models = mounts.get("/models")
    if not models or claims.get(models["name"]) != MODELS_CLAIM or not models.get("readOnly"):
        findings.append(f"{serving.name}: the {MODELS_CLAIM} claim is not mounted read-only at /models")
    config = mounts.get("/config")
    if not config or config.get("subPath"):
        findings.append(f"{serving.name}: the config is not mounted as a folder at /config (a subPath never updates)")
    if "--model_config_file=/config/models.config" not in container.get("args", []):
        findings.append(f"{serving.name}: not started with --model_config_file=/config/models.config")
    return findings + _service_findings(objects, serving) + _scaling_findings(objects, serving)


def _service_findings(objects: list[dict], serving: Workload) -> list[str]:
    labels = serving.obj["spec"]["template"]["metadata"]["labels"]
    findings = []
    services = [o for o in objects if o["kind"] == "Service"
                and o["spec"].get("selector") and o["spec"]["selector"].items() <= labels.items()]
    if not services:
        return [f"no Service selects {serving.name}"]
    for service in services:
        ports = {p["port"]: p.get("targetPort") for p in service["spec"]["ports"]}
        if ports != {8500: "grpc", 8501: "http"}:
            findings.append(f"{describe(service)}: ports {ports}, expected 8500->grpc and 8501->http")
    return findings


def _scaling_findings(objects: list[dict], serving: Workload) -> list[str]:
    name = serving.obj["metadata"]["name"]
    labels = serving.obj["spec"]["template"]["metadata"]["labels"]
    findings = []
    hpas = [o for o in objects if o["kind"] == "HorizontalPodAutoscaler"
            and o["spec"]["scaleTargetRef"].get("name") == name]
    if len(hpas) != 1 or hpas[0]["spec"].get("minReplicas", 1) < 2:
        findings.append(f"{serving.name}: needs one HorizontalPodAutoscaler with minReplicas of 2 or more")
    pdbs = [o for o in objects if o["kind"] == "PodDisruptionBudget"
            and o["spec"]["selector"].get("matchLabels", {}).items() <= labels.items()]
    if len(pdbs) != 1:
        findings.append(f"{serving.name}: needs one PodDisruptionBudget")
    claims = [o for o in objects if o["kind"] == "PersistentVolumeClaim" and o["metadata"]["name"] == MODELS_CLAIM]
    if claims and "ReadWriteMany" not in claims[0]["spec"].get("accessModes", []):
        findings.append(f"PersistentVolumeClaim/{MODELS_CLAIM}: every node mounts it: ReadWriteMany wanted")
    if not claims:
        findings.append(f"no PersistentVolumeClaim {MODELS_CLAIM}")
    return findings


def config_findings(objects: list[dict], repository: Path) -> list[str]:
    """The serving ConfigMap holds monitoring.config as serving/ has it, and a models.config that
    names the model's base path under /models."""
    maps = [o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("serving-config")]
    if len(maps) != 1:
        return [f"expected one serving-config ConfigMap, found {len(maps)}"]
    data = maps[0].get("data", {})
    findings = []
    if data.get("monitoring.config") != (repository / "serving" / "monitoring.config").read_text():
        findings.append(f"{describe(maps[0])}: monitoring.config differs from serving/monitoring.config")
    if f'base_path: "/models/{contract.DEFAULT_MODEL_NAME}"' not in data.get("models.config", ""):
        findings.append(f"{describe(maps[0])}: models.config does not serve /models/{contract.DEFAULT_MODEL_NAME}")
    return findings


# The project's commands whose images the Jobs run, and the command line parser of each.
JOB_PARSERS = {"trainer": ("imgclf.trainer.cli", "train"), "client": ("imgclf.client.cli", "validate")}
_KUBERNETES_VARIABLE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def argument_findings(workload: Workload) -> list[str]:
    """A Job's arguments parse with the command's own parser (Kubernetes' $(VAR) references
    replaced by 0), so a renamed or misspelt flag fails here rather than on the cluster."""
    if workload.component not in JOB_PARSERS:
        return []
    module, command = JOB_PARSERS[workload.component]
    parser = importlib.import_module(module).build_parser(command)
    findings = []
    for container in workload.pod.get("containers", []):
        args = [_KUBERNETES_VARIABLE.sub("0", str(a)) for a in container.get("args", [])]
        try:
            with contextlib.redirect_stderr(io.StringIO()) as errors:
                parser.parse_args(args)
        except SystemExit:
            findings.append(f"{workload.name}: `imgclf {command} {' '.join(args)}`: "
                            f"{errors.getvalue().strip().splitlines()[-1]}")
    return findings


def project_findings(objects: list[dict]) -> list[str]:
    """Every rule above for every workload; the serving rules when the objects hold serving."""
    findings = []
    for workload in workloads(objects):
        findings += image_findings(workload) + security_findings(workload) + argument_findings(workload)
        findings += mount_findings(workload) + resource_findings(workload)
    if any(w.component == "serving" for w in workloads(objects)):
        findings += serving_findings(objects)
    return findings


def check(folder: str | os.PathLike, repository: Path) -> tuple[list[dict], list[str]]:
    """Renders one kustomization; returns its objects and every finding."""
    objects = render(folder)
    findings = old_kustomize_findings(folder) + schema_findings(objects) + project_findings(objects)
    if any(o["kind"] == "ConfigMap" for o in objects):
        findings += config_findings(objects, repository)
    return objects, findings


def build_parser(command: str = "k8s-check") -> argparse.ArgumentParser:
    return settings_parser(KubeSettings, command, __doc__.split("\n\n")[0])


def main(argv: list[str], command: str = "k8s-check") -> int:
    from imgclf.stack import repository_root

    args = build_parser(command).parse_args(argv)
    root = repository_root()
    folders = args.folders or kustomizations(root / KUBERNETES_FOLDER)
    failed = 0
    for folder in folders:
        try:
            objects, findings = check(folder, root)
        except KubeError as error:
            print(f"imgclf {command}: {error}", file=sys.stderr)
            return 2
        kinds = ", ".join(sorted({o["kind"] for o in objects}))
        print(f"{folder}: {len(objects)} objects ({kinds}): " + ("ok" if not findings else f"{len(findings)} problems"))
        for finding in findings:
            print(f"  - {finding}")
        failed += bool(findings)
    return 1 if failed else 0
