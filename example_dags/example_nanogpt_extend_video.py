"""Extend a video: make a short clip, continue it from the saved file, then from its URL.

Three paid generations when run for real: one text-to-video clip and two extensions.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag

from airflow_provider_nanogpt.operators.video import GenerateVideoOperator

# One folder per DAG run: run_id exists in every run, even one without a logical date (no ds).
OUTPUT = (
    "{{ var.value.get('nanogpt_output_dir', '/tmp/nanogpt-videos') }}"
    "/extend_video/{{ run_id | replace(':', '_') }}"
)
EXTEND_MODEL = "wan-wavespeed-25-extend"


@dag(
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["nanogpt", "example"],
)
def example_nanogpt_extend_video() -> None:
    # A 5-second 480p clip stays small enough to send back inline.
    first_clip = GenerateVideoOperator(
        task_id="first_clip",
        model="seedance-lite-video",
        prompt="A paper lantern lifts off from a night market, warm light, slow motion",
        duration="5",
        resolution="480p",
        poll_interval=2,
        output_path=OUTPUT + "/1_first_clip.mp4",
    )
    # video_path accepts a local path, file:// or any ObjectStoragePath URI (s3://, gs://, ...).
    # The file is sent inline as videoDataUrl: at most 4,000,000 characters once encoded (a
    # file of about 3 MB). A bigger file fails before anything is sent; use video_url for it.
    extend_from_file = GenerateVideoOperator(
        task_id="extend_from_file",
        model=EXTEND_MODEL,
        prompt="The lantern rises past the rooftops and into drifting clouds",
        video_path="{{ ti.xcom_pull(task_ids='first_clip')['output_path'] }}",
        duration="5",
        resolution="480p",
        poll_interval=2,
        output_path=OUTPUT + "/2_extended.mp4",
    )
    # video_url: NanoGPT downloads the video itself, so there is no inline size limit. Here it is
    # the URL NanoGPT returned for the previous video; any public http(s) URL works.
    extend_from_url = GenerateVideoOperator(
        task_id="extend_from_url",
        model=EXTEND_MODEL,
        prompt="Above the clouds the lantern joins a sky full of lanterns at dawn",
        video_url="{{ ti.xcom_pull(task_ids='extend_from_file')['video_url'] }}",
        duration="5",
        resolution="480p",
        poll_interval=2,
        output_path=OUTPUT + "/3_extended_again.mp4",
    )
    first_clip >> extend_from_file >> extend_from_url


example_nanogpt_extend_video()
