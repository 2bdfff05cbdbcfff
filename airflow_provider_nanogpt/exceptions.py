"""Typed errors raised by the NanoGPT provider.

Errors that a retry cannot fix derive from ``AirflowFailException`` so Airflow fails the task
at once instead of burning retries (and, for a submission, money). Everything else is a plain
``AirflowException`` and follows the task's ``retries``.

No message ever contains the API key or a request header: messages are built from NanoGPT's
response bodies and our own text only.
"""

from __future__ import annotations

import math
import time

from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException


class NanoGPTError(AirflowException):
    """Base class for every error raised by this provider."""

    retryable: bool = True
    # Set on an error of the submit endpoint that refused the request (a 4xx that no retry
    # changes: content policy, validation, balance, key): NanoGPT created no job.
    refused_submission: bool = False

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        error_type: str | None = None,
        request_id: str | None = None,
        run_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        # The NanoGPT run the error is about, when there is one.
        self.run_id = run_id
        self.http_status = status_code
        self.error_type = error_type
        self.request_id = request_id
        # Seconds NanoGPT asked to wait (Retry-After), on any retryable answer.
        self.retry_after = retry_after

    def __str__(self) -> str:
        parts = [self.message]
        if self.http_status is not None:
            parts.append(f"HTTP {self.http_status}")
        if self.error_type:
            parts.append(f"type {self.error_type}")
        if self.request_id:
            parts.append(f"X-Request-ID {self.request_id}")
        return " | ".join(parts) if len(parts) > 1 else self.message


class NanoGPTPermanentError(NanoGPTError, AirflowFailException):
    """An error that retrying the same request cannot fix; Airflow does not retry it."""

    retryable = False


# --- HTTP-level errors -----------------------------------------------------------------------


class NanoGPTAuthError(NanoGPTPermanentError):
    """401/403: the API key is missing, invalid, revoked, or not allowed for this job."""


class NanoGPTInsufficientBalanceError(NanoGPTPermanentError):
    """402: the account cannot pay for this generation. Top up, then clear the task."""

    def __init__(self, message: str, *, required_balance: float | None = None, **kw: object):
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.required_balance = required_balance


class NanoGPTContentPolicyError(NanoGPTPermanentError):
    """The prompt or image was blocked, or the job failed its content check (isNSFWError)."""


class NanoGPTInvalidRequestError(NanoGPTPermanentError):
    """400: NanoGPT rejected the request (model-specific validation, pro mode required, …)."""


class NanoGPTPayloadTooLargeError(NanoGPTPermanentError):
    """413: the request body is too large; host the image and pass ``image_url`` instead."""


class NanoGPTRateLimitError(NanoGPTError):
    """429: too many requests. ``retry_after`` is in seconds when NanoGPT said so."""


DAILY_CAP_NAMES = {"usd": "daily USD cap", "requests": "daily request cap"}


class NanoGPTDailyCapError(NanoGPTRateLimitError):
    """429 ``daily_usd_limit_exceeded`` / ``daily_rpd_limit_exceeded``: the API key's own daily
    cap, set in NanoGPT's settings, is reached. Nothing was created.

    ``cap`` is ``"usd"`` or ``"requests"``; ``resets_at`` (epoch seconds) is when it resets:
    after NanoGPT's Retry-After, else at the next 00:00 UTC (``retry_after`` is then set to
    match, so every wait reads one number).
    """

    def __init__(self, message: str, *, cap: str, resets_at: float, **kw: object):
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.cap = cap
        self.resets_at = resets_at

    def reached(self, now: float | None = None) -> str:
        """ "NanoGPT's daily USD cap for this API key is reached; it resets at 00:00 UTC (in …)"."""
        return daily_cap_reached(self.cap, self.resets_at, now)


def daily_cap_reached(cap: str, resets_at: float, now: float | None = None) -> str:
    """The plain sentence for a reached daily cap, with when (and in how long) it resets."""
    left = resets_at - (time.time() if now is None else now)
    return (
        f"NanoGPT's {DAILY_CAP_NAMES.get(cap, 'daily cap')} for this API key is reached; it "
        f"resets at {reset_clock(resets_at)} (in {describe_duration(left)})"
    )


def reset_clock(resets_at: float) -> str:
    """The reset as "HH:MM UTC" (to the nearest minute: Retry-After lands a second off)."""
    return time.strftime("%H:%M UTC", time.gmtime(round(resets_at / 60) * 60))


