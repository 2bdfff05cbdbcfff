"""Cost guards, rate-limited batches and rate-limit deferral, run by Airflow."""

from __future__ import annotations

import pytest

from airflow_provider_nanogpt.simulator import NanoGPTSimulator
from tests.airflow.harness import budget_dag, run_dag, stored_triggers

pytestmark = pytest.mark.usefixtures("airflow_db")


@pytest.fixture
def sim(nanogpt_connection: NanoGPTSimulator) -> NanoGPTSimulator:
    nanogpt_connection.configure(time_scale=0.05)
    return nanogpt_connection


@pytest.mark.parametrize(
    ("conf", "balance", "message"),
    [
        ({"min_balance_usd": 50}, 10.0, "below min_balance_usd"),
        ({"max_cost_usd": 1.0, "model": "veo3-video"}, 100.0, "exceeds max_cost_usd"),
        ({"max_cost_usd": 1.0, "model": "brand-new-model"}, 100.0, "Cannot estimate"),
    ],
)
def test_budget_guards_make_zero_submissions(
    sim: NanoGPTSimulator,
    conf: dict,
    balance: float,
    message: str,
    capfd: pytest.CaptureFixture[str],
) -> None:
    sim.configure(balance_usd=balance)
    outcome = run_dag(budget_dag(conf), {"prompt": "a quiet harbour", **conf})
    assert outcome.state == "failed"
    assert outcome.try_numbers["generate"] == 1  # not retried
    assert message in capfd.readouterr().out
    assert sim.state()["submit_requests"] == 0


def test_budget_within_limits_submits_once(sim: NanoGPTSimulator) -> None:
    outcome = run_dag(
        "nanogpt_budget", {"prompt": "a quiet harbour", "min_balance_usd": 5, "max_cost_usd": 1}
    )
    assert outcome.state == "success"
    assert sim.state()["submits_accepted"] == 1


MISSING = object()  # the conf leaves the guard out: text rendering gives "None"


@pytest.mark.parametrize("guard", ["min_balance_usd", "max_cost_usd"])
@pytest.mark.parametrize(
    "rendered", ["", "None", "  ", pytest.param(MISSING, id="missing"), "nan", "inf", "-1", "abc"]
)
def test_a_set_guard_that_renders_to_nothing_or_junk_fails_before_any_request(
    sim: NanoGPTSimulator, guard: str, rendered: object, capfd: pytest.CaptureFixture[str]
) -> None:
    conf: dict[str, object] = {"prompt": "a quiet harbour"}
    if rendered is not MISSING:
        conf[guard] = rendered
    outcome = run_dag(f"nanogpt_budget_text_{guard}", conf)
    assert outcome.state == "failed"
    assert outcome.try_numbers["generate"] == 1  # not retried
    errors = [
        line for line in capfd.readouterr().out.splitlines() if "NanoGPTBudgetError: " in line
    ]
    assert errors and guard in errors[-1]
    state = sim.state()
    assert state["submit_requests"] == 0
    assert state["requests"] == {}  # not even a balance, catalog or lookup request


@pytest.mark.parametrize(("guard", "rendered"), [("min_balance_usd", "5"), ("max_cost_usd", "1")])
def test_a_guard_rendered_as_numeric_text_still_guards(
    sim: NanoGPTSimulator, guard: str, rendered: str
) -> None:
    outcome = run_dag(
        f"nanogpt_budget_text_{guard}", {"prompt": "a quiet harbour", guard: rendered}
    )
    assert outcome.state == "success"
    state = sim.state()
    assert state["submits_accepted"] == 1
    # The guard was applied: its balance or catalog read happened before the submit.
    read = "POST /api/check-balance" if guard == "min_balance_usd" else "GET /api/v1/video-models"
    assert state["requests"].get(read) == 1


def test_extra_params_and_a_cost_cap_read_the_catalog_once(sim: NanoGPTSimulator) -> None:
    # Both the extra_params check and the cost guard need NanoGPT's model catalog.
    outcome = run_dag(
        "nanogpt_budget_max_cost_usd",
        {"prompt": "a quiet harbour", "max_cost_usd": 1, "extra_params": {"cfg_scale": 0.7}},
    )
    assert outcome.state == "success"
    state = sim.state()
    assert state["submits_accepted"] == 1
    assert state["jobs"][0]["payload"]["cfg_scale"] == 0.7
    assert state["requests"].get("GET /api/v1/video-models") == 1


def test_rate_limited_submit_defers_then_submits_once(sim: NanoGPTSimulator) -> None:
    # 60 simulated seconds = 3 real seconds: longer than the worker may sleep, so it defers.
    sim.add_fault(endpoint="submit", kind="429", count=1, retry_after=60)
    waits_before = len(stored_triggers("WaitUntilTrigger"))
    outcome = run_dag("nanogpt_deferrable", {"prompt": "a quiet harbour"})
    assert outcome.state == "success"
    state = sim.state()
    assert (state["submit_requests"], state["submits_accepted"]) == (2, 1)
    # The wait for the window happened in a trigger, not on the worker. (Which task state the DB
    # shows during that wait differs between Airflow versions under dag.test(), so it is not
    # sampled here.)
    assert len(stored_triggers("WaitUntilTrigger")) == waits_before + 1
