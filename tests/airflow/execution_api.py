"""What dag.test() costs on older Airflow versions, brought in line with the newest (no
tests.conftest import here: the metrics runner, a process of its own, uses it too)."""

from __future__ import annotations

import functools


def build_the_execution_api_once() -> None:
    """Airflow 3.1's dag.test() builds its in-process Execution API app (FastAPI and Cadwyn's
    versioned routers) anew for every task run it starts: about 2.5 s of CPU each, most of the
    3.1 suite's CPU. Airflow 3.3 builds it once per process (``functools.lru_cache`` on
    ``in_process_api_server``); do the same on older versions, so the floor suite measures the
    provider, not that rebuild."""
    from airflow.sdk.execution_time import supervisor

    if not hasattr(supervisor.in_process_api_server, "cache_info"):
        supervisor.in_process_api_server = functools.lru_cache(maxsize=1)(  # type: ignore[assignment]
            supervisor.in_process_api_server
        )
