"""One real Airflow deployment (PostgreSQL, four components, simulator) shared by the e2e module."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.deployment import Deployment, Rest, Simulator
from tests.e2e.postgres import PostgresCluster, PostgresUnavailable, ensure_installed

E2E_DAGS = Path(__file__).resolve().parent / "dags"
E2E_DAG_IDS = [
    "nanogpt_e2e_deferred",
    "nanogpt_e2e_triggerer_restart",
    "nanogpt_e2e_worker_crash",
    "nanogpt_e2e_fault_soak",
    "nanogpt_e2e_alias_producer",
    "nanogpt_e2e_alias_consumer",
]
# Keep the temp dirs (component output, logs) after a run for inspection.
KEEP_ENV = "NANOGPT_E2E_KEEP"


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
        if os.environ.get("CI"):
            pytest.fail(f"The e2e suite must run on CI, but PostgreSQL is unavailable: {exc}")
        pytest.skip(f"PostgreSQL is unavailable: {exc}")

    # A fresh canary, so a hit can only come from this deployment.
    canary = f"sk-nano-e2e-canary-{uuid.uuid4()}"
    root = Path(tempfile.mkdtemp(prefix="nanogpt-e2e-"))
    videos = root / "videos"
    videos.mkdir()
    failed_before = request.session.testsfailed
    deployment: Deployment | None = None
    setup_failed = False
    try:
        cluster.start()
        deployment = Deployment(root, cluster.sqlalchemy_url, E2E_DAGS, canary)
        try:
            deployment.start()
            deployment.wait_for_dags(E2E_DAG_IDS, timeout=120)
        except Exception as exc:
            raise RuntimeError(f"{exc}\n{deployment.describe()}") from exc
        yield E2E(deployment=deployment, cluster=cluster, canary=canary, videos=videos)
    except BaseException:
        setup_failed = True
        raise
    finally:
        if deployment is not None:
            deployment.stop()
        cluster.stop()
        failed = setup_failed or request.session.testsfailed > failed_before
        if failed or os.environ.get(KEEP_ENV):
            print(f"\nnanogpt e2e: Airflow home and component output kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
