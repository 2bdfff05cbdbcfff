"""Video files under /files/videos/<runId>.mp4: deterministic, streamed, no auth."""

from __future__ import annotations

import hashlib
import http.client
import struct
import time
import tracemalloc
from pathlib import Path

import pytest

from airflow_provider_nanogpt.simulator import NanoGPTSimulator
from airflow_provider_nanogpt.simulator.video import default_video, video_sha256

from ._helpers import call, poll, submit_ok

INSTANT = "[sim:queue=0][sim:render=0]"


def _video_url(sim: NanoGPTSimulator, run_id: str) -> str:
    url: str = poll(sim, run_id).json()["data"]["output"]["video"]["url"]
    return url


def _boxes(data: bytes) -> dict[bytes, bytes]:
    """The ISO-BMFF boxes in ``data``, by type (the last of each type), with their bodies."""
    boxes, offset = {}, 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        assert size >= 8, (kind, size)  # the shipped clip uses no 64-bit or to-the-end sizes
        boxes[kind] = data[offset + 8 : offset + size]
        offset += size
    return boxes


def assert_playable_h264_mp4(data: bytes) -> None:
    """An MP4 a player can open: ftyp, a moov whose mvhd has a duration, an H.264 (avc1) track."""
    top = _boxes(data)
    assert {b"ftyp", b"moov", b"mdat"} <= top.keys(), top.keys()
    moov = _boxes(top[b"moov"])
    mvhd = moov[b"mvhd"]
    timescale, duration = struct.unpack(">II", mvhd[12:20])  # version 0: 32-bit times
    assert mvhd[0] == 0 and timescale > 0 and duration / timescale >= 1.0
    stbl = _boxes(_boxes(_boxes(_boxes(moov[b"trak"])[b"mdia"])[b"minf"])[b"stbl"])
    assert stbl[b"stsd"][12:16] == b"avc1"  # version/flags, entry count, then the first entry


def test_the_default_video_is_a_playable_h264_mp4(sim: NanoGPTSimulator) -> None:
    run_id = submit_ok(sim, INSTANT)
    url = _video_url(sim, run_id)
    path = url.removeprefix(sim.url)
    resp = call(sim, "GET", path, key=None)  # a storage URL: no key needed
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "video/mp4"
    assert resp.headers["Accept-Ranges"] == "bytes"
    assert int(resp.headers["Content-Length"]) == len(resp.body) < 100_000
    assert resp.headers["X-Request-ID"]
    assert resp.body == default_video(run_id)
    assert_playable_h264_mp4(resp.body)
    again = call(sim, "GET", path, key=None)
    assert again.body == resp.body  # deterministic


def test_different_runs_have_different_bytes(sim: NanoGPTSimulator) -> None:
    a, b = submit_ok(sim, INSTANT), submit_ok(sim, INSTANT)
    body_a = call(sim, "GET", f"/files/videos/{a}.mp4", key=None).body
    body_b = call(sim, "GET", f"/files/videos/{b}.mp4", key=None).body
    assert body_a[:24] == body_b[:24]
    assert body_a != body_b
    assert_playable_h264_mp4(body_a)
    assert_playable_h264_mp4(body_b)


@pytest.mark.parametrize("marker", ["", "[sim:size=200000]"], ids=["clip", "fake"])
@pytest.mark.parametrize(
    ("header", "span"),
    [
        ("bytes=0-99", (0, 99)),
        ("bytes=70000-", (70_000, None)),  # within the fake file, past the clip: 416 there
        ("bytes=-50", (-50, None)),
        ("bytes=10-999999999", (10, None)),  # the last byte is capped at the end of the file
        ("bytes=5-4", "whole"),  # a last byte before the first is invalid: ignored (RFC 9110)
        ("bytes=999999999-", None),
        ("bytes=-0", None),
        ("bytes=0-1,5-6", "whole"),  # several ranges: the whole file, as RFC 9110 allows
        ("items=0-1", "whole"),
    ],
)
def test_range_requests(
    sim: NanoGPTSimulator, marker: str, header: str, span: tuple[int, int | None] | str | None
) -> None:
    run_id = submit_ok(sim, INSTANT + marker)
    path = f"/files/videos/{run_id}.mp4"
    whole = call(sim, "GET", path, key=None).body
    size = len(whole)
    resp = call(sim, "GET", path, key=None, headers={"Range": header})
    if span == "whole":
        assert resp.status == 200 and resp.body == whole
        return
    if isinstance(span, tuple) and span[0] < size:
        first = span[0] % size  # a negative start counts from the end
        last = size - 1 if span[1] is None else span[1]
        assert resp.status == 206, resp.status
        assert resp.headers["Content-Range"] == f"bytes {first}-{last}/{size}"
        assert int(resp.headers["Content-Length"]) == last - first + 1
        assert resp.body == whole[first : last + 1]
        head = call(sim, "HEAD", path, key=None, headers={"Range": header})
        assert head.status == 206 and head.headers["Content-Length"] == str(last - first + 1)
    else:
        assert resp.status == 416, resp.status
        assert resp.headers["Content-Range"] == f"bytes */{size}"
        assert resp.body == b""


