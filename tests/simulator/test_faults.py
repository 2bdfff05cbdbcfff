"""Fault injection through /_sim/faults and NanoGPTSimulator.add_fault."""

from __future__ import annotations

import http.client
import json
import time

import pytest

from airflow_provider_nanogpt.simulator import NanoGPTSimulator

from ._helpers import KEY, call, legacy, poll, submit, submit_ok

ENDPOINT_CALLS = {
    "submit": ("POST", "/api/generate-video"),
    "status": ("GET", "/api/video/status?requestId={run_id}"),
    "legacy_status": ("GET", "/api/generate-video/status?runId={run_id}"),
    "balance": ("POST", "/api/check-balance"),
    "models": ("GET", "/api/v1/video-models"),
    "recover": ("GET", "/api/generate-video/recover"),
    "download": ("GET", "/files/videos/{run_id}.mp4"),
}


def _hit(sim: NanoGPTSimulator, endpoint: str, run_id: str) -> http.client.HTTPResponse | None:
    method, path = ENDPOINT_CALLS[endpoint]
    body = {"model": "kling-video-v2", "prompt": "x"} if endpoint == "submit" else None
    return call(sim, method, path.format(run_id=run_id), body)  # type: ignore[return-value]


@pytest.fixture
def done_run(sim: NanoGPTSimulator) -> str:
    run_id = submit_ok(sim, "[sim:queue=0][sim:render=0]")
    sim.advance(0.1)
    return run_id


@pytest.mark.parametrize("endpoint", sorted(ENDPOINT_CALLS))
@pytest.mark.parametrize("kind", ["429", "500", "502", "503", "404"])
def test_status_code_faults_on_every_endpoint(
    sim: NanoGPTSimulator, done_run: str, endpoint: str, kind: str
) -> None:
    sim.add_fault(endpoint=endpoint, kind=kind, count=1)
    jobs_before = len(sim.state()["jobs"])
    resp = _hit(sim, endpoint, done_run)
    assert resp is not None
    assert resp.status == int(kind)
    body = resp.json()  # type: ignore[attr-defined]
    assert body["status"] == int(kind)
    assert isinstance(body["error"], str)
    assert resp.headers["X-Request-ID"]
    if kind == "429":
        assert resp.headers["Retry-After"] == "1"
    assert len(sim.state()["jobs"]) == jobs_before  # the request was not processed
    assert _hit(sim, endpoint, done_run).status in (200, 202)  # type: ignore[union-attr]


def test_429_without_retry_after(sim: NanoGPTSimulator) -> None:
    sim.add_fault(endpoint="submit", kind="429_no_retry_after", count=1)
    resp = submit(sim)
    assert resp.status == 429
    assert "Retry-After" not in resp.headers
    assert resp.json()["error"].startswith("Rate limit exceeded")  # type: ignore[attr-defined]
    assert sim.state()["submits_accepted"] == 0
    assert submit(sim).status == 202


def test_fault_count_and_fifo(sim: NanoGPTSimulator) -> None:
    sim.add_fault(endpoint="submit", kind="429", count=2, retry_after=3)
    sim.add_fault(endpoint="submit", kind="500")
    codes = [submit(sim).status for _ in range(4)]
    assert codes == [429, 429, 500, 202]
    state = sim.state()
    assert state["submits_accepted"] == 1
    assert state["submit_requests"] == 4
    assert state["balance_usd"] == pytest.approx(99.65)


def test_faults_match_only_their_endpoint(sim: NanoGPTSimulator) -> None:
    sim.add_fault(endpoint="balance", kind="500")
    assert submit(sim).status == 202
    assert call(sim, "GET", "/api/v1/video-models").status == 200
    assert call(sim, "POST", "/api/check-balance").status == 500


def test_any_endpoint(sim: NanoGPTSimulator) -> None:
    sim.add_fault(endpoint="any", kind="503", count=2)
    assert call(sim, "GET", "/api/v1/video-models").status == 503
    assert submit(sim).status == 503
    assert submit(sim).status == 202
    # control endpoints are never faulted
    sim.add_fault(endpoint="any", kind="500")
    assert call(sim, "GET", "/_sim/state").status == 200


