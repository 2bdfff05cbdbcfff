"""Every shipped example DAG parses and runs green against the simulator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_provider_nanogpt.simulator import NanoGPTSimulator
from tests.airflow.harness import RESULT_KEYS, run_dag
from tests.conftest import EXAMPLE_DAGS

pytestmark = pytest.mark.usefixtures("airflow_db")

EXAMPLES = sorted(p.stem for p in EXAMPLE_DAGS.glob("example_*.py"))


def test_every_example_parses_without_errors() -> None:
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow < 3.2
        from airflow.models.dagbag import DagBag  # type: ignore[no-redef]

    bag = DagBag(dag_folder=str(EXAMPLE_DAGS))
    assert bag.import_errors == {}
    assert set(bag.dag_ids) == set(EXAMPLES)


@pytest.fixture
def sim(
    nanogpt_connection: NanoGPTSimulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> NanoGPTSimulator:
    monkeypatch.setenv("AIRFLOW_VAR_NANOGPT_OUTPUT_DIR", str(tmp_path))
    nanogpt_connection.configure(time_scale=0.05)
    return nanogpt_connection


@pytest.mark.parametrize("without_logical_date", [False, True], ids=["dated", "no_logical_date"])
@pytest.mark.parametrize("dag_id", [e for e in EXAMPLES if e != "example_nanogpt_asset_consumer"])
def test_example_runs_green(
    sim: NanoGPTSimulator, dag_id: str, tmp_path: Path, without_logical_date: bool
) -> None:
    """Also for a run without a logical date (REST ``logical_date: null``, an asset event),
    which has no ``ds`` to render: every video paid for is waited for and saved."""
    outcome = run_dag(
        dag_id,
        {},
        path=EXAMPLE_DAGS / f"{dag_id}.py",
        without_logical_date=without_logical_date,
    )
    assert outcome.state == "success", outcome.task_states
    videos = sorted(tmp_path.rglob("*.mp4"))
    generating_tasks = [
        key
        for key, value in outcome.xcoms.items()
        if key[1] == "return_value" and isinstance(value, dict) and value.get("output_path")
    ]
    assert len(videos) == len(generating_tasks) >= 1
    assert sim.state()["submits_accepted"] == len(
        [key for key in outcome.xcoms if key[1] == "run_id"]
    )


def test_a_template_a_run_cannot_render_fails_before_anything_is_paid(
    sim: NanoGPTSimulator, tmp_path: Path
) -> None:
    """Airflow renders every template before ``execute``: ``{{ ds }}`` in a run without a
    logical date fails the submitting task with nothing sent (the split example's sensor failed
    so after ``submit`` had paid; every example now uses templates that exist in every run)."""
    conf = {"prompt": "a paper boat", "out_dir": str(tmp_path)}  # output_path uses {{ ds }}
    outcome = run_dag("nanogpt_lineage", conf, without_logical_date=True)
    assert outcome.task_states == {"generate": "failed"}
    assert sim.state()["submits_accepted"] == 0
    assert sim.state()["ledger"] == {}


def test_daily_video_feeds_the_asset_consumer(sim: NanoGPTSimulator, tmp_path: Path) -> None:
    produced = run_dag("example_nanogpt_daily", {}, path=EXAMPLE_DAGS / "example_nanogpt_daily.py")
    assert produced.state == "success"
    result = produced.xcoms[("daily_teaser", "return_value")]
    consumer = run_dag(
        "example_nanogpt_asset_consumer",
        {},
        path=EXAMPLE_DAGS / "example_nanogpt_asset_consumer.py",
    )
    assert consumer.state == "success"
    assert consumer.xcoms[("publish", "return_value")] == result["output_path"]
    # The return value stays small and JSON-able: exactly the documented keys.
    assert set(json.loads(json.dumps(result))) == RESULT_KEYS