def test_head_request(sim: NanoGPTSimulator) -> None:
    run_id = submit_ok(sim, INSTANT + "[sim:size=12345]")
    resp = call(sim, "HEAD", f"/files/videos/{run_id}.mp4", key=None)
    assert resp.status == 200
    assert resp.headers["Content-Length"] == "12345"
    assert resp.body == b""


def test_not_downloadable_before_completion(sim: NanoGPTSimulator) -> None:
    run_id = submit_ok(sim)
    assert call(sim, "GET", f"/files/videos/{run_id}.mp4", key=None).status == 404
    sim.advance(20)
    assert call(sim, "GET", f"/files/videos/{run_id}.mp4", key=None).status == 200
    assert call(sim, "GET", "/files/videos/vid_nope.mp4", key=None).status == 404
    assert call(sim, "GET", "/files/videos/../etc/passwd", key=None).status == 404


@pytest.mark.parametrize("size", [0, 1, 10, 24, 31, 32, 33, 65536 + 37])
def test_tiny_and_odd_sizes(sim: NanoGPTSimulator, size: int) -> None:
    run_id = submit_ok(sim, f"{INSTANT}[sim:size={size}]")
    resp = call(sim, "GET", f"/files/videos/{run_id}.mp4", key=None)
    assert resp.status == 200
    assert len(resp.body) == size
    assert hashlib.sha256(resp.body).hexdigest() == video_sha256(run_id, size)


def test_large_download_is_streamed_in_constant_memory(sim: NanoGPTSimulator) -> None:
    size = 524_288_000  # 500 MiB
    run_id = submit_ok(sim, f"{INSTANT}[sim:size={size}]")
    conn = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=30)
    tracemalloc.start()
    try:
        started = time.monotonic()
        conn.request("GET", f"/files/videos/{run_id}.mp4")
        resp = conn.getresponse()
        assert int(resp.headers["Content-Length"]) == size
        received = 0
        head = b""
        while chunk := resp.read(1024 * 1024):
            if not head:
                head = chunk[:8]
            received += len(chunk)
        _, peak = tracemalloc.get_traced_memory()
        elapsed = time.monotonic() - started
    finally:
        tracemalloc.stop()
        conn.close()
    assert received == size
    assert head[4:8] == b"ftyp"
    # server and client share this process: both together stay far below the file size
    assert peak < 8 * 1024 * 1024, peak
    assert elapsed < 20


def test_a_sample_video_is_served_for_every_finished_job(
    sim: NanoGPTSimulator, tmp_path: Path
) -> None:
    sample = tmp_path / "clip.webm"
    sample.write_bytes(b"\x1a\x45\xdf\xa3" + b"webm bytes" * 100)
    sim.configure(sample_video=str(sample))
    run_id = submit_ok(sim, INSTANT)
    resp = call(sim, "GET", _video_url(sim, run_id).removeprefix(sim.url), key=None)
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "video/webm"
    assert resp.body == sample.read_bytes()
    with pytest.raises(ValueError, match="sample_video"):
        sim.configure(sample_video=str(tmp_path / "missing.webm"))
    with pytest.raises(ValueError, match="sample_video must end in"):
        sim.configure(sample_video=__file__)
