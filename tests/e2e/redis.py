"""A throwaway Redis server: the Celery broker of the scale-out deployment.

Airflow's CeleryExecutor needs a broker; Redis is the one most deployments use. The server gets a
private temp dir, listens on a free loopback port with persistence off, and is stopped and deleted
afterwards. When absent, Debian's ``redis-server`` is installed through apt-get
(tests/e2e/debian.py) when the suite runs as root; otherwise the error says what to install.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.e2e.debian import ensure_package
from tests.e2e.ports import free_port, log_tail

START_ATTEMPTS = 3
READY_TIMEOUT_SECONDS = 20.0


class RedisUnavailable(RuntimeError):
    """redis-server is not installed and cannot be installed here."""


def find_server() -> Path | None:
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    return Path(found) if found else None


def ensure_installed() -> Path:
    """Find ``redis-server``, installing Debian's ``redis-server`` package if absent."""
    return ensure_package("redis-server", find_server, RedisUnavailable, "redis-server")


class RedisServer:
    """One private, memory-only Redis on loopback; ``stop()`` removes every trace of it."""

    def __init__(self, binary: Path) -> None:
        self.binary = binary
        self.root = Path(tempfile.mkdtemp(prefix="nanogpt-e2e-redis-"))
        self.log_file = self.root / "redis.log"
        self.port = 0
        self.popen: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        # Another process may grab the "free" port before the server binds it: retry on a new one.
        for _ in range(START_ATTEMPTS):
            self.port = free_port()
            argv = [
                str(self.binary),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.root),
                "--logfile",
                str(self.log_file),
                # A broker for one test run: nothing is worth writing to disk.
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
            ]
            self.popen = subprocess.Popen(
                argv,
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            if self._wait_ready():
                return
            self._kill()
        raise RuntimeError(f"redis-server did not start: {log_tail(self.log_file)}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.popen is None or self.popen.poll() is not None:
                return False
            if self.ping():
                return True
            time.sleep(0.1)
        return False

    def ping(self) -> bool:
        """Whether the server answers PING (raw protocol: no client library needed)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def _kill(self) -> None:
        if self.popen is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=10)

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and delete its directory."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=10)
        self._kill()
        shutil.rmtree(self.root, ignore_errors=True)
