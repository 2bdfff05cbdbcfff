"""The benchmarks still run: ``python -m benchmarks --quick`` end to end.

Only that they run and report every figure. Timings are never asserted: they depend on the
machine and its load, and belong in docs/performance.md, not in a pass/fail test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

# Figures are ratios, but the quick run has a wall-clock budget: it runs alone (docs/testing.md).
pytestmark = pytest.mark.timing

EXPECTED_BENCHMARKS = {
    "triggerer",
    "worker_slots",
    "polling",
    "dag_parse",
    "download",
    "batch",
    "ui_page",
    "budget",
}


def test_quick_benchmarks_run_and_report_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW")}
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--json", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["quick"] is True
    assert result["failed"] == []
    assert set(result["durations"]) == EXPECTED_BENCHMARKS
    rows = result["rows"]
    assert {row["benchmark"] for row in rows} == EXPECTED_BENCHMARKS
    # Every figure was measured and compared with a baseline from the same run, except the
    # two rows that are differences or counts by construction.
    for row in rows:
        assert row["value"] is not None, row
        if not row["figure"].startswith(("extra parse time", "failed submissions")):
            assert row["baselines"], row
            assert all(value is not None for _, value in row["baselines"]), row
    # The triggers, jobs and downloads really happened against the simulator.
    details = "\n".join(result["details"])
    assert "events={'success': 5}" in details
    assert details.count("failures 0") == 2  # operator and hook bursts
    # The printed table is what docs/performance.md shows.
    assert "| Benchmark | Figure | Provider |" in completed.stdout
    # The simulator's fake key never leaks into the output.
    assert "sk-nano-bench" not in completed.stdout + completed.stderr + out.read_text()
