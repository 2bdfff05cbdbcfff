"""Lineage through Airflow: OpenLineage events and alias-named assets, from dag.test() runs.

Airflow's own OpenLineage listener (apache-airflow-providers-openlineage, a dev dependency) writes
its events through the file transport; the tests read what it wrote, as Marquez would receive it.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_nanogpt.simulator import NanoGPTSimulator
from tests.airflow.harness import run_dag
from tests.conftest import CANARY_KEY, OPENLINEAGE_EVENTS

pytestmark = pytest.mark.usefixtures("airflow_db")

PROMPT = "a hot-air balloon over a glacier"
IMAGE_URL = "https://images.example.com/stills/balloon.png?signature=secret"


@pytest.fixture
def sim(nanogpt_connection: NanoGPTSimulator) -> NanoGPTSimulator:
    nanogpt_connection.configure(time_scale=0.05, queue_seconds=2, render_seconds=8)
    return nanogpt_connection


class Events:
    """The OpenLineage events written since the test began (all runs share one file)."""

    def __init__(self) -> None:
        self.start = OPENLINEAGE_EVENTS.stat().st_size if OPENLINEAGE_EVENTS.exists() else 0

    def text(self) -> str:
        if not OPENLINEAGE_EVENTS.exists():
            return ""
        with OPENLINEAGE_EVENTS.open() as handle:
            handle.seek(self.start)
            return handle.read()

    def of(self, job_suffix: str, wanted: set[str]) -> list[dict[str, Any]]:
        """The job's events; the listener may emit from a background thread, so wait a little."""
        deadline = time.time() + 30
        while True:
            events = [json.loads(line) for line in self.text().splitlines()]
            mine = [e for e in events if e["job"]["name"].endswith(job_suffix)]
            if wanted <= {e["eventType"] for e in mine} or time.time() > deadline:
                return mine
            time.sleep(0.2)


@pytest.fixture
def lineage() -> Events:
    return Events()


def facet(event: dict[str, Any]) -> dict[str, Any]:
    return event["run"]["facets"]["nanogpt_video"]


def test_openlineage_events_name_inputs_output_and_the_run(
    sim: NanoGPTSimulator, lineage: Events, tmp_path: Path
) -> None:
    conf = {"prompt": PROMPT, "image_url": IMAGE_URL, "out_dir": str(tmp_path / "videos")}
    outcome = run_dag("nanogpt_lineage", conf)
    assert outcome.state == "success"
    result = outcome.xcoms[("generate", "return_value")]
    events = lineage.of("nanogpt_lineage.generate", {"START", "COMPLETE"})
    complete = next(e for e in events if e["eventType"] == "COMPLETE")

    # The source image, named without its query (signed URLs carry credentials there).
    assert [(d["namespace"], d["name"]) for d in complete["inputs"]] == [
        ("https://images.example.com", "/stills/balloon.png")
    ]
    # The saved video, by the OpenLineage file naming convention.
    assert [(d["namespace"], d["name"]) for d in complete["outputs"]] == [
        ("file", result["output_path"])
    ]
    run = facet(complete)
    assert run["runId"] == result["run_id"] == sim.state()["jobs"][0]["runId"]
    assert (run["model"], run["cost"], run["currency"]) == ("kling-video-v2", result["cost"], "USD")
    assert run["request"]["prompt"] == PROMPT and run["promptsIncluded"] is True
    start = next(e for e in events if e["eventType"] == "START")
    assert facet(start)["request"]["model"] == "kling-video-v2"
    assert CANARY_KEY not in lineage.text()
    # Airflow's own facets repeat dag_run.conf as given; what this provider adds never has the
    # URL's query.
    ours = json.dumps([facet(e) for e in events] + [e["inputs"] for e in events])
    assert "signature=secret" not in ours and IMAGE_URL.split("?")[0] in ours


def test_prompts_can_be_left_out_of_lineage(
    sim: NanoGPTSimulator, lineage: Events, tmp_path: Path
) -> None:
    from tests.dags.nanogpt_test_dags import SECRET_PROMPT

    assert run_dag("nanogpt_lineage_no_prompts", {"out_dir": str(tmp_path / "v")}).state == (
        "success"
    )
    events = lineage.of("nanogpt_lineage_no_prompts.generate", {"COMPLETE"})
    complete = next(e for e in events if e["eventType"] == "COMPLETE")
    assert "prompt" not in facet(complete)["request"]
    assert facet(complete)["promptsIncluded"] is False
    assert facet(complete)["request"]["model"] == "kling-video-v2"
    assert SECRET_PROMPT not in lineage.text()


