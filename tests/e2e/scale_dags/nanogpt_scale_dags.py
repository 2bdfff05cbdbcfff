"""The scale-out batch: hundreds of mapped videos on CeleryExecutor workers and two triggerers.

The batch's size, render time and tag come from the deployment's environment (the test sets
them), so the DAG file itself stays fixed. Each prompt carries the tag and its map index, so the
simulator's jobs can be counted per task.

``ParkAfterSubmitOperator`` makes the worker-loss scenario deterministic: on try 1, on the one
Celery worker named by ``NANOGPT_SCALE_PARK_ON``, while the test has parking switched on, a task
that NanoGPT accepted stops right after the paid submit, before its XComs and its deferral, and
waits there until the test kills that worker's whole process tree.
"""

from __future__ import annotations

import json
import os
import time
from datetime import timedelta
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


def prompt(index: int) -> str:
    markers = f"[sim:queue={QUEUE_SIM_SECONDS:g}][sim:render={RENDER_SIM_SECONDS:g}]"
    return f"{TAG} video {index:04d} {markers}"


class ParkAfterSubmitOperator(GenerateVideoOperator):
    """Stops between the paid submit and the deferral on the doomed worker, until it is killed."""

    def _publish(self, context: Any, submission: Any) -> None:
        ti = context["ti"]
        if (
            ti.try_number == 1
            and PARK_DIR
            and os.environ.get("NANOGPT_E2E_COMPONENT") == PARK_ON
            and (Path(PARK_DIR) / "enabled").exists()
        ):
            marker = Path(PARK_DIR) / f"{ti.map_index}.parked"
            marker.write_text(json.dumps({"run_id": submission.run_id, "worker": PARK_ON}))
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
