"""Never paying twice, through Airflow: each path that once charged twice, run by dag.test().

Every test asserts what the payer sees: how many submissions reached NanoGPT and how many it
accepted (charged), the task's final state and try number, and the error that ended it. The same
tests run on Airflow 3.3 (task state store) and, through ``make test``, on the 3.1 floor (no
store: recover by tag), so both halves of the design are proven.
"""

from __future__ import annotations

import importlib.util
import re
from typing import Any

import pytest

from airflow_provider_nanogpt.job_card import CHARGE_KEY_PREFIX
from airflow_provider_nanogpt.simulator import NanoGPTSimulator
from tests.airflow.harness import (
    DagOutcome,
    clear_and_rerun,
    errors,
    run_dag,
    task_state_store_rows,
)
from tests.conftest import connection_json

pytestmark = pytest.mark.usefixtures("airflow_db")

PROMPT = "a lantern festival over a river"
HAS_STATE_STORE = importlib.util.find_spec("airflow.models.task_state_store") is not None


@pytest.fixture
def sim(nanogpt_connection: NanoGPTSimulator) -> NanoGPTSimulator:
    # 20 simulated seconds = 1 real second; a video renders in half a second.
    nanogpt_connection.configure(time_scale=0.05, queue_seconds=2, render_seconds=8)
    return nanogpt_connection


def charged(sim: NanoGPTSimulator) -> tuple[int, int]:
    """(submissions that reached NanoGPT, submissions it accepted and charged)."""
    state = sim.state()
    return state["submit_requests"], state["submits_accepted"]


def only_job(sim: NanoGPTSimulator) -> dict[str, Any]:
    (job,) = sim.state()["jobs"]
    return job


def result(outcome: DagOutcome) -> dict[str, Any]:
    return outcome.xcoms[("generate", "return_value")]


# 1 -------------------------------------------------------------------------------------------


def test_a_rate_limited_lookup_is_not_a_rate_limited_submit(
    sim: NanoGPTSimulator, capfd: pytest.CaptureFixture[str]
) -> None:
    # The POST answers 500 but created the job; the next try's lookup is rate limited (recover
    # allows 20 calls a minute). Reading that 429 as the submit's used to send the POST again.
    # Retry-After 140 simulated seconds = 7 s, longer than a lookup sleeps inside the call: the
    # retry waits it out in the triggerer and looks again.
    sim.add_fault(endpoint="recover", kind="429", retry_after=140)
    outcome = run_dag("nanogpt_uncertain", {"prompt": f"{PROMPT} [sim:submit500]"})
    assert outcome.state == "success"
    assert charged(sim) == (1, 1)
    assert result(outcome)["run_id"] == only_job(sim)["runId"]
    # Try 1 was uncertain; try 2 waited out the lookup's 429 (it did not cost a try) and adopted.
    assert outcome.try_numbers["generate"] == 2
    out = capfd.readouterr().out
    assert len(errors(out, "NanoGPTSubmissionUncertainError")) == 1
    assert len(_logged_waits(out)) == 1


def test_without_deferral_a_rate_limited_lookup_is_waited_out_on_the_worker(
    sim: NanoGPTSimulator, capfd: pytest.CaptureFixture[str]
) -> None:
    sim.add_fault(endpoint="recover", kind="429", retry_after=140)  # 7 s: past the in-call sleep
    outcome = run_dag("nanogpt_uncertain_sync", {"prompt": f"{PROMPT} [sim:submit500]"})
    assert outcome.state == "success"
    assert charged(sim) == (1, 1)
    assert outcome.try_numbers["generate"] == 2
    out = capfd.readouterr().out
    assert re.search(r"rate limiting; waiting [\d.]+ s on the worker", out)


def test_a_lookup_rate_limited_for_hours_fails_the_try_and_never_sends(
    sim: NanoGPTSimulator, capfd: pytest.CaptureFixture[str]
) -> None:
    # Retry-After far past the longest wait the operator defers for (a daily cap): the try fails
    # with NanoGPT's explanation, nothing is sent, and the next try looks again and adopts.
    sim.add_fault(endpoint="recover", kind="429", retry_after=100_000)
    outcome = run_dag("nanogpt_uncertain", {"prompt": f"{PROMPT} [sim:submit500]"})
    assert outcome.state == "success"
    assert charged(sim) == (1, 1)
    assert result(outcome)["run_id"] == only_job(sim)["runId"]
    assert outcome.try_numbers["generate"] == 3  # uncertain, lookup rate limited, adopted
    out = capfd.readouterr().out
    assert len(errors(out, "NanoGPTSubmissionUncertainError")) == 1
    assert len(errors(out, "NanoGPTRateLimitError")) == 1


