"""Provider registration: schema-valid metadata, a declarative connection form, fast imports."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import jsonschema
import pytest

from airflow_provider_nanogpt.get_provider_info import get_provider_info


def _schema(name: str) -> dict:
    import airflow

    return json.loads((Path(airflow.__file__).parent / name).read_text())


def test_provider_info_validates_against_airflow_schema() -> None:
    jsonschema.validate(get_provider_info(), _schema("provider_info.schema.json"))


def test_connection_form_validates_against_declarative_schema() -> None:
    item_schema = _schema("provider.yaml.schema.json")["properties"]["connection-types"]
    connection_types = get_provider_info()["connection-types"]
    jsonschema.validate(connection_types, item_schema)
    (nanogpt,) = connection_types
    assert nanogpt["connection-type"] == "nanogpt"
    behaviour = nanogpt["ui-field-behaviour"]
    assert behaviour["relabeling"]["password"] == "API Key"
    assert set(behaviour["hidden-fields"]) >= {"login", "schema", "port"}
    assert behaviour["placeholders"]["host"] == "https://nano-gpt.com"
    assert set(nanogpt["conn-fields"]) == {
        "request_timeout",
        "max_retries",
        "allowed_video_hosts",
        "max_video_bytes",
        "download_timeout",
        "output_base_dir",
        "budget_usd_per_day",
        "budget_usd_per_month",
        "budget_timezone",
        "budget_ledger_conn_id",
        "budget_count_outside_spend",
        "approval_above_usd",
        "approval_timeout",
    }


def test_package_name_matches_distribution_and_entry_point() -> None:
    info = get_provider_info()
    dist = metadata.distribution("airflow-provider-nanogpt")
    assert info["package-name"] == dist.metadata["Name"]
    (entry_point,) = [ep for ep in dist.entry_points if ep.group == "apache_airflow_provider"]
    assert entry_point.load() is get_provider_info


def test_every_listed_module_and_class_imports() -> None:
    info = get_provider_info()
    for section in ("hooks", "operators", "sensors", "triggers"):
        for entry in info[section]:
            for module in entry["python-modules"]:
                importlib.import_module(module)
    for dotted in [*info["extra-links"], info["connection-types"][0]["hook-class-name"]]:
        module, _, name = dotted.rpartition(".")
        assert getattr(importlib.import_module(module), name)


def test_providers_manager_serves_the_form_metadata() -> None:
    from airflow.providers_manager import ProvidersManager

    if not hasattr(ProvidersManager, "_load_ui_metadata"):
        pytest.skip("declarative connection forms (conn-fields) need Airflow 3.2+")

    manager = ProvidersManager()
    assert "airflow-provider-nanogpt" in manager.providers
    behaviours = manager.field_behaviours
    assert behaviours["nanogpt"]["relabeling"]["password"] == "API Key"
    widgets = manager.connection_form_widgets
    for field in ("request_timeout", "max_retries", "budget_usd_per_day", "approval_above_usd"):
        assert f"extra__nanogpt__{field}" in widgets


def test_package_import_is_lazy() -> None:
    code = (
        "import sys, airflow_provider_nanogpt as p;"
        "heavy = [m for m in ('requests', 'httpx', 'airflow_provider_nanogpt.operators.video',"
        " 'airflow_provider_nanogpt.hooks.nanogpt') if m in sys.modules];"
        "print(heavy); assert not heavy, heavy;"
        "assert p.GenerateVideoOperator.__name__ == 'GenerateVideoOperator'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_operator_modules_add_no_http_client_imports_beyond_airflow_sdk() -> None:
    code = (
        "import sys; import airflow.sdk; before = set(sys.modules);"
        "import airflow_provider_nanogpt.operators.video, airflow_provider_nanogpt.sensors.video;"
        "added = set(sys.modules) - before;"
        "heavy = sorted(m for m in added if m.split('.')[0] in ('requests', 'httpx', 'tenacity',"
        " 'urllib3') or m.startswith('airflow_provider_nanogpt.hooks'));"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("command", [["providers", "list"], ["providers", "hooks"]])
def test_airflow_cli_lists_the_provider(command: list[str]) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "airflow", *command, "--output", "json"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert "airflow-provider-nanogpt" in out or "nanogpt" in out
    if command[1] == "hooks":
        assert "airflow_provider_nanogpt.hooks.nanogpt.NanoGPTHook" in out
