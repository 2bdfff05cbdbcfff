"""Simulated clock: every time-based behaviour of the simulator runs on it.

``time_scale`` is the number of real seconds per simulated second, so ``time_scale=0.05``
makes a 60 s rate-limit window last 3 real seconds and an 8 s render last 0.4 s.
"""

from __future__ import annotations

import math
import threading
import time
from datetime import UTC, datetime


class SimClock:
    """A monotonic simulated clock whose speed can change at run time without jumps."""

    def __init__(self, time_scale: float = 1.0) -> None:
        if not time_scale > 0:
            raise ValueError("time_scale must be > 0")
        self._lock = threading.Lock()
        self._scale = float(time_scale)
        self._real_base = time.monotonic()
        self._sim_base = 0.0

    @property
    def time_scale(self) -> float:
        """Real seconds per simulated second."""
        return self._scale

    def now(self) -> float:
        """Simulated seconds since the clock was created (plus any :meth:`advance`)."""
        with self._lock:
            return self._sim_base + (time.monotonic() - self._real_base) / self._scale

    def set_scale(self, time_scale: float) -> None:
        """Change the speed; simulated time continues smoothly from its current value."""
        if not time_scale > 0:
            raise ValueError("time_scale must be > 0")
        with self._lock:
            real = time.monotonic()
            self._sim_base += (real - self._real_base) / self._scale
            self._real_base = real
            self._scale = float(time_scale)

    def advance(self, sim_seconds: float) -> None:
        """Jump simulated time forward (jobs and rate-limit windows move on at once)."""
        if sim_seconds < 0:
            raise ValueError("cannot move the clock backwards")
        with self._lock:
            self._sim_base += sim_seconds

    def to_real(self, sim_seconds: float) -> float:
        """Convert a simulated duration to real seconds at the current scale."""
        return sim_seconds * self._scale

    def wall_time_of(self, sim_instant: float) -> float:
        """Best-effort wall-clock epoch of a simulated instant (for ISO timestamps)."""
        return time.time() - (self.now() - sim_instant) * self._scale


def format_retry_after(real_seconds: float) -> str:
    """``Retry-After`` value: an integer when >= 1 s (rounded up), else a decimal like ``0.35``."""
    if real_seconds >= 1.0:
        return str(math.ceil(real_seconds - 1e-9))
    return f"{max(real_seconds, 0.01):.2f}"


def iso_utc(epoch: float) -> str:
    """ISO-8601 UTC timestamp with milliseconds and a ``Z`` suffix."""
    moment = datetime.fromtimestamp(epoch, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def seconds_until_utc_midnight(epoch: float) -> float:
    """Seconds from ``epoch`` to the next 00:00 UTC (when NanoGPT's daily caps reset)."""
    return 86400.0 - (epoch % 86400.0)
