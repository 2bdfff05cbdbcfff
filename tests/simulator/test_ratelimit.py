"""Per-IP sliding-window rate limits on submit (50/min) and recover (20/min), time-scaled."""

from __future__ import annotations

import time

import pytest

from airflow_provider_nanogpt.simulator import NanoGPTSimulator
from airflow_provider_nanogpt.simulator.clock import format_retry_after
from airflow_provider_nanogpt.simulator.ratelimit import SlidingWindowLimiter

from ._helpers import KEY, call, submit

RATE_LIMIT_BODY = {
    "error": "Rate limit exceeded. Please wait before generating another video.",
    "status": 429,
}


def test_submit_rate_limit_with_time_scale() -> None:
    # 60 simulated seconds * 0.01 = a 0.6 real-second window
    with NanoGPTSimulator(api_key=KEY, time_scale=0.01, rate_limit_per_minute=3, quiet=True) as sim:
        assert [submit(sim).status for _ in range(3)] == [202, 202, 202]
        limited = submit(sim)
        assert limited.status == 429
        assert limited.json() == RATE_LIMIT_BODY
        retry_after = float(limited.headers["Retry-After"])
        assert 0 < retry_after <= 0.6
        assert "." in limited.headers["Retry-After"]  # sub-second values are decimals
        state = sim.state()
        assert state["submits_accepted"] == 3
        assert state["submit_requests"] == 4
        assert state["balance_usd"] == pytest.approx(100 - 3 * 0.35)
        time.sleep(retry_after + 0.05)
        assert submit(sim).status == 202


def test_retry_after_is_an_integer_when_at_least_one_second(sim: NanoGPTSimulator) -> None:
    sim.configure(rate_limit_per_minute=1)
    assert submit(sim).status == 202
    limited = submit(sim)
    assert limited.status == 429
    assert limited.headers["Retry-After"] in ("60", "59")
    sim.advance(61)
    assert submit(sim).status == 202


def test_default_submit_limit_is_50_per_minute(sim: NanoGPTSimulator) -> None:
    codes = [submit(sim, "[sim:blocked]").status for _ in range(50)]
    assert codes == [400] * 50  # rejected requests still take a slot
    assert submit(sim).status == 429


def test_recover_limit_is_20_per_minute(sim: NanoGPTSimulator) -> None:
    codes = [call(sim, "GET", "/api/generate-video/recover").status for _ in range(21)]
    assert codes == [200] * 20 + [429]
    limited = call(sim, "GET", "/api/generate-video/recover")
    assert limited.headers["Retry-After"]
    assert limited.json()["status"] == 429
    sim.advance(60)
    assert call(sim, "GET", "/api/generate-video/recover").status == 200


def test_status_polls_are_not_rate_limited(sim: NanoGPTSimulator) -> None:
    sim.configure(rate_limit_per_minute=1)
    run_id = submit(sim).json()["runId"]
    codes = {call(sim, "GET", f"/api/video/status?requestId={run_id}").status for _ in range(30)}
    assert codes == {200}


def test_reset_clears_windows(sim: NanoGPTSimulator) -> None:
    sim.configure(rate_limit_per_minute=1)
    submit(sim)
    assert submit(sim).status == 429
    sim.reset()
    sim.configure(rate_limit_per_minute=1)
    assert submit(sim).status == 202


def test_zero_disables_the_limit(sim: NanoGPTSimulator) -> None:
    sim.configure(rate_limit_per_minute=0)
    assert {submit(sim, "[sim:blocked]").status for _ in range(60)} == {400}


def test_limiter_unit() -> None:
    limiter = SlidingWindowLimiter(2, window=10)
    assert limiter.acquire("ip", 0.0) is None
    assert limiter.acquire("ip", 1.0) is None
    assert limiter.acquire("ip", 2.0) == pytest.approx(8.0)
    assert limiter.acquire("other", 2.0) is None
    assert limiter.acquire("ip", 10.0) is None  # the first hit expired
    assert limiter.acquire("ip", 10.5) == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("seconds", "header"),
    [(0.35, "0.35"), (0.001, "0.01"), (0.999, "1.00"), (1.0, "1"), (1.2, "2"), (60.0, "60")],
)
def test_format_retry_after(seconds: float, header: str) -> None:
    assert format_retry_after(seconds) == header