def describe_duration(seconds: float) -> str:
    """ "3 h 12 min", "12 min" or "40 s": minutes rounded up, so a wait is never undersold."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{math.ceil(seconds):d} s"
    minutes = math.ceil(seconds / 60)
    hours, minutes = divmod(minutes, 60)
    if not hours:
        return f"{minutes} min"
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


class NanoGPTRedirectError(NanoGPTPermanentError):
    """The API answered with a redirect. API calls never follow one: the key must stay put."""


class NanoGPTNotFoundError(NanoGPTError):
    """404: the run id is unknown (a wrong id, or a brand-new job not yet visible)."""


class NanoGPTServerError(NanoGPTError):
    """5xx (or 408): NanoGPT failed; usually transient."""


class NanoGPTConnectionError(NanoGPTError):
    """The HTTP exchange failed at the network level.

    ``request_sent`` tells whether NanoGPT may have received the request: False only when the
    connection was never established, which is the one case where re-sending a submission is safe.
    """

    def __init__(self, message: str, *, request_sent: bool, **kw: object):
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.request_sent = request_sent


class NanoGPTDeadlinePassedError(NanoGPTConnectionError):
    """The task's deadline (``timeout`` or ``execution_timeout``) passed before a call was made:
    nothing was sent."""

    def __init__(self, message: str, **kw: object):
        super().__init__(message, request_sent=False, **kw)


class NanoGPTTLSError(NanoGPTConnectionError, NanoGPTPermanentError):
    """The TLS handshake failed: an https:// URL to a plain-HTTP server, an untrusted or expired
    certificate, or one issued for another host.

    Nothing was sent (the handshake comes first), but asking again meets the same server and
    the same certificate, so it is not retried: the message names the host and the likely fix.
    """

    retryable = False


class NanoGPTSubmissionUncertainError(NanoGPTError):
    """A submission failed after it left, so NanoGPT may have created (and charged) the job.

    It is never re-sent in the same try. The next try looks the job up by its tag and reattaches,
    and re-sends only once NanoGPT's run list answered and showed nothing after a settle time.
    """


class NanoGPTResumeStateError(NanoGPTError):
    """A deferred task resumed without the state its deferral carried (or with an unreadable one).

    Nothing is guessed in its place (a guessed start would restart the task's ``timeout``). The
    resume sends nothing; a retry starts the try afresh and looks any earlier submission up first,
    so it never pays twice.
    """


class NanoGPTSubmissionUnresolvedError(NanoGPTPermanentError):
    """An earlier submission's outcome cannot be settled automatically; a person must check.

    Raised when NanoGPT lists runs that may be this task's but cannot be told apart (a
    ``conversationUUID`` set by the DAG, or runs without a creation time). Not retried: a retry
    would meet the same runs. The message names them.
    """


class NanoGPTResponseError(NanoGPTError):
    """NanoGPT answered with a body this provider cannot read (malformed JSON, missing fields)."""


# --- Job-level outcomes ----------------------------------------------------------------------


class NanoGPTJobFailedError(NanoGPTError):
    """The job ended FAILED. NanoGPT refunds it; a retry submits (and pays for) a new one."""


class NanoGPTCompletedWithoutVideoError(NanoGPTError):
    """NanoGPT reports the job COMPLETED (so it is charged) but gives no video URL.

    Retryable: a retry reattaches to the same run and never submits again.
    """


class NanoGPTJobContentPolicyError(NanoGPTContentPolicyError):
    """The job ended FAILED because the output broke the content policy (isNSFWError)."""


class NanoGPTJobCancelledError(NanoGPTPermanentError):
    """The job was cancelled on NanoGPT's side (clients cannot cancel)."""


class NanoGPTJobTimeoutError(NanoGPTError):
    """The video was not ready in time. The remote job may still finish and be charged."""


class NanoGPTDownloadError(NanoGPTError):
    """Downloading the finished video failed; nothing was left at the destination."""


class NanoGPTVideoRefusedError(NanoGPTPermanentError):
    """The video was not fetched, and a retry would not fetch it: a URL that is not http(s) or
    not on the connection's ``allowed_video_hosts``, or a video over ``max_video_bytes``."""


# --- Checks made before anything is sent ------------------------------------------------------


class NanoGPTValidationError(NanoGPTPermanentError, ValueError):
    """The request is invalid for the chosen model; nothing was sent to NanoGPT."""


class NanoGPTBudgetError(NanoGPTPermanentError):
    """A cost guard (``min_balance_usd`` / ``max_cost_usd``) stopped the submission."""


class NanoGPTConfigurationError(NanoGPTPermanentError):
    """The connection is missing or incomplete (no API key, bad base URL), or a path's storage
    protocol has no filesystem on this worker (its provider or fsspec package not installed)."""


class NanoGPTApprovalTimeoutError(NanoGPTPermanentError):
    """Nobody answered the approval request (``approval_above_usd``) before its response timeout;
    nothing was submitted. Not retried: a retry would only ask again unanswered."""
