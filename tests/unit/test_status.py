"""Status normalisation against every shape and spelling the fact sheet documents."""

from __future__ import annotations

import pytest

from airflow_provider_nanogpt.api.status import (
    VideoState,
    normalize_status,
    parse_state,
)
from airflow_provider_nanogpt.exceptions import NanoGPTResponseError

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


@pytest.mark.parametrize("body", [["not", "a", "dict"], None, 7, "COMPLETED"])
def test_an_answer_that_is_not_an_object_is_an_error_not_a_state(body: object) -> None:
    with pytest.raises(NanoGPTResponseError, match="not a JSON object"):
        normalize_status(body, "vid_1")


def test_garbage_fields_are_an_unrecognised_state() -> None:
    status = normalize_status({"data": "nope", "status": 7})
    assert status.state is VideoState.UNKNOWN and not status.is_recognised
    assert normalize_status({"status": "unknown"}).is_recognised  # documented: keep polling
    assert not normalize_status({"status": "teleporting"}).is_recognised


def test_an_answer_about_another_run_is_rejected() -> None:
    with pytest.raises(NanoGPTResponseError, match="names another run"):
        normalize_status({**NESTED_COMPLETED, "requestId": "vid_other"}, "vid_1")
    assert normalize_status(NESTED_COMPLETED, "vid_1").is_deliverable


@pytest.mark.parametrize("bad", ["NaN", float("nan"), float("inf"), "-Infinity", -3, "-1"])
def test_numbers_that_are_not_finite_and_non_negative_are_absent(bad: object) -> None:
    status = normalize_status(
        {"status": "processing", "progress": bad, "estimatedTimeRemaining": bad, "cost": bad}
    )
    assert (status.progress, status.eta_seconds, status.cost) == (None, None, None)


def test_flat_shape_content_policy_failure_is_recognised_without_a_flag() -> None:
    flat = {"requestId": "vid_1", "status": "failed", "error": "Content policy violation"}
    assert normalize_status(flat, "vid_1").is_nsfw
    other = {"requestId": "vid_1", "status": "failed", "error": "Upstream provider error"}
    assert not normalize_status(other, "vid_1").is_nsfw
