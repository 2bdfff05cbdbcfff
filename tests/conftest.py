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
# What a person looks at after a run (screenshots, reports), a folder per test module.
ARTIFACTS = Path(os.environ.get("NANOGPT_ARTIFACTS", REPO / "test-artifacts"))
# The browser scenario shared by two test modules asserts in that helper: pytest explains those too.
pytest.register_assert_rewrite("tests.ui.required_actions")
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
# The listener forks the whole test process for every task event by default: three forks a video,
# a fifth of a dag.test() batch's CPU in page faults. A thread emits the same events (the
# end-to-end deployments keep Airflow's default: they do not inherit AIRFLOW__ variables).
os.environ["AIRFLOW__OPENLINEAGE__EXECUTE_IN_THREAD"] = "True"

# A key that must never show up in any log, XCom, exception or repr.
CANARY_KEY = "sk-nano-canary-5f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"

from airflow_provider_nanogpt.api.retry import RetryPolicy  # noqa: E402
from airflow_provider_nanogpt.simulator import NanoGPTSimulator  # noqa: E402

FAST_RETRIES = RetryPolicy(max_retries=3, base_delay=0.01, max_delay=0.05)

# Every simulator any test starts (fixtures of every scope included), for the double-charge check.
_STARTED_SIMULATORS: list[NanoGPTSimulator] = []
_start_simulator = NanoGPTSimulator.start


def _start_and_watch(self: NanoGPTSimulator) -> NanoGPTSimulator:
    _STARTED_SIMULATORS.append(self)
    return _start_simulator(self)


NanoGPTSimulator.start = _start_and_watch  # type: ignore[method-assign]
_LEDGER_SEEN: set[tuple[int, str]] = set()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "charges_twice(reason): the test means one submission tag to be charged twice "
        "(the suite-wide double-charge check lets it pass)",
    )


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Stop Airflow's listeners as Airflow's own components do before they exit. dag.test()
    runs OpenLineage's listener, which sends DAG-run events through a process pool: left
    running, its worker outlives the session, holding the session's output open (a pipe reader,
    such as `| tail`, then waits for ever)."""
    if "airflow.listeners.listener" not in sys.modules:
        return  # no Airflow listener ran in this session
    from airflow.listeners.listener import get_listener_manager

    get_listener_manager().hook.before_stopping(component=session)


def newly_charged_twice(
    simulators: list[NanoGPTSimulator], seen: set[tuple[int, str]]
) -> dict[tuple[int, str], list[str]]:
    """Submission tags that stand charged twice on these simulators and were not reported yet."""
    doubled = {
        (id(sim), tag): runs
        for sim in simulators
        for tag, runs in sim.state()["ledger"].items()
        if len(runs) > 1 and (id(sim), tag) not in seen
    }
    seen.update(doubled)
    return doubled


@pytest.fixture(autouse=True)
def _never_charged_twice(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test is a double-charge detector: no submission tag (one task instance, one clear
    generation, one request) may stand charged twice on any simulator, unless the test says so."""
    yield
    doubled = newly_charged_twice(_STARTED_SIMULATORS, _LEDGER_SEEN)
    if doubled and request.node.get_closest_marker("charges_twice") is None:
        pytest.fail(
            "One submission tag was charged twice (tag: run ids): "
            + "; ".join(f"{tag}: {runs}" for (_, tag), runs in doubled.items()),
            pytrace=False,
        )


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
