"""Request validation: documented model rules, clear messages, and nothing sent when invalid."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from airflow_provider_nanogpt.exceptions import NanoGPTValidationError
from airflow_provider_nanogpt.images import MAX_INLINE_IMAGE_BYTES, image_data_url
from airflow_provider_nanogpt.request import VideoRequest
from airflow_provider_nanogpt.submission import fingerprint, submission_tag
from airflow_provider_nanogpt.validation import validate_payload

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({"model": "kling-video-v2"}, "prompt is required"),
        ({"model": "kling-video-v2", "prompt": "x", "duration": "7"}, "duration='7'"),
        ({"model": "kling-video-v2", "prompt": "x", "cfg_scale": 3}, "cfg_scale=3"),
        ({"model": "veo2-video", "prompt": "x", "duration": "5"}, "'s' suffix"),
        ({"model": "veo2-video", "prompt": "x", "aspect_ratio": "2:1"}, "aspect_ratio='2:1'"),
        ({"model": "hunyuan-video", "prompt": "x", "num_frames": 100}, "num_frames=100"),
        (
            {"model": "hunyuan-video", "prompt": "x", "num_inference_steps": 5},
            "num_inference_steps=5",
        ),
        ({"model": "hunyuan-video", "prompt": "x", "resolution": "4k"}, "resolution='4k'"),
        ({"model": "wan-video-image-to-video", "prompt": "x"}, "needs image_url or image_path"),
        (
            {
                "model": "wan-video-image-to-video",
                "imageUrl": "https://a/b.png",
                "frames_per_second": 30,
            },
            "frames_per_second=30",
        ),
        ({"model": "kling-v21-standard", "prompt": "x"}, "image-to-video model"),
        ({"model": "seedance-video", "prompt": "x", "resolution": "720p"}, "resolution='720p'"),
        (
            {"model": "seedance-lite-video", "prompt": "x", "resolution": "1080p"},
            "resolution='1080p'",
        ),
        ({"model": "kling-v21-master", "imageUrl": "https://a/b.png"}, "prompt is required"),
        ({"prompt": "x"}, "model is required"),
    ],
)
def test_invalid_requests_name_field_value_and_allowed(payload: dict, fragment: str) -> None:
    with pytest.raises(NanoGPTValidationError) as info:
        validate_payload(payload)
    assert fragment in str(info.value)
    assert "Nothing was sent" in str(info.value)


@pytest.mark.parametrize(
    "payload",
    [
        {"model": "kling-video-v2", "prompt": "x", "duration": "10", "cfg_scale": 0.5},
        {"model": "kling-video-v2", "prompt": "x", "duration": 5},
        {"model": "veo2-video", "prompt": "x", "duration": "8s", "aspect_ratio": "9:16"},
        {"model": "hunyuan-video", "prompt": "x", "num_frames": 97, "resolution": "720p"},
        {
            "model": "wan-video-image-to-video",
            "imageDataUrl": "data:image/png;base64,AA",
            "num_frames": 81,
            "frames_per_second": 16,
            "num_inference_steps": 30,
        },
        {"model": "brand-new-model-2027", "whatever": 1},
        {"model": "seedance-video", "prompt": "x", "resolution": "1080p", "duration": "10"},
    ],
)
def test_valid_and_unknown_models_pass(payload: dict) -> None:
    validate_payload(payload)


def test_image_url_must_be_http() -> None:
    with pytest.raises(NanoGPTValidationError, match="http"):
        VideoRequest(model="kling-v21-pro", image_url="ftp://host/cat.png").payload()
    with pytest.raises(NanoGPTValidationError, match="file:///tmp/cat.png"):
        VideoRequest(model="kling-v21-pro", image_url="file:///tmp/cat.png").payload()


def test_image_path_becomes_data_url(tmp_path: Path) -> None:
    image = tmp_path / "cat.png"
    image.write_bytes(PNG)
    url = image_data_url(str(image))
    assert url.startswith("data:image/png;base64,")
    assert base64.b64decode(url.split(",", 1)[1]) == PNG
    assert image_data_url(f"file://{image}") == url


def test_image_too_large_or_not_an_image(tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    big.write_bytes(PNG + b"\x00" * MAX_INLINE_IMAGE_BYTES)
    with pytest.raises(NanoGPTValidationError, match="4 MB"):
        image_data_url(big)
    text = tmp_path / "notes.png"
    text.write_text("hello")
    with pytest.raises(NanoGPTValidationError, match="not a PNG"):
        image_data_url(text)
    with pytest.raises(NanoGPTValidationError, match="does not exist"):
        image_data_url(tmp_path / "missing.png")


def test_payload_uses_nanogpt_field_names_and_drops_unset() -> None:
    payload = VideoRequest(
        model="kling-video-v2",
        prompt="p",
        duration="5",
        image_url="https://x/y.png",
        extra_params={"cfg_scale": 0.4, "camera_fixed": True, "skip": None},
    ).payload()
    assert payload == {
        "model": "kling-video-v2",
        "prompt": "p",
        "duration": "5",
        "imageUrl": "https://x/y.png",
        "cfg_scale": 0.4,
        "camera_fixed": True,
    }


def test_fingerprint_ignores_tags_but_not_content() -> None:
    base = {"model": "m", "prompt": "p"}
    assert fingerprint(base) == fingerprint({**base, "conversationUUID": "x"})
    assert fingerprint(base) != fingerprint({**base, "prompt": "q"})


def test_tag_names_task_instance_request_and_clear_generation() -> None:
    base = fingerprint({"model": "m", "prompt": "p"})
    other = fingerprint({"model": "m", "prompt": "q"})
    tag = submission_tag("d/r/t/-1", base, 1)
    assert tag == submission_tag("d/r/t/-1", base, 1)  # a retry derives the same tag
    assert tag != submission_tag("d/r/t/0", base, 1)  # another map index
    assert tag != submission_tag("d/r/t/-1", other, 1)  # another request
    assert tag != submission_tag("d/r/t/-1", base, 3)  # cleared: a new video, a new tag
    assert submission_tag("d/r/t/-1", base, None) == submission_tag("d/r/t/-1", base, None)
