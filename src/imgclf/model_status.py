"""What a TensorFlow-Serving-compatible server says of a model's versions, read over its REST
status API (`GET /v1/models/<name>`): the one probe that the client, the local server's launcher
(readiness), rollout status and pinning, and the Docker end-to-end run all use.

A bottom module (it needs only `requests` and the contract), so that the server and the client
each use it without importing one another.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import requests

from imgclf import contract


class StatusError(Exception):
    """The status could not be read; the message says why (meant for the user)."""


class ServerUnreachable(StatusError):
    """No connection, or an answer that is not a model status."""


class ModelNotAvailable(StatusError):
    """The server answers but does not know the model (or version, or label) asked for."""


@dataclass
class ModelStatus:
    """What the status API says: every version it knows, with its state and error message."""

    versions: dict[int, tuple[str, str]] = field(default_factory=dict)   # version -> (state, error)

    @classmethod
    def from_rest(cls, body: dict) -> "ModelStatus":
        """From the REST status reply, {"model_version_status": [{"version": "3", "state": ...}]}."""
        status = cls()
        for entry in body.get("model_version_status", []):
            error = entry.get("status", {}).get("error_message", "")
            status.versions[int(entry["version"])] = (entry.get("state", ""), error)
        return status

    def states(self) -> dict[int, str]:
        return {version: state for version, (state, _) in self.versions.items()}

    @property
    def available(self) -> list[int]:
        return sorted(v for v, (state, _) in self.versions.items() if state == "AVAILABLE")

    def describe(self) -> str:
        if not self.versions:
            return "no versions"
        parts = []
        for version, (state, error) in sorted(self.versions.items()):
            parts.append(f"version {version} {state}" + (f" ({error})" if error else ""))
        return ", ".join(parts)


def normalize_url(server: str) -> str:
    """'localhost:8501' and 'http://localhost:8501/' both mean http://localhost:8501."""
    server = server.strip().rstrip("/")
    if "://" not in server:
        server = "http://" + server
    return server


def error_message(response: requests.Response) -> str:
    """The server's {"error": ...} message, or the start of whatever it sent instead."""
    try:
        body = response.json()
        if isinstance(body, dict) and "error" in body:
            return str(body["error"])
    except ValueError:
        pass
    text = response.text.strip()
    return f"HTTP {response.status_code}" + (f": {text[:300]}" if text else "")


def connection_reason(error: Exception) -> str:
    """The innermost cause of a requests/urllib3 connection error, e.g. 'connection refused'."""
    text = str(error)
    for marker in ("Connection refused", "Name or service not known", "timed out",
                   "Connection reset", "Connection aborted", "Remote end closed"):
        if marker in text:
            return marker.lower()
    return text[:300]


def fetch_model_status(server: str, model_name: str, timeout: float = 5.0) -> ModelStatus:
    """What the server's status API says of every version of the model, in one GET without retries.
    Raises ServerUnreachable (no answer, or an error other than 404) or ModelNotAvailable (404)."""
    url = normalize_url(server) + contract.rest_model_path(model_name)
    try:
        response = requests.get(url, timeout=timeout)
    except requests.RequestException as error:
        raise ServerUnreachable(f"cannot reach {url}: {connection_reason(error)}") from None
    if response.status_code == 404:
        raise ModelNotAvailable(f"{url}: {error_message(response)}")
    if response.status_code != 200:
        raise ServerUnreachable(f"{url}: {error_message(response)}")
    try:
        return ModelStatus.from_rest(response.json())
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ServerUnreachable(f"{url}: the reply is not a TensorFlow Serving model status") from None
