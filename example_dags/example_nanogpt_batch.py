"""A batch of videos with dynamic task mapping: one mapped task per prompt.

NanoGPT accepts 50 submissions a minute. A rate-limited task waits in the triggerer (no worker
slot) and submits when the window opens. To cap how many run at once across DAGs, create a pool
(``airflow pools set nanogpt 8 "NanoGPT submissions" --include-deferred``, so videos waiting in the
triggerer count too) and add ``pool="nanogpt"`` to ``partial``.

In the grid, each mapped task is labelled with its prompt (shortened): the operator's default
``map_index_template``. Pass your own to ``partial`` to label them differently.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag

from airflow_provider_nanogpt.operators.video import GenerateVideoOperator

PROMPTS = [
    "A hummingbird hovering over a red flower, slow motion",
    "Neon-lit alley in the rain, camera tracking forward",
    "Time-lapse of clouds over a mountain lake",
    "A paper plane gliding across a classroom",
    "Close-up of coffee being poured, morning light",
]


@dag(
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_tasks=8,
    tags=["nanogpt", "example"],
)
def example_nanogpt_batch() -> None:
    GenerateVideoOperator.partial(
        task_id="generate",
        model="kling-video-v2",
        duration="5",
        poll_interval=2,
        max_cost_usd=1.0,
        output_path="{{ var.value.get('nanogpt_output_dir', '/tmp/nanogpt-videos') }}"
        "/batch/{{ run_id | replace(':', '_') }}/{{ ti.map_index }}.mp4",
    ).expand(prompt=PROMPTS)


example_nanogpt_batch()
