"""Prompt markers ``[sim:...]``: every test mode a request can select."""

from __future__ import annotations

import http.client
import socket
import time
from typing import Any

import pytest

from airflow_provider_nanogpt.simulator import NanoGPTSimulator

from ._helpers import KEY, call, legacy, poll, submit, submit_ok

FINISH = 20.0  # simulated seconds: past the default 2 s queue + 8 s render


def _finish(
    sim: NanoGPTSimulator, prompt: str, shape: str = "nested"
) -> tuple[str, dict[str, Any]]:
    sim.configure(status_shape=shape)
    run_id = submit_ok(sim, prompt)
    sim.advance(FINISH)
    return run_id, poll(sim, run_id).json()


def test_fail_marker(sim: NanoGPTSimulator) -> None:
    run_id, body = _finish(sim, "a fox [sim:fail]")
    data = body["data"]
    assert data["status"] == "FAILED"
    assert data["error"]
    assert data["userFriendlyError"]
    assert data["isNSFWError"] is False
    assert "output" not in data
    # refunded
    assert sim.state()["balance_usd"] == 100.0
    assert sim.state()["jobs"][0]["refunded"] is True
    flat = call(sim, "GET", f"/api/video/status?requestId={run_id}")
    assert flat.json()["data"]["status"] == "FAILED"
    sim.configure(status_shape="flat")
    flat_body = poll(sim, run_id).json()
    assert flat_body["status"] == "failed"
    assert flat_body["error"] == data["error"]
    legacy_data = legacy(sim, run_id).json()["data"]
    assert legacy_data["status"] == "FAILED"
    assert legacy_data["userFriendlyError"]


def test_refund_happens_even_without_polling(sim: NanoGPTSimulator) -> None:
    submit_ok(sim, "[sim:fail]")
    assert sim.state()["balance_usd"] == pytest.approx(99.65)
    sim.advance(FINISH)
    balance = call(sim, "POST", "/api/check-balance").json()["usd_balance"]
    assert balance == "100.00000000"


def test_nsfw_marker(sim: NanoGPTSimulator) -> None:
    _, body = _finish(sim, "[sim:nsfw]")
    data = body["data"]
    assert data["status"] == "FAILED"
    assert data["error"] == "Content policy violation"
    assert data["isNSFWError"] is True
    assert data["userFriendlyError"]
    assert sim.state()["balance_usd"] == 100.0


def test_blocked_marker(sim: NanoGPTSimulator) -> None:
    resp = submit(sim, "[sim:blocked] something")
    assert resp.status == 400
    body = resp.json()
    assert body["status"] == 400
    assert body["error"]["type"] == "CONTENT_POLICY_VIOLATION"
    assert body["error"]["message"].startswith("Your prompt was blocked due to safety concerns")
    state = sim.state()
    assert state["jobs"] == []
    assert state["balance_usd"] == 100.0


def test_cancel_marker_default_spellings(sim: NanoGPTSimulator) -> None:
    run_id, body = _finish(sim, "[sim:cancel]")
    assert body["data"]["status"] == "CANCELED"
    sim.configure(status_shape="flat")
    assert poll(sim, run_id).json()["status"] == "cancelled"
    assert legacy(sim, run_id).json()["data"]["status"] == "CANCELED"
    items = call(sim, "GET", "/api/generate-video/recover").json()["data"]
    assert items[0]["status"] == "cancelled"
    assert sim.state()["balance_usd"] == 100.0  # cancelled jobs are refunded


@pytest.mark.parametrize("spelling", ["CANCELED", "CANCELLED", "cancelled", "canceled"])
@pytest.mark.parametrize("shape", ["nested", "flat"])
def test_cancel_spelling(sim: NanoGPTSimulator, spelling: str, shape: str) -> None:
    _, body = _finish(sim, f"[sim:cancel][sim:cancel_spelling={spelling}]", shape)
    status = body["data"]["status"] if shape == "nested" else body["status"]
    assert status == spelling