# 2 -------------------------------------------------------------------------------------------


# The retry must come within NanoGPT's 7 s listing lag for the settle wait to be seen in the log.
@pytest.mark.timing
def test_a_job_not_listed_yet_is_waited_for_not_paid_again(
    sim: NanoGPTSimulator, capfd: pytest.CaptureFixture[str]
) -> None:
    # NanoGPT lists a new job in recover only 7 s after creating it (the DAG settles for 10 s);
    # the retry comes sooner than that.
    sim.configure(recover_lag_seconds=140)
    outcome = run_dag("nanogpt_uncertain_late_listing", {"prompt": f"{PROMPT} [sim:submit500]"})
    assert outcome.state == "success"
    assert charged(sim) == (1, 1)
    assert outcome.try_numbers["generate"] == 2
    # The retry found nothing, waited out the settle time (a few seconds: on the worker), looked
    # again and found the job.
    assert "looking again at" in capfd.readouterr().out


@pytest.mark.parametrize("dag_id", ["nanogpt_uncertain", "nanogpt_uncertain_sync"])
def test_a_job_never_created_is_sent_again_once_settled(
    sim: NanoGPTSimulator, dag_id: str, capfd: pytest.CaptureFixture[str]
) -> None:
    sim.add_fault(endpoint="submit", kind="500")  # failed without creating anything
    outcome = run_dag(dag_id, {"prompt": PROMPT})
    assert outcome.state == "success"
    assert charged(sim) == (2, 1)
    assert outcome.try_numbers["generate"] == 2
    assert "nothing was created, sending it again" in capfd.readouterr().out


# 3 -------------------------------------------------------------------------------------------


