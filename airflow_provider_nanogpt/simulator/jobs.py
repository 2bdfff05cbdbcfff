"""Video jobs and their lifecycle on the simulated clock.

A job is queued for ``queue_seconds``, then in progress for ``render_seconds`` (progress
0-100), then terminal: completed, failed (``fail``/``nsfw`` markers), cancelled (``cancel``)
or never (``never``: stays in progress forever). Phases are derived from the clock on demand;
:meth:`Job.finish_if_due` records the terminal transition (and the refund) exactly once.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from .markers import Markers

QUEUED = "queued"
PROCESSING = "processing"
COMPLETED = "completed"
FAILED = "failed"
CANCELLED = "cancelled"
TERMINAL = frozenset({COMPLETED, FAILED, CANCELLED})

PAYLOAD_STRING_LIMIT = 200

FAIL_ERROR = "Video generation failed: the upstream provider returned an error (simulated)"
FAIL_FRIENDLY = "Video generation failed. Your balance has been refunded."
NSFW_ERROR = "Content policy violation"
NSFW_FRIENDLY = (
    "Your request was flagged by the content safety filter. "
    "Please modify your prompt and try again. You have not been charged."
)


def new_run_id() -> str:
    """A fresh ``vid_`` job id."""
    return "vid_" + secrets.token_hex(12)


def truncate_strings(value: Any, limit: int = PAYLOAD_STRING_LIMIT) -> Any:
    """Copy ``value`` with every string longer than ``limit`` characters shortened."""
    if isinstance(value, str):
        if len(value) > limit:
            return value[:limit] + f"...[truncated {len(value) - limit} chars]"
        return value
    if isinstance(value, dict):
        return {str(key): truncate_strings(item, limit) for key, item in value.items()}
    if isinstance(value, list):
        return [truncate_strings(item, limit) for item in value]
    return value


@dataclass(frozen=True)
class Phase:
    """Where a job stands at one simulated instant."""

    state: str
    progress: int | None
    remaining: float | None  # simulated seconds until the job should finish, if known


@dataclass
class Job:
    """One generation request accepted by the simulator."""

    run_id: str
    model: str
    payload: dict[str, Any]
    conversation_uuid: str | None
    owner: str  # SHA-256 of the API key: never the key itself
    api_key_header: str
    cost: Decimal
    created_sim: float
    created_wall: float
    queue_seconds: float
    render_seconds: float
    markers: Markers
    polls: int = 0
    shaped_polls: int = 0
    url_less_polls: int = 0  # COMPLETED answers sent without a URL (``no_url_polls`` marker)
    finished_sim: float | None = None
    refunded: bool = False

    @property
    def outcome(self) -> str:
        """Terminal state this job is heading for (``never`` wins, then nsfw, fail, cancel)."""
        if self.markers.never:
            return PROCESSING
        if self.markers.nsfw or self.markers.fail:
            return FAILED
        if self.markers.cancel:
            return CANCELLED
        return COMPLETED

    @property
    def end_sim(self) -> float:
        """Simulated instant the job leaves the in-progress phase."""
        return self.created_sim + self.queue_seconds + self.render_seconds

    @property
    def has_video(self) -> bool:
        """True when the job completed with a downloadable video."""
        return (
            self.finished_sim is not None and self.outcome == COMPLETED and not self.markers.no_url
        )

    def phase(self, now: float) -> Phase:
        """The job's phase at simulated time ``now``."""
        elapsed = now - self.created_sim
        total = self.queue_seconds + self.render_seconds
        if self.finished_sim is not None or (elapsed >= total and self.outcome != PROCESSING):
            progress = 100 if self.outcome == COMPLETED else None
            return Phase(self.outcome, progress, 0.0)
        if elapsed < self.queue_seconds:
            return Phase(QUEUED, 0, total - elapsed)
        if self.render_seconds <= 0:
            progress = 99
        else:
            progress = min(
                99, math.floor(100 * (elapsed - self.queue_seconds) / self.render_seconds)
            )
        remaining = total - elapsed if elapsed < total else None
        return Phase(PROCESSING, max(progress, 0), remaining)

    def finish_if_due(self, now: float) -> bool:
        """Record the terminal transition once it is due.

        Returns True exactly once, when the job has just ended in a refundable state
        (failed or cancelled); the caller credits the cost back.
        """
        if self.finished_sim is not None or self.outcome == PROCESSING or now < self.end_sim:
            return False
        self.finished_sim = self.end_sim
        if self.outcome in (FAILED, CANCELLED) and not self.refunded:
            self.refunded = True
            return True
        return False

    def failure(self) -> tuple[str, str, bool]:
        """``(error, userFriendlyError, isNSFWError)`` of a failed job."""
        if self.markers.nsfw:
            return NSFW_ERROR, NSFW_FRIENDLY, True
        return FAIL_ERROR, FAIL_FRIENDLY, False
