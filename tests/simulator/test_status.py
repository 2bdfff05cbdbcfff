"""Unified and legacy status endpoints: lifecycle, shapes, aliases, ownership."""

from __future__ import annotations

import re

import pytest

from airflow_provider_nanogpt.simulator import NanoGPTSimulator

from ._helpers import KEY, call, legacy, poll, submit_ok

ISO_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def test_nested_lifecycle(sim: NanoGPTSimulator) -> None:
    run_id = submit_ok(sim)
    queued = poll(sim, run_id)
    assert queued.status == 200
    body = queued.json()
    assert body["requestId"] == run_id
    assert body["model"] == "kling-video-v2"
    assert body["data"]["status"] == "IN_QUEUE"
    assert body["data"]["requestId"] == run_id
    assert "progress" not in body["data"]
    assert "output" not in body["data"]

    sim.advance(2.0 + 4.0)  # queue 2 s, then half of the 8 s render
    data = poll(sim, run_id).json()["data"]
    assert data["status"] == "IN_PROGRESS"
    assert data["details"]
    assert 45 <= data["progress"] <= 55
    assert data["estimatedTimeRemaining"] == pytest.approx(4.0, abs=0.5)

    sim.advance(5.0)
    data = poll(sim, run_id).json()["data"]
    assert data["status"] == "COMPLETED"
    assert data["output"]["video"]["url"] == f"{sim.url}/files/videos/{run_id}.mp4"
    assert data["cost"] == 0.35
    assert "error" not in data


def test_estimated_time_remaining_is_in_real_seconds() -> None:
    with NanoGPTSimulator(api_key=KEY, time_scale=0.5, quiet=True) as sim:
        run_id = submit_ok(sim, "[sim:queue=0][sim:render=100]")
        sim.advance(20)
        data = poll(sim, run_id).json()["data"]
        # 80 simulated seconds left at 0.5 real s per simulated s
        assert data["estimatedTimeRemaining"] == pytest.approx(40.0, abs=1.0)
        assert data["progress"] == pytest.approx(20, abs=2)


def test_jobs_advance_with_the_real_clock(fast_sim: NanoGPTSimulator) -> None:
    import time

    run_id = submit_ok(fast_sim)
    deadline = time.monotonic() + 5
    seen: list[str] = []
    while time.monotonic() < deadline:
        status = poll(fast_sim, run_id).json()["data"]["status"]
        if not seen or seen[-1] != status:
            seen.append(status)
        if status == "COMPLETED":
            break
        time.sleep(0.01)
    assert seen[-1] == "COMPLETED"
    assert set(seen) <= {"IN_QUEUE", "IN_PROGRESS", "COMPLETED"}


def test_flat_shape_lifecycle(sim: NanoGPTSimulator) -> None:
    sim.configure(status_shape="flat")
    run_id = submit_ok(sim)
    body = poll(sim, run_id).json()
    assert set(body) == {
        "requestId",
        "status",
        "progress",
        "estimatedTimeRemaining",
        "videoUrl",
        "error",
        "createdAt",
        "completedAt",
    }
    assert body["status"] == "queued"
    assert body["progress"] == 0
    assert body["estimatedTimeRemaining"] == pytest.approx(10.0, abs=0.5)
    assert ISO_RE.match(body["createdAt"])
    assert body["videoUrl"] is None
    assert body["completedAt"] is None

    sim.advance(4)
    body = poll(sim, run_id).json()
    assert body["status"] == "processing"
    assert 20 <= body["progress"] <= 30

    sim.advance(10)
    body = poll(sim, run_id).json()
    assert body["status"] == "completed"
    assert body["progress"] == 100
    assert body["videoUrl"] == f"{sim.url}/files/videos/{run_id}.mp4"
    assert ISO_RE.match(body["completedAt"])
    assert body["error"] is None


def test_alternate_shape_flips_every_poll(sim: NanoGPTSimulator) -> None:
    sim.configure(status_shape="alternate")
    run_id = submit_ok(sim)
    shapes = []
    for _ in range(4):
        body = poll(sim, run_id).json()
        shapes.append("nested" if "data" in body else "flat")
    assert shapes == ["nested", "flat", "nested", "flat"]


