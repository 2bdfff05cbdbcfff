"""Waiting for one NanoGPT run: the rules for each status answer, and the polling loop.

``PollTracker`` decides what every answer means, so the operator's look right after submitting,
the sensor's pokes, the worker-side wait and the trigger in the triggerer all follow the same
rules: how many 404s a brand-new run may answer, how long a "completed" answer may lack its URL,
how many failed polls in a row end the wait. ``wait_for_video`` is the loop itself; the trigger's
``run()`` and the operator's worker-side wait both call it.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_nanogpt import metrics
from airflow_provider_nanogpt.api.coerce import snippet
from airflow_provider_nanogpt.api.status import VideoState, VideoStatus
from airflow_provider_nanogpt.events import ErrorReason, VideoEvent, reason_for
from airflow_provider_nanogpt.exceptions import (
    NanoGPTDailyCapError,
    NanoGPTError,
    NanoGPTNotFoundError,
    NanoGPTPermanentError,
)

if TYPE_CHECKING:
    from airflow_provider_nanogpt.hooks.nanogpt import NanoGPTHook

DEFAULT_MAX_CONSECUTIVE_ERRORS = 5
# NanoGPT creates jobs asynchronously: a brand-new run may answer 404 for a moment.
MAX_NOT_FOUND = 3
# A run may report COMPLETED a moment before its URL is published.
MAX_COMPLETED_WITHOUT_URL = 3
# Answers naming a state this provider has never seen (or none at all) in a row.
MAX_UNRECOGNISED_ANSWERS = 10
# Aim this far past an estimated finish: NanoGPT's estimates are whole seconds.
ETA_MARGIN_SECONDS = 0.5

Outcome = VideoStatus | BaseException


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


@dataclass
class PollTracker:
    """What the answers about one run add up to, one answer at a time."""

    run_id: str
    max_consecutive_errors: int = DEFAULT_MAX_CONSECUTIVE_ERRORS
    errors: int = 0
    not_found: int = 0
    without_url: int = 0
    unrecognised: int = 0

    def read(self, outcome: Outcome, log: Any) -> VideoEvent | None:
        """The event that ends the wait, or None to poll again."""
        run_id = self.run_id
        if isinstance(outcome, VideoStatus):
            return self._read_status(outcome, log)
        if isinstance(outcome, NanoGPTNotFoundError):
            self.not_found += 1
            if self.not_found > MAX_NOT_FOUND:
                return VideoEvent.error(
                    run_id,
                    f"{outcome}. NanoGPT answered 404 {self.not_found} times in a row: is "
                    f"{run_id!r} a run of this connection's API key?",
                    ErrorReason.NOT_FOUND,
                )
            log.info("Run %s is not visible yet (%s); polling again.", run_id, outcome)
            return None
        if isinstance(outcome, NanoGPTPermanentError):
            return VideoEvent.error(run_id, str(outcome), reason_for(outcome))
        if isinstance(outcome, NanoGPTDailyCapError):
            # The key's request cap counts status checks too. Not a failing check: the next one
            # waits for the reset (``delay``), and the wait's deadline still ends it.
            log.warning("%s; checking %s again after the reset.", outcome.reached(), run_id)
            return None
        if isinstance(outcome, NanoGPTError):
            self.errors += 1
            if self.errors > self.max_consecutive_errors:
                return VideoEvent.error(
                    run_id,
                    f"{self.errors} status checks in a row failed; last: {outcome}",
                    reason_for(outcome),
                )
            log.warning("Status check for %s failed (%s); will retry.", run_id, outcome)
            return None
        return VideoEvent.error(
            run_id, f"unexpected {type(outcome).__name__}: {outcome}", ErrorReason.TRANSIENT
        )

    def _read_status(self, status: VideoStatus, log: Any) -> VideoEvent | None:
        run_id = self.run_id
        self.errors = self.not_found = 0
        if status.is_deliverable:
            return VideoEvent.success(run_id)
        if status.state is VideoState.FAILED:
            return VideoEvent.failed(run_id, status.error, is_nsfw=status.is_nsfw)
        if status.state is VideoState.CANCELLED:
            return VideoEvent.cancelled(run_id, status.error)
        if not status.is_recognised:
            self.unrecognised += 1
            if self.unrecognised > MAX_UNRECOGNISED_ANSWERS:
                return VideoEvent.error(
                    run_id,
                    f"NanoGPT answered {self.unrecognised} status checks in a row with a state "
                    f"this provider does not know: {snippet(status.raw_status)}",
                    ErrorReason.UNREADABLE,
                )
            log.warning(
                "NanoGPT reports %s in an unknown state %s; polling again.",
                run_id,
                snippet(status.raw_status),
            )
            return None
        self.unrecognised = 0
        if status.state is VideoState.COMPLETED:
            self.without_url += 1
            if self.without_url > MAX_COMPLETED_WITHOUT_URL:
                return VideoEvent.error(
                    run_id,
                    completed_without_url(run_id, self.without_url),
                    ErrorReason.COMPLETED_WITHOUT_URL,
                )
            log.info(
                "NanoGPT reports %s completed but has no video URL yet; polling again.", run_id
            )
            return None
        log.info(
            "NanoGPT video %s is %s%s",
            run_id,
            status.state.value.lower(),
            f": {text}" if (text := status.describe_progress()) else "",
        )
        return None

    @staticmethod
    def delay(outcome: Outcome, poll_interval: float, max_poll_interval: float) -> float:
        """Seconds to wait before asking again after ``outcome``."""
        if isinstance(outcome, VideoStatus) and outcome.state is not VideoState.COMPLETED:
            return next_poll_delay(outcome, poll_interval, max_poll_interval)
        if isinstance(outcome, NanoGPTError) and outcome.retry_after:
            return max(poll_interval, outcome.retry_after)  # NanoGPT asked for a pause
        return poll_interval


RETRY_FETCHES = (
    "A retry of this task reattaches to this run to fetch the video; it never submits a new one."
)


def completed_without_url(run_id: str, answers: int) -> str:
    return (
        f"NanoGPT reports video {run_id} as completed, so it is charged, but gave no video URL "
        f"in {answers} status answers. {RETRY_FETCHES}"
    )


def nothing_to_deliver(run_id: str, status: VideoStatus) -> str:
    """The message when the status read to deliver a run has no video to fetch (the wait had
    seen it ready: NanoGPT's answers disagree)."""
    if status.state is VideoState.COMPLETED:
        return (
            f"NanoGPT reports video {run_id} as completed, so it is charged, but the status read "
            f"to deliver it gave no video URL. {RETRY_FETCHES}"
        )
    return (
        f"NanoGPT reported video {run_id} ready, but the status read to deliver it says "
        f"{status.state.value.lower()}, with no video URL. A retry of this task looks the run up "
        "again before submitting anything."
    )


def check_once(
    hook: NanoGPTHook, tracker: PollTracker, log: Any, *, deadline: float | None = None
) -> tuple[VideoEvent | None, VideoStatus | None]:
    """One status check on the worker, read by ``tracker``: (ending event or None, the status).

    ``deadline`` (epoch seconds) bounds the call and its retry waits.
    """
    outcome: Outcome
    try:
        outcome = hook.get_video_status(tracker.run_id, deadline=deadline)
    except NanoGPTError as exc:
        outcome = exc
    metrics.status_polled(hook.nanogpt_conn_id, outcome)
    status = outcome if isinstance(outcome, VideoStatus) else None
    return tracker.read(outcome, log), status


async def wait_for_video(
    run_id: str,
    *,
    nanogpt_conn_id: str,
    poll_interval: float,
    end_time: float | None,
    log: Any,
    max_poll_interval: float = 60.0,
    max_consecutive_errors: int = DEFAULT_MAX_CONSECUTIVE_ERRORS,
    started_at: float | None = None,
    execution_deadline: float | None = None,
    execution_timeout: float | None = None,
    model: str | None = None,
) -> VideoEvent:
    """Poll until the run ends or the wait's deadline passes; always one event, no raise.

    The deadline is the earlier of ``end_time`` (the operator's ``timeout``) and
    ``execution_deadline`` (the try's start plus the task's ``execution_timeout``, of
    ``execution_timeout`` seconds), both wall-clock epoch seconds. ``model`` tags the queue
    and render time metrics (``airflow_provider_nanogpt.metrics``). Owns its hook and releases
    the hook's HTTP client however it exits, cancellation included.
    """
    from airflow_provider_nanogpt.deadline import earliest
    from airflow_provider_nanogpt.hooks.nanogpt import NanoGPTHook

    # Few in-call retries: this loop already tolerates transient errors between polls.
    hook = NanoGPTHook(nanogpt_conn_id, max_retries=2)
    tracker = PollTracker(run_id, max_consecutive_errors)
    started = time.time() if started_at is None else started_at
    deadline = earliest(end_time, execution_deadline)
    # Which limit ends the wait decides the message (and, for a sensor, whether it is final).
    by_execution_timeout = execution_deadline is not None and deadline == execution_deadline
    stages = metrics.RunStages(nanogpt_conn_id, model, started)
    try:
        while True:
            now = time.time()
            if deadline is not None and now >= deadline:
                if by_execution_timeout:
                    return VideoEvent.execution_timed_out(
                        run_id, now - started, execution_timeout or deadline - started
                    )
                return VideoEvent.timeout(run_id, now - started)
            outcome: Outcome
            try:
                outcome = await hook.aget_video_status(run_id, deadline=deadline)
            except Exception as exc:  # every failure is an answer to read, never an escape
                outcome = exc
            metrics.status_polled(nanogpt_conn_id, outcome)
            stages.observe(outcome, time.time())
            event = tracker.read(outcome, log)
            if event is not None:
                return event
            delay = tracker.delay(outcome, poll_interval, max_poll_interval)
            if deadline is not None:
                delay = min(delay, max(0.0, deadline - time.time()))
            await asyncio.sleep(delay)
    finally:
        await hook.aclose()
