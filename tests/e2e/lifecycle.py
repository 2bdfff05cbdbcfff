"""Setting up and tearing down a deployment fixture, the same way for every e2e module."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from tests.e2e.deployment import Deployment
from tests.e2e.postgres import PostgresCluster

KEEP_ENV = "NANOGPT_E2E_KEEP"
# The explicit opt-out: set it to skip a tier whose system packages cannot be had here.
SKIP_UNAVAILABLE_ENV = "NANOGPT_E2E_SKIP_UNAVAILABLE"


def unavailable(suite: str, what: str, exc: Exception) -> NoReturn:
    """Fail, naming what is missing, when a tier cannot run: a green run must have run it.

    Skipping is only ever asked for (``NANOGPT_E2E_SKIP_UNAVAILABLE=1``), and never on CI.
    """
    if os.environ.get(SKIP_UNAVAILABLE_ENV) and not os.environ.get("CI"):
        pytest.skip(f"{what} is unavailable ({SKIP_UNAVAILABLE_ENV} is set): {exc}")
    pytest.fail(
        f"The {suite} cannot run: {what} is unavailable: {exc}. Install it (the suite installs "
        f"Debian's packages itself when it runs as root), or set {SKIP_UNAVAILABLE_ENV}=1 to "
        "skip this tier on purpose.",
        pytrace=False,
    )


@contextlib.contextmanager
def kept_on_failure(request: pytest.FixtureRequest, root: Path, label: str) -> Iterator[None]:
    """Delete ``root`` afterwards, unless the set-up or a test failed or ``KEEP_ENV`` is set."""
    failed_before = request.session.testsfailed
    setup_failed = False
    try:
        yield
    except BaseException:
        setup_failed = True
        raise
    finally:
        failed = setup_failed or request.session.testsfailed > failed_before
        if failed or os.environ.get(KEEP_ENV):
            print(f"\nnanogpt {label}: Airflow home and component output kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def start(deployment: Deployment, dag_ids: list[str], timeout: float = 120) -> None:
    """Start it and wait for the DAGs; a failure carries every component's output."""
    try:
        deployment.start()
        deployment.wait_for_dags(dag_ids, timeout=timeout)
    except Exception as exc:
        raise RuntimeError(f"{exc}\n{deployment.describe()}") from exc


@contextlib.contextmanager
def described_on_failure(deployment: Deployment) -> Iterator[None]:
    """A failed assertion or wait inside carries every component's output tail as well."""
    try:
        yield
    except Exception as exc:
        raise AssertionError(f"{exc}\n{deployment.describe()}") from exc


def start_on_cluster(
    stack: contextlib.ExitStack,
    cluster: PostgresCluster,
    root: Path,
    dags: Path,
    api_key: str,
    dag_ids: list[str],
    **options: Any,
) -> Deployment:
    """Start ``cluster``, then a deployment on it (``options``: Deployment's keywords) with its
    DAGs parsed; ``stack`` stops both, the deployment first."""
    stack.callback(cluster.stop)
    cluster.start()
    deployment = Deployment(root, cluster.sqlalchemy_url, dags, api_key, **options)
    stack.callback(deployment.stop)
    start(deployment, dag_ids)
    return deployment
