"""A deferred task's resume state travels in the trigger event only, and is never guessed.

The operator's methods are called the way Airflow's Task Runner calls them after a deferral
(``execute_after_wait(context, event=…)``, ``execute_complete(context, event=…)``), against the
simulator, with a stand-in task instance and task state store.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from airflow_provider_nanogpt.exceptions import NanoGPTResumeStateError
from airflow_provider_nanogpt.operators.video import GenerateVideoOperator
from airflow_provider_nanogpt.simulator import NanoGPTSimulator
from benchmarks._airflow import FakeStateStore, FakeTaskInstance, task_deferred

EXECUTION_TIMEOUT = timedelta(minutes=10)


def _task() -> GenerateVideoOperator:
    return GenerateVideoOperator(
        task_id="generate",
        model="kling-video-v2",
        prompt="a lighthouse at dusk",
        duration="5",
        execution_timeout=EXECUTION_TIMEOUT,
    )


def _context(start_date: datetime | None = None) -> dict[str, Any]:
    ti = FakeTaskInstance("generate")
    ti.start_date = start_date  # type: ignore[attr-defined]
    return {"ti": ti, "task_state_store": FakeStateStore()}


NOW = time.time()
# (event, stale kwargs of the deferral): none gives the resume a start to count timeout from.
BROKEN_RESUMES: dict[str, tuple[object, dict[str, Any]]] = {
    "no event": (None, {}),
    "event without carry": ({"moment": NOW}, {}),
    "carry not a mapping": ({"moment": NOW, "carry": "started"}, {}),
    "state only in the deferral kwargs": (
        None,
        {"started_at": NOW, "rate_limited_since": None, "rate_limit_deferrals": 0},
    ),
    "no started_at": ({"carry": {"rate_limit_deferrals": 1}}, {}),
    "started_at text": ({"carry": {"started_at": "soon"}}, {}),
    "started_at boolean": ({"carry": {"started_at": True}}, {}),
    # A NaN never compares past a deadline: a wait counted from it would never end.
    "started_at NaN": ({"carry": {"started_at": float("nan")}}, {}),
    "execution_deadline infinite": (
        {"carry": {"started_at": NOW, "execution_deadline": float("inf")}},
        {},
    ),
    "rate_limited_since text": ({"carry": {"started_at": NOW, "rate_limited_since": "x"}}, {}),
    "rate_limit_deferrals text": ({"carry": {"started_at": NOW, "rate_limit_deferrals": "2"}}, {}),
    "rate_limit_deferrals negative": (
        {"carry": {"started_at": NOW, "rate_limit_deferrals": -1}},
        {},
    ),
    "execution_deadline text": (
        {"carry": {"started_at": NOW, "execution_deadline": "in ten minutes"}},
        {},
    ),
}


@pytest.mark.parametrize(("event", "kwargs"), BROKEN_RESUMES.values(), ids=BROKEN_RESUMES)
def test_a_resume_without_readable_state_fails_typed_and_sends_nothing(
    nanogpt_connection: NanoGPTSimulator, event: object, kwargs: dict[str, Any]
) -> None:
    with pytest.raises(NanoGPTResumeStateError, match="sent nothing"):
        _task().execute_after_wait(_context(), event=event, **kwargs)
    assert nanogpt_connection.state()["requests"] == {}


Resume = tuple[dict[str, Any], dict[str, Any], float]
# Resumes that carry on, built from (now, the task instance's start): the carry, stale deferral
# kwargs, and the try's deadline the resume must keep. Built at test time, so a slow run of the
# suite never finds a deadline already passed.
GOOD_RESUMES: dict[str, Callable[[float, float], Resume]] = {
    # Provider 0.1.0 carried no deadline: execution_timeout counts from the task's start.
    "carry of provider 0.1.0": lambda now, start: (
        {"started_at": now, "rate_limited_since": None, "rate_limit_deferrals": 0},
        {},
        start + EXECUTION_TIMEOUT.total_seconds(),
    ),
    "carry with its deadline": lambda now, start: (
        {"started_at": now, "rate_limit_deferrals": 1, "execution_deadline": now + 100},
        {},
        now + 100,
    ),
    # Kwargs the event already carries: the event is read, the kwargs are ignored.
    "stale deferral kwargs": lambda now, start: (
        {"started_at": now, "execution_deadline": now + 100},
        {"started_at": now - 999, "execution_deadline": now + 5},
        now + 100,
    ),
}


@pytest.mark.parametrize("resume", GOOD_RESUMES.values(), ids=GOOD_RESUMES)
def test_a_resume_submits_once_and_hands_its_deadline_to_the_video_wait(
    nanogpt_connection: NanoGPTSimulator, resume: Callable[[float, float], Resume]
) -> None:
    now, started = time.time(), datetime.now(UTC) - timedelta(minutes=3)
    carry, kwargs, deadline = resume(now, started.timestamp())
    with pytest.raises(task_deferred()) as deferred:
        _task().execute_after_wait(
            _context(started), event={"moment": now, "carry": carry}, **kwargs
        )
    assert nanogpt_connection.state()["submits_accepted"] == 1
    trigger = deferred.value.trigger  # type: ignore[attr-defined]
    assert trigger.execution_deadline == pytest.approx(deadline)
    # One channel: the wait for the video hands its state back in its event, not in kwargs.
    assert not deferred.value.kwargs  # type: ignore[attr-defined]


def test_the_video_wait_carries_its_deadline_in_the_event_only() -> None:
    deadline = time.time() + 300
    context = _context()
    with pytest.raises(task_deferred()) as deferred:
        _task().wait_and_deliver(
            context,
            "vid_resume",
            poll_interval=1.0,
            timeout=60.0,
            just_submitted=True,
            execution_deadline=deadline,
        )
    assert not deferred.value.kwargs  # type: ignore[attr-defined]
    assert deferred.value.trigger.execution_deadline == deadline  # type: ignore[attr-defined]


@pytest.mark.parametrize("deadline", ["soon", True, [1], float("nan")])
def test_a_video_event_with_an_unreadable_deadline_fails_typed(deadline: object) -> None:
    event = {"status": "success", "run_id": "vid_resume", "execution_deadline": deadline}
    with pytest.raises(NanoGPTResumeStateError, match="execution_deadline"):
        _task().execute_complete(_context(), event=event)
