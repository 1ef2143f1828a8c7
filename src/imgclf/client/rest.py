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
from imgclf.model_status import connection_reason, error_message, normalize_url

BACKOFF_SECONDS = 0.5          # urllib3 doubles it per retry: 0, 1, 2, 4, 8 s ...


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
            raise ServerUnreachable(f"cannot reach {self.base_url}: {connection_reason(error)}") from None
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
            raise ServerUnreachable(f"cannot reach {self.base_url}: {connection_reason(error)}") from None
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
