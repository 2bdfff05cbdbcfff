"""Control endpoints (/_sim/*), the Python API, routing and key hygiene."""

from __future__ import annotations

import http.client
import json
import time

import pytest

from airflow_provider_nanogpt.simulator import NanoGPTSimulator

from ._helpers import KEY, call, poll, submit, submit_ok

STATE_KEYS = {
    "submits_accepted",
    "submit_requests",
    "requests",
    "jobs",
    "balance_usd",
    "time_scale",
    "request_log",
}


def test_state_over_http_matches_python_api(sim: NanoGPTSimulator) -> None:
    submit_ok(sim)
    over_http = call(sim, "GET", "/_sim/state", key=None).json()
    local = sim.state()
    assert set(over_http) >= STATE_KEYS
    assert set(over_http) == set(local)
    assert over_http["jobs"] == local["jobs"]
    job = local["jobs"][0]
    assert {
        "runId",
        "model",
        "status",
        "payload",
        "conversationUUID",
        "created_at",
        "api_key_header",
        "polls",
    } <= set(job)
    json.dumps(local)  # JSON-able


def test_state_never_contains_the_key(sim: NanoGPTSimulator) -> None:
    run_id = submit_ok(sim)
    call(
        sim,
        "POST",
        "/api/generate-video",
        {"model": "kling-video-v2", "prompt": "x"},
        auth="bearer",
    )
    poll(sim, run_id)
    call(sim, "GET", f"/api/video/status?requestId={run_id}&api_key={KEY}")
    call(sim, "POST", "/api/check-balance", key="sk-nano-wrong-key")
    for document in (
        json.dumps(sim.state()),
        call(sim, "GET", "/_sim/state").body.decode(),
        call(sim, "GET", "/_sim/config").body.decode(),
    ):
        assert KEY not in document
        assert "sk-nano-wrong-key" not in document
    assert all("?" not in entry["path"] for entry in sim.state()["request_log"])


KEYED = {"credential_headers": ["x-api-key"]}  # header names only, never values


def test_request_counters_and_log(sim: NanoGPTSimulator) -> None:
    run_id = submit_ok(sim)
    poll(sim, run_id)
    poll(sim, run_id)
    call(sim, "GET", "/api/v1/video-models")
    call(sim, "GET", "/_sim/state")
    state = sim.state()
    assert state["requests"] == {
        "POST /api/generate-video": 1,
        "GET /api/video/status": 2,
        "GET /api/v1/video-models": 1,
    }
    assert state["request_log"] == [
        {"method": "POST", "path": "/api/generate-video", "status": 202, **KEYED},
        {"method": "GET", "path": "/api/video/status", "status": 200, **KEYED},
        {"method": "GET", "path": "/api/video/status", "status": 200, **KEYED},
        {"method": "GET", "path": "/api/v1/video-models", "status": 200, **KEYED},
    ]


def test_reset_restores_everything(sim: NanoGPTSimulator) -> None:
    submit_ok(sim)
    sim.configure(balance_usd=5, status_shape="flat", queue_seconds=0)
    sim.add_fault(endpoint="models", kind="500")
    resp = call(sim, "POST", "/_sim/reset", key=None)
    assert resp.status == 200
    state = sim.state()
    assert state["jobs"] == []
    assert state["submits_accepted"] == 0
    assert state["submit_requests"] == 0
    assert state["requests"] == {}
    assert state["request_log"] == []
    assert state["faults"] == []
    assert state["balance_usd"] == 100.0
    assert state["config"]["status_shape"] == "nested"
    assert state["config"]["queue_seconds"] == 2.0
    assert call(sim, "GET", "/api/v1/video-models").status == 200


def test_python_reset(sim: NanoGPTSimulator) -> None:
    submit_ok(sim)
    sim.reset()
    assert sim.state()["jobs"] == []


def test_config_endpoint(sim: NanoGPTSimulator) -> None:
    resp = call(
        sim,
        "POST",
        "/_sim/config",
        {
            "balance_usd": 1.5,
            "time_scale": 0.5,
            "rate_limit_per_minute": 7,
            "status_shape": "flat",
            "queue_seconds": 1,
            "render_seconds": 3,
        },
        key=None,
    )
    assert resp.status == 200
    config = resp.json()
    assert config["time_scale"] == 0.5
    assert config["rate_limit_per_minute"] == 7
    assert "api_key" not in config
    assert config["api_key_required"] is True
    state = sim.state()
    assert state["balance_usd"] == 1.5
    assert state["time_scale"] == 0.5
    run_id = submit_ok(sim)
    assert poll(sim, run_id).json()["status"] == "queued"
    sim.advance(1.5)
    assert poll(sim, run_id).json()["status"] == "processing"
    sim.advance(3)
    assert poll(sim, run_id).json()["status"] == "completed"


