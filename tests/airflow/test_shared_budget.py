"""Shared budgets end to end with dag.test(): two DAGs spending from one connection's budget."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from airflow_provider_nanogpt.simulator import NanoGPTSimulator
from tests.airflow.harness import run_dag
from tests.conftest import TEST_DAGS, connection_json

BUDGET_DAGS = TEST_DAGS / "nanogpt_budget_dags.py"


@pytest.mark.usefixtures("airflow_db")
def test_two_dags_share_one_connection_budget_and_the_third_video_is_never_sent(
    simulator: NanoGPTSimulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ledger_file = tmp_path / "budget-ledger.db"
    monkeypatch.setenv(
        "AIRFLOW_CONN_NANOGPT_DEFAULT",
        connection_json(
            simulator.url, budget_usd_per_day="1.00", budget_ledger_conn_id="budget_ledger"
        ),
    )
    monkeypatch.setenv(
        "AIRFLOW_CONN_BUDGET_LEDGER", json.dumps({"conn_type": "sqlite", "host": str(ledger_file)})
    )

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


@pytest.mark.skipif(
    importlib.util.find_spec("airflow.models.task_state_store") is None,
    reason="the run record that names the reservation lives in Airflow 3.3's task state store",
)
@pytest.mark.usefixtures("airflow_db")
@pytest.mark.parametrize(
    "dag_id", ["nanogpt_shared_budget_refunded", "nanogpt_shared_budget_refunded_sync"]
)
def test_a_video_refunded_while_waiting_gives_its_reservation_back_at_once(
    simulator: NanoGPTSimulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, dag_id: str
) -> None:
    # $0.50 a day holds one $0.35 video: the next one fits only if the refunded one stopped
    # counting when its task saw it fail (no retry or clear ever looks at it again).
    monkeypatch.setenv(
        "AIRFLOW_CONN_NANOGPT_DEFAULT",
        connection_json(
            simulator.url, budget_usd_per_day="0.50", budget_ledger_conn_id="budget_ledger"
        ),
    )
    monkeypatch.setenv(
        "AIRFLOW_CONN_BUDGET_LEDGER",
        json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "budget-ledger.db")}),
    )

    refunded = run_dag(dag_id, {}, path=BUDGET_DAGS)
    after = run_dag("nanogpt_shared_budget_a", {}, path=BUDGET_DAGS)

    assert refunded.task_states == {"refunded": "failed"}
    assert after.task_states == {"first": "success"}
    jobs = simulator.state()["jobs"]
    assert [(job["refunded"], job["cost"]) for job in jobs] == [(True, 0.35), (False, 0.35)]
