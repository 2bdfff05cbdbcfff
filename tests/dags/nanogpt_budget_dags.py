"""Two DAGs spending from one connection's shared budget (tests/airflow/test_shared_budget.py)."""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from airflow_provider_nanogpt.operators.video import GenerateVideoOperator

START = pendulum.datetime(2026, 1, 1, tz="UTC")
# kling-video-v2 at 5 s costs $0.35 in the simulator's catalog.
VIDEO = {"model": "kling-video-v2", "duration": "5", "prompt": "a lighthouse at dusk"}

with DAG("nanogpt_shared_budget_a", schedule=None, start_date=START, catchup=False):
    GenerateVideoOperator(task_id="first", poll_interval=0.2, retries=0, **VIDEO)

with DAG("nanogpt_shared_budget_b", schedule=None, start_date=START, catchup=False):
    (
        GenerateVideoOperator(task_id="second", poll_interval=0.2, retries=0, **VIDEO)
        >> GenerateVideoOperator(task_id="third", poll_interval=0.2, retries=0, **VIDEO)
    )

# Every video NanoGPT fails (and refunds) while the task waits, deferred or on the worker.
for _dag_id, _deferrable in (
    ("nanogpt_shared_budget_refunded", True),
    ("nanogpt_shared_budget_refunded_sync", False),
):
    with DAG(_dag_id, schedule=None, start_date=START, catchup=False):
        GenerateVideoOperator(
            task_id="refunded",
            poll_interval=0.2,
            retries=0,
            deferrable=_deferrable,
            **{**VIDEO, "prompt": "a lighthouse at dusk [sim:fail]"},
        )

# on_budget_exceeded x deferrable, for a budget already full (tests/airflow/test_shared_budget.py
# moves the window's reset a few seconds or an hour away; the timeout of 30 s is the deadline).
for _mode in ("fail", "wait"):
    for _deferrable in (True, False):
        with DAG(
            f"nanogpt_budget_full_{_mode}_{'deferred' if _deferrable else 'sync'}",
            schedule=None,
            start_date=START,
            catchup=False,
        ):
            GenerateVideoOperator(
                task_id="over_budget",
                poll_interval=0.2,
                retries=0,
                timeout=30,
                deferrable=_deferrable,
                on_budget_exceeded=_mode,
                **VIDEO,
            )

# Over budget after a person approved it: waits for the reset, then submits without asking again.
with DAG("nanogpt_budget_full_wait_approved", schedule=None, start_date=START, catchup=False):
    GenerateVideoOperator(
        task_id="over_budget",
        poll_interval=0.2,
        retries=0,
        timeout=60,
        on_budget_exceeded="wait",
        approval_above_usd=0.10,
        **VIDEO,
    )

# A group budget named by a DAG tag, and the same one by the operator's argument (defined in
# [nanogpt] budgets or in the connection's budgets extra; tests/airflow/test_shared_budget.py).
# The name has a space: the metrics must still arrive (tests/airflow/test_metrics.py).
GROUP = "team video"
with DAG(
    "nanogpt_group_budget_by_tag",
    schedule=None,
    start_date=START,
    catchup=False,
    tags=[f"nanogpt-budget:{GROUP}"],
):
    GenerateVideoOperator(task_id="tagged", poll_interval=0.2, retries=0, **VIDEO)

with DAG("nanogpt_group_budget_by_argument", schedule=None, start_date=START, catchup=False):
    GenerateVideoOperator(task_id="named", poll_interval=0.2, retries=0, budgets=[GROUP], **VIDEO)

# NanoGPT's final cost (in the COMPLETED status) differs from the $0.35 pre-charge.
with DAG("nanogpt_shared_budget_final_cost", schedule=None, start_date=START, catchup=False):
    GenerateVideoOperator(
        task_id="final_cost",
        poll_interval=0.2,
        retries=0,
        **{**VIDEO, "prompt": "a lighthouse at dusk {{ dag_run.conf['final_cost'] }}"},
    )
