"""`LocalServer`: run `imgclf serve` in a child process on free ports and wait until it serves.

Used by tests, the client, the rollout drill, the demo and the benchmarks:

    with LocalServer(models / "image_classifier", "image_classifier") as server:
        requests.get(server.rest_url + "/v1/models/image_classifier")
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Sequence

from imgclf.model_status import StatusError, fetch_model_status
from imgclf.polling import poll

log = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class ServerStartError(RuntimeError):
    """The server process died or did not serve in time; the message holds its stderr tail."""


class LocalServer:
    def __init__(self, model_base_path: str | os.PathLike | None, model_name: str,
                 rest_port: int | None = None, grpc_port: int | None = None,
                 extra_args: Sequence[str] = (), poll_seconds: float = 1.0, host: str = "127.0.0.1",
                 startup_timeout: float = 120):
        self.model_base_path = Path(model_base_path) if model_base_path else None
        self.model_name = model_name
        self.host = host
        self.rest_port = rest_port or free_port(host)
        self.grpc_port = grpc_port or free_port(host)
        while self.grpc_port == self.rest_port:
            self.grpc_port = free_port(host)
        self.extra_args = list(extra_args)
        self.poll_seconds = poll_seconds
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen | None = None
        self._log = None

    @property
    def rest_url(self) -> str:
        return f"http://{self.host}:{self.rest_port}"

    @property
    def grpc_target(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def log_path(self) -> Path | None:
        return Path(self._log.name) if self._log else None

    def command(self) -> list[str]:
        command = [sys.executable, "-m", "imgclf.serving.cli", f"--model_name={self.model_name}",
                   f"--port={self.grpc_port}", f"--rest_api_port={self.rest_port}",
                   f"--file_system_poll_wait_seconds={self.poll_seconds}", f"--host={self.host}"]
        if self.model_base_path is not None:
            command.append(f"--model_base_path={self.model_base_path}")
        return command + self.extra_args

    def start(self) -> "LocalServer":
        # stderr goes to a file, not a pipe: a chatty server must never block on a full pipe.
        self._log = tempfile.NamedTemporaryFile(prefix="imgclf-serve-", suffix=".log", delete=False)
        self.process = subprocess.Popen(self.command(), stdout=self._log, stderr=subprocess.STDOUT)
        try:
            self.wait_until_available()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_until_available(self) -> None:
        """Until the status API lists an AVAILABLE version of the model (or the process died)."""
        if not poll(self._available, self.startup_timeout, interval=0.2):
            raise ServerStartError(
                f"imgclf serve did not report {self.model_name} AVAILABLE within {self.startup_timeout:.0f}s:\n"
                f"{self.log_tail()}"
            )

    def _available(self) -> bool:
        if self.process.poll() is not None:
            raise ServerStartError(f"imgclf serve exited with code {self.process.returncode}:\n{self.log_tail()}")
        try:
            return fetch_model_status(self.rest_url, self.model_name, timeout=2).available
        except StatusError:   # not listening yet, or the model not loaded yet
            return False

    def log_tail(self, lines: int = 40) -> str:
        if not self._log:
            return ""
        try:
            text = Path(self._log.name).read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 15) -> None:
        """Stops the server and removes its log, which is kept (and named in a warning) only when
        the server had died on its own: the one case where nobody has seen why."""
        died = self.process is not None and self.process.poll() is not None
        if self.process is not None and not died:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log is not None:
            self._log.close()
            if died:
                log.warning("imgclf serve had exited with code %s; its log: %s",
                            self.process.returncode, self._log.name)
            else:
                Path(self._log.name).unlink(missing_ok=True)

    def __enter__(self) -> "LocalServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
