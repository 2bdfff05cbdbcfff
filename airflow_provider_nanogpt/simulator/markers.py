"""Prompt markers: ``[sim:NAME]`` / ``[sim:NAME=VALUE]`` choose a test mode for one job.

They work like a payment sandbox's test card numbers: the request itself selects the scenario,
so a DAG can exercise failure paths without any out-of-band setup. Unknown markers or bad
values make the submit answer HTTP 400, so a typo never silently falls back to "success".
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields
from typing import Any

MARKER_RE = re.compile(r"\[sim:([A-Za-z0-9_]+)(?:=([^\]]*))?\]")

SHAPES = ("nested", "flat", "alternate")
CANCEL_SPELLINGS = ("CANCELED", "CANCELLED", "cancelled", "canceled")
MAX_VIDEO_SIZE = 100 * 1024**3  # 100 GiB: generous, but bounded

FLAG_MARKERS = frozenset(
    {
        "fail",
        "nsfw",
        "blocked",
        "cancel",
        "never",
        "no_url",
        "truncate",
        "submit500",
        "intermediate",
    }
)
FLOAT_MARKERS = frozenset({"render", "queue", "submit_slow", "final_cost"})
INT_MARKERS = frozenset({"size", "status404", "status429", "status500", "unknown", "no_url_polls"})
CHOICE_MARKERS: dict[str, tuple[str, ...]] = {
    "shape": SHAPES,
    "cancel_spelling": CANCEL_SPELLINGS,
}
ALL_MARKERS = FLAG_MARKERS | FLOAT_MARKERS | INT_MARKERS | frozenset(CHOICE_MARKERS)

# One line per marker for ``--help`` (docs/simulator.md has the full table).
MARKER_HELP: dict[str, str] = {
    "fail": "the job ends FAILED (refunded)",
    "nsfw": "the job ends FAILED on content policy (refunded)",
    "blocked": "the submit answers 400 CONTENT_POLICY_VIOLATION; nothing charged",
    "cancel": "the job ends cancelled (refunded)",
    "cancel_spelling": "how a cancelled job's status is spelled",
    "never": "the job never finishes (exercises timeouts)",
    "queue": "simulated seconds this job stays queued",
    "render": "simulated seconds this job stays in progress",
    "shape": "this job's status response shape",
    "no_url": "the job completes without a video URL",
    "no_url_polls": "the first N COMPLETED polls carry no URL",
    "size": "size of the video file in bytes",
    "truncate": "the download is cut off halfway",
    "status404": "the first N status polls answer 404",
    "status429": "the next N status polls answer 429",
    "status500": "the next N status polls answer 500",
    "unknown": "the next N status polls report UNKNOWN",
    "intermediate": "flat shape: pending, generating, delivering states",
    "submit500": "the submit creates and charges the job, then answers 500",
    "submit_slow": "the submit creates the job, then answers after S simulated seconds",
    "final_cost": "the COMPLETED status reports this final cost (USD), not the pre-charge",
}


def marker_syntax(name: str) -> str:
    """How ``name`` is written in a prompt: ``[sim:fail]``, ``[sim:render=S]``, …"""
    if name in FLAG_MARKERS:
        return f"[sim:{name}]"
    if name in FLOAT_MARKERS:
        return f"[sim:{name}=S]"
    if name in INT_MARKERS:
        return f"[sim:{name}=N]"
    return f"[sim:{name}={'|'.join(CHOICE_MARKERS[name])}]"


class MarkerError(ValueError):
    """A prompt marker is unknown or has an invalid value (answered with HTTP 400)."""


@dataclass(frozen=True)
class Markers:
    """The test modes selected by one prompt. Defaults mean "behave normally"."""

    fail: bool = False
    nsfw: bool = False
    blocked: bool = False
    cancel: bool = False
    never: bool = False
    no_url: bool = False
    truncate: bool = False
    submit500: bool = False
    intermediate: bool = False
    render: float | None = None
    queue: float | None = None
    submit_slow: float | None = None
    final_cost: float | None = None
    size: int | None = None
    status404: int = 0
    status429: int = 0
    status500: int = 0
    unknown: int = 0
    no_url_polls: int = 0
    shape: str | None = None
    cancel_spelling: str | None = None

    def active(self) -> dict[str, Any]:
        """The markers that differ from the defaults (for ``/_sim/state``)."""
        default = Markers()
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if getattr(self, f.name) != getattr(default, f.name)
        }


def _parse_float(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise MarkerError(f"Simulator marker [sim:{name}] needs a number, got {raw!r}") from None
    if not math.isfinite(value) or value < 0:
        raise MarkerError(f"Simulator marker [sim:{name}] needs a number >= 0, got {raw!r}")
    return value


def _parse_int(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise MarkerError(f"Simulator marker [sim:{name}] needs an integer, got {raw!r}") from None
    if value < 0:
        raise MarkerError(f"Simulator marker [sim:{name}] needs an integer >= 0, got {raw!r}")
    if name == "size" and value > MAX_VIDEO_SIZE:
        raise MarkerError(f"Simulator marker [sim:size] is capped at {MAX_VIDEO_SIZE} bytes")
    return value


def parse_markers(prompt: Any) -> Markers:
    """Extract every ``[sim:...]`` marker of ``prompt`` (non-strings have none)."""
    if not isinstance(prompt, str):
        return Markers()
    values: dict[str, Any] = {}
    for match in MARKER_RE.finditer(prompt):
        name, raw = match.group(1).lower(), match.group(2)
        if name not in ALL_MARKERS:
            known = ", ".join(sorted(ALL_MARKERS))
            raise MarkerError(f"Unknown simulator marker [sim:{name}]. Known markers: {known}")
        if name in FLAG_MARKERS:
            if raw is not None:
                raise MarkerError(f"Simulator marker [sim:{name}] takes no value")
            values[name] = True
            continue
        if raw is None or raw.strip() == "":
            raise MarkerError(f"Simulator marker [sim:{name}] needs a value: [sim:{name}=...]")
        raw = raw.strip()
        if name in FLOAT_MARKERS:
            values[name] = _parse_float(name, raw)
        elif name in INT_MARKERS:
            values[name] = _parse_int(name, raw)
        else:
            choices = CHOICE_MARKERS[name]
            if raw not in choices:
                raise MarkerError(
                    f"Simulator marker [sim:{name}] must be one of {', '.join(choices)}"
                )
            values[name] = raw
    return Markers(**values)