def test_retry_after_is_time_scaled() -> None:
    with NanoGPTSimulator(api_key=KEY, time_scale=0.05, quiet=True) as sim:
        sim.add_fault(endpoint="submit", kind="429", retry_after=5)  # 0.25 real s
        sim.add_fault(endpoint="submit", kind="429", retry_after=60)  # 3 real s
        sim.add_fault(endpoint="submit", kind="503", retry_after=30)
        assert submit(sim).headers["Retry-After"] == "0.25"
        assert submit(sim).headers["Retry-After"] == "3"
        assert submit(sim).headers["Retry-After"] == "2"  # ceil(1.5)


@pytest.mark.parametrize(
    ("shape", "check"),
    [
        ("string", lambda b: b == {"error": "Video generation failed", "status": 500}),
        (
            "typed",
            lambda b: (
                b == {"error": {"message": "Video generation failed", "type": "INTERNAL_ERROR"}}
            ),
        ),
        (
            "openai",
            lambda b: (
                b["error"]["message"] == "Video generation failed"
                and set(b["error"]) == {"message", "type", "code", "param"}
            ),
        ),
        ("openapi", lambda b: b == {"error": 500, "message": "Video generation failed"}),
    ],
)
def test_body_shapes(sim: NanoGPTSimulator, shape: str, check: object) -> None:
    sim.add_fault(endpoint="submit", kind="500", body_shape=shape)
    resp = submit(sim)
    assert resp.status == 500
    assert check(resp.json())  # type: ignore[operator]


def test_rate_limit_fault_typed_shape(sim: NanoGPTSimulator) -> None:
    sim.add_fault(endpoint="submit", kind="429", body_shape="typed")
    body = submit(sim).json()
    assert body["error"]["type"] == "RATE_LIMITED"
    assert body["error"]["message"].startswith("Rate limit exceeded")


def test_reset_fault_closes_without_response(sim: NanoGPTSimulator, done_run: str) -> None:
    sim.add_fault(endpoint="submit", kind="reset")
    with pytest.raises(ConnectionError):  # RemoteDisconnected or ConnectionResetError
        submit(sim)
    assert sim.state()["submits_accepted"] == 1  # only the done_run fixture's job
    sim.add_fault(endpoint="status", kind="reset")
    with pytest.raises(ConnectionError):
        poll(sim, done_run)
    assert poll(sim, done_run).status == 200
    assert sim.state()["request_log"][-2]["status"] == 0


@pytest.mark.timing
def test_timeout_fault_delays_then_processes() -> None:
    with NanoGPTSimulator(api_key=KEY, time_scale=0.05, quiet=True) as sim:
        sim.add_fault(endpoint="submit", kind="timeout", delay=10)  # 0.5 real s
        started = time.monotonic()
        resp = submit(sim)
        elapsed = time.monotonic() - started
        assert resp.status == 202
        assert 0.45 < elapsed < 2.0
        sim.add_fault(endpoint="submit", kind="timeout", delay=12)  # 0.6 real s
        with pytest.raises(TimeoutError):
            call(
                sim,
                "POST",
                "/api/generate-video",
                {"model": "kling-video-v2", "prompt": "x"},
                timeout=0.2,
            )
        assert sim.state()["submits_accepted"] == 1
        deadline = time.monotonic() + 3
        while sim.state()["submits_accepted"] < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        # the slow request was processed after its delay, like a real read timeout
        assert sim.state()["submits_accepted"] == 2


def test_malformed_fault(sim: NanoGPTSimulator, done_run: str) -> None:
    sim.add_fault(endpoint="status", kind="malformed")
    resp = poll(sim, done_run)
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("application/json")
    with pytest.raises(json.JSONDecodeError):
        resp.json()


def test_daily_cap_fault(sim: NanoGPTSimulator) -> None:
    sim.add_fault(endpoint="submit", kind="daily_cap")
    resp = submit(sim)
    assert resp.status == 429
    error = resp.json()["error"]
    assert error["code"] == "daily_rpd_limit_exceeded"
    assert error["type"] == "rate_limit_error"
    assert "Daily request limit exceeded" in error["message"]
    assert 1 <= int(resp.headers["Retry-After"]) <= 86400
    sim.add_fault(endpoint="submit", kind="daily_cap", retry_after=7)
    assert submit(sim).headers["Retry-After"] == "7"


