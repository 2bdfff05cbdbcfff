"""Runs whenever the daily DAG has saved a new video (data-aware scheduling on its AssetAlias).

The daily DAG's output path is templated, so each day's video is a new asset; scheduling on the
alias runs this DAG for every one of them.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import AssetAlias, dag, task

# The same name as the daily DAG's alias outlet.
DAILY_VIDEOS = AssetAlias("nanogpt-daily-videos")


@dag(
    schedule=[DAILY_VIDEOS],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["nanogpt", "example"],
)
def example_nanogpt_asset_consumer() -> None:
    @task(inlets=[DAILY_VIDEOS])
    def publish(*, inlet_events=None) -> str | None:  # type: ignore[no-untyped-def]
        events = inlet_events[DAILY_VIDEOS] if inlet_events is not None else []
        if not events:
            return None
        latest = events[-1]
        # The asset is the saved file; the extra says which NanoGPT run made it and its cost.
        extra = latest.extra
        print(f"New video {latest.asset.uri}: run {extra.get('run_id')}, cost {extra.get('cost')}")
        return extra.get("output_path")

    publish()


example_nanogpt_asset_consumer()
