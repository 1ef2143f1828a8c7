"""Continuous client traffic through a balancer, counted: what `make swarm-e2e` keeps running while
it publishes, rolls back, scales and kills a node.

REST clients (one thread each, keep-alive connections) and one long-lived gRPC client (one channel:
one HTTP/2 connection) send one image per request, with a short pause between requests so that the
traffic does not take the shared cores from the servers. The product's own clients send, with their
own retries off: this loop retries (with backoff) and counts every retry, so that a failure that a
retry hid still shows in the figures. A request that fails every attempt is a failed request.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from imgclf.client.base import ClientError

BACKOFF_SECONDS = 0.2
BACKOFF_CAP_SECONDS = 2.0


@dataclass
class Counts:
    requests: int = 0        # answered or failed for good
    failed: int = 0          # every attempt failed
    retried: int = 0         # requests that needed at least one retry
    retries: int = 0         # extra attempts, all requests together
    versions: dict[int, int] = field(default_factory=dict)   # answers per version (gRPC says which)

    def minus(self, earlier: "Counts") -> "Counts":
        versions = {v: n - earlier.versions.get(v, 0) for v, n in self.versions.items()}
        return Counts(self.requests - earlier.requests, self.failed - earlier.failed,
                      self.retried - earlier.retried, self.retries - earlier.retries,
                      {v: n for v, n in versions.items() if n})

    def describe(self) -> str:
        text = f"{self.requests} requests, {self.failed} failed"
        if self.retried:
            text += f", {self.retried} needed retries ({self.retries} retries)"
        return text


class Traffic:
    """Starts sending on start(), stops on stop(); snapshot() gives the counts so far, per
    protocol ("rest", "grpc")."""

    def __init__(self, clients: dict[str, list], images: list[bytes], pause: float = 0.04, retries: int = 5):
        self.clients = clients            # protocol -> client objects, one thread each
        self.images = images
        self.pause, self.retries = pause, retries
        self.counts = {protocol: Counts() for protocol in clients}
        self.errors: list[str] = []       # the last few failures' messages
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self._stop.clear()
        for protocol, clients in self.clients.items():
            for index, client in enumerate(clients):
                thread = threading.Thread(target=self._loop, args=(protocol, client, index), daemon=True,
                                          name=f"traffic-{protocol}-{index}")
                thread.start()
                self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)
        self._threads.clear()

    def snapshot(self) -> dict[str, Counts]:
        with self._lock:
            return {p: Counts(c.requests, c.failed, c.retried, c.retries, dict(c.versions))
                    for p, c in self.counts.items()}

    def _loop(self, protocol: str, client, index: int) -> None:
        sent = index
        while not self._stop.is_set():
            image = self.images[sent % len(self.images)]
            sent += 1
            version, attempts, error = self._send(client, image)
            with self._lock:
                counts = self.counts[protocol]
                counts.requests += 1
                counts.retries += attempts - 1
                counts.retried += attempts > 1
                if error is not None:
                    counts.failed += 1
                    self.errors = (self.errors + [f"{protocol}: {error}"])[-10:]
                elif version is not None:
                    counts.versions[version] = counts.versions.get(version, 0) + 1
            self._stop.wait(self.pause)

    def _send(self, client, image: bytes) -> tuple[int | None, int, str | None]:
        """(version that answered, attempts, error of the last attempt when all failed)."""
        attempt = 1
        while True:
            try:
                return client.predict([image]).version, attempt, None
            except ClientError as error:
                if attempt > self.retries:
                    return None, attempt, str(error)
            time.sleep(min(BACKOFF_SECONDS * 2 ** (attempt - 1), BACKOFF_CAP_SECONDS))
            attempt += 1


def clients_for(rest_url: str, grpc_target: str, model: str, rest_clients: int, timeout: float) -> dict[str, list]:
    """REST clients (their own retries off: the loop counts retries) and one gRPC client."""
    from imgclf.client.grpc import GrpcClient
    from imgclf.client.rest import RestClient

    rest = [RestClient(rest_url, model, None, None, timeout, 0, pool_size=1) for _ in range(rest_clients)]
    return {"rest": rest, "grpc": [GrpcClient(grpc_target, model, None, None, timeout, 0)]}
