"""Request validation: documented model rules, clear messages, and nothing sent when invalid."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from airflow_provider_nanogpt.exceptions import NanoGPTValidationError
from airflow_provider_nanogpt.media import IMAGE, MAX_DATA_URL_CHARS, data_url
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
    url = data_url(str(image), IMAGE)
    assert url.startswith("data:image/png;base64,")
    assert base64.b64decode(url.split(",", 1)[1]) == PNG
    assert data_url(f"file://{image}", IMAGE) == url


def test_image_too_large_or_not_an_image(tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    big.write_bytes(PNG + b"\x00" * MAX_DATA_URL_CHARS)
    with pytest.raises(NanoGPTValidationError, match="4 MB"):
        data_url(big, IMAGE)
    text = tmp_path / "notes.png"
    text.write_text("hello")
    with pytest.raises(NanoGPTValidationError, match="not a PNG"):
        data_url(text, IMAGE)
    with pytest.raises(NanoGPTValidationError, match="does not exist"):
        data_url(tmp_path / "missing.png", IMAGE)


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


# --- hardening: aspect ratios, whole numbers, booleans, source media ---------------------------

VIDEO = "https://cdn.example.com/clip.mp4"
AUDIO = "https://cdn.example.com/voice.mp3"
IMG = "https://cdn.example.com/face.png"
LIPSYNC = {"model": "kling-lipsync-t2v", "videoUrl": VIDEO, "voice_id": "v1"}


# Each rule as a pair: a request it refuses (with what the message must say) and the nearest
# request it lets through, so a rule can be neither missing nor too strict.
@pytest.mark.parametrize(
    ("bad", "fragment", "good"),
    [
        # Kling and Seedance aspect ratios; Seedance's only for text-to-video
        (
            {"model": "kling-video-v2", "prompt": "x", "aspect_ratio": "4:3"},
            "aspect_ratio='4:3' is not allowed; use one of '16:9', '9:16', '1:1'",
            {"model": "kling-video-v2", "prompt": "x", "aspect_ratio": "1:1"},
        ),
        (
            {"model": "seedance-video", "prompt": "x", "aspect_ratio": "2:1"},
            "'4:3', '3:4', '21:9', '9:21'",
            {"model": "seedance-video", "prompt": "x", "aspect_ratio": "9:21"},
        ),
        (
            {"model": "seedance-lite-video", "imageUrl": IMG, "aspect_ratio": "16:9"},
            "aspect_ratio='16:9' is not allowed with an input image",
            {"model": "seedance-lite-video", "imageUrl": IMG},
        ),
        # whole-number ranges: no float, even a whole one
        (
            {"model": "wan-video-image-to-video", "imageUrl": IMG, "num_frames": 81.0},
            "num_frames=81.0 is not allowed; use a whole number from 81 to 100",
            {"model": "wan-video-image-to-video", "imageUrl": IMG, "num_frames": "81"},
        ),
        # documented boolean flags, for every model
        (
            {"model": "veo3-video", "prompt": "x", "generateAudio": "false"},
            "generateAudio='false' is not allowed; pass a boolean",
            {"model": "veo3-video", "prompt": "x", "generateAudio": False},
        ),
        (
            {"model": "hunyuan-video", "prompt": "x", "pro_mode": 1},
            "pro_mode=1",
            {"model": "hunyuan-video", "prompt": "x", "pro_mode": True},
        ),
        (
            {"model": "brand-new-model-2027", "camera_fixed": "true"},
            "render_template_as_native_obj=True",
            {"model": "brand-new-model-2027", "camera_fixed": True, "other": "true"},
        ),
        (
            {"model": "video-upscaler", "videoUrl": VIDEO, "adjust_fps_for_interpolation": 0},
            "adjust_fps_for_interpolation=0",
            {"model": "video-upscaler", "videoUrl": VIDEO, "adjust_fps_for_interpolation": True},
        ),
        # extend, edit and upscale models need a source video; extend and edit a prompt
        (
            {"model": "wan-wavespeed-25-extend", "prompt": "x"},
            "wan-wavespeed-25-extend is an extend model and needs a source video: video_url",
            {"model": "wan-wavespeed-25-extend", "prompt": "x", "video": VIDEO},
        ),
        (
            {"model": "veo3-1-extend", "videoUrl": VIDEO},
            "prompt is required: extend models",
            {"model": "veo3-1-extend", "videoUrl": VIDEO, "prompt": "x"},
        ),
        (
            {"model": "wan-wavespeed-22-spicy-extend", "prompt": "x", "video": VIDEO},
            "is an extend model and needs a source video",
            {"model": "wan-wavespeed-22-spicy-extend", "prompt": "x", "videoDataUrl": "data:"},
        ),
        (
            {"model": "seedvr2-video-upscaler"},
            "seedvr2-video-upscaler is an upscaler and needs a source video",
            {"model": "seedvr2-video-upscaler", "videoUrl": VIDEO},
        ),
        (
            {"model": "wan-wavespeed-video-edit", "videoUrl": VIDEO},
            "prompt is required: video-edit models take one to describe the edit",
            {"model": "wan-wavespeed-video-edit", "videoUrl": VIDEO, "prompt": "x"},
        ),
        (
            {"model": "wan-wavespeed-22-animate", "mode": "dance"},
            "mode='dance' is not allowed; use one of 'animate', 'replace'",
            {"model": "wan-wavespeed-22-animate", "mode": "replace"},
        ),
        # lipsync and avatar models (fact sheet §7.3)
        (
            {"model": "latentsync", "videoUrl": VIDEO},
            "latentsync is an audio-driven model and needs audio: audio_url or audio_path",
            {"model": "latentsync", "videoUrl": VIDEO, "audioDataUrl": "data:"},
        ),
        (
            {"model": "kling-lipsync-a2v", "audioUrl": AUDIO},
            "needs a source video",
            {"model": "kling-lipsync-a2v", "audioUrl": AUDIO, "videoUrl": VIDEO},
        ),
        (
            {"model": "kling-v2-avatar-pro", "audioUrl": AUDIO},
            "kling-v2-avatar-pro is an avatar model and needs an image: image_url or image_path",
            {"model": "kling-v2-avatar-pro", "audioUrl": AUDIO, "imageUrl": IMG},
        ),
        (
            {"model": "bytedance-avatar-omni-human-1.5", "imageDataUrl": "data:"},
            "needs audio",
            {"model": "bytedance-avatar-omni-human-1.5", "imageDataUrl": "data:", "audio": AUDIO},
        ),
        (
            {"model": "kling-lipsync-t2v", "videoUrl": VIDEO},
            "voice_id is required for kling-lipsync-t2v",
            LIPSYNC,
        ),
        (
            {**LIPSYNC, "voice_speed": 3},
            "voice_speed=3 is not allowed; use a number from 0.8 to 2",
            {**LIPSYNC, "voice_speed": 0.8},
        ),
        (
            {**LIPSYNC, "voice_language": "fr"},
            "voice_language='fr'",
            {**LIPSYNC, "voice_language": "zh"},
        ),
        (
            {"model": "magicapi-video-face-swap", "swapImage": IMG},
            "targetVideo is required for magicapi-video-face-swap",
            {"model": "magicapi-video-face-swap", "swapImage": IMG, "targetVideo": VIDEO},
        ),
    ],
)
def test_new_rules_refuse_and_allow(bad: dict, fragment: str, good: dict) -> None:
    with pytest.raises(NanoGPTValidationError) as info:
        validate_payload(bad)
    assert fragment in str(info.value)
    assert "Nothing was sent" in str(info.value)
    validate_payload(good)


def test_hunyuan_num_frames_is_an_integer_or_its_digits_never_truncated() -> None:
    # The OpenAPI allows an integer or a string; int() used to turn 65.9 into 65.
    for bad in (65.9, 97.0, True, "65.0", " 65"):
        with pytest.raises(NanoGPTValidationError, match=f"num_frames={bad!r} is not allowed"):
            validate_payload({"model": "hunyuan-video", "prompt": "x", "num_frames": bad})
    for good in (65, "97", 129):
        validate_payload({"model": "hunyuan-video", "prompt": "x", "num_frames": good})


def test_extra_params_must_be_a_mapping() -> None:
    request = VideoRequest(model="kling-video-v2", prompt="p", extra_params="{'cfg_scale': 1}")  # type: ignore[arg-type]
    with pytest.raises(NanoGPTValidationError, match="extra_params must be a dict"):
        request.payload()
    with pytest.raises(NanoGPTValidationError, match="render_template_as_native_obj"):
        request.payload(validate=False)


def test_source_media_urls_use_nanogpt_field_names() -> None:
    payload = VideoRequest(
        model="latentsync", video_url=VIDEO, audio_url=AUDIO, extra_params={"seed": None}
    ).payload()
    assert payload == {"model": "latentsync", "videoUrl": VIDEO, "audioUrl": AUDIO}


LENGTH_MODELS = ["some-model-nanogpt-added-today", "kling-video-v2", "veo3-video", "sora-2"]
NOT_A_LENGTH = [0, 0.0, -1, -0.5, "0", "-5", "0s", " -3s ", "nan", "-inf", "inf"]


@pytest.mark.parametrize("model", LENGTH_MODELS)
@pytest.mark.parametrize("field", ["duration", "seconds"])
@pytest.mark.parametrize("value", NOT_A_LENGTH, ids=repr)
def test_a_length_of_zero_or_less_is_refused_for_every_model(
    model: str, field: str, value: object
) -> None:
    with pytest.raises(NanoGPTValidationError, match=f"{field}="):
        validate_payload({"model": model, "prompt": "p", field: value})


@pytest.mark.parametrize("value", [5, "5", "8s", 2.5])
def test_a_positive_length_passes_the_generic_check(value: object) -> None:
    validate_payload({"model": "some-model-nanogpt-added-today", "prompt": "p", "seconds": value})
