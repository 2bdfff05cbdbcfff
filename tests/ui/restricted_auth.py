"""An auth manager for the UI tests: Airflow's simple one, but user ``limited`` may not read two
DAGs (the simple auth manager's roles apply to every DAG alike)."""

from __future__ import annotations

import os
from typing import Any

from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

SECRET_DAG_ENV = "NANOGPT_TEST_SECRET_DAG"
SECRET_DAG = os.environ.get(SECRET_DAG_ENV, "nanogpt_sync")
# A task whose first try's job was refunded and whose retry succeeded.
RETRIED_DAG = "nanogpt_refunded_then_retried"
# A task whose connection has no output_base_dir.
NO_BASE_DAG = "nanogpt_no_base_dir"
HIDDEN_FROM_LIMITED = frozenset({SECRET_DAG, RETRIED_DAG, NO_BASE_DAG})


class RestrictedAuthManager(SimpleAuthManager):
    def is_authorized_dag(
        self, *, method: Any, user: Any, access_entity: Any = None, details: Any = None
    ) -> bool:
        if (
            user.get_name() == "limited"
            and details is not None
            and details.id in HIDDEN_FROM_LIMITED
        ):
            return False
        return super().is_authorized_dag(
            method=method, user=user, access_entity=access_entity, details=details
        )
