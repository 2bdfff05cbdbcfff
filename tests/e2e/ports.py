"""Helpers of the throwaway servers (PostgreSQL, Redis): free loopback ports and log tails.

Other test runs share this machine, so nothing uses a fixed port. Kept free of pytest and the
e2e deployment so that benchmarks/ can start a server too (tests/e2e/postgres.py).
"""

from __future__ import annotations

import socket
from pathlib import Path


def free_port() -> int:
    """A port nothing listens on right now (callers retry if another process takes it first)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def log_tail(path: Path, chars: int = 2000) -> str:
    """The end of a server's log file, for a start-up error; empty when there is none."""
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""
