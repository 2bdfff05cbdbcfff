"""What a finished NanoGPT job means for an Airflow task, shared by the operator and the sensor.

The trigger, the worker-side poll loop and the inline "already finished" shortcut all end here,
so every path maps NanoGPT's terminal states to the same result or the same typed error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow_provider_nanogpt.api.status import VideoState, VideoStatus
from airflow_provider_nanogpt.exceptions import (
    NanoGPTError,
    NanoGPTJobCancelledError,
    NanoGPTJobContentPolicyError,
    NanoGPTJobFailedError,
    NanoGPTJobTimeoutError,
    NanoGPTPermanentError,
)
from airflow_provider_nanogpt.hooks.nanogpt import NanoGPTHook, redact_url
from airflow_provider_nanogpt.links.video import VIDEO_URL_XCOM_KEY

EVENT_STATUSES = frozenset({"success", "failed", "cancelled", "timeout", "error"})

NO_CANCEL_NOTE = (
    "NanoGPT has no cancel endpoint: the job may still finish and be charged. "
    "A retry of this task reattaches to it instead of paying again."
)


def event_for(status: VideoStatus) -> dict[str, Any]:
    """The trigger event for a terminal status. No URL: events are logged by the triggerer."""
    kind = {
        VideoState.COMPLETED: "success",
        VideoState.FAILED: "failed",
        VideoState.CANCELLED: "cancelled",
    }[status.state]
    event: dict[str, Any] = {"status": kind, "run_id": status.run_id}
    if kind == "success":
        event["message"] = f"NanoGPT video {status.run_id} is ready"
    else:
        event["message"] = status.error or f"NanoGPT video {status.run_id} ended {kind}"
        event["is_nsfw"] = status.is_nsfw
    return event


def timeout_event(run_id: str, waited_seconds: float) -> dict[str, Any]:
    return {
        "status": "timeout",
        "run_id": run_id,
        "waited_seconds": round(waited_seconds, 1),
        "message": f"NanoGPT video {run_id} was not ready after {waited_seconds:.0f} s",
    }


def validate_event(event: object, expected_run_id: str | None = None) -> dict[str, Any]:
    """Reject a missing or malformed trigger event instead of treating it as success."""
    if not isinstance(event, Mapping):
        raise NanoGPTError(f"NanoGPT trigger returned no usable event: {event!r}")
    status = event.get("status")
    if status not in EVENT_STATUSES:
        raise NanoGPTError(f"NanoGPT trigger returned an unknown status {status!r}")
    run_id = event.get("run_id") or expected_run_id
    if not isinstance(run_id, str) or not run_id:
        raise NanoGPTError("NanoGPT trigger event has no run_id")
    return {**event, "run_id": run_id}


def raise_for_event(event: Mapping[str, Any]) -> None:
    """Raise the typed error for any non-success event."""
    status, run_id = event["status"], event["run_id"]
    message = str(event.get("message") or "")
    if status == "success":
        return
    if status == "failed":
        if event.get("is_nsfw"):
            raise NanoGPTJobContentPolicyError(
                f"NanoGPT video {run_id} was blocked by the content policy: {message}. "
                "Change the prompt or image; NanoGPT refunds blocked jobs.",
                run_id=run_id,
            )
        raise NanoGPTJobFailedError(
            f"NanoGPT video {run_id} failed: {message}. NanoGPT refunds failed jobs.",
            run_id=run_id,
        )
    if status == "cancelled":
        raise NanoGPTJobCancelledError(f"NanoGPT video {run_id} was cancelled: {message}")
    if status == "timeout":
        raise NanoGPTJobTimeoutError(f"{message}. {NO_CANCEL_NOTE}")
    text = f"Waiting for NanoGPT video {run_id} failed: {message}"
    if event.get("retryable") is False:
        raise NanoGPTPermanentError(text)
    raise NanoGPTError(text)


def deliver(
    hook: NanoGPTHook,
    status: VideoStatus,
    *,
    run_id: str,
    model: str | None,
    output_path: Any,
    log: Any,
) -> dict[str, Any]:
    """Download (if asked) and build the task's small return value for a COMPLETED job."""
    if status.state is not VideoState.COMPLETED or not status.video_url:
        raise NanoGPTError(
            f"NanoGPT video {run_id} was reported ready, but its status now reads "
            f"{status.state.value} without a video URL"
        )
    saved_to = None
    if output_path:
        saved_to = hook.download_video(status.video_url, output_path).path
    log.info(
        "NanoGPT video %s is ready: %s (final cost %s)",
        run_id,
        redact_url(status.video_url),
        format_money(status.cost),
    )
    return {
        "run_id": run_id,
        "model": model or status.model,
        "status": "success",
        "video_url": status.video_url,
        "cost": status.cost,
        "output_path": saved_to,
    }


def complete(
    context: Any,
    event: Mapping[str, Any],
    status: VideoStatus | None,
    *,
    hook: NanoGPTHook,
    model: str | None,
    output_path: Any,
    outlets: Any,
    log: Any,
    precharged_cost: float | None = None,
) -> dict[str, Any]:
    """Finish a task from a terminal event: raise its error, or deliver the video.

    ``status`` is the terminal reading when the caller has one; events carry no URL (the
    triggerer logs them), so otherwise it is read again from NanoGPT's cached status.
    """
    raise_for_event(event)
    run_id = str(event["run_id"])
    if status is None:
        status = hook.get_video_status(run_id)
    result = deliver(hook, status, run_id=run_id, model=model, output_path=output_path, log=log)
    if result["cost"] is None:
        # The flat status shape carries no final cost; the pre-charge is the best known figure.
        result["cost"] = precharged_cost
    context["ti"].xcom_push(key=VIDEO_URL_XCOM_KEY, value=status.video_url)
    record_outlet_events(context, outlets, result)
    return result


def record_outlet_events(
    context: Mapping[str, Any], outlets: Any, result: Mapping[str, Any]
) -> None:
    """Attach the video's whereabouts to each Asset outlet event for downstream DAGs."""
    from airflow.sdk import Asset

    extra = {key: result.get(key) for key in ("run_id", "video_url", "output_path", "model")}
    for outlet in outlets or ():
        if isinstance(outlet, Asset):
            context["outlet_events"][outlet].extra = extra


def format_money(value: float | None) -> str:
    return "unknown" if value is None else f"${value:.4f}"
