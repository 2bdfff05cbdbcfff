"""One real Airflow deployment (PostgreSQL, four components, simulator) shared by the e2e module."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.deployment import Deployment, Rest, Simulator
from tests.e2e.lifecycle import kept_on_failure, start_on_cluster, unavailable
from tests.e2e.postgres import PostgresCluster, PostgresUnavailable, ensure_installed

E2E_DAGS = Path(__file__).resolve().parent / "dags"
BUDGET_WINDOW_SECONDS = 40
E2E_DAG_IDS = [
    "nanogpt_e2e_deferred",
    "nanogpt_e2e_triggerer_restart",
    "nanogpt_e2e_worker_crash",
    "nanogpt_e2e_fault_soak",
    "nanogpt_e2e_alias_producer",
    "nanogpt_e2e_alias_consumer",
    "nanogpt_e2e_budget_wait",
]


@dataclass
class E2E:
    """What the tests need: the deployment, its database, and what they observed on the way."""

    deployment: Deployment
    cluster: PostgresCluster
    canary: str
    videos: Path
    # Trigger rows captured while tasks were deferred (the triggerer deletes them afterwards).
    trigger_rows: list[dict[str, Any]] = field(default_factory=list)
    # (dag_id, dag_run_id) of every run the tests triggered.
    runs: list[tuple[str, str]] = field(default_factory=list)

    @property
    def rest(self) -> Rest:
        return self.deployment.rest()

    @property
    def sim(self) -> Simulator:
        return self.deployment.simulator


@pytest.fixture(scope="module")
def e2e(request: pytest.FixtureRequest) -> Iterator[E2E]:
    try:
        cluster = PostgresCluster(ensure_installed())
    except PostgresUnavailable as exc:
        unavailable("e2e suite", "PostgreSQL", exc)

    # A fresh canary, so a hit can only come from this deployment.
    canary = f"sk-nano-e2e-canary-{uuid.uuid4()}"
    root = Path(tempfile.mkdtemp(prefix="nanogpt-e2e-"))
    videos = root / "videos"
    videos.mkdir()
    # A copy of the DAGs folder: a test adds the example DAGs to it once the scenarios are done.
    dags = root / "dags"
    shutil.copytree(E2E_DAGS, dags, ignore=shutil.ignore_patterns("__pycache__"))
    with kept_on_failure(request, root, "e2e"), contextlib.ExitStack() as stack:
        deployment = start_on_cluster(
            stack,
            cluster,
            root,
            dags,
            canary,
            E2E_DAG_IDS,
            # The example DAGs save their videos under this Airflow Variable.
            extra_env={
                "AIRFLOW_VAR_NANOGPT_OUTPUT_DIR": str(videos / "examples"),
                # The budget-wait DAG's windows (nanogpt_e2e_budget_dags.py): two videos each.
                "NANOGPT_E2E_BUDGET_WINDOW_SECONDS": str(BUDGET_WINDOW_SECONDS),
            },
        )
        yield E2E(deployment=deployment, cluster=cluster, canary=canary, videos=videos)
