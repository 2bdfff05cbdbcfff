"""A full shared budget waited for (``on_budget_exceeded="wait"``) under a real scheduler.

``nanogpt_e2e_budget_wait`` maps ``BUDGET_WAIT_VIDEOS`` 5-second kling-video-v2 videos ($0.35 each,
the simulator's charge and the provider's estimate) onto the connection ``nanogpt_budget_wait``,
whose daily budget ($1.00: two videos a window) and ledger the test creates through the REST API.

A day is too long to wait for in a test. When the deployment sets
``NANOGPT_E2E_BUDGET_WINDOW_SECONDS``, this file replaces the ledger's ``window_at`` in every
process that parses it (each task's process: no other DAG lives in this file) with windows of that
many seconds, aligned on the epoch so that every task process agrees on them: the "moved clock".
The triggerer needs no patch: a waiting task defers until the reset its worker read from the
ledger, then reserves again.
"""

from __future__ import annotations

import math
import os
from datetime import datetime, timedelta

import pendulum
from airflow.sdk import DAG

from airflow_provider_nanogpt.operators.video import GenerateVideoOperator

BUDGET_WAIT_DAG_ID = "nanogpt_e2e_budget_wait"
BUDGET_WAIT_CONN_ID = "nanogpt_budget_wait"
BUDGET_WAIT_TAG = "e2e-budget-wait"
BUDGET_WAIT_VIDEOS = 4
WINDOW_SECONDS = float(os.environ.get("NANOGPT_E2E_BUDGET_WINDOW_SECONDS") or 0)


def _install_short_windows(seconds: float) -> None:
    from zoneinfo import ZoneInfo

    from airflow_provider_nanogpt import ledger

    def short_window(period: ledger.Period, tz: ZoneInfo, now: float) -> ledger.Window:
        index = math.floor(now / seconds)
        # The ledger keys a day's window by its start date: one made-up date per short window.
        key_date = datetime(2000, 1, 1, tzinfo=tz) + timedelta(days=index % 1_000_000)
        return ledger.Window(period, key_date, datetime.fromtimestamp((index + 1) * seconds, tz))

    ledger.window_at = short_window


if WINDOW_SECONDS > 0:
    _install_short_windows(WINDOW_SECONDS)


with DAG(
    BUDGET_WAIT_DAG_ID,
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_tasks=BUDGET_WAIT_VIDEOS,
    # A trigger that fires within a second or two of its deferral can meet Airflow 3.3.2's
    # scheduler race (a budget wait ends just after a reset, which may be that close); the retry
    # reattaches to the paid run or reserves again.
    default_args={"retries": 3, "retry_delay": timedelta(seconds=0)},
    tags=["nanogpt-e2e", "budget"],
):
    GenerateVideoOperator.partial(
        task_id="generate",
        nanogpt_conn_id=BUDGET_WAIT_CONN_ID,
        model="kling-video-v2",
        duration="5",  # $0.35; left open, the estimate would be the longest duration's
        on_budget_exceeded="wait",
        poll_interval=1.0,
        timeout=600.0,
    ).expand(
        prompt=[
            f"a paper lantern {BUDGET_WAIT_TAG} video {i} [sim:queue=0][sim:render=5]"
            for i in range(BUDGET_WAIT_VIDEOS)
        ]
    )