def test_never_marker(sim: NanoGPTSimulator) -> None:
    run_id = submit_ok(sim, "[sim:never]")
    sim.advance(10_000)
    data = poll(sim, run_id).json()["data"]
    assert data["status"] == "IN_PROGRESS"
    assert data["progress"] < 100
    assert sim.state()["balance_usd"] == pytest.approx(99.65)
    assert call(sim, "GET", f"/files/videos/{run_id}.mp4", key=None).status == 404
    assert sim.state()["jobs"][0]["status"] == "processing"


def test_queue_and_render_markers(sim: NanoGPTSimulator) -> None:
    quick = submit_ok(sim, "[sim:queue=0][sim:render=1]")
    slow = submit_ok(sim, "[sim:queue=50]")
    sim.advance(1.5)
    assert poll(sim, quick).json()["data"]["status"] == "COMPLETED"
    assert poll(sim, slow).json()["data"]["status"] == "IN_QUEUE"
    sim.advance(50)
    assert poll(sim, slow).json()["data"]["status"] == "IN_PROGRESS"


def test_queue_render_combine_with_fail(sim: NanoGPTSimulator) -> None:
    run_id = submit_ok(sim, "[sim:fail][sim:queue=0][sim:render=0.5]")
    sim.advance(0.6)
    assert poll(sim, run_id).json()["data"]["status"] == "FAILED"


def test_shape_marker_overrides_config(sim: NanoGPTSimulator) -> None:
    flat = submit_ok(sim, "[sim:shape=flat]")
    nested = submit_ok(sim, "plain")
    alternating = submit_ok(sim, "[sim:shape=alternate]")
    assert poll(sim, flat).json()["status"] == "queued"
    assert "data" in poll(sim, nested).json()
    assert "data" in poll(sim, alternating).json()
    assert "data" not in poll(sim, alternating).json()
    sim.configure(status_shape="flat")
    assert "data" not in poll(sim, nested).json()
    forced = submit_ok(sim, "[sim:shape=nested]")
    assert "data" in poll(sim, forced).json()


def test_no_url_marker(sim: NanoGPTSimulator) -> None:
    run_id, body = _finish(sim, "[sim:no_url]")
    assert body["data"]["status"] == "COMPLETED"
    assert "output" not in body["data"]
    sim.configure(status_shape="flat")
    flat = poll(sim, run_id).json()
    assert flat["status"] == "completed"
    assert flat["videoUrl"] is None
    assert legacy(sim, run_id).json()["data"]["output"] is None
    assert call(sim, "GET", f"/files/videos/{run_id}.mp4", key=None).status == 404


def _url_of(body: dict[str, Any]) -> str | None:
    """The video URL of a nested, flat or legacy status body (None when there is none)."""
    if "data" in body:
        output = body["data"].get("output")
        return None if output is None else output["video"]["url"]
    url: str | None = body["videoUrl"]
    return url


def _completed(body: dict[str, Any]) -> bool:
    status = body["data"]["status"] if "data" in body else body["status"]
    return status in ("COMPLETED", "completed")


@pytest.mark.parametrize("shape", ["nested", "flat", "legacy"])
def test_no_url_polls_marker(sim: NanoGPTSimulator, shape: str) -> None:
    if shape != "legacy":
        sim.configure(status_shape=shape)
    run_id = submit_ok(sim, "[sim:no_url_polls=2]")
    assert sim.state()["jobs"][0]["markers"] == {"no_url_polls": 2}
    get = legacy if shape == "legacy" else poll

    # polls before completion do not count
    for _ in range(3):
        assert not _completed(get(sim, run_id).json())
    sim.advance(FINISH)
    expected = f"{sim.url}/files/videos/{run_id}.mp4"
    bodies = [get(sim, run_id).json() for _ in range(4)]
    assert all(_completed(body) for body in bodies)
    assert [_url_of(body) for body in bodies] == [None, None, expected, expected]

    first = bodies[0]
    if shape == "nested":
        assert "output" not in first["data"]
        assert first["data"]["cost"] == 0.35
    elif shape == "flat":
        assert first["videoUrl"] is None
        assert first["progress"] == 100
        assert first["completedAt"] is not None
    else:
        assert first["data"]["output"] is None
        assert first["data"]["cost"] == 0.35
    # the download works as for any completed job, even while the URL is withheld
    assert call(sim, "GET", f"/files/videos/{run_id}.mp4", key=None).status == 200