def test_a_failed_run_reports_its_run_id(
    sim: NanoGPTSimulator, lineage: Events, tmp_path: Path
) -> None:
    conf = {"prompt": f"{PROMPT} [sim:fail]", "out_dir": str(tmp_path / "videos")}
    assert run_dag("nanogpt_lineage", conf).state == "failed"
    events = lineage.of("nanogpt_lineage.generate", {"FAIL"})
    fail = next(e for e in events if e["eventType"] == "FAIL")
    assert facet(fail)["runId"] == sim.state()["jobs"][0]["runId"]


def test_nothing_breaks_with_openlineage_disabled_for_the_operator(
    sim: NanoGPTSimulator, lineage: Events, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Airflow reads [openlineage] disabled once per process; disabled_operators per task.
    operator = "airflow_provider_nanogpt.operators.video.GenerateVideoOperator"
    monkeypatch.setenv("AIRFLOW__OPENLINEAGE__DISABLED_FOR_OPERATORS", operator)
    outcome = run_dag("nanogpt_lineage", {"prompt": PROMPT, "out_dir": str(tmp_path / "v")})
    assert outcome.state == "success"
    assert lineage.of("nanogpt_lineage.generate", set()) == []


def test_without_the_openlineage_provider_the_methods_step_aside(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import airflow_provider_nanogpt
    from airflow_provider_nanogpt.operators.video import GenerateVideoOperator

    monkeypatch.setitem(sys.modules, "airflow.providers.openlineage.extractors", None)
    monkeypatch.delitem(sys.modules, "airflow_provider_nanogpt.lineage", raising=False)
    # An earlier dag.test() in this process imported it: `from package import lineage` would
    # find it as the package's attribute.
    monkeypatch.delattr(airflow_provider_nanogpt, "lineage", raising=False)
    op = GenerateVideoOperator(task_id="t", model="kling-video-v2", prompt=PROMPT)
    assert op.get_openlineage_facets_on_start() is None
    assert op.get_openlineage_facets_on_complete(None) is None


# Dynamic assets -----------------------------------------------------------------------------


def _queued_for(dag_id: str) -> list[str]:
    """URIs of the asset events that queued a run of ``dag_id`` (the scheduler's next step)."""
    from airflow.models.asset import AssetDagRunQueue, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(
            select(AssetModel.uri)
            .join(AssetDagRunQueue, AssetDagRunQueue.asset_id == AssetModel.id)
            .where(AssetDagRunQueue.target_dag_id == dag_id)
        ).all()
        return [uri for (uri,) in rows]


def _unpause(dag_id: str) -> None:
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session
    from sqlalchemy import update

    with create_session() as session:
        session.execute(update(DagModel).where(DagModel.dag_id == dag_id).values(is_paused=False))


def test_a_templated_output_path_triggers_the_dag_scheduled_on_the_alias(
    sim: NanoGPTSimulator, tmp_path: Path
) -> None:
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session
    from sqlalchemy import select

    out_dir = tmp_path / "daily"
    run_dag("nanogpt_lineage", {"prompt": "warm-up", "out_dir": str(out_dir / "first")})
    _unpause("nanogpt_lineage_consumer")  # known to Airflow now, and switched on
    outcome = run_dag("nanogpt_lineage", {"prompt": PROMPT, "out_dir": str(out_dir)})
    assert outcome.state == "success"
    result = outcome.xcoms[("generate", "return_value")]
    uri = f"file://{result['output_path']}"
    assert result["output_path"].startswith(str(out_dir)) and result["output_path"].endswith(
        "/video.mp4"
    )
    assert uri in _queued_for("nanogpt_lineage_consumer")
    with create_session() as session:
        (event,) = session.scalars(
            select(AssetEvent).where(AssetEvent.source_run_id == outcome.run_id)
        ).all()
        extra = dict(event.extra)
    assert {k: extra[k] for k in ("run_id", "model", "currency", "output_path")} == {
        "run_id": result["run_id"],
        "model": "kling-video-v2",
        "currency": "USD",
        "output_path": result["output_path"],
    }
    assert extra["cost"] == result["cost"] and extra["video_url"] == result["video_url"]
