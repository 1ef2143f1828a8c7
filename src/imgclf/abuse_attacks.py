"""Attacks on a REST server for `imgclf abuse` and the hostile-input tests: floods of idle,
half-sent and slow-body connections held open from one thread, oversized requests, and a good
client whose latency and success rate are what the attacks are judged by.

Every attack is bounded in count and time and targets loopback addresses only (`check_loopback`).
Plain Python and `requests`: no TensorFlow.
"""

from __future__ import annotations

import ipaddress
import json
import multiprocessing
import resource
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import requests

IDLE, HALF_SENT, SLOW_BODY = "idle", "half_sent", "slow_body"
FLOOD_KINDS = (IDLE, HALF_SENT, SLOW_BODY)
CONNECTS_PER_ROUND = 256        # new connections per loop round: a burst larger than the listen
                                # backlog only makes the kernel drop SYNs and retry them a second later
TRICKLE_SECONDS = 5.0           # a half-sent or slow-body connection sends one more piece this often


class AttackError(RuntimeError):
    """An attack that cannot be run as asked (a non-loopback target, too few file descriptors)."""


def check_loopback(host: str) -> str:
    """Attacks only ever go to this machine's loopback addresses."""
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except socket.gaierror as error:
        raise AttackError(f"cannot resolve {host}: {error}") from None
    if not addresses or not all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses):
        raise AttackError(f"{host} is not a loopback address: attacks only target this machine's loopback")
    return host


def raise_open_file_limit(needed: int) -> int:
    """Raise this process's soft limit on open files to its hard limit; refuse when even that is
    too low for `needed` descriptors. Returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    if soft != resource.RLIM_INFINITY and soft < needed:
        raise AttackError(f"need {needed} open files but the hard limit is {soft} (ulimit -Hn)")
    return soft


def _first_bytes(kind: str, host: str, path: str) -> bytes:
    if kind == IDLE:
        return b""
    request = f"POST {path} HTTP/1.1\r\nHost: {host}\r\n"
    if kind == HALF_SENT:
        return request.encode()           # headers never finished: one more header line now and then
    return (request + "Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n"
            '{"instances": [').encode()   # body promised, sent a byte at a time


def _trickle(kind: str) -> bytes:
    return b"X-Slow: 1\r\n" if kind == HALF_SENT else b" "


@dataclass
class FloodStats:
    kind: str
    target: int
    open: int = 0               # connections established and held right now
    opened: int = 0             # connections established in all
    closed_by_server: int = 0   # connections the server closed (it timed them out or evicted them)
    connect_failures: int = 0   # connects refused or timed out


def in_force(stats: FloodStats, fraction: float) -> bool:
    return stats.open >= fraction * stats.target or stats.opened >= stats.target


class ConnectionFlood:
    """`count` connections of one kind (idle, half-sent headers, slow body) held open until stop();
    a connection the server closes is opened again, so the pressure stays. One thread, one
    selector: ten thousand sockets cost the attacker little. Run it through FloodProcess."""

    def __init__(self, host: str, port: int, count: int, kind: str = IDLE, path: str = "/v1/models/m:predict",
                 trickle_seconds: float = TRICKLE_SECONDS):
        if kind not in FLOOD_KINDS:
            raise AttackError(f"unknown flood kind {kind!r}: one of {', '.join(FLOOD_KINDS)}")
        self.host, self.port = check_loopback(host), port
        self.kind, self.path, self.trickle_seconds = kind, path, trickle_seconds
        self.stats = FloodStats(kind, count)
        self._selector = selectors.DefaultSelector()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"flood-{kind}", daemon=True)
        self._last_trickle = time.monotonic()

    def __enter__(self) -> "ConnectionFlood":
        raise_open_file_limit(self.stats.target + 1024)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        for key in list(self._selector.get_map().values()):
            key.fileobj.close()
        self._selector.close()
        self.stats.open = 0

    # --- the loop ----------------------------------------------------------------------------
    def _run(self) -> None:
        pending = 0                      # connects in progress
        while not self._stop.is_set():
            missing = self.stats.target - self.stats.open - pending
            for _ in range(min(missing, CONNECTS_PER_ROUND)):
                pending += self._connect()
            for key, events in self._selector.select(timeout=0.05):
                pending -= self._on_event(key, events)
            self._maybe_trickle()

    def _connect(self) -> int:
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.connect_ex((self.host, self.port))
            self._selector.register(sock, selectors.EVENT_WRITE, "connecting")
        except OSError:
            sock.close()
            self.stats.connect_failures += 1
            return 0
        return 1

    def _on_event(self, key, events) -> int:
        """Handles one socket's event; returns 1 when a pending connect finished (either way)."""
        sock = key.fileobj
        if key.data == "connecting":
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
                self._drop(sock, counted=False)
                self.stats.connect_failures += 1
                return 1
            self._selector.modify(sock, selectors.EVENT_READ, "open")
            self.stats.open += 1
            self.stats.opened += 1
            self._send(sock, _first_bytes(self.kind, self.host, self.path))
            return 1
        try:
            data = sock.recv(65536)        # a reply (408, 413, 400...) or the server's close
        except OSError:
            data = b""
        if not data:
            self._drop(sock, counted=True)
            self.stats.closed_by_server += 1
        return 0

    def _send(self, sock, data: bytes) -> None:
        if not data:
            return
        try:
            sock.send(data)
        except OSError:
            pass                           # the read side notices the close

    def _drop(self, sock, counted: bool) -> None:
        self._selector.unregister(sock)
        sock.close()
        if counted:
            self.stats.open -= 1

    def _maybe_trickle(self) -> None:
        if self.kind == IDLE or time.monotonic() - self._last_trickle < self.trickle_seconds:
            return
        self._last_trickle = time.monotonic()
        piece = _trickle(self.kind)
        for key in list(self._selector.get_map().values()):
            if key.data == "open":
                self._send(key.fileobj, piece)


