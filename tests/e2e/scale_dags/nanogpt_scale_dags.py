"""The scale-out batch: hundreds of mapped videos on CeleryExecutor workers and two triggerers.

The batch's size, render time and tag come from the deployment's environment (the test sets
them), so the DAG file itself stays fixed. Each prompt carries the tag and its map index, so the
simulator's jobs can be counted per task.

``ParkAfterSubmitOperator`` makes the worker-loss scenario deterministic: on try 1, on the one
Celery worker named by ``NANOGPT_SCALE_PARK_ON``, while the test has parking switched on (an
``enabled`` file in its park directory), a task that NanoGPT accepted stops right after the paid
submit (its budget reservation, if any, already settled), before its XComs and its deferral, and
waits there until the test kills that worker's whole process tree.

The shared-budget DAGs (``nanogpt_scale_budget_1..3``, 40 mapped videos each, the test's second
phase) spend from the connection ``nanogpt_budget``, whose daily budget the test sets; each video
is a 5-second kling-video-v2 at $0.35 (the simulator's charge and the provider's estimate), with a
short render so the paid ones finish quickly. They park in a directory of their own.

The wait variant (``nanogpt_scale_budget_wait_1..3``, the third phase) is the same with
``on_budget_exceeded="wait"``, on the connection ``nanogpt_budget_wait``. A day is too long to
wait for: the budget's time zone, ``WAIT_BUDGET_TIMEZONE``, is used by no other budget, and in
every process that parses this file the ledger's windows in that zone last
``NANOGPT_SCALE_BUDGET_WINDOW_SECONDS`` (aligned on the epoch, so all processes agree): the
"moved clock". Every other budget keeps its real day.
"""

from __future__ import annotations

import json
import math
import os
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import DAG

from airflow_provider_nanogpt.operators.video import GenerateVideoOperator

VIDEOS = int(os.environ.get("NANOGPT_SCALE_VIDEOS", "300"))
TAG = os.environ.get("NANOGPT_SCALE_TAG", "scale")
QUEUE_SIM_SECONDS = float(os.environ.get("NANOGPT_SCALE_QUEUE_SECONDS", "0"))
RENDER_SIM_SECONDS = float(os.environ.get("NANOGPT_SCALE_RENDER_SECONDS", "240"))
PARK_DIR = os.environ.get("NANOGPT_SCALE_PARK_DIR", "")
PARK_ON = os.environ.get("NANOGPT_SCALE_PARK_ON", "")
# A parked task that was never killed (the test failed first) carries on after this long.
PARK_MAX_SECONDS = 300.0
# Real seconds: how long NanoGPT's run list must show nothing before an uncertain send is re-sent.
# The simulator lists a job the moment it exists (NanoGPT does not say how long it takes; the
# provider's default is 60 s), and a retry starts a few seconds after the failed try anyway, so the
# retry looks once and re-sends at once instead of sleeping out a settle time in a worker slot.
SETTLE_SECONDS = float(os.environ.get("NANOGPT_SCALE_SETTLE_SECONDS", "3"))
BUDGET_DAGS = tuple(f"nanogpt_scale_budget_{n}" for n in (1, 2, 3))
BUDGET_VIDEOS_PER_DAG = 40
BUDGET_CONN_ID = "nanogpt_budget"
BUDGET_RENDER_SIM_SECONDS = 5.0
BUDGET_PARK_DIR = os.environ.get("NANOGPT_BUDGET_PARK_DIR", "")
WAIT_DAGS = tuple(f"nanogpt_scale_budget_wait_{n}" for n in (1, 2, 3))
WAIT_CONN_ID = "nanogpt_budget_wait"
WAIT_BUDGET_TIMEZONE = "Etc/GMT-14"
WAIT_WINDOW_SECONDS = float(os.environ.get("NANOGPT_SCALE_BUDGET_WINDOW_SECONDS") or 0)
WAIT_PARK_DIR = os.environ.get("NANOGPT_BUDGET_WAIT_PARK_DIR", "")


