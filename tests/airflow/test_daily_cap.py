"""NanoGPT's per-key daily caps through Airflow (dag.test() against the simulator): the task
waits for the reset when it comes within the task's deadline and then submits once, or fails
saying which cap, when it resets and what to do, having paid nothing."""

from __future__ import annotations

import re
import time

import pytest

from airflow_provider_nanogpt.job_card import JOB_KEY
from airflow_provider_nanogpt.simulator import NanoGPTSimulator
from tests.airflow.harness import errors, run_dag

pytestmark = pytest.mark.usefixtures("airflow_db")

PROMPT = "a kite over a salt flat"


@pytest.fixture
def sim(nanogpt_connection: NanoGPTSimulator) -> NanoGPTSimulator:
    # 20 simulated seconds = 1 real second; a video renders in half a second.
    nanogpt_connection.configure(time_scale=0.05, queue_seconds=2, render_seconds=8)
    return nanogpt_connection


@pytest.mark.parametrize(
    ("kind", "named"),
    [("daily_usd_cap", "daily USD cap"), ("daily_cap", "daily request cap")],
)
def test_a_daily_cap_resetting_after_the_deadline_fails_saying_so_and_pays_nothing(
    sim: NanoGPTSimulator, capfd: pytest.CaptureFixture[str], kind: str, named: str
) -> None:
    # Resets in 100,000 simulated seconds (about 1 h 23 min real); the task's timeout is 1.5 s.
    sim.add_fault(endpoint="submit", kind=kind, retry_after=100_000, count=5)
    started = time.monotonic()
    outcome = run_dag("nanogpt_rate_limit_bound", {"prompt": PROMPT})
    assert outcome.state == "failed"
    assert sim.state()["submits_accepted"] == 0
    assert time.monotonic() - started < 60  # failed at once: not after the wait it refused
    out = capfd.readouterr().out
    found = errors(out, "NanoGPTDailyCapError")
    line = found[-1]
    reached = (
        rf"NanoGPT's {named} for this API key is reached; it resets at \d\d:\d\d UTC "
        r"\(in 1 h 2\d min\)"
    )
    assert re.search(reached + r", after this task's timeout \(1\.5 s\) ends", line), line
    assert "Nothing was submitted and nothing was paid" in line
    assert "Raise the cap in NanoGPT's settings" in line and "longer than 1 h 2" in line
    card = outcome.xcoms[("generate", JOB_KEY)]
    assert card["state"] == "daily_cap" and card["finished_at"] is not None
    assert card["daily_cap"] == ("usd" if kind == "daily_usd_cap" else "requests")
    assert card["run_id"] is None and card["charged_here"] is False


def test_a_daily_cap_resetting_within_the_deadline_is_waited_for_then_submitted_once(
    sim: NanoGPTSimulator, capfd: pytest.CaptureFixture[str]
) -> None:
    # Resets in 40 simulated seconds (2 s real), well within the default timeout of 600 s.
    sim.add_fault(endpoint="submit", kind="daily_usd_cap", retry_after=40)
    started = time.monotonic()
    outcome = run_dag("nanogpt_deferrable", {"prompt": PROMPT})
    assert outcome.state == "success"
    state = sim.state()
    assert (state["submit_requests"], state["submits_accepted"]) == (2, 1)
    assert time.monotonic() - started >= 2.0  # it waited for the reset before sending again
    out = capfd.readouterr().out
    # "in 2 s", or "in 1 s" when a loaded machine took a moment between the 429 and the log line.
    assert re.search(
        r"NanoGPT's daily USD cap for this API key is reached; it resets at \d\d:\d\d UTC "
        r"\(in [12] s\)\. Nothing was submitted and nothing was paid; the task waits for the reset",
        out,
    ), out[-3000:]
    assert re.search(r"rate limiting; waiting [\d.]+ s in the triggerer", out)
    assert not errors(out, "NanoGPTDailyCapError")
    assert outcome.xcoms[("generate", JOB_KEY)]["state"] == "completed"