def test_a_job_created_after_the_clients_timeout_is_adopted(
    sim: NanoGPTSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("airflow_provider_nanogpt.hooks.nanogpt.SUBMIT_TIMEOUT_FLOOR", 0.5)
    monkeypatch.setenv(
        "AIRFLOW_CONN_NANOGPT_DEFAULT", connection_json(sim.url, request_timeout=0.5)
    )
    # The server holds the request for 1 s, well past the client's 0.5 s, then creates the job.
    sim.add_fault(endpoint="submit", kind="timeout", delay=20)
    outcome = run_dag("nanogpt_uncertain", {"prompt": PROMPT})
    assert outcome.state == "success"
    assert charged(sim) == (1, 1)
    assert result(outcome)["run_id"] == only_job(sim)["runId"]


# 4 -------------------------------------------------------------------------------------------


def test_completed_without_a_url_is_charged_once_and_never_resubmitted(
    sim: NanoGPTSimulator, capfd: pytest.CaptureFixture[str]
) -> None:
    outcome = run_dag("nanogpt_uncertain", {"prompt": f"{PROMPT} [sim:no_url]"})
    assert outcome.state == "failed"
    assert outcome.try_numbers["generate"] == 4  # every retry reattached to the same run
    assert charged(sim) == (1, 1)
    (last, *_) = reversed(errors(capfd.readouterr().out, "NanoGPTCompletedWithoutVideoError"))
    assert only_job(sim)["runId"] in last
    assert "charged" in last and "refund" not in last


def test_a_url_that_shows_up_late_is_delivered(sim: NanoGPTSimulator) -> None:
    outcome = run_dag("nanogpt_uncertain", {"prompt": f"{PROMPT} [sim:no_url_polls=2]"})
    assert outcome.state == "success"
    assert outcome.try_numbers["generate"] == 1
    assert result(outcome)["video_url"]
    assert charged(sim) == (1, 1)


# 5 -------------------------------------------------------------------------------------------


def test_a_dag_set_conversation_uuid_never_adopts_another_tasks_video(
    sim: NanoGPTSimulator, capfd: pytest.CaptureFixture[str]
) -> None:
    shared = {"extra_params": {"conversationUUID": "team-campaign"}}
    first = run_dag("nanogpt_deferrable", {"prompt": "task A: a red bicycle", **shared})
    a_run = result(first)["run_id"]
    sim.add_fault(endpoint="submit", kind="500")  # task B's POST fails, creating nothing
    outcome = run_dag("nanogpt_uncertain", {"prompt": "task B: a blue canoe", **shared})
    assert outcome.state == "failed"
    assert ("generate", "return_value") not in outcome.xcoms  # B did not deliver A's video
    assert outcome.try_numbers["generate"] == 2  # a person must check: not retried further
    assert charged(sim) == (2, 1)
    (line,) = errors(capfd.readouterr().out, "NanoGPTSubmissionUnresolvedError")
    assert a_run in line and "team-campaign" in line


# 6 -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("clear_on_success", ["False", "True"])
def test_clearing_a_succeeded_task_generates_a_new_video(
    sim: NanoGPTSimulator, monkeypatch: pytest.MonkeyPatch, clear_on_success: str
) -> None:
    monkeypatch.setenv("AIRFLOW__STATE_STORE__CLEAR_ON_SUCCESS", clear_on_success)
    first = run_dag("nanogpt_deferrable", {"prompt": PROMPT})
    assert first.state == "success"
    rows = task_state_store_rows("nanogpt_deferrable", first.run_id)
    records = [row for row in rows if not row["key"].startswith(CHARGE_KEY_PREFIX)]
    charges = [row["value"]["run_id"] for row in rows if row["key"].startswith(CHARGE_KEY_PREFIX)]
    if HAS_STATE_STORE and clear_on_success == "True":
        assert rows == []  # Airflow wiped the record, regenerate_after_clear and all
    elif HAS_STATE_STORE:
        assert [row["value"]["regenerate_after_clear"] for row in records] == [True]
        assert charges == [result(first)["run_id"]]  # the NanoGPT page's spend record
    again = clear_and_rerun("nanogpt_deferrable", first.run_id)
    assert again.state == "success"
    assert again.try_numbers["generate"] == 2
    if HAS_STATE_STORE:
        assert charged(sim) == (2, 2)
        assert result(again)["run_id"] != result(first)["run_id"]
    else:
        # Documented limit before Airflow 3.3: no store remembers the delivery, so the clear
        # finds the tagged run and delivers it again, without paying.
        assert charged(sim) == (1, 1)
        assert result(again)["run_id"] == result(first)["run_id"]


@pytest.mark.parametrize(
    "dag_id", ["nanogpt_fails_after_delivery", "nanogpt_fails_after_delivery_sync"]
)
def test_a_retry_after_the_video_was_delivered_delivers_it_again_unpaid(
    sim: NanoGPTSimulator, dag_id: str
) -> None:
    """Delivered, then the try fails before Airflow records success: the retry pays nothing."""
    outcome = run_dag(dag_id, {"prompt": PROMPT})
    assert outcome.state == "success"
    assert outcome.try_numbers["generate"] == 2
    assert charged(sim) == (1, 1)
    assert result(outcome)["run_id"] == only_job(sim)["runId"]
    if HAS_STATE_STORE:
        rows = task_state_store_rows(dag_id, outcome.run_id)
        records = [row for row in rows if not row["key"].startswith(CHARGE_KEY_PREFIX)]
        assert [row["value"]["regenerate_after_clear"] for row in records] == [True]
    # ... and a clear after that still makes a new video, once.
    again = clear_and_rerun(dag_id, outcome.run_id)
    assert again.state == "success"
    if HAS_STATE_STORE:
        assert charged(sim) == (2, 2)
        assert result(again)["run_id"] != result(outcome)["run_id"]


def test_clearing_a_failed_task_reattaches_to_the_paid_run(sim: NanoGPTSimulator) -> None:
    # Charged, but its URL shows up only after the first try gave up waiting for it.
    first = run_dag("nanogpt_deferrable", {"prompt": f"{PROMPT} [sim:no_url_polls=6]"})
    assert first.state == "failed"
    again = clear_and_rerun("nanogpt_deferrable", first.run_id)
    assert again.state == "success"
    assert charged(sim) == (1, 1)
    assert result(again)["run_id"] == only_job(sim)["runId"]


# 7 -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dag_id", ["nanogpt_deferrable", "nanogpt_sync"])
def test_a_brand_new_run_may_answer_404_for_a_moment(sim: NanoGPTSimulator, dag_id: str) -> None:
    outcome = run_dag(dag_id, {"prompt": f"{PROMPT} [sim:status404=3]"})
    assert outcome.state == "success"
    assert outcome.try_numbers["generate"] == 1
    assert charged(sim) == (1, 1)


def test_the_sensors_first_checks_tolerate_a_404(sim: NanoGPTSimulator) -> None:
    outcome = run_dag("nanogpt_split", {"prompt": f"{PROMPT} [sim:status404=3]"})
    assert outcome.state == "success", outcome.task_states
    assert {outcome.try_numbers[task] for task in ("wait_deferred", "wait_poke")} == {1}
    assert charged(sim) == (1, 1)


# 8 -------------------------------------------------------------------------------------------


def _logged_waits(output: str) -> list[float]:
    return [
        float(w) for w in re.findall(r"rate limiting; waiting ([\d.]+) s in the triggerer", output)
    ]


def test_rate_limits_without_retry_after_back_off(
    sim: NanoGPTSimulator, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(
        "airflow_provider_nanogpt.operators.video.RATE_LIMIT_BACKOFF_BASE_SECONDS", 0.2
    )
    sim.add_fault(endpoint="submit", kind="429_no_retry_after", count=3)
    outcome = run_dag("nanogpt_deferrable", {"prompt": PROMPT})
    assert outcome.state == "success"
    assert charged(sim) == (4, 1)
    waits = _logged_waits(capfd.readouterr().out)
    assert len(waits) == 3
    # Doubling ceilings with jitter (0.1-0.2, 0.2-0.4, 0.4-0.8 s here), not a fixed 30 s.
    assert waits[0] <= waits[1] <= waits[2] and waits[2] >= 2 * waits[0]


def test_rate_limited_waiting_ends_at_the_timeout(
    sim: NanoGPTSimulator, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(
        "airflow_provider_nanogpt.operators.video.RATE_LIMIT_BACKOFF_BASE_SECONDS", 0.2
    )
    sim.add_fault(endpoint="submit", kind="429_no_retry_after", count=100)
    outcome = run_dag("nanogpt_rate_limit_bound", {"prompt": PROMPT})
    assert outcome.state == "failed"
    assert charged(sim)[1] == 0
    out = capfd.readouterr().out
    assert 1 <= len(_logged_waits(out)) <= 5
    found = errors(out, "NanoGPTRateLimitError")
    assert found, out[-3000:]
    line = found[-1]
    assert "kept rate limiting this submission" in line and "timeout=1.5 s" in line
    # Every ask was refused and answered by a wait, or by the final error: no ask went unanswered.
    waits = len(_logged_waits(out))
    assert waits <= charged(sim)[0] <= waits + 1


def _spend(dag_id: str) -> tuple[int, dict[str, float]]:
    from airflow.utils.session import create_session

    from airflow_provider_nanogpt.plugin.jobs import spend

    with create_session() as session:
        figures = spend(session, {dag_id}, None, None)
    return figures.jobs, figures.totals


def test_a_refunded_try_is_not_counted_in_the_spend_after_a_retry(sim: NanoGPTSimulator) -> None:
    """Each try's job FAILED (refunded); the retry cleared the first try's card, not its charge."""
    before = _spend("nanogpt_with_retry")
    outcome = run_dag("nanogpt_with_retry", {"prompt": f"{PROMPT} [sim:fail]"})
    assert outcome.state == "failed" and outcome.try_numbers["generate"] == 2
    jobs = sim.state()["jobs"]
    assert len(jobs) == 2 and all(job["refunded"] for job in jobs)
    if HAS_STATE_STORE:
        rows = task_state_store_rows("nanogpt_with_retry", outcome.run_id)
        charges = {
            row["value"]["run_id"]: row["value"]["refunded"]
            for row in rows
            if row["key"].startswith(CHARGE_KEY_PREFIX)
        }
        assert charges == {job["runId"]: True for job in jobs}
    assert _spend("nanogpt_with_retry") == before  # NanoGPT charged nothing in the end
