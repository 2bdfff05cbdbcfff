"""Normalise NanoGPT's video status responses into one typed result.

NanoGPT documents two incompatible shapes for ``GET /api/video/status`` (a nested envelope with
``data.status`` in upper case and the URL at ``data.output.video.url``, and a flat OpenAPI shape
with lower-case ``status``, ``videoUrl``, ``progress`` and ``estimatedTimeRemaining``), plus the
legacy ``/api/generate-video/status`` envelope. One function reads all of them, so the worker and
the triggerer can never disagree about what a response means.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from airflow_provider_nanogpt.api.coerce import first_amount, first_str, snippet
from airflow_provider_nanogpt.api.errors import is_content_policy_text
from airflow_provider_nanogpt.exceptions import NanoGPTResponseError


class VideoState(enum.StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    UNKNOWN = "UNKNOWN"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL_STATES


_TERMINAL_STATES = frozenset({VideoState.COMPLETED, VideoState.FAILED, VideoState.CANCELLED})

_RAW_STATES: dict[str, VideoState] = {
    "pending": VideoState.QUEUED,
    "queued": VideoState.QUEUED,
    "in_queue": VideoState.QUEUED,
    "processing": VideoState.RUNNING,
    "in_progress": VideoState.RUNNING,
    "running": VideoState.RUNNING,
    "generating": VideoState.RUNNING,
    "delivering": VideoState.RUNNING,
    "completed": VideoState.COMPLETED,
    "complete": VideoState.COMPLETED,
    "succeeded": VideoState.COMPLETED,
    "success": VideoState.COMPLETED,
    "failed": VideoState.FAILED,
    "error": VideoState.FAILED,
    "canceled": VideoState.CANCELLED,
    "cancelled": VideoState.CANCELLED,
}


@dataclass(frozen=True)
class VideoStatus:
    """One status reading of a NanoGPT video job."""

    run_id: str | None
    state: VideoState
    raw_status: str | None = None
    video_url: str | None = None
    cost: float | None = None
    progress: float | None = None
    eta_seconds: float | None = None
    error: str | None = None
    is_nsfw: bool = False
    details: str | None = None
    model: str | None = None

    @property
    def is_terminal(self) -> bool:
        return self.state.is_terminal

    @property
    def is_recognised(self) -> bool:
        """Whether NanoGPT named a state this provider knows (its documented ``unknown`` too)."""
        raw = (self.raw_status or "").strip().lower()
        return raw in _RAW_STATES or raw == "unknown"

    @property
    def is_deliverable(self) -> bool:
        """Completed with a URL. A completed job without one is charged but not ready yet."""
        return self.state is VideoState.COMPLETED and self.video_url is not None

    def describe_progress(self) -> str | None:
        """Human text such as "42% done, about 30 s left", or None when NanoGPT gave nothing."""
        parts = []
        if self.progress is not None:
            parts.append(f"{self.progress:.0f}% done")
        if self.eta_seconds is not None:
            parts.append(f"about {self.eta_seconds:.0f} s left")
        if not parts and self.details:
            parts.append(self.details)
        return ", ".join(parts) or None


def parse_state(raw: object) -> VideoState:
    """Map any documented status spelling (case-insensitive) to a VideoState."""
    if not isinstance(raw, str) or not raw.strip():
        return VideoState.UNKNOWN
    return _RAW_STATES.get(raw.strip().lower(), VideoState.UNKNOWN)


def normalize_status(payload: object, run_id: str | None = None) -> VideoStatus:
    """Read a status response in any documented shape.

    A COMPLETED job without a video URL stays COMPLETED (NanoGPT charged it; the URL may appear a
    moment later): ``is_deliverable`` tells the two apart, and the waiting rules decide. Numbers
    that are not finite and non-negative are taken as absent. An answer that is not an object, or
    that names another run, raises NanoGPTResponseError: it is never read as this run's state.
    """
    if not isinstance(payload, Mapping):
        raise NanoGPTResponseError(
            f"NanoGPT's status answer is not a JSON object but {snippet(payload)}"
        )
    body: Mapping[str, Any] = payload
    data_value = body.get("data")
    data: Mapping[str, Any] = data_value if isinstance(data_value, Mapping) else {}
    _check_run_id(run_id, body.get("requestId"), data.get("requestId"))

    raw_status = first_str(data.get("status"), body.get("status"))
    state = parse_state(raw_status)
    video_url = first_str(
        _dig(data, "output", "video", "url"),
        body.get("videoUrl"),
        data.get("videoUrl"),
        _dig(data, "output", "url"),
        data.get("url"),
        _dig(body, "output", "video", "url"),
    )
    error = first_str(
        data.get("userFriendlyError"),
        body.get("userFriendlyError"),
        _error_text(data.get("error")),
        _error_text(body.get("error")),
    )
    details = first_str(data.get("details"), body.get("details"))
    flagged = bool(data.get("isNSFWError") or body.get("isNSFWError"))
    failed = state in (VideoState.FAILED, VideoState.CANCELLED)

    return VideoStatus(
        run_id=first_str(
            body.get("requestId"), data.get("requestId"), data.get("request_id"), run_id
        ),
        state=state,
        raw_status=raw_status,
        video_url=video_url,
        cost=first_amount(data.get("cost"), body.get("cost")),
        progress=first_amount(data.get("progress"), body.get("progress")),
        eta_seconds=first_amount(
            data.get("estimatedTimeRemaining"), body.get("estimatedTimeRemaining")
        ),
        error=(error or details) if failed else None,
        # The flat shape has no isNSFWError flag: a policy failure shows only in its wording.
        is_nsfw=state is VideoState.FAILED
        and (flagged or any(map(is_content_policy_text, _error_texts(body, data)))),
        details=details,
        model=first_str(body.get("model"), data.get("model")),
    )


def _check_run_id(asked: str | None, *answered: object) -> None:
    for other in answered:
        if asked and isinstance(other, str) and other.strip() and other.strip() != asked:
            raise NanoGPTResponseError(
                f"NanoGPT's status answer for {asked} names another run ({snippet(other, 60)}); "
                "it was not used"
            )


def _error_texts(*parts: Mapping[str, Any]) -> list[str]:
    texts = []
    for part in parts:
        for key in ("error", "userFriendlyError"):
            value = part.get(key)
            if isinstance(value, Mapping):
                value = " ".join(str(value.get(k, "")) for k in ("message", "code", "type"))
            if isinstance(value, str):
                texts.append(value)
    return texts


def _dig(mapping: Mapping[str, Any], *keys: str) -> Any:
    value: Any = mapping
    for key in keys:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _error_text(value: object) -> str | None:
    if isinstance(value, Mapping):
        message = value.get("message")
        return message if isinstance(message, str) and message else None
    return value if isinstance(value, str) and value else None
