"""VideoStatusTrigger: wait for a NanoGPT video in the triggerer, without holding a worker slot."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

if TYPE_CHECKING:
    from airflow_provider_nanogpt.api.status import VideoStatus
    from airflow_provider_nanogpt.hooks.nanogpt import NanoGPTHook

DEFAULT_MAX_CONSECUTIVE_ERRORS = 5
# A brand-new job may not be visible to the status endpoint yet; this many 404s are tolerated.
DEFAULT_MAX_NOT_FOUND = 3
# Aim this far past an estimated finish: NanoGPT's estimates are whole seconds.
ETA_MARGIN_SECONDS = 0.5


def next_poll_delay(
    status: VideoStatus | None, poll_interval: float, max_poll_interval: float
) -> float:
    """Seconds until the next status call.

    Never sooner than ``poll_interval``. When NanoGPT reports ``estimatedTimeRemaining``, sleep
    until just after the estimated finish (up to ``max_poll_interval``): a long video costs a few
    calls instead of one every few seconds, and an accurate estimate is detected within about a
    second instead of half a poll interval on average. Arriving a little late costs less than
    arriving a little early, which would cost a whole extra interval.
    """
    if status is None or status.eta_seconds is None:
        return poll_interval * random.uniform(0.9, 1.0)
    target = status.eta_seconds * random.uniform(1.0, 1.05) + ETA_MARGIN_SECONDS
    delay = min(max(target, poll_interval), max(max_poll_interval, poll_interval))
    if delay != target:
        # Clamped to the floor or ceiling: spread the triggers so they do not poll in lockstep.
        delay *= random.uniform(0.9, 1.0)
    return delay


class VideoStatusTrigger(BaseTrigger):
    """Poll NanoGPT's status endpoint until the run is terminal or ``end_time`` passes.

    Kwargs are primitives only (never the key): a triggerer restart re-creates the trigger from
    them, and it only ever polls, so a restart can never submit or pay again.

    :param run_id: NanoGPT run id (``vid_…``).
    :param nanogpt_conn_id: Airflow connection id.
    :param poll_interval: Normal seconds between polls (the floor).
    :param end_time: Wall-clock deadline (epoch seconds); a ``timeout`` event fires then.
    :param max_poll_interval: Ceiling for estimate-guided sleeps.
    :param max_consecutive_errors: Transient failures in a row before an ``error`` event.
    """

    def __init__(
        self,
        run_id: str,
        nanogpt_conn_id: str = "nanogpt_default",
        poll_interval: float = 5.0,
        end_time: float | None = None,
        max_poll_interval: float = 60.0,
        max_consecutive_errors: int = DEFAULT_MAX_CONSECUTIVE_ERRORS,
        started_at: float | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.run_id = run_id
        self.nanogpt_conn_id = nanogpt_conn_id
        self.poll_interval = float(poll_interval)
        self.end_time = end_time
        self.max_poll_interval = float(max_poll_interval)
        self.max_consecutive_errors = int(max_consecutive_errors)
        self.started_at = started_at if started_at is not None else time.time()
        self._hook: NanoGPTHook | None = None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "run_id": self.run_id,
                "nanogpt_conn_id": self.nanogpt_conn_id,
                "poll_interval": self.poll_interval,
                "end_time": self.end_time,
                "max_poll_interval": self.max_poll_interval,
                "max_consecutive_errors": self.max_consecutive_errors,
                "started_at": self.started_at,
            },
        )

    def _make_hook(self) -> NanoGPTHook:
        from airflow_provider_nanogpt.hooks.nanogpt import NanoGPTHook

        # Few in-call retries: this loop already tolerates transient errors between polls.
        return NanoGPTHook(self.nanogpt_conn_id, max_retries=2)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        try:
            event = await self._wait()
        finally:
            await self.cleanup()
        yield TriggerEvent(event)  # type: ignore[no-untyped-call]

    async def _wait(self) -> dict[str, Any]:
        """Poll until a terminal state; always returns exactly one event and never raises."""
        from airflow_provider_nanogpt.completion import event_for, timeout_event
        from airflow_provider_nanogpt.exceptions import (
            NanoGPTError,
            NanoGPTNotFoundError,
            NanoGPTPermanentError,
            NanoGPTRateLimitError,
        )

        self._hook = hook = self._make_hook()
        errors = not_found = 0
        while True:
            if self.end_time is not None and time.time() >= self.end_time:
                return timeout_event(self.run_id, time.time() - self.started_at)
            status = None
            delay = self.poll_interval
            try:
                status = await hook.aget_video_status(self.run_id)
            except NanoGPTNotFoundError as exc:
                not_found += 1
                if not_found > DEFAULT_MAX_NOT_FOUND:
                    return self._error(f"{exc}. Is {self.run_id!r} a run of this API key?")
                self.log.info("Run %s not visible yet (%s); polling again.", self.run_id, exc)
            except NanoGPTPermanentError as exc:
                return self._error(str(exc), retryable=False)
            except NanoGPTError as exc:
                errors += 1
                if errors > self.max_consecutive_errors:
                    return self._error(f"{errors} status checks in a row failed; last: {exc}")
                if isinstance(exc, NanoGPTRateLimitError) and exc.retry_after:
                    delay = max(delay, exc.retry_after)
                self.log.warning("Status check for %s failed (%s); will retry.", self.run_id, exc)
            except Exception as exc:  # never let an unexpected error escape run()
                return self._error(f"unexpected {type(exc).__name__}: {exc}")
            else:
                errors = not_found = 0
                if status.is_terminal:
                    return event_for(status)
                self.log.info(
                    "NanoGPT video %s is %s%s",
                    self.run_id,
                    status.state.value.lower(),
                    f": {text}" if (text := status.describe_progress()) else "",
                )
                delay = next_poll_delay(status, self.poll_interval, self.max_poll_interval)
            if self.end_time is not None:
                delay = min(delay, max(0.0, self.end_time - time.time()))
            await asyncio.sleep(delay)

    def _error(self, message: str, *, retryable: bool = True) -> dict[str, Any]:
        return {
            "status": "error",
            "run_id": self.run_id,
            "message": message,
            "retryable": retryable,
        }

    async def cleanup(self) -> None:
        # Runs on every exit, including triggerer restarts: release the HTTP client, never cancel.
        if self._hook is not None:
            await self._hook.aclose()
            self._hook = None

    async def on_kill(self) -> None:
        self.log.warning(
            "Stopped waiting for NanoGPT video %s. NanoGPT has no cancel endpoint: the job keeps "
            "running and may be charged.",
            self.run_id,
        )
