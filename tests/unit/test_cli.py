"""The models/balance command line, against the simulator."""

from __future__ import annotations

import json
import os

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
    for command, meaning in (("models", "video models"), ("balance", "USD balance")):
        described = [line for line in text.splitlines() if line.startswith(f"  {command} ")]
        assert described and meaning in described[0], text
        assert f"python -m airflow_provider_nanogpt {command}" in text  # an example of it
    assert "(default: nanogpt_default)" in text
    assert "AIRFLOW_CONN_NANOGPT_DEFAULT" in text
