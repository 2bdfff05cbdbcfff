"""GenerateVideoOperator and VideoStatusSensor run by Airflow (dag.test) against the simulator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_provider_nanogpt.job_card import WATCH_KEY
from airflow_provider_nanogpt.simulator import NanoGPTSimulator
from tests.airflow.harness import RESULT_KEYS, run_dag, stored_triggers
from tests.conftest import CANARY_KEY

pytestmark = pytest.mark.usefixtures("airflow_db")

PROMPT = "a red kite over the dunes"


@pytest.fixture
def sim(nanogpt_connection: NanoGPTSimulator) -> NanoGPTSimulator:
    # 2 s of real rendering: long enough to observe the deferred state.
    nanogpt_connection.configure(time_scale=0.1, queue_seconds=2, render_seconds=18)
    return nanogpt_connection


def _result(outcome, task: str = "generate") -> dict:
    return outcome.xcoms[(task, "return_value")]


def log_lines(capfd: pytest.CaptureFixture[str]) -> list[str]:
    """The task log lines dag.test() printed."""
    return capfd.readouterr().out.splitlines()


def test_deferrable_generation_defers_and_delivers(sim: NanoGPTSimulator, tmp_path: Path) -> None:
    out = tmp_path / "videos" / "v.mp4"
    outcome = run_dag(
        "nanogpt_deferrable",
        {"prompt": f"{PROMPT} [sim:shape=flat]", "output_path": str(out)},
        watch_task="generate",
    )
    assert outcome.state == "success"
    result = _result(outcome)
    run_id = result["run_id"]
    assert result == {
        "run_id": run_id,
        "model": "kling-video-v2",
        "status": "success",
        "video_url": result["video_url"],
        "cost": result["cost"],
        "currency": "USD",
        "output_path": str(out),
    }
    assert run_id in result["video_url"]
    # The flat status shape has no final cost: the pre-charge stands in for it.
    assert result["cost"] == outcome.xcoms[("generate", "submission")]["cost"] > 0
    assert out.stat().st_size > 0
    assert sim.state()["submits_accepted"] == 1
    # The task really deferred: Airflow stored a status trigger for this run, with no secret in it.
    (trigger_kwargs,) = [t for t in stored_triggers("VideoStatusTrigger") if t["run_id"] == run_id]
    assert trigger_kwargs["nanogpt_conn_id"] == "nanogpt_default"
    assert CANARY_KEY not in json.dumps(trigger_kwargs, default=str)
    # ... and its run_id XCom was readable while it waited off the worker.
    waiting = {"deferred", "queued", "scheduled"}
    assert any(s in waiting and x == run_id for s, x in outcome.observed_while_running)
    # The buttons: NanoGPT's URL; no console for a local path (the Video tab plays it).
    assert outcome.xcoms[("generate", "_link_NanoGPTVideoLink")] == result["video_url"]
    assert outcome.xcoms[("generate", "_link_NanoGPTSavedVideoLink")] == ""
    assert outcome.xcoms[("generate", "submission")]["run_id"] == run_id
    assert outcome.xcoms[("generate", "video_url")] == result["video_url"]


def test_sync_mode_gives_the_same_result(sim: NanoGPTSimulator, tmp_path: Path) -> None:
    outcome = run_dag(
        "nanogpt_sync",
        {"prompt": PROMPT, "output_path": str(tmp_path / "v.mp4")},
        watch_task="generate",
    )
    assert outcome.state == "success"
    result = _result(outcome)
    assert set(result) == RESULT_KEYS
    assert result["status"] == "success" and (tmp_path / "v.mp4").exists()
    run_id = result["run_id"]
    assert not [t for t in stored_triggers("VideoStatusTrigger") if t["run_id"] == run_id]
    assert sim.state()["submits_accepted"] == 1


@pytest.mark.parametrize("shape", ["nested", "flat"])
def test_both_status_shapes_through_airflow(
    sim: NanoGPTSimulator, shape: str, capfd: pytest.CaptureFixture[str]
) -> None:
    outcome = run_dag("nanogpt_deferrable", {"prompt": f"{PROMPT} [sim:shape={shape}]"})
    assert outcome.state == "success"
    result = _result(outcome)
    assert result["output_path"] is None
    # The log says what was paid: the final cost, or (flat shape: none given) the pre-charge.
    run_id, cost = result["run_id"], f"${result['cost']:.4f}"
    ready = next(line for line in log_lines(capfd) if f"NanoGPT video {run_id} is ready" in line)
    if shape == "nested":
        assert f"(final cost {cost})" in ready
    else:
        assert f"(cost {cost}, the pre-charge: NanoGPT gave no final cost)" in ready
    assert "unknown" not in ready


@pytest.mark.parametrize(
    ("marker", "dag_id", "error_fragment"),
    [
        ("fail", "nanogpt_deferrable", "NanoGPTJobFailedError"),
        ("nsfw", "nanogpt_deferrable", "NanoGPTJobContentPolicyError"),
        ("cancel", "nanogpt_deferrable", "NanoGPTJobCancelledError"),
        ("fail", "nanogpt_sync", "NanoGPTJobFailedError"),
        ("nsfw", "nanogpt_sync", "NanoGPTJobContentPolicyError"),
    ],
)
def test_failed_jobs_fail_the_task_with_their_error(
    sim: NanoGPTSimulator,
    marker: str,
    dag_id: str,
    error_fragment: str,
    capfd: pytest.CaptureFixture[str],
) -> None:
    outcome = run_dag(dag_id, {"prompt": f"{PROMPT} [sim:{marker}]"})
    assert outcome.state == "failed"
    assert outcome.task_states["generate"] == "failed"
    assert error_fragment in capfd.readouterr().out
    assert sim.state()["submits_accepted"] == 1


def test_never_finishing_job_times_out_with_run_id(
    sim: NanoGPTSimulator, capfd: pytest.CaptureFixture[str]
) -> None:
    outcome = run_dag("nanogpt_short_timeout", {"prompt": f"{PROMPT} [sim:never]"})
    assert outcome.state == "failed"
    run_id = outcome.xcoms[("generate", "run_id")]
    out = capfd.readouterr().out
    assert "NanoGPTJobTimeoutError" in out
    assert f"NanoGPT video {run_id} was not ready after" in out
    assert "may still finish and be charged" in out


def test_validation_errors_make_zero_requests(
    sim: NanoGPTSimulator, capfd: pytest.CaptureFixture[str]
) -> None:
    outcome = run_dag(
        "nanogpt_with_retry",
        {"prompt": PROMPT, "model": "kling-video-v2", "extra_params": {"duration": "7"}},
    )
    assert outcome.state == "failed"
    assert outcome.try_numbers["generate"] == 1  # AirflowFailException: no retry
    out = capfd.readouterr().out
    assert "duration='7' is not allowed" in out
    # The extra links found no card or URL to show, and asked Airflow for none (it logs a
    # missing XCom as an error).
    assert "XCom not found" not in out
    assert sim.state()["requests"] == {}


def test_retry_after_failed_download_reattaches_without_paying_again(
    sim: NanoGPTSimulator, tmp_path: Path
) -> None:
    # Every download attempt of the first try fails; the retry must reuse the paid run.
    sim.add_fault(endpoint="download", kind="500", count=6)
    outcome = run_dag(
        "nanogpt_with_retry", {"prompt": PROMPT, "output_path": str(tmp_path / "v.mp4")}
    )
    assert outcome.state == "success"
    assert outcome.try_numbers["generate"] == 2
    assert sim.state()["submits_accepted"] == 1
    assert (tmp_path / "v.mp4").exists()
    assert not list(tmp_path.glob("*.part"))


def test_wait_for_completion_false_returns_run_id(sim: NanoGPTSimulator) -> None:
    outcome = run_dag("nanogpt_submit_only", {"prompt": PROMPT})
    assert outcome.state == "success"
    run_id = outcome.xcoms[("generate", "run_id")]
    assert outcome.xcoms[("generate", "return_value")] == run_id
    assert sim.state()["submits_accepted"] == 1


def test_split_submit_then_sensors(
    sim: NanoGPTSimulator, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    outcome = run_dag(
        "nanogpt_split",
        {"prompt": PROMPT, "output_path": str(tmp_path / "s.mp4")},
        watch_task=("wait_deferred", "wait_poke"),
        watch_key=WATCH_KEY,
    )
    assert outcome.state == "success", outcome.task_states
    run_id = outcome.xcoms[("submit", "run_id")]
    # While a sensor waits (dag.test() runs the trigger inside the "running" task), its card
    # says so: the NanoGPT page shows the run rendering. Whichever sensor dag.test() runs first
    # waits the whole render; the second may find the video already done.
    waiting = [
        card
        for state, card in outcome.observed_while_running
        if state in ("running", "deferred") and card and card["state"] == "submitted"
    ]
    assert waiting and all(
        (card["run_id"], card["charged_here"], card["submitted_at"]) == (run_id, False, None)
        for card in waiting
    )
    assert outcome.xcoms[("wait_deferred", WATCH_KEY)]["state"] == "completed"
    for task in ("wait_deferred", "wait_poke"):
        assert outcome.xcoms[(task, "return_value")]["run_id"] == run_id
    assert outcome.xcoms[("wait_poke", "return_value")]["output_path"] == str(tmp_path / "s.mp4")
    assert sim.state()["submits_accepted"] == 1
    # A sensor never saw the submission, so NanoGPT's final cost comes without a currency; it
    # has no card of its own to read before it ends, and reads none.
    cost = outcome.xcoms[("wait_poke", "return_value")]["cost"]
    out = "\n".join(log_lines(capfd))
    assert out.count(f"(final cost {cost:.4f} in the run's payment currency)") == 2
    assert "XCom not found" not in out and "currency unknown" not in out


def test_mapped_tasks_are_labelled_with_their_prompt(sim: NanoGPTSimulator) -> None:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    outcome = run_dag("nanogpt_mapped", {})
    assert outcome.state == "success"
    with create_session() as session:
        labels = dict(
            session.execute(
                select(TaskInstance.map_index, TaskInstance.rendered_map_index).where(
                    TaskInstance.dag_id == "nanogpt_mapped",
                    TaskInstance.run_id == outcome.run_id,
                )
            ).all()
        )
    assert labels == {
        0: "A hummingbird hovering over a red flower, slow motion, gold…",
        1: "Neon-lit alley in the rain",
    }


@pytest.mark.parametrize("dag_id", ["nanogpt_deferrable", "nanogpt_sync"])
@pytest.mark.parametrize(
    ("marker", "state", "reason"),
    [
        ("[sim:blocked]", "blocked", "blocked due to safety concerns"),
        ("[sim:render=soon]", "rejected", "needs a number"),
    ],
)
def test_a_refused_submission_leaves_a_job_card_with_nanogpts_reason(
    sim: NanoGPTSimulator, dag_id: str, marker: str, state: str, reason: str
) -> None:
    """NanoGPT refused the submit (4xx): no job, no charge; the card says why, for the UI."""
    from airflow_provider_nanogpt.job_card import JOB_KEY

    outcome = run_dag(dag_id, {"prompt": f"{PROMPT} {marker}"})
    assert outcome.state == "failed" and outcome.try_numbers["generate"] == 1
    assert sim.state()["submits_accepted"] == 0
    card = outcome.xcoms[("generate", JOB_KEY)]
    assert (card["state"], card["run_id"], card["cost"]) == (state, None, 0)
    assert reason in card["error"] and card["charged_here"] is False
    assert card["prompt"] == f"{PROMPT} {marker}" and card["model"] == "kling-video-v2"
    assert card["submitted_at"] <= card["finished_at"]
    assert CANARY_KEY not in json.dumps(card)
    assert ("generate", "run_id") not in outcome.xcoms
