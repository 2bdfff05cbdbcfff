"""Bad input ends with one clear line saying what to fix, and nothing is submitted."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest

from airflow_provider_nanogpt.simulator import NanoGPTSimulator
from tests.airflow.harness import run_dag
from tests.conftest import connection_json

pytestmark = pytest.mark.usefixtures("airflow_db")

PROMPT = "a snow globe on a windowsill"


def _error_line(output: str, error_class: str) -> str:
    lines = [line for line in output.splitlines() if re.match(rf"^\S*{error_class}: ", line)]
    assert lines, f"no {error_class} line in the task output"
    return lines[-1]


@pytest.mark.parametrize(
    ("conf", "error_class", "fix_hint"),
    [
        ({"extra_params": {"cfg_scale": 5}}, "NanoGPTValidationError", "cfg_scale=5"),
        (
            {"model": "wan-video-image-to-video"},
            "NanoGPTValidationError",
            "image_url or image_path",
        ),
        ({"image_url": "ftp://host/a.png"}, "NanoGPTValidationError", "http(s) only"),
        (
            {"image_url": "https://x/a.png", "image_path": "/tmp/a.png"},
            "NanoGPTValidationError",
            "either image_url or image_path",
        ),
        ({"image_path": "NOT_AN_IMAGE"}, "NanoGPTValidationError", "not a PNG, JPEG"),
        ({"image_path": "TOO_LARGE"}, "NanoGPTValidationError", "up to 4 MB"),
    ],
)
def test_invalid_requests(
    nanogpt_connection: NanoGPTSimulator,
    capfd: pytest.CaptureFixture[str],
    tmp_path: Path,
    conf: dict,
    error_class: str,
    fix_hint: str,
) -> None:
    if conf.get("image_path") == "NOT_AN_IMAGE":
        (tmp_path / "notes.png").write_text("just text")
        conf = {**conf, "image_path": str(tmp_path / "notes.png")}
    if conf.get("image_path") == "TOO_LARGE":
        (tmp_path / "big.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * (5 * 1024 * 1024))
        conf = {**conf, "image_path": str(tmp_path / "big.png")}
    outcome = run_dag("nanogpt_with_retry", {"prompt": PROMPT, **conf})
    assert outcome.state == "failed"
    assert outcome.try_numbers["generate"] == 1
    assert fix_hint in _error_line(capfd.readouterr().out, error_class)
    assert nanogpt_connection.state()["requests"] == {}


def test_missing_connection(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_NANOGPT_DEFAULT", raising=False)
    outcome = run_dag("nanogpt_with_retry", {"prompt": PROMPT})
    assert outcome.state == "failed"
    assert outcome.try_numbers["generate"] == 1
    line = _error_line(capfd.readouterr().out, "NanoGPTConfigurationError")
    assert "AIRFLOW_CONN_NANOGPT_DEFAULT" in line


def test_connection_without_key(
    simulator: NanoGPTSimulator, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_NANOGPT_DEFAULT", json.dumps({"conn_type": "nanogpt", "host": simulator.url})
    )
    outcome = run_dag("nanogpt_with_retry", {"prompt": PROMPT})
    assert outcome.state == "failed"
    assert "password field" in _error_line(capfd.readouterr().out, "NanoGPTConfigurationError")
    assert simulator.state()["requests"] == {}


def test_unreachable_host(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv(
        "AIRFLOW_CONN_NANOGPT_DEFAULT",
        connection_json(f"http://127.0.0.1:{port}", max_retries=1),
    )
    outcome = run_dag("nanogpt_deferrable", {"prompt": PROMPT})
    assert outcome.state == "failed"
    line = _error_line(capfd.readouterr().out, "NanoGPTConnectionError")
    assert f"127.0.0.1:{port}" in line


AMAZON = "apache-airflow-providers-amazon"
GOOGLE = "apache-airflow-providers-google"
AZURE = "apache-airflow-providers-microsoft-azure"


@pytest.mark.parametrize(
    ("field", "uri", "install_hint"),
    [
        ("output_path", "s3://bucket/x.mp4", f"install {AMAZON} (it brings s3fs)"),
        ("output_path", "s3a://bucket/x.mp4", f"install {AMAZON} (it brings s3fs)"),
        ("output_path", "gs://bucket/x.mp4", f"install {GOOGLE} (it brings gcsfs)"),
        ("output_path", "gcs://bucket/x.mp4", f"install {GOOGLE} (it brings gcsfs)"),
        ("output_path", "az://container/x.mp4", f"install {AZURE} (it brings adlfs)"),
        ("output_path", "abfs://container/x.mp4", f"install {AZURE} (it brings adlfs)"),
        # A protocol fsspec knows whose package is missing, and none registered with Airflow.
        ("output_path", "oss://bucket/x.mp4", "registers the 'oss' filesystem"),
        ("output_path", "webhdfs://host/x.mp4", "registers the 'webhdfs' filesystem"),
        ("image_path", "s3://bucket/a.png", f"install {AMAZON} (it brings s3fs)"),
    ],
)
def test_object_storage_without_its_filesystem_fails_at_once_before_submitting(
    nanogpt_connection: NanoGPTSimulator,
    capfd: pytest.CaptureFixture[str],
    field: str,
    uri: str,
    install_hint: str,
) -> None:
    outcome = run_dag("nanogpt_with_retry", {"prompt": PROMPT, field: uri})
    assert outcome.state == "failed"
    assert outcome.try_numbers["generate"] == 1  # not retried: a retry cannot install a package
    line = _error_line(capfd.readouterr().out, "NanoGPTConfigurationError")
    assert install_hint in line and field in line
    assert nanogpt_connection.state()["submit_requests"] == 0
