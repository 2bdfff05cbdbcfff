"""``GET /api/v1/usage``: the key's spend and refunds by UTC day and model."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from airflow_provider_nanogpt.simulator import NanoGPTSimulator

from ._helpers import call


def _submit(sim: NanoGPTSimulator, prompt: str, model: str = "kling-video-v2") -> None:
    body = {"model": model, "prompt": prompt, "duration": "5"}
    assert call(sim, "POST", "/api/generate-video", body).status == 202


def test_usage_sums_the_keys_spend_and_refunds_by_day_and_model(
    open_sim: NanoGPTSimulator,
) -> None:
    today = datetime.now(UTC).date().isoformat()
    _submit(open_sim, "kept")
    _submit(open_sim, "refunded [sim:fail]")
    call(
        open_sim,
        "POST",
        "/api/generate-video",
        {"model": "kling-video-v2", "prompt": "x"},
        key="sk-nano-someone-else",
    )
    open_sim.advance(60)
    answer = call(open_sim, "GET", f"/api/v1/usage?from={today}&to={today}&group_by=day")
    assert answer.status == 200
    body = answer.json()
    assert body["currency"] == "USD"
    [day] = body["data"]
    cost = day["spend"] / 2
    assert day == {"day": today, "requests": 2, "spend": 2 * cost, "refunds": cost}
    by_model = call(open_sim, "GET", f"/api/v1/usage?from={today}&to={today}&group_by=day,model")
    assert by_model.json()["data"][0]["model"] == "kling-video-v2"
    earlier = call(open_sim, "GET", "/api/v1/usage?from=2000-01-01&to=2000-01-02")
    assert earlier.json()["data"] == []


@pytest.mark.parametrize(
    "query",
    [
        "from=yesterday&to=2026-01-01",
        "to=2026-01-01",
        "from=2026-01-01&to=2026-01-01&group_by=week",
    ],
)
def test_usage_refuses_an_unreadable_query(open_sim: NanoGPTSimulator, query: str) -> None:
    assert call(open_sim, "GET", f"/api/v1/usage?{query}").status == 400


def test_usage_needs_a_key_and_takes_faults(open_sim: NanoGPTSimulator) -> None:
    assert (
        call(open_sim, "GET", "/api/v1/usage?from=2026-01-01&to=2026-01-01", key=None).status == 401
    )
    open_sim.add_fault("usage", "503")
    assert call(open_sim, "GET", "/api/v1/usage?from=2026-01-01&to=2026-01-01").status == 503
