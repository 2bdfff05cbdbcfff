"""Source video and audio at submit (fact sheet §2.2), and the extend model in the catalog."""

from __future__ import annotations

import base64

import pytest

from airflow_provider_nanogpt.simulator import NanoGPTSimulator

from ._helpers import call, submit

EXTEND = "wan-wavespeed-25-extend"
MP4 = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isommp41"
MP4_DATA_URL = "data:video/mp4;base64," + base64.b64encode(MP4).decode()
MP3_DATA_URL = "data:audio/mpeg;base64," + base64.b64encode(b"ID3\x04" + b"\x00" * 32).decode()


def test_the_extend_model_takes_a_source_video(sim: NanoGPTSimulator) -> None:
    body = call(sim, "GET", "/api/v1/video-models").json()
    entry = {e["id"]: e for e in body["data"]}[EXTEND]
    assert entry["capabilities"]["video_to_video"] is True
    assert entry["architecture"]["input_modalities"] == ["text", "video"]
    assert {"videoUrl", "videoDataUrl"} <= set(entry["supported_parameters"])
    assert entry["supported_parameters"]["prompt"]["required"] is True

    resp = submit(sim, "keep walking", model=EXTEND, videoDataUrl=MP4_DATA_URL, duration="5")
    assert resp.status == 202, resp.body
    (job,) = sim.state()["jobs"]
    assert job["payload"]["videoDataUrl"] == MP4_DATA_URL
    assert submit(sim, model="kling-video-v2", audioDataUrl=MP3_DATA_URL).status == 202


@pytest.mark.parametrize(
    ("fields", "status", "fragment"),
    [
        ({"videoUrl": "ftp://host/clip.mp4"}, 400, "videoUrl must be an http(s) URL"),
        ({"audioUrl": "file:///tmp/voice.mp3"}, 400, "audioUrl must be an http(s) URL"),
        ({"audioDataUrl": MP4_DATA_URL}, 400, "Invalid audioDataUrl: expected a data URL"),
        ({"audioDataUrl": "data:audio/mpeg;base64,@@"}, 400, "base64 data is malformed"),
        ({"audioDataUrl": 7}, 400, "audioDataUrl must be a string"),
        (
            {"audioDataUrl": "data:audio/wav;base64," + "A" * (4 * 1024 * 1024 // 3 * 4 + 8)},
            413,
            "send audioUrl instead",
        ),
    ],
)
def test_bad_source_media_is_refused_and_free(
    sim: NanoGPTSimulator, fields: dict, status: int, fragment: str
) -> None:
    resp = submit(sim, model=EXTEND, **fields)
    assert resp.status == status
    assert fragment in resp.json()["error"]
    assert sim.state()["submits_accepted"] == 0