@pytest.mark.parametrize(
    ("kind", "code"),
    [("daily_cap", "daily_rpd_limit_exceeded"), ("daily_usd_cap", "daily_usd_limit_exceeded")],
)
@pytest.mark.parametrize(
    ("shape", "where"),
    [
        ("string", lambda b: (b["error"]["code"], b["error"]["type"] == "rate_limit_error")),
        ("openai", lambda b: (b["error"]["code"], b["error"]["type"] == "rate_limit_error")),
        ("typed", lambda b: (b["error"]["type"], "code" not in b["error"])),
        ("openapi", lambda b: (b["code"], b["error"] == 429)),
    ],
)
def test_daily_cap_faults_name_their_cap_where_the_shape_puts_it(
    sim: NanoGPTSimulator, kind: str, code: str, shape: str, where: object
) -> None:
    sim.add_fault(endpoint="submit", kind=kind, body_shape=shape, retry_after=7)
    resp = submit(sim)
    assert resp.status == 429 and resp.headers["Retry-After"] == "7"
    assert where(resp.json()) == (code, True)  # type: ignore[operator]
    assert sim.state()["submits_accepted"] == 0


def test_404_fault_on_status_and_legacy(sim: NanoGPTSimulator, done_run: str) -> None:
    sim.add_fault(endpoint="status", kind="404")
    sim.add_fault(endpoint="legacy_status", kind="404", body_shape="openapi")
    assert poll(sim, done_run).json() == {"error": "Video not found", "status": 404}
    assert legacy(sim, done_run).json() == {"error": 404, "message": "Video not found"}


def test_fault_endpoints_over_http(sim: NanoGPTSimulator) -> None:
    resp = call(
        sim,
        "POST",
        "/_sim/faults",
        [
            {"endpoint": "models", "kind": "502", "count": 3},
            {"endpoint": "download", "kind": "timeout", "delay": 0.01},
        ],
        key=None,
    )
    assert resp.status == 200
    listed = call(sim, "GET", "/_sim/faults", key=None).json()["faults"]
    assert [f["kind"] for f in listed] == ["502", "timeout"]
    assert listed[0]["remaining"] == 3
    assert call(sim, "GET", "/api/v1/video-models").status == 502
    assert call(sim, "GET", "/_sim/faults", key=None).json()["faults"][0]["remaining"] == 2
    assert call(sim, "DELETE", "/_sim/faults", key=None).json() == {"faults": []}
    assert call(sim, "GET", "/api/v1/video-models").status == 200


@pytest.mark.parametrize(
    "spec",
    [
        {"endpoint": "nowhere", "kind": "500"},
        {"endpoint": "submit", "kind": "418"},
        {"endpoint": "submit", "kind": "500", "count": 0},
        {"endpoint": "submit", "kind": "500", "body_shape": "xml"},
        {"endpoint": "submit", "kind": "429", "retry_after": -1},
        {"endpoint": "submit", "kind": "500", "colour": "red"},
        "not an object",
    ],
)
def test_invalid_fault_specs(sim: NanoGPTSimulator, spec: object) -> None:
    resp = call(sim, "POST", "/_sim/faults", spec, key=None)
    assert resp.status == 400
    assert call(sim, "GET", "/_sim/faults", key=None).json()["faults"] == []


def test_add_fault_python_api_validates(sim: NanoGPTSimulator) -> None:
    with pytest.raises(ValueError, match="kind"):
        sim.add_fault(endpoint="submit", kind="teapot")
    fault = sim.add_fault(endpoint="submit", kind=429, count=2, retry_after=1.0)
    assert fault["kind"] == "429"
    assert fault["remaining"] == 2
    sim.clear_faults()
    assert sim.state()["faults"] == []


def test_transient_fault_rate_faults_about_that_share_of_requests() -> None:
    with NanoGPTSimulator(api_key=None, time_scale=0.02, quiet=True) as sim:
        sim.configure(transient_fault_rate=0.3)
        statuses = []
        for _ in range(200):
            try:
                statuses.append(call(sim, "GET", "/api/v1/video-models", key=None).status)
            except (ConnectionError, OSError):
                statuses.append(0)
        faulted = sum(1 for s in statuses if s in (0, 503))
        assert 30 <= faulted <= 90
        assert set(statuses) <= {0, 200, 503}