def test_no_url_polls_counts_every_status_endpoint_and_shape(sim: NanoGPTSimulator) -> None:
    run_id = submit_ok(sim, "[sim:no_url_polls=3][sim:shape=alternate]")
    sim.advance(FINISH)
    nested = poll(sim, run_id).json()  # alternate: nested first
    assert "data" in nested and _completed(nested)
    assert _url_of(nested) is None
    flat = poll(sim, run_id).json()
    assert "data" not in flat and _completed(flat)
    assert _url_of(flat) is None
    assert _url_of(legacy(sim, run_id).json()) is None
    expected = f"{sim.url}/files/videos/{run_id}.mp4"
    assert _url_of(legacy(sim, run_id).json()) == expected
    assert _url_of(poll(sim, run_id).json()) == expected  # nested
    assert _url_of(poll(sim, run_id).json()) == expected  # flat


def test_no_url_polls_zero_and_error_polls(sim: NanoGPTSimulator) -> None:
    plain = submit_ok(sim, "[sim:no_url_polls=0]")
    # 404 and UNKNOWN answers do not report COMPLETED, so they do not use up the window
    gated = submit_ok(sim, "[sim:no_url_polls=1][sim:status404=1][sim:unknown=1]")
    sim.advance(FINISH)
    assert _url_of(poll(sim, plain).json()) is not None
    assert poll(sim, gated).status == 404
    assert poll(sim, gated).json()["data"]["status"] == "UNKNOWN"
    withheld = poll(sim, gated).json()
    assert _completed(withheld) and _url_of(withheld) is None
    assert _url_of(poll(sim, gated).json()) is not None


def test_no_url_still_wins_over_no_url_polls(sim: NanoGPTSimulator) -> None:
    run_id = submit_ok(sim, "[sim:no_url][sim:no_url_polls=1]")
    sim.advance(FINISH)
    for _ in range(3):
        body = poll(sim, run_id).json()
        assert _completed(body) and _url_of(body) is None
    assert call(sim, "GET", f"/files/videos/{run_id}.mp4", key=None).status == 404


def test_size_marker(sim: NanoGPTSimulator) -> None:
    run_id = submit_ok(sim, "[sim:size=1000][sim:queue=0][sim:render=0]")
    resp = call(sim, "GET", f"/files/videos/{run_id}.mp4", key=None)
    assert resp.status == 200
    assert resp.headers["Content-Length"] == "1000"
    assert len(resp.body) == 1000
    assert resp.body[4:8] == b"ftyp"


def test_truncate_marker(sim: NanoGPTSimulator) -> None:
    run_id = submit_ok(sim, "[sim:truncate][sim:size=200000][sim:queue=0][sim:render=0]")
    conn = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=5)
    try:
        conn.request("GET", f"/files/videos/{run_id}.mp4")
        resp = conn.getresponse()
        assert resp.headers["Content-Length"] == "200000"
        with pytest.raises(http.client.IncompleteRead) as info:
            resp.read()
        assert len(info.value.partial) < 200000
    finally:
        conn.close()


def test_status404_marker(sim: NanoGPTSimulator) -> None:
    run_id = submit_ok(sim, "[sim:status404=2]")
    assert poll(sim, run_id).status == 404
    assert legacy(sim, run_id).status == 404
    assert poll(sim, run_id).status == 200
    assert sim.state()["jobs"][0]["polls"] == 3


def test_status429_and_status500_markers(sim: NanoGPTSimulator) -> None:
    run_id = submit_ok(sim, "[sim:status404=1][sim:status429=2][sim:status500=1]")
    assert poll(sim, run_id).status == 404
    limited = poll(sim, run_id)
    assert limited.status == 429
    assert limited.headers["Retry-After"] == "1"
    assert poll(sim, run_id).status == 429
    failed = poll(sim, run_id)
    assert failed.status == 500
    assert failed.json() == {"error": "Failed to check video generation status", "status": 500}
    assert poll(sim, run_id).status == 200


