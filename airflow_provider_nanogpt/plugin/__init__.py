"""The NanoGPT plugin for the Airflow UI (Airflow 3.1+): a NanoGPT page and a task Video view.

Registered through the ``airflow.plugins`` entry point, so installing the provider is all it
takes. Every Airflow component loads plugins, but only the api-server serves pages: elsewhere the
plugin stays empty, and FastAPI and the page code are not even imported.
"""

from __future__ import annotations

import sys
from typing import Any
from urllib.parse import urlsplit

from airflow.plugins_manager import AirflowPlugin

# The same test Airflow's own provider plugins use (edge3): there is no API to ask yet.
RUNNING_ON_API_SERVER = len(sys.argv) > 1 and sys.argv[1] == "api-server"


def base_path() -> str:
    """The path part of ``[api] base_url`` ("" when Airflow is served at the root)."""
    from airflow.configuration import conf

    return urlsplit(conf.get("api", "base_url", fallback="/") or "/").path.rstrip("/")


def _apps() -> list[dict[str, Any]]:
    from airflow_provider_nanogpt.plugin.app import URL_PREFIX, create_app

    return [{"app": create_app(base_path()), "url_prefix": URL_PREFIX, "name": "NanoGPT"}]


def _views() -> list[dict[str, Any]]:
    here = base_path() + "/nanogpt"
    ti = "dag_id={DAG_ID}&run_id={RUN_ID}&task_id={TASK_ID}&map_index={MAP_INDEX}"
    return [
        {
            "name": "NanoGPT",
            "href": f"{here}/ui/jobs",
            "destination": "nav",
            "category": "browse",
            "url_route": "nanogpt",
        },
        {
            "name": "Video",
            "href": f"{here}/ui/video?{ti}",
            "destination": "task_instance",
            "url_route": "nanogpt-video",
        },
    ]


class NanoGPTPlugin(AirflowPlugin):
    """The NanoGPT page (Browse → NanoGPT) and the Video tab of every task instance."""

    name = "nanogpt"
    fastapi_apps = _apps() if RUNNING_ON_API_SERVER else []
    external_views = _views() if RUNNING_ON_API_SERVER else []
