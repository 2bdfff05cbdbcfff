"""Where the "Saved video" button points for each kind of output path."""

from __future__ import annotations

import pytest

from airflow_provider_nanogpt.links.video import browsable_url


@pytest.mark.parametrize(
    ("path", "url"),
    [
        (
            "s3://media-team/videos/2026/sea dawn.mp4",
            "https://s3.console.aws.amazon.com/s3/object/media-team"
            "?prefix=videos%2F2026%2Fsea%20dawn.mp4",
        ),
        (
            "gs://media-team/videos/sea.mp4",
            "https://console.cloud.google.com/storage/browser/_details/media-team/videos/sea.mp4",
        ),
        ("/data/videos/sea.mp4", ""),
        ("file:///data/videos/sea.mp4", ""),
        ("memory://bucket/sea.mp4", ""),
        ("s3://bucket-only", ""),
    ],
)
def test_saved_copy_link(path: str, url: str) -> None:
    assert browsable_url(path) == url
