"""The models/balance command line, against the simulator."""

from __future__ import annotations

import json

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
