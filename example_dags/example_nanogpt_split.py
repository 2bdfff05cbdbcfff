"""Submit in one task, wait in another: useful when something runs between the two."""

from __future__ import annotations

import pendulum
from airflow.sdk import dag

from airflow_provider_nanogpt.operators.video import GenerateVideoOperator
from airflow_provider_nanogpt.sensors.video import VideoStatusSensor


@dag(
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["nanogpt", "example"],
)
def example_nanogpt_split() -> None:
    submit = GenerateVideoOperator(
        task_id="submit",
        model="kling-video-v2",
        prompt="A fox trotting through fresh snow, golden hour",
        duration="5",
        wait_for_completion=False,
    )
    wait = VideoStatusSensor(
        task_id="wait_for_video",
        run_id="{{ ti.xcom_pull(task_ids='submit', key='run_id') }}",
        poke_interval=2,
        timeout=900,
        output_path="{{ var.value.get('nanogpt_output_dir', '/tmp/nanogpt-videos') }}"
        "/split/{{ run_id | replace(':', '_') }}.mp4",
    )
    submit >> wait


example_nanogpt_split()
