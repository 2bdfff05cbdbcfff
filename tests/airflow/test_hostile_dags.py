"""Hostile answers and bad destinations, through Airflow (dag.test()).

What is asserted is what a DAG author sees: the task's final state and try number, the error line
in its log, the result it returned, and how many submissions reached the API.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_nanogpt.simulator import NanoGPTSimulator
from tests.airflow.harness import budget_dag, errors, run_dag
from tests.conftest import connection_json
from tests.hostile import HostileServer, Reply

pytestmark = pytest.mark.usefixtures("airflow_db")

PROMPT = "a paper lantern on a lake"
RUN = "vid_fake0001"


@pytest.fixture
def sim(nanogpt_connection: NanoGPTSimulator) -> NanoGPTSimulator:
    nanogpt_connection.configure(time_scale=0.05, queue_seconds=2, render_seconds=8)
    return nanogpt_connection


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[HostileServer]:
    """A NanoGPT that accepts one job and reports it completed, as each test scripts it."""
    with HostileServer() as server:
        server.route("GET", "/v.mp4", Reply(200, b"\x00" * 4096, {"Content-Type": "video/mp4"}))
        completed = {"requestId": RUN, "status": "completed", "videoUrl": f"{server.url}/v.mp4"}
        server.route("GET", "/api/video/status", Reply(200, completed))
        server.route("POST", "/api/check-balance", Reply(200, {"usd_balance": "100.00"}))
        accept(server)
        monkeypatch.setenv("AIRFLOW_CONN_NANOGPT_DEFAULT", connection_json(server.url))
        yield server


def accept(server: HostileServer, **fields: Any) -> None:
    answer = {"runId": RUN, "id": RUN, "status": "pending", "model": "kling-video-v2"}
    answer.update({"cost": 0.35, "paymentSource": "USD", "remainingBalance": 10.0, **fields})
    server.route("POST", "/api/generate-video", Reply(202, answer))


def submissions(server: HostileServer) -> int:
    return len(server.requests_to("/api/generate-video"))


# 4. Destinations: checked before anything is paid for ------------------------------------------


@pytest.mark.usefixtures("memory_storage")
def test_destinations_that_cannot_take_the_video_cost_nothing(
    sim: NanoGPTSimulator, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a-dir").mkdir()
    (tmp_path / "a-file").write_text("not a folder")
    cases = {
        str(tmp_path / "a-dir"): "is a directory",
        str(tmp_path / "a-file" / "v.mp4"): "cannot be written",
        "memory://no-such-bucket/videos/v.mp4": "does not exist",
    }
    for output_path, reason in cases.items():
        outcome = run_dag("nanogpt_with_retry", {"prompt": PROMPT, "output_path": output_path})
        assert outcome.state == "failed"
        assert outcome.try_numbers["generate"] == 1  # not retried
        assert reason in errors(capfd.readouterr().out, "NanoGPTValidationError")[-1]
    assert sim.state()["submit_requests"] == 0


def test_output_base_dir_keeps_rendered_paths_inside_it(
    sim: NanoGPTSimulator,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    base = tmp_path / "videos"
    monkeypatch.setenv(
        "AIRFLOW_CONN_NANOGPT_DEFAULT", connection_json(sim.url, output_base_dir=str(base))
    )
    escape = str(base / "daily" / ".." / ".." / "airflow.cfg")
    outcome = run_dag("nanogpt_with_retry", {"prompt": PROMPT, "output_path": escape})
    assert outcome.state == "failed"
    assert "outside the connection's output_base_dir" in capfd.readouterr().out
    assert sim.state()["submit_requests"] == 0
    inside = base / "daily" / "v.mp4"
    outcome = run_dag("nanogpt_with_retry", {"prompt": PROMPT, "output_path": str(inside)})
    assert outcome.state == "success" and inside.stat().st_size > 0


# 3. Video URLs: http(s) only, refused at once ---------------------------------------------------


def test_a_file_url_for_the_video_fails_at_once_and_is_not_retried(
    fake: HostileServer, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    fake.route(
        "GET",
        "/api/video/status",
        Reply(200, {"requestId": RUN, "status": "completed", "videoUrl": "file:///etc/passwd"}),
    )
    outcome = run_dag(
        "nanogpt_with_retry", {"prompt": PROMPT, "output_path": str(tmp_path / "v.mp4")}
    )
    assert outcome.state == "failed"
    assert outcome.try_numbers["generate"] == 1
    assert errors(capfd.readouterr().out, "NanoGPTVideoRefusedError")
    assert list(tmp_path.iterdir()) == []
    assert submissions(fake) == 1


# 10. Money guards fail closed --------------------------------------------------------------------


@pytest.mark.parametrize("limits", [{"max_cost_usd": "nan"}, {"min_balance_usd": "-inf"}])
def test_a_limit_that_is_not_a_finite_amount_blocks(
    sim: NanoGPTSimulator, limits: dict[str, str], capfd: pytest.CaptureFixture[str]
) -> None:
    outcome = run_dag(budget_dag(limits), {"prompt": PROMPT, **limits})
    assert outcome.state == "failed"
    assert outcome.try_numbers["generate"] == 1
    assert "not a finite amount" in errors(capfd.readouterr().out, "NanoGPTBudgetError")[-1]
    assert sim.state()["submit_requests"] == 0


@pytest.mark.parametrize("balance", ["NaN", "-12.5", "Infinity", None])
def test_a_balance_that_is_not_a_finite_amount_blocks(
    fake: HostileServer, balance: object, capfd: pytest.CaptureFixture[str]
) -> None:
    fake.route("POST", "/api/check-balance", Reply(200, {"usd_balance": balance}))
    outcome = run_dag("nanogpt_budget_min_balance_usd", {"prompt": PROMPT, "min_balance_usd": 5})
    assert outcome.state == "failed"
    line = errors(capfd.readouterr().out, "NanoGPTBudgetError")[-1]
    assert "Cannot check min_balance_usd" in line and "balance $nan" not in line.lower()
    assert submissions(fake) == 0


@pytest.mark.parametrize("price", ["NaN", -0.5, "cheap", None])
def test_a_price_that_is_not_a_finite_amount_blocks(
    fake: HostileServer, price: object, capfd: pytest.CaptureFixture[str]
) -> None:
    entry = {"id": "kling-video-v2", "pricing": {"currency": "USD", "per_generation": price}}
    fake.route("GET", "/api/v1/video-models", Reply(200, {"object": "list", "data": [entry]}))
    outcome = run_dag("nanogpt_budget_max_cost_usd", {"prompt": PROMPT, "max_cost_usd": 5})
    assert outcome.state == "failed"
    assert "Cannot estimate" in errors(capfd.readouterr().out, "NanoGPTBudgetError")[-1]
    assert submissions(fake) == 0


# 11. Amounts carry their currency --------------------------------------------------------------


def test_a_charge_in_xno_is_never_reported_as_dollars(
    fake: HostileServer, capfd: pytest.CaptureFixture[str]
) -> None:
    entry = {"id": "kling-video-v2", "pricing": {"currency": "USD", "per_generation": 0.35}}
    fake.route("GET", "/api/v1/video-models", Reply(200, {"object": "list", "data": [entry]}))
    accept(fake, cost=12.5, paymentSource="XNO", remainingBalance=80.0)
    outcome = run_dag("nanogpt_budget_max_cost_usd", {"prompt": PROMPT, "max_cost_usd": 1.0})
    out = capfd.readouterr().out
    assert outcome.state == "success"
    result = outcome.xcoms[("generate", "return_value")]
    assert (result["cost"], result["currency"]) == (12.5, "XNO")
    assert "pre-charged 12.5000 XNO from XNO" in out
    # 12.5 XNO is not compared with a USD cap (nor called "above" it).
    assert "checked against the USD estimate only" in out and "above max_cost_usd" not in out
    assert "$12.5" not in out


# 13. Content-policy failures in the flat status shape ------------------------------------------


def test_a_flat_shape_content_policy_failure_is_final(
    sim: NanoGPTSimulator, capfd: pytest.CaptureFixture[str]
) -> None:
    outcome = run_dag("nanogpt_with_retry", {"prompt": f"{PROMPT} [sim:shape=flat][sim:nsfw]"})
    assert outcome.state == "failed"
    assert outcome.try_numbers["generate"] == 1  # a retry would pay for the same refusal
    assert errors(capfd.readouterr().out, "NanoGPTJobContentPolicyError")
    assert sim.state()["submits_accepted"] == 1


# 2. A 5xx typed as a rate limit may have created the job: never re-sent in the try --------------


@pytest.mark.parametrize("dag_id", ["nanogpt_sync", "nanogpt_deferrable"])
@pytest.mark.parametrize(
    ("status", "body"),
    [
        (503, {"error": {"message": "slow down", "type": "rate_limit_error"}}),
        (500, {"error": {"message": "cap", "type": "x", "code": "daily_rpd_limit_exceeded"}}),
    ],
    ids=["503-typed", "500-openai-code"],
)
def test_a_5xx_typed_as_a_rate_limit_is_uncertain_not_resent(
    fake: HostileServer,
    capfd: pytest.CaptureFixture[str],
    dag_id: str,
    status: int,
    body: dict[str, Any],
) -> None:
    answers = iter([Reply(status, body, {"Retry-After": "0.1"})])
    accepted = {"runId": RUN, "id": RUN, "status": "pending", "model": "kling-video-v2"}
    # A re-send would be accepted (and paid for a second time).
    fake.route("POST", "/api/generate-video", lambda seen: next(answers, Reply(202, accepted)))
    outcome = run_dag(dag_id, {"prompt": PROMPT})
    assert outcome.state == "failed"
    assert submissions(fake) == 1
    assert errors(capfd.readouterr().out, "NanoGPTSubmissionUncertainError")


# 14. A run the tag lookup returns without a tag is "cannot tell" --------------------------------

_ABSENT = object()


@pytest.mark.parametrize(
    "conversation_uuid",
    [
        pytest.param(_ABSENT, id="missing"),
        pytest.param(None, id="null"),
        pytest.param("", id="empty"),
    ],
)
def test_an_untagged_run_after_an_uncertain_send_is_never_paid_again(
    fake: HostileServer, conversation_uuid: object, capfd: pytest.CaptureFixture[str]
) -> None:
    import time

    from tests.hostile import Seen

    def submit(_seen: Seen) -> Reply:
        if submissions(fake) == 1:  # the first send fails after leaving: uncertain
            return Reply(500, {"error": "upstream timeout"})
        return Reply(202, {"runId": RUN, "id": RUN, "status": "pending", "cost": 0.35})

    def recover(_seen: Seen) -> Reply:
        row = {"runId": "vid_untagged", "status": "processing"}
        row["createdAt"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        if conversation_uuid is not _ABSENT:
            row["conversationUUID"] = conversation_uuid  # type: ignore[assignment]
        return Reply(200, {"data": [row]})

    fake.route("POST", "/api/generate-video", submit)
    fake.route("GET", "/api/generate-video/recover", recover)
    outcome = run_dag("nanogpt_uncertain", {"prompt": PROMPT})
    assert outcome.state == "failed"
    assert outcome.try_numbers["generate"] == 2  # the retry looked up, then stopped for good
    line = errors(capfd.readouterr().out, "NanoGPTSubmissionUnresolvedError")[-1]
    assert "vid_untagged" in line
    assert submissions(fake) == 1
