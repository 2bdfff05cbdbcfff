"""The models/balance command line, against the simulator."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from airflow_provider_nanogpt.__main__ import main
from airflow_provider_nanogpt.simulator import NanoGPTSimulator


def test_balance_and_models(
    nanogpt_connection: NanoGPTSimulator, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["balance"]) == 0
    assert "USD balance: $100.00" in capsys.readouterr().out
    assert main(["models", "--json"]) == 0
    models = {m["id"]: m for m in json.loads(capsys.readouterr().out)}
    assert models["kling-video-v2"]["pricing"]["currency"] == "USD"
    assert main(["models"]) == 0
    assert "kling-video-v2" in capsys.readouterr().out
    assert nanogpt_connection.state()["submit_requests"] == 0


def test_cli_reports_errors(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_NANOGPT_DEFAULT", raising=False)
    assert main(["balance"]) == 1
    assert "AIRFLOW_CONN_NANOGPT_DEFAULT" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["balance", "models"])
def test_cli_reads_a_connection_stored_in_the_metadata_db(
    command: str,
    simulator: NanoGPTSimulator,
    airflow_db: object,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A connection made with ``airflow connections add`` (the metadata DB, no env var) is found,
    as ``airflow connections test`` finds it."""
    from airflow.models.connection import Connection
    from airflow.utils.session import create_session

    from tests.conftest import CANARY_KEY

    conn_id = "nanogpt_cli_db"
    monkeypatch.delenv(f"AIRFLOW_CONN_{conn_id.upper()}", raising=False)
    with create_session() as session:
        session.add(
            Connection(
                conn_id=conn_id, conn_type="nanogpt", password=CANARY_KEY, host=simulator.url
            )
        )
    try:
        assert main([command, "--conn-id", conn_id, "--json"]) == 0, capsys.readouterr().err
    finally:
        with create_session() as session:
            session.query(Connection).filter(Connection.conn_id == conn_id).delete()
    assert json.loads(capsys.readouterr().out)
    assert "_AIRFLOW_PROCESS_CONTEXT" not in os.environ  # the lookup mode did not leak
    assert simulator.state()["submit_requests"] == 0


def test_help_describes_each_command_its_connection_and_examples(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: python -m airflow_provider_nanogpt ")
    for command, meaning in (
        ("models", "video models"),
        ("balance", "USD balance"),
        ("reconcile", "reservations"),
    ):
        described = [line for line in text.splitlines() if line.startswith(f"  {command} ")]
        assert described and meaning in described[0], text
        assert f"python -m airflow_provider_nanogpt {command}" in text  # an example of it
    assert "(default: nanogpt_default)" in text
    assert "AIRFLOW_CONN_NANOGPT_DEFAULT" in text


def test_reconcile_releases_a_sent_reservation_nanogpt_never_created(
    simulator: NanoGPTSimulator,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from airflow_provider_nanogpt.ledger import Budget, Ledger
    from tests.airflow.harness import use_budget_ledger

    ledger_file = use_budget_ledger(monkeypatch, simulator.url, "1.00", tmp_path)
    ledger = Ledger.from_url(f"sqlite:///{ledger_file}")
    budget = Budget("connection nanogpt_default", "day", 1_000_000)
    ledger.reserve("tag-1#try-1", "tag-1", [budget], 500_000)
    ledger.mark_sent("tag-1#try-1")
    assert main(["reconcile", "--settle-seconds", "0", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)["reservations"]
    assert (row["reservation_id"], row["action"]) == ("tag-1#try-1", "released")
    assert ledger.use(budget).total_micro == 0
    assert main(["reconcile"]) == 0
    assert "no sent reservation" in capsys.readouterr().out
    assert simulator.state()["submit_requests"] == 0
