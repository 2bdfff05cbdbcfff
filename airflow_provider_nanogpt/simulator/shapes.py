"""Status response bodies in every documented shape.

* unified ``nested`` - fact sheet Shape A (``data.status`` UPPERCASE, ``data.output.video.url``)
* unified ``flat``   - fact sheet Shape B (lowercase ``status``, ``videoUrl``, ``progress``...)
* ``legacy``         - ``GET /api/generate-video/status`` (``data.request_id``)
* ``recover``        - lowercase status words of the recover list
"""

from __future__ import annotations

from typing import Any

from .jobs import CANCELLED, COMPLETED, FAILED, PROCESSING, QUEUED, Job, Phase

_UPPER = {
    QUEUED: "IN_QUEUE",
    PROCESSING: "IN_PROGRESS",
    COMPLETED: "COMPLETED",
    FAILED: "FAILED",
    CANCELLED: "CANCELED",
}
_DETAILS = {
    QUEUED: "Video is queued for generation",
    PROCESSING: "Video is being generated",
    COMPLETED: "Video generation completed",
    FAILED: "Video generation failed",
    CANCELLED: "Video generation was cancelled",
}


def status_word(job: Job, state: str, style: str) -> str:
    """The status string for ``state`` in ``style`` (``upper``, ``flat`` or ``recover``)."""
    if state == CANCELLED:
        spelling = job.markers.cancel_spelling
        if style == "upper":
            return spelling or "CANCELED"
        if style == "recover":
            return (spelling or "cancelled").lower()
        return spelling or "cancelled"
    if style == "upper":
        return _UPPER[state]
    if style == "flat" and job.markers.intermediate:
        if state == QUEUED:
            return "pending"
        if state == PROCESSING:
            return "generating"
    return state


def _eta(phase: Phase, time_scale: float) -> float | None:
    if phase.remaining is None:
        return None
    return round(phase.remaining * time_scale, 2)


def nested_status(
    job: Job, phase: Phase, video_url: str | None, time_scale: float, unknown: bool = False
) -> dict[str, Any]:
    """Shape A: ``{"requestId", "model", "data": {"status": "IN_PROGRESS", ...}}``."""
    data: dict[str, Any] = {"requestId": job.run_id}
    if unknown:
        data["status"] = "UNKNOWN"
        data["details"] = "Status temporarily unavailable"
        return {"requestId": job.run_id, "model": job.model, "data": data}
    data["status"] = status_word(job, phase.state, "upper")
    data["details"] = _DETAILS[phase.state]
    if phase.state == PROCESSING:
        data["progress"] = phase.progress
        data["estimatedTimeRemaining"] = _eta(phase, time_scale)
    else:
        _add_outcome(data, job, phase, video_url)
    return {"requestId": job.run_id, "model": job.model, "data": data}


def _add_outcome(data: dict[str, Any], job: Job, phase: Phase, video_url: str | None) -> None:
    """The result fields shared by the nested and the legacy envelope."""
    if phase.state == COMPLETED:
        if video_url is not None:
            data["output"] = {"video": {"url": video_url}}
        final = job.markers.final_cost
        data["cost"] = float(job.cost) if final is None else final
    elif phase.state == FAILED:
        error, friendly, nsfw = job.failure()
        data["error"] = error
        data["isNSFWError"] = nsfw
        data["userFriendlyError"] = friendly


def flat_status(
    job: Job,
    phase: Phase,
    video_url: str | None,
    time_scale: float,
    created_at: str,
    completed_at: str | None,
    unknown: bool = False,
) -> dict[str, Any]:
    """Shape B (OpenAPI ``UnifiedVideoStatusResponse``): a flat object, lowercase status."""
    body: dict[str, Any] = {
        "requestId": job.run_id,
        "status": "unknown",
        "progress": None,
        "estimatedTimeRemaining": None,
        "videoUrl": None,
        "error": None,
        "createdAt": created_at,
        "completedAt": None,
    }
    if unknown:
        return body
    state = phase.state
    body["status"] = status_word(job, state, "flat")
    if state in (QUEUED, PROCESSING):
        body["progress"] = phase.progress
        body["estimatedTimeRemaining"] = _eta(phase, time_scale)
        if (
            state == PROCESSING
            and job.markers.intermediate
            and phase.progress is not None
            and phase.progress >= 80
        ):
            body["status"] = "delivering"
        return body
    body["completedAt"] = completed_at
    if state == COMPLETED:
        body["progress"] = 100
        body["estimatedTimeRemaining"] = 0
        body["videoUrl"] = video_url
    elif state == FAILED:
        body["error"] = job.failure()[0]
    return body


def legacy_status(job: Job, phase: Phase, video_url: str | None) -> dict[str, Any]:
    """Legacy ``{"data": {"status", "request_id", "output", "cost", "error", ...}}``.

    Every documented key is present; the ones that do not apply are ``null``/``false``.
    """
    data: dict[str, Any] = {
        "status": status_word(job, phase.state, "upper"),
        "request_id": job.run_id,
        "output": None,
        "cost": None,
        "error": None,
        "isNSFWError": False,
        "userFriendlyError": None,
    }
    _add_outcome(data, job, phase, video_url)
    return {"data": data}
