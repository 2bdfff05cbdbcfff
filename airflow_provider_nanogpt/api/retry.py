"""The provider's one retry policy, shared by the sync (requests) and async (httpx) paths.

Both paths build tenacity's ``Retrying`` / ``AsyncRetrying`` from the same keyword arguments, so a
429 or a 5xx is treated identically on a worker and in the triggerer.

Reads (status, balance, models, recover, downloads) retry network errors, timeouts, 408, 429 and
5xx with exponential backoff and full jitter, never sooner than ``Retry-After``. A submission is a
paid, non-idempotent POST: only errors that prove nothing was created are retried here (a 429, or a
connection that was never established). Timeouts and 5xx after sending are never re-sent; the
submission module settles them on a later try through NanoGPT's ``recover`` endpoint.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from airflow_provider_nanogpt.exceptions import (
    NanoGPTConfigurationError,
    NanoGPTConnectionError,
    NanoGPTError,
    NanoGPTPermanentError,
    NanoGPTRateLimitError,
    NanoGPTResponseError,
    NanoGPTServerError,
)

DEFAULT_MAX_RETRIES = 5


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = DEFAULT_MAX_RETRIES
    base_delay: float = 1.0
    max_delay: float = 60.0
    # A Retry-After longer than this (a daily cap resetting at midnight UTC) is not slept on a
    # worker: the error is raised so the task fails with NanoGPT's explanation.
    max_retry_after: float = 900.0
    # Whether a 429 without Retry-After is retried here with backoff. Callers that can wait
    # elsewhere (the deferrable operator) turn this off and defer instead.
    retry_rate_limit_without_retry_after: bool = True

    def backoff(self, attempt_number: int) -> float:
        """Exponential backoff with full jitter: 1 s, 2 s, 4 s … capped, times U(0.5, 1)."""
        ceiling = min(self.max_delay, self.base_delay * float(2 ** max(0, attempt_number - 1)))
        return ceiling * random.uniform(0.5, 1.0)

    def delay_for(self, exc: BaseException | None, attempt_number: int) -> float:
        """The backoff, but never sooner than a Retry-After NanoGPT sent (on any status).

        A 429's Retry-After says when a slot frees: that is waited (with a little jitter, so
        callers rate limited together do not return together), not the longer backoff.
        """
        retry_after = exc.retry_after if isinstance(exc, NanoGPTError) else None
        if retry_after is not None and isinstance(exc, NanoGPTRateLimitError):
            return retry_after * random.uniform(1.0, 1.1)
        delay = self.backoff(attempt_number)
        return delay if retry_after is None else max(delay, retry_after)

    def is_waitable(self, exc: NanoGPTError) -> bool:
        """Whether waiting here for what ``exc`` asks is reasonable (not a daily cap)."""
        if exc.retry_after is None:
            return self.retry_rate_limit_without_retry_after or not isinstance(
                exc, NanoGPTRateLimitError
            )
        return exc.retry_after <= self.max_retry_after


def is_retryable_read(exc: BaseException, policy: RetryPolicy) -> bool:
    if isinstance(exc, NanoGPTPermanentError):
        return False  # a TLS handshake refused, say: asking again meets the same refusal
    transient = NanoGPTRateLimitError | NanoGPTServerError | NanoGPTConnectionError
    if isinstance(exc, NanoGPTResponseError) and exc.http_status is None:
        return True  # an unreadable or oversized answer: asking again may do better
    return isinstance(exc, transient | NanoGPTResponseError) and policy.is_waitable(exc)


def proves_nothing_created(exc: BaseException) -> bool:
    """Whether a failed submission certainly created no job, so sending it again is safe.

    True for a connection that was never established and for a 4xx answer (429 included): NanoGPT
    refused the request. A timeout, a reset after sending, a 5xx or 408, or an unreadable success
    answer may each hide a created, pre-charged job.
    """
    if isinstance(exc, NanoGPTConnectionError):
        return not exc.request_sent
    if isinstance(exc, NanoGPTConfigurationError):
        return True  # raised while reading the connection, before any request
    status = exc.http_status if isinstance(exc, NanoGPTError) else None
    return status is not None and 400 <= status < 500 and status != 408


def is_retryable_submit(exc: BaseException, policy: RetryPolicy) -> bool:
    """In-call re-sends of a submission: only a waitable 429 or a connection never made.

    Whatever the error's type, the answer must also prove nothing was created (a 4xx status, a
    connection never established), so no mapping mistake can turn a 5xx into a paid re-send.
    """
    if isinstance(exc, NanoGPTPermanentError) or not proves_nothing_created(exc):
        return False
    if isinstance(exc, NanoGPTRateLimitError):
        return policy.is_waitable(exc)
    return isinstance(exc, NanoGPTConnectionError) and not exc.request_sent


def tenacity_kwargs(
    policy: RetryPolicy,
    should_retry: Callable[[BaseException, RetryPolicy], bool],
    logger: Any,
    action: str,
    deadline: float | None = None,
    *,
    conn_id: str | None = None,
    endpoint: str = "other",
) -> dict[str, Any]:
    """Keyword arguments for ``tenacity.Retrying`` and ``tenacity.AsyncRetrying`` alike.

    With a ``deadline`` (epoch seconds), no retry is started, and no wait begun, that would end
    past it: the last error is raised instead. ``conn_id`` and ``endpoint`` (a bounded label,
    never the action text, which names runs) tag the rate-limit wait metric.
    """
    from tenacity import retry_if_exception, stop_after_attempt

    attempts = stop_after_attempt(policy.max_retries + 1)

    def stop(retry_state: Any) -> bool:
        if attempts(retry_state):
            return True
        upcoming = retry_state.upcoming_sleep or 0.0
        return deadline is not None and time.time() + upcoming >= deadline

    def wait(retry_state: Any) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        return policy.delay_for(exc, retry_state.attempt_number)

    def before_sleep(retry_state: Any) -> None:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        sleep = retry_state.next_action.sleep if retry_state.next_action else 0.0
        logger.warning(
            "NanoGPT %s failed (attempt %d of %d): %s. Retrying in %.1f s.",
            action,
            retry_state.attempt_number,
            policy.max_retries + 1,
            exc,
            sleep,
        )
        if isinstance(exc, NanoGPTRateLimitError):
            from airflow_provider_nanogpt import metrics

            metrics.rate_limit_wait(conn_id, endpoint, sleep)

    return {
        "stop": stop,
        "wait": wait,
        "retry": retry_if_exception(lambda exc: should_retry(exc, policy)),
        "before_sleep": before_sleep,
        "reraise": True,
    }
