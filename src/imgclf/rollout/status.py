"""What is where: versions on disk (published, staged, retired), what the server says of each,
the labels in the model config, the accuracy each version recorded at training, and, when a Docker
engine is reachable, the health of the serving container."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path


from imgclf import contract, model_store
from imgclf.model_status import ModelNotAvailable, ServerUnreachable, fetch_model_status
from imgclf.rollout.pinning import labels_of, pinned_versions, read_models_config

PUBLISHED, STAGED, RETIRED = "published", "staged", "retired"


@dataclass
class Row:
    folder: Path
    on_disk: str                      # published | staged | retired
    version: int | None               # None for a staged folder
    accuracy: float | None = None     # recorded at training (test split)
    state: str = ""                   # what the server reports: AVAILABLE, LOADING, END, ...
    error: str = ""
    labels: list[str] = field(default_factory=list)
    sealed: bool | None = None        # staged: was the export completed (None: not staged)
    unchanged_seconds: float | None = None   # staged: since anything in it last changed


@dataclass
class Status:
    model_name: str
    base_path: Path
    rows: list[Row]
    server: str
    server_error: str = ""            # why the server could not be asked
    pinned: list[int] | None = None   # versions a `specific` policy serves, None = highest
    docker_service: str = ""
    containers: list[dict] = field(default_factory=list)
    docker_error: str = ""


def recorded_accuracy(model_dir: str | os.PathLike) -> float | None:
    """Test accuracy the trainer recorded in assets.extra (report, else metadata), if any."""
    extra = Path(model_dir) / contract.ASSETS_EXTRA_DIR
    for name in (contract.REPORT_FILE, contract.METADATA_FILE):
        try:
            recorded = json.loads((extra / name).read_text())
        except (OSError, ValueError):
            continue
        accuracy = _find_test_accuracy(recorded)
        if accuracy is not None:
            return accuracy
    return None


def _find_test_accuracy(recorded: dict) -> float | None:
    for holder in (recorded, recorded.get("metrics", {}), recorded.get("splits", {})):
        test = holder.get("test") if isinstance(holder, dict) else None
        if isinstance(test, dict) and isinstance(test.get("accuracy"), (int, float)):
            return float(test["accuracy"])
    return None


def server_statuses(server: str, model_name: str, timeout: float = 5.0) -> dict[int, tuple[str, str]]:
    """{version: (state, error message)} as the server's REST status reports them; {} when the
    server does not know the model. Raises ServerUnreachable."""
    try:
        return fetch_model_status(server, model_name, timeout).versions
    except ModelNotAvailable:
        return {}


def serving_containers(service: str) -> list[dict]:
    """Containers of the compose service, with their health, via the Docker SDK."""
    import docker

    client = docker.from_env(timeout=5)
    try:
        found = client.containers.list(all=True, filters={"label": f"com.docker.compose.service={service}"})
        return [{
            "name": c.name,
            "image": ",".join(c.image.tags) or c.image.short_id,
            "status": c.status,
            "health": c.attrs.get("State", {}).get("Health", {}).get("Status", "no healthcheck"),
        } for c in found]
    finally:
        client.close()


def gather(models_dir: str | os.PathLike, model_name: str, server: str, models_config: str | os.PathLike,
           docker_service: str = "") -> Status:
    store = model_store.open_model(models_dir, model_name)
    base = Path(store.location)
    rows = [Row(store.version_path(v), PUBLISHED, v) for v in store.versions()]
    rows += [Row(path, RETIRED, v) for v, path in store.retired()]
    rows += [Row(s.path, STAGED, None, sealed=s.sealed, unchanged_seconds=round(s.age(), 1))
             for s in store.staged()]
    for row in rows:
        row.accuracy = recorded_accuracy(row.folder)
    status = Status(model_name, base, rows, server)

    config = read_models_config(models_config)
    status.pinned = pinned_versions(config, model_name)
    for label, version in labels_of(config, model_name).items():
        for row in rows:
            if row.on_disk == PUBLISHED and row.version == version:
                row.labels.append(label)

    reported = {}
    try:
        reported = server_statuses(server, model_name)
    except ServerUnreachable as error:
        status.server_error = str(error)
    for version, (state, error) in reported.items():
        row = next((r for r in rows if r.version == version and r.on_disk != STAGED), None)
        if row is None:   # the server knows a version no longer on disk (e.g. its folder is gone)
            row = Row(store.version_path(version), "missing", version)
            rows.append(row)
        row.state, row.error = state, error

    status.docker_service = docker_service
    if docker_service:
        try:
            status.containers = serving_containers(docker_service)
        except Exception as error:  # no SDK, no engine, no permission: status still reports the rest
            status.docker_error = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    return status


def render(status: Status) -> str:
    policy = f"specific {status.pinned}" if status.pinned is not None else "latest (highest version)"
    lines = [f"model {status.model_name} in {status.base_path}   policy: {policy}"]
    header = ("version", "on disk", "server", "labels", "accuracy", "folder / error")
    table = [header]
    for row in sorted(status.rows, key=lambda r: (r.version is None, r.version or 0, r.folder.name)):
        table.append((
            "-" if row.version is None else str(row.version),
            row.on_disk,
            row.state or "-",
            ",".join(sorted(row.labels)) or "-",
            "-" if row.accuracy is None else f"{row.accuracy:.4f}",
            row.error or row.folder.name + staged_note(row),
        ))
    widths = [max(len(r[i]) for r in table) for i in range(len(header) - 1)]
    lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1] for r in table]
    if len(table) == 1:
        lines.append("  (nothing on disk)")
    lines.append(f"server {status.server}: " + (f"not reachable ({status.server_error})"
                                                  if status.server_error else "reachable"))
    if status.docker_error:
        lines.append(f"docker: not reachable ({status.docker_error})")
    if status.docker_service and not status.docker_error and not status.containers:
        lines.append(f"docker: no container of compose service {status.docker_service!r}")
    for c in status.containers:
        lines.append(f"docker: {c['name']} ({c['image']}) {c['status']}, health {c['health']}")
    return "\n".join(lines)


def staged_note(row: Row) -> str:
    """For a staged folder: complete or not, and for how long nothing changed in it."""
    if row.on_disk != STAGED:
        return ""
    age = _duration(row.unchanged_seconds or 0.0)
    if row.sealed:
        return f" (complete, not published: `make publish STAGED=…`; unchanged {age})"
    return f" (incomplete: being written, or left by a killed run; unchanged {age}; `make clean-staged`)"


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def as_json(status: Status) -> dict:
    data = {k: v for k, v in status.__dict__.items() if k != "rows"}
    data["base_path"] = str(status.base_path)
    data["rows"] = [{**row.__dict__, "folder": str(row.folder)} for row in status.rows]
    return data
