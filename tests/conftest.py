"""Test-wide set-up: an isolated Airflow home, the NanoGPT simulator and a canary API key.

Airflow reads its configuration when first imported, so the environment is fixed here, before
any test module imports Airflow.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TEST_DAGS = REPO / "tests" / "dags"
_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="nanogpt-airflow-home-"))
# Every session makes one (its SQLite DB, logs, lineage events): gone when the session ends.
atexit.register(shutil.rmtree, _AIRFLOW_HOME, ignore_errors=True)

os.environ["AIRFLOW_HOME"] = str(_AIRFLOW_HOME)
EXAMPLE_DAGS = REPO / "example_dags"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(TEST_DAGS)
# Two bundles, so dag.test() can run the test DAGs and the shipped examples alike.
os.environ["AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST"] = json.dumps(
    [
        {
            "name": name,
            "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
            "kwargs": {"path": str(path)},
        }
        for name, path in (("tests", TEST_DAGS), ("examples", EXAMPLE_DAGS))
    ]
)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
os.environ["AIRFLOW__CORE__PARALLELISM"] = "4"
os.environ.pop("AIRFLOW_CONN_NANOGPT_DEFAULT", None)
# Airflow's OpenLineage listener (a dev dependency) decides once per process, when its plugin is
# imported, whether it is on: every dag.test() run writes its events here, for the lineage tests.
OPENLINEAGE_EVENTS = _AIRFLOW_HOME / "openlineage.jsonl"
os.environ["AIRFLOW__OPENLINEAGE__TRANSPORT"] = json.dumps(
    {"type": "file", "log_file_path": str(OPENLINEAGE_EVENTS), "append": True}
)
os.environ["AIRFLOW__OPENLINEAGE__NAMESPACE"] = "nanogpt-tests"

# A key that must never show up in any log, XCom, exception or repr.
CANARY_KEY = "sk-nano-canary-5f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"

from airflow_provider_nanogpt.api.retry import RetryPolicy  # noqa: E402
from airflow_provider_nanogpt.simulator import NanoGPTSimulator  # noqa: E402

FAST_RETRIES = RetryPolicy(max_retries=3, base_delay=0.01, max_delay=0.05)


def connection_json(url: str, key: str = CANARY_KEY, **extra: object) -> str:
    conn: dict[str, object] = {"conn_type": "nanogpt", "password": key, "host": url}
    if extra:
        conn["extra"] = extra
    return json.dumps(conn)


@pytest.fixture
def simulator() -> Iterator[NanoGPTSimulator]:
    """The simulator at 50x speed: a default job renders in about 0.2 s."""
    with NanoGPTSimulator(
        api_key=CANARY_KEY,
        time_scale=0.02,
        quiet=True,
        queue_seconds=2,
        render_seconds=8,
    ) as sim:
        yield sim


@pytest.fixture
def nanogpt_connection(
    simulator: NanoGPTSimulator, monkeypatch: pytest.MonkeyPatch
) -> NanoGPTSimulator:
    """``nanogpt_default`` points at the simulator through the documented env-var form."""
    monkeypatch.setenv("AIRFLOW_CONN_NANOGPT_DEFAULT", connection_json(simulator.url))
    return simulator


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """An initialised SQLite metadata DB for dag.test() runs (created once per session)."""
    marker = _AIRFLOW_HOME / ".migrated"
    if not marker.exists():
        subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"],
            check=True,
            capture_output=True,
            env=os.environ.copy(),
        )
        marker.touch()
    return _AIRFLOW_HOME


@pytest.fixture
def memory_storage(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``memory://`` object storage, as an S3 stand-in, on every supported Airflow version."""
    from airflow.sdk.io import fs

    if "memory" in fs._register_filesystems():
        yield
        return
    from fsspec.implementations.memory import MemoryFileSystem

    monkeypatch.setitem(fs._BUILTIN_SCHEME_TO_FS, "memory", lambda *_: MemoryFileSystem())
    fs._register_filesystems.cache_clear()
    yield
    fs._register_filesystems.cache_clear()