class FloodProcess:
    """A ConnectionFlood run in a child process, so that the attacker's own work never competes
    with the measuring client for this process's interpreter lock. `stats` is read from the child."""

    def __init__(self, host: str, port: int, count: int, kind: str = IDLE, path: str = "/v1/models/m:predict",
                 trickle_seconds: float = TRICKLE_SECONDS):
        check_loopback(host)
        context = multiprocessing.get_context("spawn")
        self._shared = context.Array("q", 4)            # open, opened, closed_by_server, connect_failures
        self._stop = context.Event()
        self._process = context.Process(target=_flood_child, name=f"flood-{kind}", daemon=True,
                                        args=(host, port, count, kind, path, trickle_seconds, self._shared, self._stop))
        self.kind, self.target = kind, count

    @property
    def stats(self) -> FloodStats:
        open_, opened, closed, failures = self._shared[:]
        return FloodStats(self.kind, self.target, open_, opened, closed, failures)

    def __enter__(self) -> "FloodProcess":
        self._process.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def wait_until_open(self, fraction: float = 0.95, timeout: float = 60.0) -> bool:
        """Until most of the connections are held, or as many were opened and closed by the server
        (which then makes room or refuses), or the timeout: the attack is in force."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._process.is_alive():
            if in_force(self.stats, fraction):
                return True
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        self._stop.set()
        self._process.join(timeout=60)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()


def _flood_child(host, port, count, kind, path, trickle_seconds, shared, stop) -> None:
    flood = ConnectionFlood(host, port, count, kind, path, trickle_seconds)
    with flood:
        while not stop.wait(0.1):
            s = flood.stats
            shared[:] = [s.open, s.opened, s.closed_by_server, s.connect_failures]


# --- oversized requests ------------------------------------------------------------------------
@dataclass
class OversizedStats:
    sent: int = 0                       # requests sent
    refused: dict[int, int] = field(default_factory=dict)   # HTTP status -> count
    cut_off: int = 0                    # the server closed the connection before a reply
    bytes_sent: int = 0


class OversizedRequests:
    """Threads sending, in turn until stop(): a body announced as `announced_bytes` and streamed
    until the server stops reading, a request with `instances` tiny images, and JSON nested
    `depth` levels. Each must be refused with a 4xx without hurting other clients."""

    def __init__(self, url: str, threads: int = 2, announced_bytes: int = 1_000_000_000,
                 stream_bytes: int = 64 << 20, instances: int = 10_000, depth: int = 100_000,
                 image: bytes = b"\xff\xd8\xff\xd9"):
        parts = urlsplit(url)
        self.host, self.port, self.path = check_loopback(parts.hostname), parts.port or 80, parts.path
        self.url = url
        self.announced_bytes, self.stream_bytes = announced_bytes, stream_bytes
        self.many_instances = json.dumps({"instances": [{"b64": _b64(image)}] * instances}).encode()
        self.deep = b'{"instances": ' + b"[" * depth + b"]" * depth + b"}"
        self.stats = OversizedStats()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), name=f"oversized-{i}", daemon=True)
                         for i in range(threads)]

    def __enter__(self) -> "OversizedRequests":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _run(self, index: int) -> None:
        session = requests.Session()
        turn = index
        while not self._stop.is_set():
            kind = turn % 3
            turn += 1
            try:
                if kind == 0:
                    status, sent = stream_announced_body(self.host, self.port, self.path,
                                                         self.announced_bytes, self.stream_bytes, self._stop)
                else:
                    body = self.many_instances if kind == 1 else self.deep
                    status = session.post(self.url, data=body, timeout=60,
                                          headers={"Content-Type": "application/json"}).status_code
                    sent = len(body)
            except (requests.RequestException, OSError):
                status, sent = None, 0
            self._record(status, sent)

    def _record(self, status: int | None, sent: int) -> None:
        with self._lock:
            self.stats.sent += 1
            self.stats.bytes_sent += sent
            if status is None:
                self.stats.cut_off += 1
            else:
                self.stats.refused[status] = self.stats.refused.get(status, 0) + 1


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode("ascii")


def stream_announced_body(host: str, port: int, path: str, announced: int, limit: int,
                          stop: threading.Event | None = None, timeout: float = 30.0) -> tuple[int | None, int]:
    """POST with `Content-Length: announced`, streaming zeros until `limit` bytes, the server's
    reply or its close. Returns (HTTP status or None, bytes sent)."""
    chunk = b"0" * 65536
    sent = 0
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {announced}\r\n\r\n".encode())
        sock.setblocking(False)
        while sent < limit and not (stop and stop.is_set()):
            status = _reply_status(sock)
            if status != 0:
                return status, sent
            try:
                sent += sock.send(chunk)
            except BlockingIOError:
                time.sleep(0.001)
            except OSError:
                break
        sock.settimeout(timeout)
        return _reply_status(sock, wait=True) or None, sent


def _reply_status(sock, wait: bool = False) -> int | None:
    """The status of a reply already sent by the server: 0 = none yet, None = closed without one."""
    try:
        data = sock.recv(4096) if wait else sock.recv(4096, socket.MSG_PEEK)
    except (BlockingIOError, socket.timeout):
        return 0
    except OSError:
        return None
    if not data:
        return None
    parts = data.split(b" ", 2)
    if len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1].isdigit():
        return int(parts[1])
    return None


# --- the good client ---------------------------------------------------------------------------
@dataclass
class GoodClientResult:
    latencies: list[float]       # seconds, successful requests only
    requests: int
    failures: int
    failure_examples: list[str]

    @property
    def success_rate(self) -> float:
        return (self.requests - self.failures) / self.requests if self.requests else 0.0


def good_client(url: str, body: bytes | None, seconds: float, timeout: float = 10.0,
                min_requests: int = 20) -> GoodClientResult:
    """One keep-alive client sending `body` (POST) or GETs back to back for `seconds` (and at
    least `min_requests`); no retries, so every failure counts."""
    latencies, failures, examples = [], 0, []
    stop_at = time.monotonic() + seconds
    count = 0
    with requests.Session() as session:
        while time.monotonic() < stop_at or count < min_requests:
            count += 1
            started = time.perf_counter()
            try:
                if body is None:
                    reply = session.get(url, timeout=timeout)
                else:
                    reply = session.post(url, data=body, timeout=timeout,
                                         headers={"Content-Type": "application/json"})
                ok, problem = reply.status_code == 200, f"HTTP {reply.status_code}: {reply.text[:120]}"
            except requests.RequestException as error:
                ok, problem = False, f"{type(error).__name__}: {str(error)[:160]}"
            if ok:
                latencies.append(time.perf_counter() - started)
            else:
                failures += 1
                if len(examples) < 3:
                    examples.append(problem)
    return GoodClientResult(latencies, count, failures, examples)


def process_rss_bytes(pid: int) -> int | None:
    """Resident set size of a process (Linux /proc), or None where it cannot be read."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None
