"""Runs whenever the daily DAG has produced a new video (data-aware scheduling on its Asset)."""

from __future__ import annotations

import pendulum
from airflow.sdk import Asset, dag, task

# The same URI as the daily DAG's outlet: Airflow matches assets by URI.
DAILY_VIDEO = Asset("nanogpt://videos/daily-teaser")


@dag(
    schedule=[DAILY_VIDEO],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["nanogpt", "example"],
)
def example_nanogpt_asset_consumer() -> None:
    @task(inlets=[DAILY_VIDEO])
    def publish(*, inlet_events=None) -> str | None:  # type: ignore[no-untyped-def]
        events = inlet_events[DAILY_VIDEO] if inlet_events is not None else []
        if not events:
            return None
        latest = events[-1].extra
        print(f"New video {latest.get('run_id')} at {latest.get('output_path')}")
        return latest.get("output_path")

    publish()


example_nanogpt_asset_consumer()
