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
from airflow_provider_nanogpt.simulator.video import DEFAULT_VIDEO_SIZE, video_sha256

from ._helpers import call, poll, submit_ok

INSTANT = "[sim:queue=0][sim:render=0]"


def _video_url(sim: NanoGPTSimulator, run_id: str) -> str:
    url: str = poll(sim, run_id).json()["data"]["output"]["video"]["url"]
    return url


def test_download_default_video(sim: NanoGPTSimulator) -> None:
    run_id = submit_ok(sim, INSTANT)
    url = _video_url(sim, run_id)
    path = url.removeprefix(sim.url)
    resp = call(sim, "GET", path, key=None)  # a storage URL: no key needed
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "video/mp4"
    assert int(resp.headers["Content-Length"]) == DEFAULT_VIDEO_SIZE == len(resp.body)
    assert resp.headers["X-Request-ID"]
    # a minimal ISO-BMFF ftyp box, then an mdat box covering the rest
    (ftyp_size,) = struct.unpack(">I", resp.body[:4])
    assert resp.body[4:8] == b"ftyp"
    assert resp.body[ftyp_size + 4 : ftyp_size + 8] == b"mdat"
    assert hashlib.sha256(resp.body).hexdigest() == video_sha256(run_id, DEFAULT_VIDEO_SIZE)
    again = call(sim, "GET", path, key=None)
    assert again.body == resp.body  # deterministic


def test_different_runs_have_different_bytes(sim: NanoGPTSimulator) -> None:
    a, b = submit_ok(sim, INSTANT), submit_ok(sim, INSTANT)
    body_a = call(sim, "GET", f"/files/videos/{a}.mp4", key=None).body
    body_b = call(sim, "GET", f"/files/videos/{b}.mp4", key=None).body
    assert body_a[:24] == body_b[:24]
    assert body_a != body_b


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
