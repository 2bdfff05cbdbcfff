"""Per-client-IP sliding-window rate limiter running on the simulated clock."""

from __future__ import annotations

import threading
from collections import deque

WINDOW_SECONDS = 60.0  # simulated seconds


class SlidingWindowLimiter:
    """Admit at most ``limit`` requests per ``window`` simulated seconds per key.

    A limit <= 0 disables the limiter. Rejected requests do not take a slot.
    """

    def __init__(self, limit: int, window: float = WINDOW_SECONDS) -> None:
        self.limit = limit
        self.window = window
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def acquire(self, key: str, now: float) -> float | None:
        """Take a slot at simulated time ``now``.

        Returns ``None`` when admitted, else the simulated seconds until a slot frees.
        """
        if self.limit <= 0:
            return None
        with self._lock:
            hits = self._hits.setdefault(key, deque())
            while hits and hits[0] <= now - self.window:
                hits.popleft()
            if len(hits) >= self.limit:
                return max(hits[len(hits) - self.limit] + self.window - now, 0.0)
            hits.append(now)
            return None

    def clear(self) -> None:
        """Forget every window."""
        with self._lock:
            self._hits.clear()
