"""Image to video, from a local file and from a public URL.

A local image is sent inline: at most 4,000,000 characters once encoded, a file of about 3 MB.
"""

from __future__ import annotations

from pathlib import Path

import pendulum
from airflow.sdk import dag

from airflow_provider_nanogpt.operators.video import GenerateVideoOperator

FIRST_FRAME = Path(__file__).parent / "assets" / "first_frame.png"
OUTPUT = "{{ var.value.get('nanogpt_output_dir', '/tmp/nanogpt-videos') }}/image_to_video"


@dag(
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["nanogpt", "example"],
)
def example_nanogpt_image_to_video() -> None:
    # image_path accepts a local path, file:// or any ObjectStoragePath URI (s3://, gs://, ...).
    GenerateVideoOperator(
        task_id="from_local_image",
        model="wan-video-image-to-video",
        prompt="The camera slowly pushes in while the colours shimmer",
        image_path=str(FIRST_FRAME),
        resolution="480p",
        extra_params={"num_frames": 81, "frames_per_second": 16},
        poll_interval=2,
        output_path=OUTPUT + "/local/{{ run_id | replace(':', '_') }}.mp4",
    )
    # Larger images must be hosted: pass a public https URL (replace this one with yours).
    GenerateVideoOperator(
        task_id="from_image_url",
        model="kling-v21-pro",
        prompt="Waves roll in under a pink sky",
        image_url="https://example.com/images/pink-sky-waves.jpg",
        duration="5",
        poll_interval=2,
        output_path=OUTPUT + "/url/{{ run_id | replace(':', '_') }}.mp4",
    )


example_nanogpt_image_to_video()
