"""Which shared budgets apply to a task, read from connection extras and [nanogpt] config."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_nanogpt.exceptions import NanoGPTConfigurationError
from airflow_provider_nanogpt.ledger import Budget
from airflow_provider_nanogpt.shared_budget import plan_budgets, tag_budget_names

LEDGER = {"budget_ledger_conn_id": "ledger"}


def test_no_budget_configured_means_no_plan() -> None:
    assert plan_budgets("c", {}) is None
    assert plan_budgets("c", {"budget_ledger_conn_id": "ledger"}) is None


def test_connection_and_group_budgets_all_apply() -> None:
    extras = {
        **LEDGER,
        "budget_usd_per_day": "1.00",
        "budget_usd_per_month": 20,
        "budget_timezone": "Europe/Berlin",
        "budgets": {"marketing": {"usd_per_day": 5}},
    }
    plan = plan_budgets("c", extras, ["marketing", "team"], '{"team": {"usd_per_month": 9}}')
    assert plan is not None and plan.ledger_conn_id == "ledger"
    assert plan.budgets == (
        Budget("connection c", "day", 1_000_000, "Europe/Berlin"),
        Budget("connection c", "month", 20_000_000, "Europe/Berlin"),
        Budget("marketing", "day", 5_000_000, "UTC"),
        Budget("team", "month", 9_000_000, "UTC"),
    )


@pytest.mark.parametrize(
    ("extras", "names", "message"),
    [
        ({"budget_usd_per_day": 1}, [], "no budget_ledger_conn_id"),
        ({**LEDGER, "budget_usd_per_day": "nan"}, [], "usd_per_day='nan'"),
        ({**LEDGER, "budget_usd_per_day": -1}, [], "finite amount >= 0"),
        ({**LEDGER, "budget_usd_per_day": 1, "budget_timezone": "Mars/Base"}, [], "IANA"),
        ({**LEDGER}, ["nope"], "'nope' is not defined"),
        ({**LEDGER, "budgets": "{not json"}, ["x"], "not valid JSON"),
        ({**LEDGER, "budgets": {"x": {"usd_per_week": 1}}}, ["x"], "must be an object"),
        ({**LEDGER, "budgets": {"x": {"timezone": "UTC"}}}, ["x"], "neither usd_per_day"),
    ],
)
def test_a_budget_misconfiguration_is_refused_readably(
    extras: dict[str, Any], names: list[str], message: str
) -> None:
    with pytest.raises(NanoGPTConfigurationError, match=message):
        plan_budgets("c", extras, names)


def test_dag_tags_name_group_budgets() -> None:
    assert tag_budget_names(["nanogpt-budget:marketing", "other", 3]) == ["marketing"]


@pytest.mark.parametrize("prefix", ["", "extra__nanogpt__"])
def test_budgets_set_in_the_connection_form_apply(prefix: str) -> None:
    # Airflow's connection form may store its fields under the legacy "extra__<type>__" names.
    from airflow_provider_nanogpt.hooks.settings import settings_from

    extras = {
        f"{prefix}budget_usd_per_day": "2.50",
        f"{prefix}budget_timezone": "Europe/Paris",
        f"{prefix}budget_ledger_conn_id": "ledger",
    }
    settings = settings_from("c", "sk-nano-form", "https://nano-gpt.com", extras)
    plan = plan_budgets("c", settings.budget_extras)
    assert plan is not None and plan.ledger_conn_id == "ledger"
    assert plan.budgets == (Budget("connection c", "day", 2_500_000, "Europe/Paris"),)


@pytest.mark.parametrize("mode", ["fail", "wait"])
def test_on_budget_exceeded_takes_fail_or_wait(mode: str) -> None:
    from airflow_provider_nanogpt.operators.video import GenerateVideoOperator

    task = GenerateVideoOperator(task_id="t", model="kling-video-v2", on_budget_exceeded=mode)  # type: ignore[arg-type]
    assert task.on_budget_exceeded == mode


@pytest.mark.parametrize("mode", ["Wait", "retry", "", None, "{{ params.mode }}"])
def test_on_budget_exceeded_refuses_anything_else_at_construction(mode: object) -> None:
    from airflow_provider_nanogpt.operators.video import GenerateVideoOperator

    # Not a templated field: a Jinja string would never render, so it is refused at once.
    with pytest.raises(ValueError, match="on_budget_exceeded must be 'fail' or 'wait'"):
        GenerateVideoOperator(task_id="t", model="kling-video-v2", on_budget_exceeded=mode)  # type: ignore[arg-type]
