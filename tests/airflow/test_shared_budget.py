"""Shared budgets end to end with dag.test(): two DAGs spending from one connection's budget."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import pytest

from airflow_provider_nanogpt import ledger
from airflow_provider_nanogpt.job_card import JOB_KEY
from airflow_provider_nanogpt.ledger import Budget, to_micro
from airflow_provider_nanogpt.simulator import NanoGPTSimulator
from tests.airflow.harness import ShortWindows, errors, run_dag, use_budget_ledger
from tests.conftest import TEST_DAGS

BUDGET_DAGS = TEST_DAGS / "nanogpt_budget_dags.py"


@pytest.mark.usefixtures("airflow_db")
def test_two_dags_share_one_connection_budget_and_the_third_video_is_never_sent(
    simulator: NanoGPTSimulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ledger_file = use_budget_ledger(monkeypatch, simulator.url, "1.00", tmp_path)

    first = run_dag("nanogpt_shared_budget_a", {}, path=BUDGET_DAGS)
    second = run_dag("nanogpt_shared_budget_b", {}, path=BUDGET_DAGS)

    assert first.task_states == {"first": "success"}
    assert second.task_states == {"second": "success", "third": "failed"}
    state = simulator.state()
    assert state["submit_requests"] == 2  # the third request never reached NanoGPT
    assert sorted(job["cost"] for job in state["jobs"]) == [0.35, 0.35]
    assert ledger_file.exists()


@pytest.mark.usefixtures("airflow_db")
def test_without_a_budget_no_ledger_is_opened(
    nanogpt_connection: NanoGPTSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    import airflow_provider_nanogpt.ledger as ledger

    engines_before = dict(ledger._ENGINES)
    outcome = run_dag("nanogpt_shared_budget_a", {}, path=BUDGET_DAGS)

    assert outcome.task_states == {"first": "success"}
    assert dict(ledger._ENGINES) == engines_before  # no ledger database was opened
    assert nanogpt_connection.state()["submit_requests"] == 1


@pytest.mark.usefixtures("airflow_db")
@pytest.mark.parametrize(
    "dag_id", ["nanogpt_shared_budget_refunded", "nanogpt_shared_budget_refunded_sync"]
)
def test_a_video_refunded_while_waiting_gives_its_reservation_back_at_once(
    simulator: NanoGPTSimulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, dag_id: str
) -> None:
    # $0.50 a day holds one $0.35 video: the next one fits only if the refunded one stopped
    # counting when its task saw it fail (no retry or clear ever looks at it again).
    use_budget_ledger(monkeypatch, simulator.url, "0.50", tmp_path)

    refunded = run_dag(dag_id, {}, path=BUDGET_DAGS)
    after = run_dag("nanogpt_shared_budget_a", {}, path=BUDGET_DAGS)

    assert refunded.task_states == {"refunded": "failed"}
    assert after.task_states == {"first": "success"}
    jobs = simulator.state()["jobs"]
    assert [(job["refunded"], job["cost"]) for job in jobs] == [(True, 0.35), (False, 0.35)]


FULL_BUDGET = Budget("connection nanogpt_default", "day", to_micro("0.50", what="limit"), "UTC")
RESET_SOON_SECONDS = 3


@pytest.mark.usefixtures("airflow_db")
@pytest.mark.parametrize(
    "reset_in", [RESET_SOON_SECONDS, 3600], ids=["reset_within_deadline", "reset_after"]
)
@pytest.mark.parametrize("deferrable", [True, False], ids=["deferred", "sync"])
@pytest.mark.parametrize("mode", ["fail", "wait"])
def test_a_full_budget_fails_or_is_waited_for_within_the_deadline(
    simulator: NanoGPTSimulator,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    mode: str,
    deferrable: bool,
    reset_in: int,
) -> None:
    ledger_file = use_budget_ledger(monkeypatch, simulator.url, "0.50", tmp_path)
    windows = ShortWindows(reset_in)
    monkeypatch.setattr(ledger, "window_at", windows)
    # Another DAG spent $0.30 of the $0.50: the $0.35 video does not fit until the reset.
    shared = ledger.Ledger.from_url(f"sqlite:///{ledger_file}")
    shared.reserve("earlier#try-1", "earlier", [FULL_BUDGET], to_micro("0.30", what="spent"))
    shared.settle("earlier#try-1", to_micro("0.30", what="spent"))
    windows.armed = True

    started = time.monotonic()
    outcome = run_dag(
        f"nanogpt_budget_full_{mode}_{'deferred' if deferrable else 'sync'}",
        {},
        path=BUDGET_DAGS,
    )
    took = time.monotonic() - started

    out = capfd.readouterr().out
    assert windows.reset_at is not None  # the task met the full budget
    if mode == "wait" and reset_in == RESET_SOON_SECONDS:
        assert outcome.task_states == {"over_budget": "success"}
        assert simulator.state()["submit_requests"] == 1  # sent once, after the reset
        where = "in the triggerer" if deferrable else "on the worker"
        assert re.search(rf"Shared budget full until \S+ UTC; waiting [\d.]+ s {where}", out)
        assert "Nothing was paid and no reservation is held while waiting" in out
        # The NanoGPT page's card: the submission's, which replaced the wait's.
        card = outcome.xcoms[("over_budget", JOB_KEY)]
        assert card["state"] == "completed" and card["run_id"]
        # The new window holds the one video, reserved after the reset and settled at its
        # charge; the full window is as it was.
        rows = _reservations(ledger_file)
        assert [(tag, state) for tag, state, _ in rows] == [
            ("earlier", "settled"),
            ("task", "settled"),
        ]
        assert rows[1][2] >= windows.reset_at
        assert shared.use(FULL_BUDGET, windows.reset_at).spent_micro == to_micro("0.35", what="x")
        return
    assert outcome.task_states == {"over_budget": "failed"}
    assert simulator.state()["submit_requests"] == 0  # nothing reached NanoGPT
    assert took < 60  # failed at once: not after the wait it refused
    line = errors(out, "BudgetExceeded")[-1]
    resets = datetime.fromtimestamp(windows.reset_at, UTC).isoformat()
    assert "$0.30 spent and $0.00 reserved" in line and f"It resets at {resets}" in line, line
    if mode == "wait":
        assert "after this task's timeout (30 s) ends" in line, line
        assert "give it a timeout (and execution_timeout) longer than 1 h" in line, line
        assert "or raise the budget" in line, line
    # The NanoGPT page's card: held back by the budget, when it resets, nothing charged.
    card = outcome.xcoms[("over_budget", JOB_KEY)]
    assert card["state"] == "over_budget" and card["finished_at"] is not None
    assert card["budget"] == FULL_BUDGET.describe()
    assert card["resets_at"] == windows.reset_at
    assert (card["run_id"], card["cost"], card["charged_here"]) == (None, 0.0, False)
    # Nothing held while it failed: the one row is the other DAG's.
    assert [(tag, state) for tag, state, _ in _reservations(ledger_file)] == [
        ("earlier", "settled")
    ]


def _reservations(ledger_file: Path) -> list[tuple[str, str, float]]:
    """(whose, state, created_at) of every reservation row, oldest first."""
    with closing(sqlite3.connect(ledger_file)) as db:
        rows = db.execute(
            f"SELECT tag, state, created_at FROM {ledger.TABLE_RESERVATIONS} ORDER BY created_at"
        ).fetchall()
    return [("earlier" if tag == "earlier" else "task", state, at) for tag, state, at in rows]


@pytest.mark.usefixtures("airflow_db")
@pytest.mark.parametrize("defined_in", ["config", "connection"])
def test_a_group_budget_joined_by_dag_tag_or_argument_is_shared_by_both(
    simulator: NanoGPTSimulator,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    defined_in: str,
) -> None:
    # The connection's own budget holds both videos; the group's $0.50 holds one of $0.35.
    group = {"team video": {"usd_per_day": 0.5, "timezone": "Europe/Berlin"}}
    if defined_in == "config":
        monkeypatch.setenv("AIRFLOW__NANOGPT__BUDGETS", json.dumps(group))
        use_budget_ledger(monkeypatch, simulator.url, "10", tmp_path)
    else:
        monkeypatch.delenv("AIRFLOW__NANOGPT__BUDGETS", raising=False)
        use_budget_ledger(monkeypatch, simulator.url, "10", tmp_path, budgets=group)

    tagged = run_dag("nanogpt_group_budget_by_tag", {}, path=BUDGET_DAGS)
    named = run_dag("nanogpt_group_budget_by_argument", {}, path=BUDGET_DAGS)

    assert tagged.task_states == {"tagged": "success"}
    assert named.task_states == {"named": "failed"}
    assert simulator.state()["submit_requests"] == 1  # the second video was never sent
    (refusal,) = errors(capfd.readouterr().out, "BudgetExceeded")
    assert "budget 'team video' ($0.50 per day, Europe/Berlin)" in refusal
    assert "$0.35 spent and $0.00 reserved" in refusal


@pytest.mark.usefixtures("airflow_db")
@pytest.mark.parametrize(("final", "counted"), [(0.4, 400_000), (0.3, 350_000)])
def test_the_budget_counts_a_final_cost_above_the_pre_charge(
    simulator: NanoGPTSimulator,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    final: float,
    counted: int,
) -> None:
    """Above the pre-charge, the final cost is what the budget counts; below it, the pre-charge
    stays counted (NanoGPT's docs do not say the difference is given back)."""
    ledger_file = use_budget_ledger(monkeypatch, simulator.url, "1.00", tmp_path)

    outcome = run_dag(
        "nanogpt_shared_budget_final_cost",
        {"final_cost": f"[sim:final_cost={final}]"},
        path=BUDGET_DAGS,
    )

    assert outcome.task_states == {"final_cost": "success"}
    (job,) = simulator.state()["jobs"]
    assert job["cost"] == 0.35  # pre-charged
    assert outcome.xcoms[("final_cost", "return_value")]["cost"] == final  # its final cost
    with closing(sqlite3.connect(ledger_file)) as db:
        rows = db.execute(
            f"SELECT state, estimate_micro, charged_micro, run_id FROM {ledger.TABLE_RESERVATIONS}"
        ).fetchall()
    assert rows == [("settled", 350_000, counted, job["runId"])]
