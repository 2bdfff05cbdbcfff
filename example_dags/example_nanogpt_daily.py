"""A video every day: templated prompt, dated output, and assets for downstream DAGs.

``DAILY_VIDEO`` is a fixed Asset: each run adds an event to it. ``DAILY_VIDEOS`` is an AssetAlias:
each run adds an event for the asset at that day's rendered ``output_path``
(``file:///…/daily/2026-01-01.mp4``), which no fixed Asset could name when the DAG was written.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Asset, AssetAlias, dag

from airflow_provider_nanogpt.operators.video import GenerateVideoOperator

DAILY_VIDEO = Asset("nanogpt://videos/daily-teaser")
DAILY_VIDEOS = AssetAlias("nanogpt-daily-videos")
# The day a scheduled run covers; a run triggered without a logical date (REST API with
# ``logical_date: null``) has no ``ds``, so it takes the day it was triggered for.
DAY = "{{ (dag_run.logical_date or dag_run.run_after) | ds }}"


@dag(
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["nanogpt", "example"],
)
def example_nanogpt_daily() -> None:
    GenerateVideoOperator(
        task_id="daily_teaser",
        model="kling-video-v2",
        prompt="A short teaser for " + DAY + ": sunrise over the city, upbeat and bright",
        duration="5",
        poll_interval=2,
        min_balance_usd=5.0,
        max_cost_usd=0.5,
        output_path="{{ var.value.get('nanogpt_output_dir', '/tmp/nanogpt-videos') }}"
        "/daily/" + DAY + ".mp4",
        outlets=[DAILY_VIDEO, DAILY_VIDEOS],
    )


example_nanogpt_daily()
