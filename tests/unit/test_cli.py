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
