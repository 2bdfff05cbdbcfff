"""The try's deadline from ``execution_timeout``: the one place that computes and names it.

Airflow applies ``execution_timeout`` only while a task runs on a worker, and restarts it at each
resume from a deferral: time spent deferred does not count. So the provider bounds every wait
itself (in the triggerer and on the worker) by the try's absolute deadline, its start plus
``execution_timeout``, together with the operator's own ``timeout``: whichever comes first.
The deadline is an epoch float so it travels in trigger kwargs and events, and it is computed
once per try and carried across deferrals, never restarted at a resume.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

# A deadline counted from ``execute``'s start ends this much early: Airflow arms its own alarm a
# moment before ``execute`` begins, and on a worker that alarm would otherwise end the try first,
# with a bare "Timeout, PID …" instead of an error that names the run and the limit.
ALARM_LEAD_SECONDS = 1.0

RETRY_REATTACHES = (
    "the job may still be rendering — it is NOT resubmitted by a retry, which reattaches"
)


def execution_timeout_seconds(task: Any) -> float | None:
    """The task's ``execution_timeout`` in seconds, or None when it has none."""
    limit = getattr(task, "execution_timeout", None)
    return limit.total_seconds() if isinstance(limit, timedelta) else None


def execution_deadline(
    task: Any,
    context: Mapping[str, Any],
    carried: object = None,
    *,
    started_at: float | None = None,
) -> float | None:
    """Epoch seconds when this try's ``execution_timeout`` runs out, or None without one.

    ``carried`` is the deadline an earlier part of the same try computed and handed through a
    deferral: it wins, so a resume never restarts the clock. Otherwise the clock starts at
    ``started_at``, the moment ``execute`` began (when Airflow starts its own
    ``execution_timeout`` alarm; ``ALARM_LEAD_SECONDS`` early), or else at the task instance's
    ``start_date`` (on Airflow 3.3 the try's first start, also on a resume; before 3.3 the
    resume), or now.
    """
    if isinstance(carried, int | float) and not isinstance(carried, bool):
        return float(carried)
    seconds = execution_timeout_seconds(task)
    if seconds is None:
        return None
    if started_at is not None:
        return started_at + max(seconds - ALARM_LEAD_SECONDS, seconds / 2)
    start = getattr(context.get("ti"), "start_date", None)
    return (start.timestamp() if isinstance(start, datetime) else time.time()) + seconds


def earliest(*moments: float | None) -> float | None:
    """The first of the given deadlines, ignoring the ones not set."""
    known = [moment for moment in moments if moment is not None]
    return min(known) if known else None


def waiting_for_run_ended(seconds: float | None, run_id: str) -> str:
    """The message when ``execution_timeout`` ended the wait for a submitted run."""
    return (
        f"execution_timeout ({_seconds(seconds)}) reached while waiting for run {run_id}; "
        f"{RETRY_REATTACHES}"
    )


def before_submitting_ended(seconds: float | None, waiting_for: str) -> str:
    """The message when ``execution_timeout`` comes before a wait preceding the submission."""
    return (
        f"execution_timeout ({_seconds(seconds)}) would be reached while {waiting_for}; "
        "this try sent nothing"
    )


def _seconds(seconds: float | None) -> str:
    return "unknown" if seconds is None else f"{seconds:g} s"
