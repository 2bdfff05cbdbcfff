"""``python -m airflow_provider_nanogpt.simulator``: startup line, env key, logging, signals."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ._helpers import call

ROOT = Path(__file__).resolve().parents[2]
LISTEN_RE = re.compile(r"^NanoGPT simulator listening on (http://127\.0\.0\.1:(\d+))$")
CLI_KEY = "sk-nano-cli-secret-1234"


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("NANOGPT_SIM_API_KEY", None)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def _start(*args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "airflow_provider_nanogpt.simulator", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env or _env(),
        cwd=ROOT,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    match = LISTEN_RE.match(line)
    if not match:
        proc.kill()
        raise AssertionError(f"unexpected first line {line!r}: {proc.stderr.read()}")  # type: ignore[union-attr]
    return proc, match.group(1)


def _stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> tuple[int, str]:
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=10)
    return proc.returncode, stderr


@pytest.fixture
def cli() -> Iterator[tuple[subprocess.Popen[str], str]]:
    proc, url = _start("--api-key", CLI_KEY, "--time-scale", "0.05")
    yield proc, url
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


def test_cli_serves_and_exits_cleanly_on_sigterm(cli: tuple[subprocess.Popen[str], str]) -> None:
    proc, url = cli
    assert call(url, "POST", "/api/check-balance", key=CLI_KEY).status == 200
    assert call(url, "POST", "/api/check-balance", key="wrong").status == 401
    run_id = call(
        url, "POST", "/api/generate-video", {"model": "kling-video-v2", "prompt": "x"}, key=CLI_KEY
    ).json()["runId"]
    call(url, "GET", f"/api/video/status?requestId={run_id}&token=hunter2", key=CLI_KEY)
    returncode, stderr = _stop(proc)
    assert returncode == 0
    assert "POST /api/check-balance 200" in stderr
    assert "POST /api/check-balance 401" in stderr
    assert "GET /api/video/status 200" in stderr
    assert CLI_KEY not in stderr
    assert "hunter2" not in stderr
    assert "x-api-key" not in stderr


def test_cli_exits_cleanly_on_sigint(cli: tuple[subprocess.Popen[str], str]) -> None:
    proc, _ = cli
    returncode, _ = _stop(proc, signal.SIGINT)
    assert returncode == 0


def test_cli_key_from_environment() -> None:
    proc, url = _start("--quiet", env=_env(NANOGPT_SIM_API_KEY="sk-nano-from-env"))
    try:
        assert call(url, "POST", "/api/check-balance", key="sk-nano-from-env").status == 200
        assert call(url, "POST", "/api/check-balance", key="other").status == 401
    finally:
        returncode, stderr = _stop(proc)
    assert returncode == 0
    assert stderr == ""  # --quiet: no access log


def test_cli_options_are_applied() -> None:
    proc, url = _start(
        "--quiet",
        "--balance",
        "7.5",
        "--rate-limit",
        "1",
        "--status-shape",
        "flat",
        "--queue-seconds",
        "0",
        "--render-seconds",
        "0",
        "--time-scale",
        "0.5",
    )
    try:
        state = call(url, "GET", "/_sim/state").json()
        assert state["balance_usd"] == 7.5
        assert state["time_scale"] == 0.5
        assert state["config"]["status_shape"] == "flat"
        assert state["config"]["rate_limit_per_minute"] == 1
        assert state["config"]["api_key_required"] is False
        run_id = call(
            url,
            "POST",
            "/api/generate-video",
            {"model": "kling-video-v2", "prompt": "x"},
            key="any",
        ).json()["runId"]
        assert (
            call(
                url,
                "POST",
                "/api/generate-video",
                {"model": "kling-video-v2", "prompt": "x"},
                key="any",
            ).status
            == 429
        )
        status = call(url, "GET", f"/api/video/status?requestId={run_id}", key="any").json()
        assert status["status"] == "completed"
    finally:
        assert _stop(proc)[0] == 0


def test_cli_recover_lag() -> None:
    proc, url = _start("--quiet", "--recover-lag", "30")
    try:
        assert call(url, "GET", "/_sim/config").json()["recover_lag_seconds"] == 30.0
        run_id = call(
            url, "POST", "/api/generate-video", {"model": "kling-video-v2", "prompt": "x"}
        ).json()["runId"]
        assert call(url, "GET", "/api/generate-video/recover").json()["data"] == []
        call(url, "POST", "/_sim/advance", {"seconds": 30})
        items = call(url, "GET", "/api/generate-video/recover").json()["data"]
        assert [item["runId"] for item in items] == [run_id]
    finally:
        assert _stop(proc)[0] == 0


@pytest.mark.parametrize(
    ("args", "reason"),
    [(["--recover-lag", "-1"], "recover_lag_seconds"), (["--host", "0.0.0.0"], "loopback")],
)
def test_cli_refuses_bad_settings(args: list[str], reason: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "airflow_provider_nanogpt.simulator", *args],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=ROOT,
        timeout=20,
    )
    assert result.returncode == 2
    assert reason in result.stderr
    assert result.stdout == ""


# What pip writes for the ``nanogpt-simulator`` console script.
CONSOLE_SCRIPT = """import re
import sys
from airflow_provider_nanogpt.simulator.__main__ import main
if __name__ == "__main__":
    sys.argv[0] = re.sub(r"(-script\\.pyw|\\.exe)?$", "", sys.argv[0])
    sys.exit(main())
"""


@pytest.mark.parametrize("called_as", ["module", "console script"])
def test_help_shows_defaults_markers_and_the_name_it_was_called_by(
    called_as: str, tmp_path: Path
) -> None:
    from airflow_provider_nanogpt.simulator.markers import ALL_MARKERS

    if called_as == "module":
        argv = [sys.executable, "-m", "airflow_provider_nanogpt.simulator", "--help"]
        prog = "python -m airflow_provider_nanogpt.simulator"
    else:
        script = tmp_path / "nanogpt-simulator"
        script.write_text(CONSOLE_SCRIPT)
        argv, prog = [sys.executable, str(script), "--help"], "nanogpt-simulator"
    done = subprocess.run(argv, capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=30)
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert text.startswith(f"usage: {prog} [-h]"), text[:200]
    flat = " ".join(text.split())  # argparse wraps help text at any space
    for option, default in (("--port", "8787"), ("--time-scale", "1.0"), ("--balance", "100.0")):
        assert re.search(rf"{option} \S+ .*?\(default: {re.escape(default)}\)", flat), option
    assert "$NANOGPT_SIM_API_KEY" in flat
    for name in ALL_MARKERS:
        assert f"[sim:{name}" in text, name
