"""Fault injection: the next N matching requests get a fault instead of being processed."""

from __future__ import annotations

import math
import threading
from dataclasses import asdict, dataclass
from typing import Any

from .errors import BODY_SHAPES

ENDPOINTS = (
    "submit",
    "status",
    "legacy_status",
    "balance",
    "models",
    "recover",
    "usage",
    "download",
    "any",
)
KINDS = (
    "429",
    "429_no_retry_after",
    "500",
    "502",
    "503",
    "404",
    "reset",
    "timeout",
    "malformed",
    "daily_cap",
    "daily_usd_cap",
)
DEFAULT_TIMEOUT_DELAY = 30.0  # simulated seconds
DEFAULT_RETRY_AFTER = 1.0  # simulated seconds


class FaultError(ValueError):
    """An invalid fault specification (answered with HTTP 400 by ``/_sim/faults``)."""


@dataclass
class Fault:
    """One queued fault. ``remaining`` counts down as matching requests consume it."""

    endpoint: str
    kind: str
    count: int = 1
    retry_after: float | None = None
    delay: float | None = None
    body_shape: str = "string"
    remaining: int = 1

    def to_json(self) -> dict[str, Any]:
        """JSON form for ``GET /_sim/faults``."""
        return asdict(self)


def _number(spec: dict[str, Any], key: str) -> float | None:
    value = spec.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise FaultError(f"{key} must be a number")
    if value < 0:
        raise FaultError(f"{key} must be >= 0")
    return float(value)


def parse_fault(spec: Any) -> Fault:
    """Validate a fault specification (a JSON object)."""
    if not isinstance(spec, dict):
        raise FaultError("a fault must be a JSON object")
    unknown = set(spec) - {"endpoint", "kind", "count", "retry_after", "delay", "body_shape"}
    if unknown:
        raise FaultError(f"unknown fault fields: {', '.join(sorted(unknown))}")
    endpoint = str(spec.get("endpoint", "any"))
    if endpoint not in ENDPOINTS:
        raise FaultError(f"endpoint must be one of {', '.join(ENDPOINTS)}")
    kind = str(spec.get("kind", ""))
    if kind not in KINDS:
        raise FaultError(f"kind must be one of {', '.join(KINDS)}")
    count = spec.get("count", 1)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise FaultError("count must be an integer >= 1")
    body_shape = str(spec.get("body_shape", "string"))
    if body_shape not in BODY_SHAPES:
        raise FaultError(f"body_shape must be one of {', '.join(BODY_SHAPES)}")
    return Fault(
        endpoint=endpoint,
        kind=kind,
        count=count,
        retry_after=_number(spec, "retry_after"),
        delay=_number(spec, "delay"),
        body_shape=body_shape,
        remaining=count,
    )


class FaultQueue:
    """Thread-safe FIFO of faults; the first fault matching an endpoint wins."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()

    def add(self, fault: Fault) -> None:
        """Queue ``fault`` behind the existing ones."""
        with self._lock:
            self._faults.append(fault)

    def take(self, endpoint: str | None) -> Fault | None:
        """Consume one use of the first fault matching ``endpoint`` (``None`` matches none)."""
        if endpoint is None:
            return None
        with self._lock:
            for fault in self._faults:
                if fault.endpoint in (endpoint, "any"):
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def clear(self) -> None:
        """Drop every queued fault."""
        with self._lock:
            self._faults.clear()

    def snapshot(self) -> list[dict[str, Any]]:
        """The queued faults as JSON."""
        with self._lock:
            return [fault.to_json() for fault in self._faults]