@pytest.mark.parametrize(
    "update",
    [
        {"time_scale": 0},
        {"time_scale": "fast"},
        {"status_shape": "square"},
        {"balance_usd": -1},
        {"rate_limit_per_minute": 1.5},
        {"latency_seconds": -0.1},
        {"recover_lag_seconds": -1},
        {"recover_lag_seconds": "soon"},
        {"recover_lag_seconds": None},
        {"api_key": ""},
        {"unknown_field": 1},
        [1, 2],
    ],
)
def test_invalid_config_is_400(sim: NanoGPTSimulator, update: object) -> None:
    assert call(sim, "POST", "/_sim/config", update, key=None).status == 400
    if isinstance(update, dict):
        with pytest.raises(ValueError, match=r"\w"):
            sim.configure(**update)


@pytest.mark.timing
def test_latency_delays_api_responses_but_not_control(sim: NanoGPTSimulator) -> None:
    sim.configure(latency_seconds=1.0)
    started = time.perf_counter()
    assert call(sim, "POST", "/api/check-balance").status == 200
    assert time.perf_counter() - started >= 1.0
    started = time.perf_counter()
    call(sim, "GET", "/_sim/state", key=None)
    assert time.perf_counter() - started < 1.0
    sim.reset()
    assert sim.state()["request_log"] == []
    assert call(sim, "GET", "/_sim/config", key=None).json()["latency_seconds"] == 0


def test_changing_the_key(sim: NanoGPTSimulator) -> None:
    run_id = submit_ok(sim)
    sim.configure(api_key="sk-nano-rotated")
    assert call(sim, "POST", "/api/check-balance").status == 401
    assert call(sim, "POST", "/api/check-balance", key="sk-nano-rotated").status == 200
    # the old key's job belongs to another key now
    assert poll(sim, run_id, key="sk-nano-rotated").status == 403
    sim.configure(api_key=None)
    assert call(sim, "POST", "/api/check-balance", key="anything").status == 200


def test_advance_endpoint(sim: NanoGPTSimulator) -> None:
    run_id = submit_ok(sim)
    before = sim.state()["sim_time"]
    resp = call(sim, "POST", "/_sim/advance", {"seconds": 30}, key=None)
    assert resp.status == 200
    assert resp.json()["sim_time"] >= before + 30
    assert poll(sim, run_id).json()["data"]["status"] == "COMPLETED"
    assert call(sim, "POST", "/_sim/advance", {"seconds": -1}, key=None).status == 400
    with pytest.raises(ValueError, match="seconds"):
        sim.advance(-5)


def test_unknown_control_endpoint(sim: NanoGPTSimulator) -> None:
    assert call(sim, "GET", "/_sim/nothing", key=None).status == 404


def test_routing_errors(sim: NanoGPTSimulator) -> None:
    assert call(sim, "GET", "/api/nothing").status == 404
    assert call(sim, "GET", "/api/generate-video").status == 405
    assert call(sim, "DELETE", "/api/video/status").status == 405
    resp = call(sim, "GET", "/")
    assert resp.status == 404
    assert resp.headers["X-Request-ID"]


def test_request_ids_are_unique(sim: NanoGPTSimulator) -> None:
    ids = {call(sim, "GET", "/api/v1/video-models").headers["X-Request-ID"] for _ in range(5)}
    assert len(ids) == 5


def test_keep_alive_connection(sim: NanoGPTSimulator) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=5)
    try:
        for _ in range(3):
            conn.request("POST", "/api/check-balance", headers={"x-api-key": KEY})
            resp = conn.getresponse()
            assert resp.status == 200
            resp.read()
    finally:
        conn.close()


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "example.com", "::"])
def test_refuses_non_loopback_hosts(host: str) -> None:
    with pytest.raises(ValueError, match="loopback"):
        NanoGPTSimulator(host=host)


def test_localhost_and_ipv6_loopback() -> None:
    with NanoGPTSimulator(host="localhost", quiet=True) as sim:
        assert sim.url.startswith("http://127.0.0.1:")
    try:
        ipv6 = NanoGPTSimulator(host="::1", quiet=True).start()
    except OSError:  # pragma: no cover - no IPv6 on this host
        pytest.skip("IPv6 loopback unavailable")
    try:
        assert ipv6.url.startswith("http://[::1]:")
        assert call(ipv6, "GET", "/api/v1/video-models").status == 200
    finally:
        ipv6.stop()


def test_lifecycle_methods() -> None:
    sim = NanoGPTSimulator(quiet=True)
    assert not sim.running
    with pytest.raises(RuntimeError):
        _ = sim.url
    assert sim.start() is sim
    with pytest.raises(RuntimeError):
        sim.start()
    assert sim.api_url == sim.url + "/api"
    sim.stop()
    sim.stop()  # idempotent
    assert not sim.running


def test_invalid_constructor_arguments() -> None:
    with pytest.raises(ValueError, match="time_scale"):
        NanoGPTSimulator(time_scale=0)
    with pytest.raises(ValueError, match="status_shape"):
        NanoGPTSimulator(status_shape="diagonal")
    with pytest.raises(ValueError, match="port"):
        NanoGPTSimulator(port=70000)


def test_submit_counts_are_separate_from_jobs(sim: NanoGPTSimulator) -> None:
    submit(sim, model="nope")
    submit_ok(sim)
    state = sim.state()
    assert state["submit_requests"] == 2
    assert state["submits_accepted"] == 1
