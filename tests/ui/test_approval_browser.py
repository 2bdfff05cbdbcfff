"""The approval path in the browser on Airflow 3.1: a person answers on Airflow's Required Actions
page while the task is deferred to the standard provider's HITL trigger.

One small real deployment for the module (PostgreSQL, scheduler, triggerer, dag-processor and
api-server on LocalExecutor, only the approval DAGs), users signing in through Airflow's login
form, headless Chromium. The scenario (tests/ui/required_actions.py) runs its three DAG runs at
once. On Airflow 3.3 (the awaiting_input path) the same scenario runs in the e2e browser test's
deployment, so this module skips there. Screenshots go to ``test-artifacts/ui-airflow-3.1``.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow.providers.standard.version_compat import AIRFLOW_V_3_3_PLUS

from tests.conftest import ARTIFACTS as ARTIFACTS_ROOT
from tests.e2e.chromium import LAUNCH_ARGS, ChromiumUnavailable, ensure_chromium
from tests.e2e.conftest import E2E_DAGS
from tests.e2e.deployment import Deployment
from tests.e2e.lifecycle import kept_on_failure, start_on_cluster, unavailable
from tests.e2e.postgres import PostgresCluster, PostgresUnavailable, ensure_installed
from tests.ui.apiserver import USERS, signed_in_users
from tests.ui.required_actions import (
    APPROVAL_CONNECTIONS,
    APPROVAL_DAGS,
    approval_settings,
    approve_reject_and_time_out,
    signed_in_page,
)

pytestmark = pytest.mark.skipif(
    AIRFLOW_V_3_3_PLUS,
    reason="on Airflow 3.3+ the e2e browser test (tests/e2e/test_ui_browser.py) runs the "
    "approval path in the browser, in its deployment",
)

ARTIFACTS = ARTIFACTS_ROOT / "ui-airflow-3.1"
APPROVAL_DAGS_FILE = E2E_DAGS / "nanogpt_e2e_approval_dags.py"


@pytest.fixture(scope="module")
def deployed(request: pytest.FixtureRequest) -> Iterator[tuple[Deployment, Any]]:
    """The deployment and a Chromium browser, for the module."""
    try:
        chromium = ensure_chromium()
        cluster = PostgresCluster(ensure_installed())
    except (ChromiumUnavailable, PostgresUnavailable) as exc:
        unavailable("approval browser test", "Chromium or PostgreSQL", exc)
    from playwright.sync_api import sync_playwright

    root = Path(tempfile.mkdtemp(prefix="nanogpt-approval-ui-"))
    # Only the approval DAGs: less for the dag-processor to parse on a busy machine.
    dags = root / "dags"
    dags.mkdir()
    shutil.copy(APPROVAL_DAGS_FILE, dags)
    with kept_on_failure(request, root, "approval UI"), contextlib.ExitStack() as stack:
        deployment = start_on_cluster(
            stack,
            cluster,
            root,
            dags,
            f"sk-nano-approval-canary-{uuid.uuid4()}",
            APPROVAL_DAGS,
            extra_env={**signed_in_users(root), **approval_settings(root)},
            login=("admin", USERS["admin"][1]),
            nanogpt_connections=APPROVAL_CONNECTIONS,
        )
        playwright = stack.enter_context(sync_playwright())
        browser = playwright.chromium.launch(executable_path=str(chromium), args=LAUNCH_ARGS)
        stack.callback(browser.close)
        yield deployment, browser


def _keep(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_a_person_approves_rejects_or_lets_a_request_time_out(
    deployed: tuple[Deployment, Any],
) -> None:
    deployment, browser = deployed
    approve_reject_and_time_out(
        deployment, lambda: signed_in_page(browser, deployment.api_url, "admin"), _keep
    )
