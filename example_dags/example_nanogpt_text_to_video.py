"""Text to video: one prompt in, one saved video out.

Runs against the local simulator in `make demo`; point the `nanogpt_default` connection at
https://nano-gpt.com with your API key to generate for real.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag

from airflow_provider_nanogpt.operators.video import GenerateVideoOperator


@dag(
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["nanogpt", "example"],
)
def example_nanogpt_text_to_video() -> None:
    GenerateVideoOperator(
        task_id="generate_video",
        model="kling-video-v2",
        prompt="A paper boat drifting down a rain-soaked street at dusk, cinematic",
        duration="5",
        aspect_ratio="16:9",
        poll_interval=2,
        timeout=600,
        output_path="{{ var.value.get('nanogpt_output_dir', '/tmp/nanogpt-videos') }}"
        "/text_to_video/{{ dag_run.run_after | ds }}/{{ run_id | replace(':', '_') }}.mp4",
    )


example_nanogpt_text_to_video()
