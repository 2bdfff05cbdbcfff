"""The event a finished wait hands back to the task: one typed contract for every path.

The trigger yields it as a ``TriggerEvent`` payload (a plain dict, stored by Airflow and logged by
the triggerer, so it never carries a URL or a secret); the worker-side wait returns it directly.
Either way the task turns it into a result or into the one typed error that fits, here.

Payloads are persisted between the triggerer and the worker, so ``from_payload`` also reads the
field names earlier releases wrote (a task deferred before an upgrade still resumes).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from airflow_provider_nanogpt.exceptions import (
    NanoGPTAuthError,
    NanoGPTCompletedWithoutVideoError,
    NanoGPTConfigurationError,
    NanoGPTError,
    NanoGPTJobCancelledError,
    NanoGPTJobContentPolicyError,
    NanoGPTJobFailedError,
    NanoGPTJobTimeoutError,
    NanoGPTNotFoundError,
    NanoGPTPermanentError,
    NanoGPTResponseError,
)

NO_CANCEL_NOTE = (
    "NanoGPT has no cancel endpoint: the job may still finish and be charged. "
    "A retry of this task reattaches to it instead of paying again."
)


class EventStatus(enum.StrEnum):
    SUCCESS = "success"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"
    ERROR = "error"


class ErrorReason(enum.StrEnum):
    """Why a wait ended with ``error``; each maps to one exception class."""

    AUTH = "auth"
    CONFIGURATION = "configuration"
    NOT_FOUND = "not_found"
    COMPLETED_WITHOUT_URL = "completed_without_url"
    UNREADABLE = "unreadable"
    PERMANENT = "permanent"
    TRANSIENT = "transient"


_ERROR_CLASSES: dict[ErrorReason, type[NanoGPTError]] = {
    ErrorReason.AUTH: NanoGPTAuthError,
    ErrorReason.CONFIGURATION: NanoGPTConfigurationError,
    ErrorReason.NOT_FOUND: NanoGPTNotFoundError,
    ErrorReason.COMPLETED_WITHOUT_URL: NanoGPTCompletedWithoutVideoError,
    ErrorReason.UNREADABLE: NanoGPTResponseError,
    ErrorReason.PERMANENT: NanoGPTPermanentError,
    ErrorReason.TRANSIENT: NanoGPTError,
}
_CATCH_ALL = frozenset({ErrorReason.PERMANENT, ErrorReason.TRANSIENT})


def reason_for(exc: BaseException) -> ErrorReason:
    """The error reason that re-raises as the same kind of exception on the worker."""
    for reason, cls in _ERROR_CLASSES.items():
        if reason not in _CATCH_ALL and isinstance(exc, cls):
            return reason
    return (
        ErrorReason.PERMANENT if isinstance(exc, NanoGPTPermanentError) else ErrorReason.TRANSIENT
    )


@dataclass(frozen=True)
class VideoEvent:
    """How waiting for one NanoGPT run ended."""

    status: EventStatus
    run_id: str
    message: str
    # FAILED: the job broke the content policy. ERROR: what went wrong.
    is_nsfw: bool = False
    reason: ErrorReason | None = None
    waited_seconds: float | None = None
    # TIMEOUT: set (in seconds) when the task's execution_timeout, not ``timeout``, ended it.
    execution_timeout: float | None = None

    # --- construction --------------------------------------------------------------------

    @classmethod
    def success(cls, run_id: str) -> VideoEvent:
        return cls(EventStatus.SUCCESS, run_id, f"NanoGPT video {run_id} is ready")

    @classmethod
    def failed(cls, run_id: str, error: str | None, *, is_nsfw: bool) -> VideoEvent:
        return cls(
            EventStatus.FAILED, run_id, error or f"NanoGPT video {run_id} failed", is_nsfw=is_nsfw
        )

    @classmethod
    def cancelled(cls, run_id: str, error: str | None) -> VideoEvent:
        return cls(EventStatus.CANCELLED, run_id, error or f"NanoGPT video {run_id} was cancelled")

    @classmethod
    def timeout(cls, run_id: str, waited_seconds: float) -> VideoEvent:
        return cls(
            EventStatus.TIMEOUT,
            run_id,
            f"NanoGPT video {run_id} was not ready after {waited_seconds:.0f} s",
            waited_seconds=round(waited_seconds, 1),
        )

    @classmethod
    def execution_timed_out(
        cls, run_id: str, waited_seconds: float, execution_timeout: float
    ) -> VideoEvent:
        """The task's execution_timeout came before the operator's ``timeout``."""
        from airflow_provider_nanogpt.deadline import waiting_for_run_ended

        return cls(
            EventStatus.TIMEOUT,
            run_id,
            waiting_for_run_ended(execution_timeout, run_id),
            waited_seconds=round(waited_seconds, 1),
            execution_timeout=execution_timeout,
        )

    @classmethod
    def error(cls, run_id: str, message: str, reason: ErrorReason) -> VideoEvent:
        return cls(EventStatus.ERROR, run_id, message, reason=reason)

    # --- the persisted form ----------------------------------------------------------------

    def to_payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "status": self.status.value,
            "run_id": self.run_id,
            "message": self.message,
        }
        if self.status is EventStatus.FAILED:
            payload["is_nsfw"] = self.is_nsfw
        if self.reason is not None:
            payload["reason"] = self.reason.value
        if self.waited_seconds is not None:
            payload["waited_seconds"] = self.waited_seconds
        if self.execution_timeout is not None:
            payload["execution_timeout"] = self.execution_timeout
        return payload

    @classmethod
    def from_payload(cls, payload: object, expected_run_id: str | None = None) -> VideoEvent:
        """Read a stored event; a missing or malformed one is an error, never a success."""
        if not isinstance(payload, Mapping):
            raise NanoGPTError(f"NanoGPT trigger returned no usable event: {payload!r}"[:300])
        try:
            status = EventStatus(str(payload.get("status")))
        except ValueError:
            raise NanoGPTError(
                f"NanoGPT trigger returned an unknown status {payload.get('status')!r}"[:300]
            ) from None
        run_id = payload.get("run_id") or expected_run_id
        if not isinstance(run_id, str) or not run_id:
            raise NanoGPTError("NanoGPT trigger event has no run_id")
        reason = _reason(payload)
        waited = payload.get("waited_seconds")
        execution_timeout = payload.get("execution_timeout")
        return cls(
            status=status,
            run_id=run_id,
            message=str(payload.get("message") or ""),
            is_nsfw=bool(payload.get("is_nsfw", False)),
            reason=reason if status is EventStatus.ERROR else None,
            waited_seconds=float(waited) if isinstance(waited, int | float) else None,
            execution_timeout=float(execution_timeout)
            if isinstance(execution_timeout, int | float) and status is EventStatus.TIMEOUT
            else None,
        )

    # --- what it means for the task --------------------------------------------------------

    def raise_for_status(self) -> None:
        """Raise the typed error for anything but success."""
        run_id, message = self.run_id, self.message
        if self.status is EventStatus.SUCCESS:
            return
        if self.status is EventStatus.FAILED:
            if self.is_nsfw:
                raise NanoGPTJobContentPolicyError(
                    f"NanoGPT video {run_id} was blocked by the content policy: {message}. "
                    "Change the prompt or image; NanoGPT refunds blocked jobs.",
                    run_id=run_id,
                )
            raise NanoGPTJobFailedError(
                f"NanoGPT video {run_id} failed: {message}. NanoGPT refunds failed jobs, so a "
                "retry submits (and pays for) a new one.",
                run_id=run_id,
            )
        if self.status is EventStatus.CANCELLED:
            raise NanoGPTJobCancelledError(f"NanoGPT video {run_id} was cancelled: {message}")
        if self.status is EventStatus.TIMEOUT:
            if self.execution_timeout is not None:
                # The message already says the job goes on and a retry reattaches.
                raise NanoGPTJobTimeoutError(message, run_id=run_id)
            raise NanoGPTJobTimeoutError(f"{message}. {NO_CANCEL_NOTE}")
        reason = self.reason or ErrorReason.TRANSIENT
        text = f"Waiting for NanoGPT video {run_id} failed: {message}"
        if reason is ErrorReason.COMPLETED_WITHOUT_URL:
            raise NanoGPTCompletedWithoutVideoError(message, run_id=run_id)
        raise _ERROR_CLASSES[reason](text)


def _reason(payload: Mapping[str, Any]) -> ErrorReason:
    try:
        return ErrorReason(str(payload.get("reason")))
    except ValueError:
        # Events written before ``reason`` existed only said whether a retry could help.
        return ErrorReason.PERMANENT if payload.get("retryable") is False else ErrorReason.TRANSIENT