def _install_short_windows(seconds: float) -> None:
    """The ledger's windows in ``WAIT_BUDGET_TIMEZONE`` last ``seconds``; others are unchanged."""
    from zoneinfo import ZoneInfo

    from airflow_provider_nanogpt import ledger

    if getattr(ledger.window_at, "moved_clock", False):  # this process parsed the file before
        return
    real_window_at = ledger.window_at

    def window_at(period: ledger.Period, tz: ZoneInfo, now: float) -> ledger.Window:
        if tz.key != WAIT_BUDGET_TIMEZONE:
            return real_window_at(period, tz, now)
        index = math.floor(now / seconds)
        # The ledger keys a day's window by its start date: one made-up date per short window.
        key_date = datetime(2000, 1, 1, tzinfo=tz) + timedelta(days=index % 1_000_000)
        return ledger.Window(period, key_date, datetime.fromtimestamp((index + 1) * seconds, tz))

    window_at.moved_clock = True  # type: ignore[attr-defined]
    ledger.window_at = window_at


if WAIT_WINDOW_SECONDS > 0:
    _install_short_windows(WAIT_WINDOW_SECONDS)


def prompt(index: int) -> str:
    markers = f"[sim:queue={QUEUE_SIM_SECONDS:g}][sim:render={RENDER_SIM_SECONDS:g}]"
    return f"{TAG} video {index:04d} {markers}"


def budget_prompt(dag_id: str, index: int) -> str:
    markers = f"[sim:queue=0][sim:render={BUDGET_RENDER_SIM_SECONDS:g}]"
    return f"{TAG} {dag_id} video {index:04d} {markers}"


class ParkAfterSubmitOperator(GenerateVideoOperator):
    """Stops between the paid submit and the deferral on the doomed worker, until it is killed."""

    def __init__(self, *, park_dir: str = PARK_DIR, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.park_dir = park_dir

    def _publish(self, context: Any, submission: Any) -> None:
        ti = context["ti"]
        if (
            ti.try_number == 1
            and self.park_dir
            and os.environ.get("NANOGPT_E2E_COMPONENT") == PARK_ON
            and (Path(self.park_dir) / "enabled").exists()
        ):
            marker = Path(self.park_dir) / f"{ti.dag_id}.{ti.map_index}.parked"
            marker.write_text(
                json.dumps(
                    {
                        "dag_id": ti.dag_id,
                        "map_index": ti.map_index,
                        "run_id": submission.run_id,
                        "worker": PARK_ON,
                    }
                )
            )
            deadline = time.monotonic() + PARK_MAX_SECONDS
            while time.monotonic() < deadline:
                time.sleep(0.5)
        super()._publish(context, submission)


with DAG(
    "nanogpt_scale_batch",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    # Running and queued tries only (deferred ones do not count): the Celery slots are the cap.
    max_active_tasks=VIDEOS,
    default_args={"retries": 4, "retry_delay": timedelta(seconds=0)},
    tags=["nanogpt-e2e", "scale"],
) as batch:
    ParkAfterSubmitOperator.partial(
        task_id="generate",
        model="kling-video-v2",
        poll_interval=5.0,
        timeout=1800.0,
        settle_seconds=SETTLE_SECONDS,
    ).expand(prompt=[prompt(i) for i in range(VIDEOS)])


for budget_dag_id, budget_conn_id, park_dir, mode in (
    *((dag_id, BUDGET_CONN_ID, BUDGET_PARK_DIR, "fail") for dag_id in BUDGET_DAGS),
    *((dag_id, WAIT_CONN_ID, WAIT_PARK_DIR, "wait") for dag_id in WAIT_DAGS),
):
    with DAG(
        budget_dag_id,
        schedule=None,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        max_active_tasks=BUDGET_VIDEOS_PER_DAG,
        # Enough for 5 % faults on every call, and for Airflow 3.3.2's fast-trigger race (a
        # wait that ends just after it deferred); a budget refusal is never retried.
        default_args={"retries": 4, "retry_delay": timedelta(seconds=0)},
        tags=["nanogpt-e2e", "scale", "budget"],
    ):
        ParkAfterSubmitOperator.partial(
            task_id="generate",
            nanogpt_conn_id=budget_conn_id,
            model="kling-video-v2",
            duration="5",  # priced per duration step: "5" is $0.35, left open the estimate is $0.70
            poll_interval=2.0,
            timeout=900.0,
            settle_seconds=SETTLE_SECONDS,
            park_dir=park_dir,
            on_budget_exceeded=mode,
        ).expand(prompt=[budget_prompt(budget_dag_id, i) for i in range(BUDGET_VIDEOS_PER_DAG)])
