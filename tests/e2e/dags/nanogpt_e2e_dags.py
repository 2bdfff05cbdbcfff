"""DAGs run by the end-to-end suite under a real scheduler, triggerer and LocalExecutor.

Each test triggers its own DAG with ``conf`` = {"prompt", "output_path"}; the prompt carries the
simulator markers (render time) and a tag that identifies the test's job in ``/_sim/state``.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import DAG, AssetAlias, task

from airflow_provider_nanogpt.operators.video import GenerateVideoOperator

START = pendulum.datetime(2026, 1, 1, tz="UTC")
REQUEST: dict[str, Any] = {
    "model": "kling-video-v2",
    "prompt": "{{ dag_run.conf['prompt'] }}",
    "output_path": "{{ dag_run.conf['output_path'] }}",
    # Short floor: the simulator's ETA decides most sleeps anyway.
    "poll_interval": 1.0,
    "timeout": 180.0,
}


class CrashAfterSubmitOperator(GenerateVideoOperator):
    """Dies like a lost worker on try 1: after the paid submit, before XCom and the defer."""

    def _publish(self, context: Any, submission: Any) -> None:
        if context["ti"].try_number == 1:
            # No exception handling, no state report, no cleanup: the process just vanishes.
            os._exit(1)
        super()._publish(context, submission)


def _dag(dag_id: str, retries: int = 0) -> DAG:
    return DAG(
        dag_id,
        schedule=None,
        start_date=START,
        catchup=False,
        default_args={"retries": retries, "retry_delay": timedelta(seconds=0)},
        tags=["nanogpt-e2e"],
    )


with _dag("nanogpt_e2e_deferred") as deferred:
    GenerateVideoOperator(task_id="generate", **REQUEST)

with _dag("nanogpt_e2e_triggerer_restart") as triggerer_restart:
    GenerateVideoOperator(task_id="generate", **REQUEST)

with _dag("nanogpt_e2e_worker_crash", retries=1) as worker_crash:
    CrashAfterSubmitOperator(task_id="generate", **REQUEST)

# 100 mapped videos for the fault soak: each prompt carries the soak tag and a short render.
# A submit that fails after it left (a 503, a reset) is never re-sent in the same try, so the
# tasks need retries; the short settle time is safe here because the simulator lists every job
# at once. About one try in ten loses its submit so: with four retries, one task in 100,000 lost
# all five (seen once in CI, map index 85); with six, seven in a row is about one in 10^7.
SOAK_TAG = "e2e-soak"
with _dag("nanogpt_e2e_fault_soak", retries=6) as fault_soak:
    GenerateVideoOperator.partial(
        task_id="generate",
        model="kling-video-v2",
        poll_interval=1.0,
        timeout=300.0,
        settle_seconds=5.0,
    ).expand(prompt=[f"{SOAK_TAG} video {i} [sim:queue=0][sim:render=2]" for i in range(100)])

# A templated output path named through an AssetAlias, and a DAG the scheduler runs for it.
VIDEOS = AssetAlias("nanogpt-e2e-videos")
with _dag("nanogpt_e2e_alias_producer") as alias_producer:
    GenerateVideoOperator(task_id="generate", outlets=[VIDEOS], **REQUEST)

with DAG(
    "nanogpt_e2e_alias_consumer",
    schedule=[VIDEOS],
    start_date=START,
    catchup=False,
    tags=["nanogpt-e2e"],
) as alias_consumer:

    @task(inlets=[VIDEOS])
    def publish(*, triggering_asset_events: Any = None) -> dict[str, Any]:
        # Keyed by the asset and by the alias it came through: the same event under both.
        events = [event for _, found in triggering_asset_events.items() for event in found]
        return {"uris": sorted({e.asset.uri for e in events}), "extra": dict(events[-1].extra)}

    publish()
