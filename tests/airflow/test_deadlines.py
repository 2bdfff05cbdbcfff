"""Every wait ends by the task's deadline: execution_timeout and timeout, deferred or on the worker.

Airflow does not apply ``execution_timeout`` while a task is deferred (and restarts it at each
resume), and a worker-side wait could sleep a 429's Retry-After of many minutes. These run the
operator and the sensor through dag.test() against the simulator with a job that never finishes
(or a submit answered 429 with Retry-After: 600) and check the task fails, by name, within the
bound. A watchdog ends a run that overstays, so a broken bound fails the test instead of hanging.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from airflow_provider_nanogpt.simulator import NanoGPTSimulator
from tests.airflow.harness import DagOutcome, errors, run_dag, stored_triggers

pytestmark = [pytest.mark.usefixtures("airflow_db"), pytest.mark.timing]

NEVER_FINISHES = "a kite that never lands [sim:never]"
EXECUTION_TIMEOUT = 5.0  # as in tests/dags/nanogpt_test_dags.py; timeout there is 800 s
# For a whole dag.test() run: on a loaded machine, starting a task in process alone has taken
# 25 s. Still far below the 800 s timeout and the 600 s Retry-After.
MARGIN = 60.0
# From the submission to the task's end: the wait itself.
WAIT_MARGIN = 5.0


class Overstayed(Exception):
    """Raised in the main thread by the watchdog when a run outlives its bound."""


@contextmanager
def watchdog(seconds: float) -> Iterator[None]:
    """Interrupt the main thread (where dag.test() runs tasks and triggers) after ``seconds``.

    A real signal, so it wakes a sleeping ``time.sleep`` or event loop. SIGUSR1, not SIGALRM:
    Airflow times execution_timeout with SIGALRM.
    """

    def interrupt(signum: int, frame: Any) -> None:
        raise Overstayed(f"the run took longer than {seconds} s")

    previous = signal.signal(signal.SIGUSR1, interrupt)
    done = threading.Event()
    main = threading.main_thread().ident
    assert main is not None

    def watch() -> None:
        if not done.wait(seconds):
            signal.pthread_kill(main, signal.SIGUSR1)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()
        signal.signal(signal.SIGUSR1, previous)


def run_bounded(dag_id: str, conf: dict[str, Any], bound: float) -> tuple[DagOutcome, float]:
    started = time.monotonic()
    with watchdog(bound + MARGIN + 15):
        outcome = run_dag(dag_id, conf)
    return outcome, time.monotonic() - started


def seconds_from_submission_to_end(outcome: DagOutcome, task_id: str = "generate") -> float:
    """From the run_id XCom (pushed right after submitting) to the task instance's end."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        pushed = session.scalar(
            select(XComModel.timestamp).where(
                XComModel.run_id == outcome.run_id,
                XComModel.task_id == task_id,
                XComModel.key == "run_id",
            )
        )
        ended = session.scalar(
            select(TaskInstance.end_date).where(
                TaskInstance.run_id == outcome.run_id, TaskInstance.task_id == task_id
            )
        )
    return float((ended - pushed).total_seconds())


@pytest.fixture
def sim(nanogpt_connection: NanoGPTSimulator) -> NanoGPTSimulator:
    nanogpt_connection.configure(time_scale=0.05, queue_seconds=1, render_seconds=4)
    return nanogpt_connection


@pytest.mark.parametrize("dag_id", ["nanogpt_execution_timeout", "nanogpt_execution_timeout_sync"])
def test_execution_timeout_ends_the_operators_wait(
    sim: NanoGPTSimulator, dag_id: str, capfd: pytest.CaptureFixture[str]
) -> None:
    outcome, elapsed = run_bounded(dag_id, {"prompt": NEVER_FINISHES}, EXECUTION_TIMEOUT)
    assert outcome.task_states["generate"] == "failed"
    assert elapsed < EXECUTION_TIMEOUT + MARGIN
    run_id = outcome.xcoms[("generate", "run_id")]
    assert seconds_from_submission_to_end(outcome) < EXECUTION_TIMEOUT + WAIT_MARGIN
    (line,) = errors(capfd.readouterr().out, "NanoGPTJobTimeoutError")
    assert f"execution_timeout (5 s) reached while waiting for run {run_id}" in line
    assert "NOT resubmitted by a retry, which reattaches" in line
    assert sim.state()["submits_accepted"] == 1
    if dag_id == "nanogpt_execution_timeout":
        (trigger,) = [t for t in stored_triggers("VideoStatusTrigger") if t["run_id"] == run_id]
        # The trigger carries the try's absolute deadline, not a restarted one.
        assert trigger["execution_timeout"] == EXECUTION_TIMEOUT
        assert trigger["execution_deadline"] < trigger["end_time"]


def test_execution_timeout_ends_the_sensors_wait(
    sim: NanoGPTSimulator, capfd: pytest.CaptureFixture[str]
) -> None:
    # Two sensors in a row (deferred, then poke mode with poke_interval=2), 5 s each.
    outcome, elapsed = run_bounded(
        "nanogpt_sensor_execution_timeout", {"prompt": NEVER_FINISHES}, 2 * EXECUTION_TIMEOUT
    )
    assert outcome.task_states == {
        "submit": "success",
        "wait_deferred": "failed",
        "wait_poke": "failed",
    }
    assert elapsed < 2 * (EXECUTION_TIMEOUT + MARGIN)
    run_id = outcome.xcoms[("submit", "run_id")]
    lines = errors(capfd.readouterr().out, "NanoGPTJobTimeoutError")
    assert len(lines) == 2, lines
    for line in lines:
        assert f"execution_timeout (5 s) reached while waiting for run {run_id}" in line


@pytest.mark.parametrize(
    ("dag_id", "named_limit"),
    [
        ("nanogpt_rate_limit_deadline_sync", "timeout=3 s"),
        ("nanogpt_rate_limit_execution_timeout_sync", "execution_timeout (3 s)"),
    ],
)
def test_a_long_retry_after_is_not_slept_past_the_deadline_on_the_worker(
    sim: NanoGPTSimulator, dag_id: str, named_limit: str, capfd: pytest.CaptureFixture[str]
) -> None:
    sim.configure(time_scale=1.0)  # Retry-After in real seconds: 600
    sim.add_fault(endpoint="submit", kind="429", retry_after=600, count=10)
    outcome, elapsed = run_bounded(dag_id, {"prompt": "a slow sunrise"}, 3.0)
    assert outcome.task_states["generate"] == "failed"
    assert elapsed < 3.0 + MARGIN
    assert sim.state()["submits_accepted"] == 0
    # The last one: the error that failed the task (NanoGPT's 429 is chained before it).
    line = errors(capfd.readouterr().out, "NanoGPTRateLimitError")[-1]
    assert named_limit in line and "Nothing was submitted" in line
