"""The REST transport: TensorFlow Serving's /v1/models API through `requests` alone (no TensorFlow),
so the client container stays small."""

from __future__ import annotations

import json
import threading

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from imgclf import contract
from imgclf.client.base import (
    ContractMismatch,
    ModelNotAvailable,
    ModelStatus,
    PredictReply,
    RequestRejected,
    RequestTimedOut,
    ServerUnreachable,
    check_signature,
    make_predictions,
)

BACKOFF_SECONDS = 0.5          # urllib3 doubles it per retry: 0, 1, 2, 4, 8 s ...


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


def fetch_model_status(server: str, model_name: str, timeout: float = 5.0) -> ModelStatus:
    """What the server's status API says of every version of the model, in one GET without retries.
    Raises ServerUnreachable (no answer, or an error other than 404) or ModelNotAvailable (404)."""
    url = normalize_url(server) + contract.rest_model_path(model_name)
    try:
        response = requests.get(url, timeout=timeout)
    except requests.RequestException as error:
        raise ServerUnreachable(f"cannot reach {url}: {_reason(error)}") from None
    if response.status_code == 404:
        raise ModelNotAvailable(f"{url}: {error_message(response)}")
    if response.status_code != 200:
        raise ServerUnreachable(f"{url}: {error_message(response)}")
    try:
        return ModelStatus.from_rest(response.json())
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ServerUnreachable(f"{url}: the reply is not a TensorFlow Serving model status") from None


class RestClient:
    def __init__(self, server: str, model_name: str = contract.DEFAULT_MODEL_NAME,
                 version: int | None = None, label: str | None = None, timeout: float = 30.0,
                 retries: int = 5, pool_size: int = 4):
        self.base_url = normalize_url(server)
        self.model_path = contract.rest_model_path(model_name, version, label)
        self.model_name = model_name
        self.timeout = timeout
        self.retries = retries
        self.pool_size = pool_size
        # requests.Session is not documented as thread-safe: one per worker thread.
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()
        self._status_session = requests.Session()
        self._sessions.append(self._status_session)

    @property
    def endpoint(self) -> str:
        return self.base_url + self.model_path

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            # Predict is idempotent, so POSTs are retried too (allowed_methods=None); a 503 is what
            # TF Serving answers while no version is loaded or its queue is full.
            retry = Retry(total=self.retries, connect=self.retries, read=self.retries,
                          status=self.retries, status_forcelist=(503,), allowed_methods=None,
                          backoff_factor=BACKOFF_SECONDS, raise_on_status=False)
            session = requests.Session()
            adapter = HTTPAdapter(max_retries=retry, pool_maxsize=self.pool_size)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            self._local.session = session
            with self._sessions_lock:
                self._sessions.append(session)
        return session

    def _get(self, url: str, session: requests.Session | None = None) -> requests.Response:
        try:
            return (session or self._session()).get(url, timeout=self.timeout)
        except requests.ConnectionError as error:
            raise ServerUnreachable(f"cannot reach {self.base_url}: {_reason(error)}") from None
        except requests.Timeout:
            raise RequestTimedOut(f"{url}: no reply within {self.timeout:g} s") from None

    # --- status and metadata --------------------------------------------------------------------
    def status(self) -> ModelStatus:
        # A session without retries: wait_until_available's poll loop is the retry, with a deadline.
        response = self._get(self.endpoint, self._status_session)
        if response.status_code != 200:
            raise ModelNotAvailable(f"{self.endpoint}: {error_message(response)}")
        return ModelStatus.from_rest(response.json())

    def metadata_version(self) -> int:
        """Checks the served signature against the contract; returns the version that answered."""
        url = self.endpoint + "/metadata"
        response = self._get(url)
        if response.status_code == 404:
            raise ModelNotAvailable(f"{url}: {error_message(response)}")
        if response.status_code != 200:
            raise ServerUnreachable(f"{url}: {error_message(response)}")
        body = response.json()
        try:
            signatures = body["metadata"]["signature_def"]["signature_def"]
            version = int(body["model_spec"]["version"])
        except (KeyError, TypeError, ValueError):
            raise ContractMismatch(f"{url}: reply is not TensorFlow Serving metadata") from None
        signature = signatures.get(contract.SIGNATURE_NAME)
        if signature is None:
            raise ContractMismatch(f"{url}: no signature {contract.SIGNATURE_NAME!r}; "
                                   f"it has {sorted(signatures)}")
        check_signature(set(signature.get("inputs", {})), set(signature.get("outputs", {})), url)
        return version

    # --- predict --------------------------------------------------------------------------------
    def predict(self, images: list[bytes]) -> PredictReply:
        url = self.endpoint + ":predict"
        body = json.dumps(contract.rest_predict_body(images)).encode("ascii")
        try:
            response = self._session().post(
                url, data=body, timeout=self.timeout, headers={"Content-Type": "application/json"})
        except requests.ConnectionError as error:
            raise ServerUnreachable(f"cannot reach {self.base_url}: {_reason(error)}") from None
        except requests.Timeout:
            raise RequestTimedOut(f"no reply within {self.timeout:g} s") from None
        if response.status_code == 503:
            raise ServerUnreachable(f"{url}: still unavailable after {self.retries} retries: "
                                    f"{error_message(response)}")
        if response.status_code == 404:
            raise ModelNotAvailable(f"{url}: {error_message(response)}")
        if response.status_code != 200:
            raise RequestRejected(error_message(response))
        try:
            rows = response.json()["predictions"]
            scores = [row[contract.SCORES_OUTPUT] for row in rows]
            classes = [row[contract.CLASSES_OUTPUT] for row in rows]
        except (ValueError, KeyError, TypeError):
            raise ContractMismatch(
                f"{url}: reply lacks predictions[i].{contract.SCORES_OUTPUT}/{contract.CLASSES_OUTPUT}"
            ) from None
        predictions = make_predictions(scores, classes, len(images), url)
        return PredictReply(predictions, version=None, request_bytes=len(body))

    def close(self) -> None:
        with self._sessions_lock:
            for session in self._sessions:
                session.close()
            self._sessions.clear()


def _reason(error: Exception) -> str:
    """The innermost cause of a requests/urllib3 connection error, e.g. 'Connection refused'."""
    text = str(error)
    for marker in ("Connection refused", "Name or service not known", "timed out",
                   "Connection reset", "Connection aborted", "Remote end closed"):
        if marker in text:
            return marker.lower()
    return text[:300]
