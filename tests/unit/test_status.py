"""Status normalisation against every shape and spelling the fact sheet documents."""

from __future__ import annotations

import pytest

from airflow_provider_nanogpt.api.status import (
    VideoState,
    normalize_status,
    parse_state,
)

NESTED_COMPLETED = {
    "requestId": "vid_1",
    "model": "kling-video-v2",
    "data": {
        "status": "COMPLETED",
        "requestId": "vid_1",
        "output": {"video": {"url": "https://storage.example.com/v.mp4"}},
        "cost": 0.35,
    },
}
FLAT_PROCESSING = {
    "requestId": "vid_2",
    "status": "processing",
    "progress": 42,
    "estimatedTimeRemaining": 30,
    "videoUrl": None,
    "error": None,
    "createdAt": "2026-01-01T00:00:00Z",
    "completedAt": None,
}
LEGACY_FAILED_NSFW = {
    "data": {
        "status": "FAILED",
        "request_id": "vid_3",
        "error": "Content policy violation",
        "isNSFWError": True,
        "userFriendlyError": "Your video was blocked by the safety filter.",
    }
}


def test_nested_completed_reads_url_cost_and_ids() -> None:
    status = normalize_status(NESTED_COMPLETED)
    assert status.state is VideoState.COMPLETED
    assert status.video_url == "https://storage.example.com/v.mp4"
    assert status.cost == 0.35
    assert status.run_id == "vid_1"
    assert status.model == "kling-video-v2"
    assert status.is_terminal


def test_flat_processing_reads_progress_and_eta() -> None:
    status = normalize_status(FLAT_PROCESSING)
    assert status.state is VideoState.RUNNING
    assert (status.progress, status.eta_seconds) == (42.0, 30.0)
    assert status.describe_progress() == "42% done, about 30 s left"
    assert not status.is_terminal


def test_flat_completed_uses_video_url() -> None:
    status = normalize_status({"requestId": "vid_9", "status": "completed", "videoUrl": "u"})
    assert (status.state, status.video_url) == (VideoState.COMPLETED, "u")


def test_legacy_failed_prefers_user_friendly_error_and_flags_nsfw() -> None:
    status = normalize_status(LEGACY_FAILED_NSFW)
    assert status.state is VideoState.FAILED
    assert status.is_nsfw
    assert status.error == "Your video was blocked by the safety filter."
    assert status.run_id == "vid_3"


@pytest.mark.parametrize("spelling", ["CANCELED", "CANCELLED", "cancelled", "canceled"])
def test_every_cancelled_spelling(spelling: str) -> None:
    assert normalize_status({"data": {"status": spelling}}).state is VideoState.CANCELLED


@pytest.mark.parametrize(
    ("raw", "state"),
    [
        ("pending", VideoState.QUEUED),
        ("queued", VideoState.QUEUED),
        ("IN_QUEUE", VideoState.QUEUED),
        ("IN_PROGRESS", VideoState.RUNNING),
        ("processing", VideoState.RUNNING),
        ("generating", VideoState.RUNNING),
        ("delivering", VideoState.RUNNING),
        ("ERROR", VideoState.FAILED),
        ("unknown", VideoState.UNKNOWN),
        ("SOMETHING_NEW", VideoState.UNKNOWN),
        (None, VideoState.UNKNOWN),
    ],
)
def test_state_mapping(raw: object, state: VideoState) -> None:
    assert parse_state(raw) is state


def test_completed_without_url_is_completed_but_not_deliverable() -> None:
    # NanoGPT charged it: never FAILED (which would mean "refunded, submit again").
    status = normalize_status({"data": {"status": "COMPLETED", "cost": 1}}, "vid_x")
    assert status.state is VideoState.COMPLETED
    assert not status.is_deliverable
    assert status.error is None
    assert status.run_id == "vid_x"
    assert normalize_status(NESTED_COMPLETED).is_deliverable


def test_progress_inside_nested_data_and_string_numbers() -> None:
    status = normalize_status(
        {"data": {"status": "IN_PROGRESS", "progress": "10", "estimatedTimeRemaining": "5.5"}}
    )
    assert (status.progress, status.eta_seconds) == (10.0, 5.5)


def test_garbage_is_unknown_not_a_crash() -> None:
    assert normalize_status(["not", "a", "dict"]).state is VideoState.UNKNOWN
    assert normalize_status({"data": "nope", "status": 7}).state is VideoState.UNKNOWN
