"""Invalid requests fail before any submission and are not retried; source video is sent."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

from airflow_provider_nanogpt.simulator import NanoGPTSimulator
from tests.airflow.harness import run_dag

pytestmark = pytest.mark.usefixtures("airflow_db")

PROMPT = "a lighthouse in a storm"
PNG = b"\x89PNG\r\n\x1a\n"
MP4 = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isommp41" + bytes(range(256)) * 256
EXTEND = "wan-wavespeed-25-extend"


def _error_line(output: str) -> str:
    lines = [
        line for line in output.splitlines() if re.match(r"^\S*NanoGPTValidationError: ", line)
    ]
    assert lines, "no NanoGPTValidationError line in the task output"
    return lines[-1]


@pytest.mark.parametrize(
    ("conf", "fix_hint"),
    [
        (
            {"model": "veo3-video", "extra_params": {"generate_audio": True}},
            "extra_params key 'generate_audio' is not among the parameters NanoGPT's catalog lists "
            "for veo3-video (did you mean 'generateAudio'?",
        ),
        (
            {"model": "kling-video-v2", "extra_params": {"cfg_scal": 0.7}},
            "did you mean 'cfg_scale'?",
        ),
        (
            {"model": "seedance-video", "extra_params": {"camera_fixed": "false"}},
            "camera_fixed='false' is not allowed; pass a boolean",
        ),
        ({"model": "kling-v21-pro", "image_path": "OVERSIZE"}, "4,666,690 characters"),
        ({"model": EXTEND}, f"{EXTEND} is an extend model and needs a source video"),
        ({"model": EXTEND, "video_url": "ftp://host/clip.mp4"}, "http(s) only"),
        ({"model": EXTEND, "video_path": "NOT_A_VIDEO"}, "is not an MP4, MOV or WebM video"),
    ],
)
def test_invalid_requests_make_zero_submissions_and_no_retry(
    nanogpt_connection: NanoGPTSimulator,
    capfd: pytest.CaptureFixture[str],
    tmp_path: Path,
    conf: dict,
    fix_hint: str,
) -> None:
    if conf.get("image_path") == "OVERSIZE":  # 3.5 MB: under 4 MiB on disk, over it once encoded
        (tmp_path / "big.png").write_bytes(PNG + b"\0" * (3_500_000 - len(PNG)))
        conf = {**conf, "image_path": str(tmp_path / "big.png")}
    if conf.get("video_path") == "NOT_A_VIDEO":
        (tmp_path / "clip.mp4").write_bytes(b"ID3\x04 an mp3 named like a video")
        conf = {**conf, "video_path": str(tmp_path / "clip.mp4")}
    outcome = run_dag("nanogpt_media", {"prompt": PROMPT, **conf})
    assert outcome.state == "failed"
    assert outcome.try_numbers["generate"] == 1  # NanoGPTValidationError is never retried
    assert fix_hint in _error_line(capfd.readouterr().out)
    assert nanogpt_connection.state()["submit_requests"] == 0


@pytest.mark.parametrize("source", ["video_path", "video_url"])
def test_source_video_reaches_nanogpt(
    nanogpt_connection: NanoGPTSimulator, tmp_path: Path, source: str
) -> None:
    clip = tmp_path / "source.mov"  # the type comes from the content: this is an MP4
    clip.write_bytes(MP4)
    value = str(clip) if source == "video_path" else "https://cdn.example.com/source.mp4"
    outcome = run_dag(
        "nanogpt_media",
        {"model": EXTEND, "prompt": "the camera keeps rising", source: value},
    )
    assert outcome.state == "success", outcome.task_states
    state = nanogpt_connection.state()
    assert state["submits_accepted"] == 1
    (job,) = state["jobs"]
    sent = job["payload"]
    assert sent["model"] == EXTEND
    if source == "video_path":
        assert "videoUrl" not in sent
        expected = "data:video/mp4;base64," + base64.b64encode(MP4).decode()
        # The simulator keeps the first 200 characters of long strings.
        assert sent["videoDataUrl"].startswith(expected[:200])
        assert f"[truncated {len(expected) - 200} chars]" in sent["videoDataUrl"]
    else:
        assert "videoDataUrl" not in sent
        assert sent["videoUrl"] == value
