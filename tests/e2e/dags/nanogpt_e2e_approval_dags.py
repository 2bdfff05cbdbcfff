"""Approval above a threshold under a real scheduler: a person answers in the browser.

Run by the UI browser tests (tests/e2e/test_ui_browser.py on Airflow 3.3,
tests/ui/test_approval_browser.py on 3.1), each DAG run with ``conf`` = {"prompt"}. A 10 s
kling-video-v2 video is estimated at $0.70, above the $0.50 threshold. The connection
``nanogpt_approval`` has a shared daily budget, so the request shows what it has left.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from airflow_provider_nanogpt.operators.video import GenerateVideoOperator

START = pendulum.datetime(2026, 1, 1, tz="UTC")
APPROVAL_CONN_ID = "nanogpt_approval"
LEDGER_CONN_ID = "budget_ledger"
# The connection's extras (the deployment gives every component the connection).
APPROVAL_CONN_EXTRAS = {"budget_usd_per_day": "5.00", "budget_ledger_conn_id": LEDGER_CONN_ID}
# Long enough for a browser on a loaded machine to find and answer the request.
ANSWERED_TIMEOUT_SECONDS = 600.0
# The run nobody answers fails by this: short, as the tests wait it out (it may time out before
# the browser lists it: the tests accept either state then).
UNANSWERED_TIMEOUT_SECONDS = 15.0
REQUEST = {
    "nanogpt_conn_id": APPROVAL_CONN_ID,
    "model": "kling-video-v2",
    "prompt": "{{ dag_run.conf['prompt'] }}",
    "duration": "10",
    "approval_above_usd": 0.5,
    "poll_interval": 1.0,
    "timeout": ANSWERED_TIMEOUT_SECONDS + 300,
}


def _dag(dag_id: str, approval_timeout: float) -> DAG:
    with DAG(
        dag_id,
        schedule=None,
        start_date=START,
        catchup=False,
        default_args={"retries": 0},
        tags=["nanogpt-e2e"],
    ) as dag:
        GenerateVideoOperator(task_id="generate", approval_timeout=approval_timeout, **REQUEST)
    return dag


approval = _dag("nanogpt_e2e_approval", ANSWERED_TIMEOUT_SECONDS)
approval_unanswered = _dag("nanogpt_e2e_approval_unanswered", UNANSWERED_TIMEOUT_SECONDS)