def test_status_shape_constructor_argument() -> None:
    with NanoGPTSimulator(api_key=KEY, status_shape="flat", quiet=True) as sim:
        run_id = submit_ok(sim)
        assert poll(sim, run_id).json()["status"] == "queued"


def test_config_change_applies_to_existing_jobs(sim: NanoGPTSimulator) -> None:
    run_id = submit_ok(sim)
    assert "data" in poll(sim, run_id).json()
    sim.configure(status_shape="flat")
    assert "data" not in poll(sim, run_id).json()


def test_run_id_alias_and_missing_parameter(sim: NanoGPTSimulator) -> None:
    run_id = submit_ok(sim)
    alias = call(sim, "GET", f"/api/video/status?runId={run_id}")
    assert alias.status == 200
    assert alias.json()["requestId"] == run_id
    missing = call(sim, "GET", "/api/video/status")
    assert missing.status == 400
    # ``id=`` is used by some third-party code but is not documented: not accepted
    assert call(sim, "GET", f"/api/video/status?id={run_id}").status == 400


def test_unknown_id_is_404(sim: NanoGPTSimulator) -> None:
    resp = call(sim, "GET", "/api/video/status?requestId=vid_doesnotexist")
    assert resp.status == 404
    assert resp.json() == {"error": "Video not found", "status": 404}


def test_job_of_another_key_is_403(open_sim: NanoGPTSimulator) -> None:
    run_id = submit_ok(open_sim)  # owned by KEY
    other = poll(open_sim, run_id, key="sk-nano-someone-else")
    assert other.status == 403
    assert poll(open_sim, run_id).status == 200
    # legacy status has no documented 403: another key's job is simply not found
    resp = call(
        open_sim, "GET", f"/api/generate-video/status?runId={run_id}", key="sk-nano-someone-else"
    )
    assert resp.status == 404


def test_polls_are_counted(sim: NanoGPTSimulator) -> None:
    run_id = submit_ok(sim)
    for _ in range(3):
        poll(sim, run_id)
    legacy(sim, run_id)
    assert sim.state()["jobs"][0]["polls"] == 4


def test_legacy_status_lifecycle(sim: NanoGPTSimulator) -> None:
    run_id = submit_ok(sim)
    body = legacy(sim, run_id, "&model=kling-video-v2").json()
    assert set(body) == {"data"}
    assert body["data"]["status"] == "IN_QUEUE"
    assert body["data"]["request_id"] == run_id
    assert body["data"]["output"] is None
    sim.advance(5)
    assert legacy(sim, run_id).json()["data"]["status"] == "IN_PROGRESS"
    sim.advance(10)
    data = legacy(sim, run_id, "&modelSlug=kling-video-v2").json()["data"]
    assert data["status"] == "COMPLETED"
    assert data["output"] == {"video": {"url": f"{sim.url}/files/videos/{run_id}.mp4"}}
    assert data["cost"] == 0.35
    assert data["error"] is None
    assert data["isNSFWError"] is False
    assert set(data) == {
        "status",
        "request_id",
        "output",
        "cost",
        "error",
        "isNSFWError",
        "userFriendlyError",
    }


def test_legacy_status_errors(sim: NanoGPTSimulator) -> None:
    run_id = submit_ok(sim)
    assert call(sim, "GET", "/api/generate-video/status").status == 400
    assert call(sim, "GET", f"/api/generate-video/status?requestId={run_id}").status == 400
    assert legacy(sim, "vid_unknown").status == 404
    assert legacy(sim, run_id, "&model=veo3-video").status == 404


def test_video_url_follows_the_host_header(sim: NanoGPTSimulator) -> None:
    run_id = submit_ok(sim, "[sim:queue=0][sim:render=0]")
    body = call(
        sim,
        "GET",
        f"/api/video/status?requestId={run_id}",
        headers={"Host": f"localhost:{sim.port}"},
    ).json()
    assert body["data"]["output"]["video"]["url"] == (
        f"http://localhost:{sim.port}/files/videos/{run_id}.mp4"
    )
    # a hostile Host header is ignored in favour of the bound address
    body = call(
        sim,
        "GET",
        f"/api/video/status?requestId={run_id}",
        headers={"Host": "evil.example/<script>"},
    ).json()
    assert body["data"]["output"]["video"]["url"].startswith(sim.url)