def test_status429_retry_after_is_time_scaled(fast_sim: NanoGPTSimulator) -> None:
    run_id = submit_ok(fast_sim, "[sim:status429=1]")
    assert poll(fast_sim, run_id).headers["Retry-After"] == "0.02"


def test_submit500_marker_creates_and_charges(sim: NanoGPTSimulator) -> None:
    resp = submit(sim, "[sim:submit500]", conversationUUID="c-500")
    assert resp.status == 500
    assert resp.json() == {"error": "Video generation failed", "status": 500}
    state = sim.state()
    assert state["submits_accepted"] == 1
    assert state["balance_usd"] == pytest.approx(99.65)
    recovered = call(sim, "GET", "/api/generate-video/recover?conversationUUID=c-500").json()
    (item,) = recovered["data"]
    sim.advance(FINISH)
    assert poll(sim, item["runId"]).json()["data"]["status"] == "COMPLETED"


@pytest.mark.timing
def test_submit_slow_marker_times_out_after_creating() -> None:
    with NanoGPTSimulator(api_key=KEY, time_scale=0.05, quiet=True) as sim:
        started = time.monotonic()
        with pytest.raises((TimeoutError, socket.timeout)):
            call(
                sim,
                "POST",
                "/api/generate-video",
                {"model": "kling-video-v2", "prompt": "[sim:submit_slow=20]"},
                timeout=0.3,
            )
        assert time.monotonic() - started < 0.9
        assert sim.state()["submits_accepted"] == 1  # the job exists already
        # with a patient client the 202 arrives after 20 * 0.05 = 1 real second
        started = time.monotonic()
        resp = submit(sim, "[sim:submit_slow=20]")
        assert resp.status == 202
        assert 0.8 < time.monotonic() - started < 3


def test_unknown_marker(sim: NanoGPTSimulator) -> None:
    run_id = submit_ok(sim, "[sim:unknown=1][sim:shape=flat]")
    assert poll(sim, run_id).json()["status"] == "unknown"
    assert poll(sim, run_id).json()["status"] == "queued"
    nested = submit_ok(sim, "[sim:unknown=1]")
    assert poll(sim, nested).json()["data"]["status"] == "UNKNOWN"


def test_intermediate_marker(sim: NanoGPTSimulator) -> None:
    run_id = submit_ok(sim, "[sim:intermediate][sim:shape=flat]")
    assert poll(sim, run_id).json()["status"] == "pending"
    sim.advance(3)
    assert poll(sim, run_id).json()["status"] == "generating"
    sim.advance(6)
    assert poll(sim, run_id).json()["status"] == "delivering"
    sim.advance(5)
    assert poll(sim, run_id).json()["status"] == "completed"


@pytest.mark.parametrize(
    "prompt",
    [
        "[sim:explode]",
        "[sim:fail=1]",
        "[sim:render]",
        "[sim:render=abc]",
        "[sim:queue=-1]",
        "[sim:shape=round]",
        "[sim:cancel_spelling=Cancelled]",
        "[sim:size=1.5]",
        "[sim:status404=x]",
        "[sim:no_url_polls]",
        "[sim:no_url_polls=-1]",
        "[sim:no_url_polls=1.5]",
        "[sim:no_url_polls=two]",
    ],
)
def test_invalid_markers_are_400(sim: NanoGPTSimulator, prompt: str) -> None:
    resp = submit(sim, prompt)
    assert resp.status == 400
    assert "[sim:" in resp.json()["error"]
    assert sim.state()["jobs"] == []


def test_markers_are_listed_in_state(sim: NanoGPTSimulator) -> None:
    submit_ok(sim, "x [sim:fail] [sim:render=3] [sim:status404=1]")
    assert sim.state()["jobs"][0]["markers"] == {"fail": True, "render": 3.0, "status404": 1}
