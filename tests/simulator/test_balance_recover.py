"""POST /api/check-balance and GET /api/generate-video/recover."""

from __future__ import annotations

import re
import time

import pytest

from airflow_provider_nanogpt.simulator import NanoGPTSimulator

from ._helpers import KEY, call, poll, submit, submit_ok


def _recovered(sim: NanoGPTSimulator, query: str = "") -> list[str]:
    resp = call(sim, "GET", f"/api/generate-video/recover{query}")
    assert resp.status == 200, resp.body
    return [item["runId"] for item in resp.json()["data"]]


def test_check_balance_returns_strings(sim: NanoGPTSimulator) -> None:
    resp = call(sim, "POST", "/api/check-balance")
    assert resp.status == 200
    body = resp.json()
    assert body == {
        "usd_balance": "100.00000000",
        "nano_balance": "0",
        "nanoDepositAddress": body["nanoDepositAddress"],
    }
    assert body["nanoDepositAddress"].startswith("nano_")
    assert all(isinstance(v, str) for v in body.values())


def test_check_balance_is_post_only(sim: NanoGPTSimulator) -> None:
    assert call(sim, "GET", "/api/check-balance").status == 405


def test_balance_decrement_and_refund(sim: NanoGPTSimulator) -> None:
    submit_ok(sim)  # 0.35
    submit_ok(sim, "[sim:fail]", model="veo3-video")  # 3.2, refunded when it fails
    assert call(sim, "POST", "/api/check-balance").json()["usd_balance"] == "96.45000000"
    sim.advance(20)
    assert call(sim, "POST", "/api/check-balance").json()["usd_balance"] == "99.65000000"


def test_exhausted_balance(sim: NanoGPTSimulator) -> None:
    sim.configure(balance_usd=0.7)
    assert submit(sim).status == 202
    assert submit(sim).status == 202
    resp = submit(sim)
    assert resp.status == 402
    assert resp.json()["requiredBalance"] == 0.35
    assert sim.state()["balance_usd"] == 0.0


def test_recover_lists_own_runs_newest_first(open_sim: NanoGPTSimulator) -> None:
    first = submit_ok(open_sim, conversationUUID="conv-a")
    second = submit_ok(open_sim, model="veo3-video", conversationUUID="conv-b")
    theirs = submit(open_sim, key="sk-nano-other").json()["runId"]
    body = call(open_sim, "GET", "/api/generate-video/recover").json()
    items = body["data"]
    assert [item["runId"] for item in items] == [second, first]
    assert theirs not in {item["runId"] for item in items}
    item = items[0]
    assert set(item) == {"runId", "id", "model", "status", "createdAt", "conversationUUID"}
    assert item["id"] == item["runId"]
    assert item["model"] == "veo3-video"
    assert item["status"] == "queued"
    assert item["conversationUUID"] == "conv-b"
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", item["createdAt"])


@pytest.mark.charges_twice("two jobs share a conversationUUID on purpose: the filter is the test")
def test_recover_filters(sim: NanoGPTSimulator) -> None:
    a = submit_ok(sim, conversationUUID="conv-a")
    b = submit_ok(sim, model="veo3-video", conversationUUID="conv-a")
    c = submit_ok(sim, conversationUUID="conv-b")

    def ids(query: str) -> list[str]:
        resp = call(sim, "GET", f"/api/generate-video/recover{query}")
        assert resp.status == 200
        return [item["runId"] for item in resp.json()["data"]]

    assert ids("?model=kling-video-v2") == [c, a]
    assert ids("?conversationUUID=conv-a") == [b, a]
    assert ids("?model=kling-video-v2&conversationUUID=conv-a") == [a]
    assert ids("?model=sora-2") == []
    assert ids("?limit=1") == [c]


def test_recover_status_is_lowercase(sim: NanoGPTSimulator) -> None:
    submit_ok(sim, "[sim:fail]")
    submit_ok(sim)
    sim.advance(20)
    statuses = [
        item["status"] for item in call(sim, "GET", "/api/generate-video/recover").json()["data"]
    ]
    assert statuses == ["completed", "failed"]


def test_recover_limit_default_and_max(sim: NanoGPTSimulator) -> None:
    sim.configure(rate_limit_per_minute=0, balance_usd=1000)
    for _ in range(55):
        submit_ok(sim, model="veo3-video")
    assert len(call(sim, "GET", "/api/generate-video/recover").json()["data"]) == 10
    assert len(call(sim, "GET", "/api/generate-video/recover?limit=50").json()["data"]) == 50
    assert len(call(sim, "GET", "/api/generate-video/recover?limit=500").json()["data"]) == 50
    assert call(sim, "GET", "/api/generate-video/recover?limit=abc").status == 400
    assert call(sim, "GET", "/api/generate-video/recover?limit=0").status == 400


def test_recover_requires_auth(sim: NanoGPTSimulator) -> None:
    assert call(sim, "GET", "/api/generate-video/recover", key=None).status == 401
    assert call(sim, "GET", "/api/generate-video/recover", key=KEY, auth="bearer").status == 200


def test_recover_lag_hides_new_jobs_until_it_has_passed(sim: NanoGPTSimulator) -> None:
    resp = call(sim, "POST", "/_sim/config", {"recover_lag_seconds": 5}, key=None)
    assert resp.status == 200
    assert resp.json()["recover_lag_seconds"] == 5.0
    run_id = submit_ok(sim)
    assert _recovered(sim) == []
    # submit and status are unaffected: the job exists and can be polled at once
    assert poll(sim, run_id).json()["data"]["status"] == "IN_QUEUE"
    assert sim.state()["jobs"][0]["runId"] == run_id
    call(sim, "POST", "/_sim/advance", {"seconds": 4}, key=None)
    assert _recovered(sim) == []
    call(sim, "POST", "/_sim/advance", {"seconds": 1}, key=None)
    assert _recovered(sim) == [run_id]


def test_recover_lag_applies_per_job_before_the_limit(sim: NanoGPTSimulator) -> None:
    sim.configure(recover_lag_seconds=10)
    old = submit_ok(sim)
    sim.advance(10)
    new = submit_ok(sim)
    assert _recovered(sim) == [old]
    assert _recovered(sim, "?limit=1") == [old]  # the hidden job takes no slot
    sim.advance(10)
    assert _recovered(sim) == [new, old]
    sim.configure(recover_lag_seconds=0)
    newest = submit_ok(sim)
    assert _recovered(sim) == [newest, new, old]


def test_recover_lag_from_constructor_runs_on_the_simulated_clock() -> None:
    with NanoGPTSimulator(
        api_key=KEY, time_scale=0.02, recover_lag_seconds=10, quiet=True
    ) as sim:  # 10 simulated seconds = 0.2 real seconds
        assert sim.state()["config"]["recover_lag_seconds"] == 10.0
        run_id = submit_ok(sim)
        assert _recovered(sim) == []
        deadline = time.monotonic() + 5
        while not _recovered(sim) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _recovered(sim) == [run_id]
        sim.reset()  # the constructor value is the one reset restores
        assert sim.state()["config"]["recover_lag_seconds"] == 10.0


@pytest.mark.parametrize("lag", [-1, -0.5, "5", None, True, float("inf")])
def test_recover_lag_must_be_a_non_negative_number(lag: object) -> None:
    with pytest.raises(ValueError, match="recover_lag_seconds"):
        NanoGPTSimulator(recover_lag_seconds=lag)  # type: ignore[arg-type]
