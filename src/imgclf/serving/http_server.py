"""The HTTP side of the REST API: tornado's HTTP/1.1 server (one event loop for every connection;
keep-alive, chunked bodies, header and body timeouts) in front of bounded pools of worker threads
that run RestApi.handle. That is the shape of the real server (libevent's evhttp and a fixed pool
of --rest_api_num_threads, http_server.cc); see docs/serving.md for why tornado and the figures.

What this file adds to tornado is the server's limits (flags in flags.py):
- at most --rest_api_max_connections connections; when full, the connection that has been idle
  longest without ever being answered (silent, or still sending its first headers), else the one
  that has been sending its body longest, else the keep-alive connection idle longest, is closed
  to make room, as nginx reuses its idle connections (a flood of idle or slow connections can then
  delay, never lock out, a client that is sending requests, even one slower than a second between
  requests on a loaded machine);
- request headers and idle keep-alive connections time out after --rest_api_idle_timeout_in_ms,
  bodies after --rest_api_body_timeout_in_ms;
- a body larger than --rest_api_max_body_bytes is refused with 413 as soon as that is known
  (from Content-Length, or while a chunked body arrives); a malformed Content-Length gets 400;
  bodies held in memory at once are bounded by --rest_api_max_buffered_bytes (else 503);
- model requests are admitted through the model server's gate (503 when it is full) before they
  take a worker thread; status, metadata and metrics have a small pool of their own, so that they
  answer in about a millisecond however busy the model is.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import urlsplit

from tornado import httputil, netutil
from tornado.httpserver import HTTPServer
from tornado.iostream import StreamClosedError

from imgclf.serving import json_tensor

log = logging.getLogger(__name__)

JSON = "application/json"
_LIGHT_THREADS = 2                 # status, metadata and metrics: cheap, never wait for the model
_LINGER_SECONDS = 2.0              # after refusing a body early: read and drop what is in flight,
_LINGER_BYTES = 8 << 20            # so that the client reads the reply instead of a reset
_MODEL_PATH = re.compile(r"(?i)/v1/.*:(predict|classify|regress)")
_LISTEN_BACKLOG = 1024
# A connection younger than this is never closed to make room: see ConnectionTable.make_room.
MIN_EVICTION_AGE_SECONDS = 1.0


@dataclass(frozen=True)
class HttpLimits:
    num_threads: int = 8                      # --rest_api_num_threads
    max_connections: int = 16384              # --rest_api_max_connections
    idle_timeout_seconds: float = 30.0        # --rest_api_idle_timeout_in_ms
    body_timeout_seconds: float = 60.0        # --rest_api_body_timeout_in_ms
    max_body_bytes: int = 64 << 20            # --rest_api_max_body_bytes
    max_buffered_bytes: int = 512 << 20       # --rest_api_max_buffered_bytes
    max_header_bytes: int = 64 << 10


class ConnectionTable:
    """Open connections in order of their last change of state (oldest first), and when each
    changed. Loop thread only."""

    IDLE, RECEIVING, WORKING = "idle", "receiving", "working"

    def __init__(self, limit: int, min_age: float = MIN_EVICTION_AGE_SECONDS, clock=time.monotonic):
        self.limit, self.min_age, self._clock = limit, min_age, clock
        self._states: OrderedDict = OrderedDict()     # stream -> (state, since)
        self._answered: set = set()                   # streams that have had a reply
        self.evicted = 0
        self.refused = 0

    def __len__(self) -> int:
        return len(self._states)

    def add(self, stream) -> None:
        self._states[stream] = (self.IDLE, self._clock())

    def set(self, stream, state: str) -> None:
        if stream in self._states:
            if state == self.IDLE:          # back to idle: its request was answered
                self._answered.add(stream)
            self._states[stream] = (state, self._clock())
            self._states.move_to_end(stream)

    def remove(self, stream) -> None:
        self._states.pop(stream, None)
        self._answered.discard(stream)

    def make_room(self) -> bool:
        """True when a new connection may be served: below the limit, or a connection closed to
        make room, if its state has lasted min_age: the one idle longest that was never answered
        (silent, or still sending its first headers), else the one sending its body longest, else
        the keep-alive connection idle longest. Otherwise False, and the new connection is to be
        closed: evicting younger ones would let a flood that reconnects at once spin the event
        loop on connections instead of serving requests."""
        if len(self._states) < self.limit:
            return True
        oldest_allowed = self._clock() - self.min_age
        for wanted, answered in ((self.IDLE, False), (self.RECEIVING, None), (self.IDLE, True)):
            for stream, (state, since) in self._states.items():
                if since > oldest_allowed:
                    break                  # ordered by last change: the rest are younger still
                if state == wanted and answered in (None, stream in self._answered):
                    self.remove(stream)
                    stream.close()
                    self.evicted += 1
                    return True
        self.refused += 1
        return False


class _TrackedHTTPServer(HTTPServer):
    def initialize(self, *args, table: ConnectionTable, **kwargs):   # tornado's Configurable init
        self.table = table
        super().initialize(*args, **kwargs)

    def handle_stream(self, stream, address) -> None:
        if not self.table.make_room():
            stream.close()
            return
        self.table.add(stream)
        super().handle_stream(stream, address)

    def on_close(self, server_conn) -> None:
        self.table.remove(server_conn.stream)
        super().on_close(server_conn)


class RestHttpServer:
    """Serves `api` (a RestApi) on host:port from a thread of its own. The port is bound in the
    constructor, so a port in use fails there (OSError)."""

    def __init__(self, api, host: str, port: int, limits: HttpLimits = HttpLimits(), cors: bool = False,
                 gate=None):
        self.api, self.limits, self.cors, self.gate = api, limits, cors, gate
        self._sockets = netutil.bind_sockets(port, host, backlog=_LISTEN_BACKLOG)
        self.table = ConnectionTable(limits.max_connections)
        self.buffered = 0                 # body bytes held in memory right now (loop thread only)
        self.model_pool = ThreadPoolExecutor(limits.num_threads, thread_name_prefix="rest")
        self.light_pool = ThreadPoolExecutor(_LIGHT_THREADS, thread_name_prefix="rest-light")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), name="rest-server", daemon=True)

    @property
    def port(self) -> int:
        return self._sockets[0].getsockname()[1]

    def start(self) -> None:
        self._thread.start()
        self._ready.wait()

    def stop(self) -> None:
        if self._loop is not None and self._stopped is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)
        self._thread.join(timeout=10)
        self.model_pool.shutdown(wait=False, cancel_futures=True)
        self.light_pool.shutdown(wait=False, cancel_futures=True)

    async def _serve(self) -> None:
        self._loop, self._stopped = asyncio.get_running_loop(), asyncio.Event()
        limits = self.limits
        server = _TrackedHTTPServer(
            _Dispatcher(self), table=self.table, idle_connection_timeout=limits.idle_timeout_seconds,
            body_timeout=limits.body_timeout_seconds, max_header_size=limits.max_header_bytes,
            # tornado's own check refuses with a bare 400; ours (in _Request) answers 413 first.
            max_body_size=2 * limits.max_body_bytes, max_buffer_size=2 * limits.max_body_bytes,
            decompress_request=False)
        server.add_sockets(self._sockets)
        self._ready.set()
        await self._stopped.wait()
        server.stop()
        try:
            await asyncio.wait_for(server.close_all_connections(), timeout=5)
        except asyncio.TimeoutError:
            pass


class _Dispatcher(httputil.HTTPServerConnectionDelegate):
    def __init__(self, server: RestHttpServer):
        self.server = server

    def start_request(self, server_conn, request_conn) -> httputil.HTTPMessageDelegate:
        return _Request(self.server, server_conn.stream, request_conn)


class _Request(httputil.HTTPMessageDelegate):
    """One request on one connection: headers, body pieces, then the reply from a worker thread."""

    def __init__(self, server: RestHttpServer, stream, connection):
        self.server, self.stream, self.connection = server, stream, connection
        self.method = self.path = ""
        self.origin = ""
        self.chunks: list[bytes] = []
        self.size = 0
        self.refused = False             # a reply was sent before the body was read: drop the rest
        self.task: asyncio.Task | None = None

    # --- tornado's callbacks -----------------------------------------------------------------
    def headers_received(self, start_line, headers):
        self.method, self.path = start_line.method, urlsplit(start_line.path).path
        self.origin = headers.get("Origin", "")
        self.server.table.set(self.stream, ConnectionTable.RECEIVING)
        problem = body_problem(headers, self.server.limits.max_body_bytes)
        if problem is not None:
            return self._refuse_early(*problem)
        return None

    def data_received(self, chunk: bytes):
        if self.refused:
            return
        self.size += len(chunk)
        self.server.buffered += len(chunk)
        self.chunks.append(chunk)
        limits = self.server.limits
        if self.size > limits.max_body_bytes:
            self._refuse(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, too_large_message(limits.max_body_bytes))
        elif self.server.buffered > limits.max_buffered_bytes:
            self._refuse(HTTPStatus.SERVICE_UNAVAILABLE,
                         f"The server holds {limits.max_buffered_bytes} bytes of request bodies already "
                         "(--rest_api_max_buffered_bytes); retry later")

    def finish(self) -> None:
        if self.refused:
            return
        self.server.table.set(self.stream, ConnectionTable.WORKING)
        self.task = asyncio.ensure_future(self._answer())

    def on_connection_close(self) -> None:
        self._release_body()

    # --- replies -----------------------------------------------------------------------------
    async def _answer(self) -> None:
        server = self.server
        body = b"".join(self.chunks)
        self.chunks = []
        loop = asyncio.get_running_loop()
        try:
            if self.method == "OPTIONS":
                reply = preflight(self.origin)
            elif _MODEL_PATH.fullmatch(self.path) and self.method == "POST":
                reply = await self._run_model_request(loop, body)
            else:
                reply = await loop.run_in_executor(server.light_pool, server.api.handle, self.method, self.path, body)
        except RuntimeError:             # the pools were shut down: the server is stopping
            reply = (503, JSON, json_tensor.error_json("The server is shutting down"))
        finally:
            self._release_body()
        self._reply(*reply)

    async def _run_model_request(self, loop, body: bytes):
        gate = self.server.gate
        if gate is None:
            return await loop.run_in_executor(self.server.model_pool, self.server.api.handle, self.method,
                                              self.path, body)
        refusal = gate.admit()
        if refusal is not None:
            return refusal.http_status, JSON, json_tensor.error_json(refusal.message)
        try:
            return await loop.run_in_executor(self.server.model_pool, gate.run, self.server.api.handle,
                                              self.method, self.path, body)
        finally:
            gate.leave()

    def _reply(self, status: int, content_type: str, text: str) -> None:
        if self.stream.closed():
            return
        payload = text.encode("utf-8")
        headers = httputil.HTTPHeaders({"Content-Type": content_type, "Content-Length": str(len(payload))})
        if self.server.cors:
            headers.update(CORS_HEADERS)
        start = httputil.ResponseStartLine("HTTP/1.1", status, _reason(status))
        try:
            self.connection.write_headers(start, headers, payload if self.method != "HEAD" else None)
            self.connection.finish()
        except StreamClosedError:
            return
        self.server.table.set(self.stream, ConnectionTable.IDLE)

    def _refuse(self, status: int, message: str) -> None:
        """Answer now and drop the rest of the body (tornado reads it until its body timeout, then
        closes: the client gets the reply, not a reset)."""
        self.refused = True
        self._release_body()
        self._reply(status, JSON, json_tensor.error_json(message))

    async def _refuse_early(self, status: int, message: str) -> None:
        """Answered from the headers alone: take the socket from tornado, send the reply, close
        our side for writing and drop what the client still sends for a moment (lingering close)."""
        self.refused = True
        stream = self.connection.detach()
        self.server.table.remove(stream)
        payload = json_tensor.error_json(message).encode()
        head = (f"HTTP/1.1 {int(status)} {_reason(status)}\r\nContent-Type: {JSON}\r\n"
                f"Content-Length: {len(payload)}\r\nConnection: close\r\n")
        if self.server.cors:
            head += "".join(f"{k}: {v}\r\n" for k, v in CORS_HEADERS.items())
        try:
            stream.set_nodelay(True)
            await stream.write(head.encode() + b"\r\n" + payload)
            stream.socket.shutdown(socket.SHUT_WR)
            await _drain(stream)
        except (StreamClosedError, OSError):
            pass
        finally:
            stream.close()

    def _release_body(self) -> None:
        self.server.buffered -= self.size
        self.size = 0
        self.chunks = []


async def _drain(stream) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _LINGER_SECONDS
    dropped = 0
    while dropped < _LINGER_BYTES:
        remaining = deadline - loop.time()
        if remaining <= 0:
            return
        try:
            data = await asyncio.wait_for(stream.read_bytes(65536, partial=True), remaining)
        except (asyncio.TimeoutError, StreamClosedError):
            return
        dropped += len(data)


def body_problem(headers: httputil.HTTPHeaders, max_body_bytes: int) -> tuple[int, str] | None:
    """(HTTP status, message) when the headers alone show the request must be refused."""
    lengths = headers.get_list("Content-Length")
    if not lengths:
        return None
    if len(set(lengths)) != 1 or not lengths[0].strip().isdigit():
        return HTTPStatus.BAD_REQUEST, f"Malformed request: Content-Length {', '.join(lengths)!r} is not a number"
    if int(lengths[0]) > max_body_bytes:
        return HTTPStatus.REQUEST_ENTITY_TOO_LARGE, too_large_message(max_body_bytes, int(lengths[0]))
    return None


def too_large_message(limit: int, announced: int | None = None) -> str:
    size = f" of {announced} bytes" if announced is not None else ""
    return (f"Request body{size} exceeds the server's limit of {limit} bytes (--rest_api_max_body_bytes); "
            "send fewer images per request")


CORS_HEADERS = {"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Methods": "POST, GET",
                "Access-Control-Allow-Headers": "Content-Type"}


def preflight(origin: str) -> tuple[int, str, str]:
    if re.search(r"https?://", origin):
        return 200, JSON, ""
    return 400, JSON, json_tensor.error_json("Origin header is missing in CORS preflight")


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"
