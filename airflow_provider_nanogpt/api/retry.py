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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from airflow_provider_nanogpt.exceptions import (
    NanoGPTConfigurationError,
    NanoGPTConnectionError,
    NanoGPTError,
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
        delay = self.backoff(attempt_number)
        if isinstance(exc, NanoGPTRateLimitError) and exc.retry_after is not None:
            delay = max(delay, exc.retry_after)
        return delay

    def rate_limit_is_waitable(self, exc: NanoGPTRateLimitError) -> bool:
        if exc.retry_after is None:
            return self.retry_rate_limit_without_retry_after
        return exc.retry_after <= self.max_retry_after


def is_retryable_read(exc: BaseException, policy: RetryPolicy) -> bool:
    if isinstance(exc, NanoGPTRateLimitError):
        return policy.rate_limit_is_waitable(exc)
    return isinstance(exc, NanoGPTServerError | NanoGPTConnectionError | NanoGPTResponseError)


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
    """In-call re-sends of a submission: only a waitable 429 or a connection never made."""
    if isinstance(exc, NanoGPTRateLimitError):
        return policy.rate_limit_is_waitable(exc)
    return isinstance(exc, NanoGPTConnectionError) and not exc.request_sent


def tenacity_kwargs(
    policy: RetryPolicy,
    should_retry: Callable[[BaseException, RetryPolicy], bool],
    logger: Any,
    action: str,
) -> dict[str, Any]:
    """Keyword arguments for ``tenacity.Retrying`` and ``tenacity.AsyncRetrying`` alike."""
    from tenacity import retry_if_exception, stop_after_attempt

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

    return {
        "stop": stop_after_attempt(policy.max_retries + 1),
        "wait": wait,
        "retry": retry_if_exception(lambda exc: should_retry(exc, policy)),
        "before_sleep": before_sleep,
        "reraise": True,
    }
