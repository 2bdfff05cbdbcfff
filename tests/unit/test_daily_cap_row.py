"""A task held back by the key's daily cap or by a shared budget, as the NanoGPT page's row
shows it: the card the operator writes (job_card.held_back_card) rendered by
the page's own row code."""

from __future__ import annotations

import calendar
from datetime import UTC, datetime

import pytest

from airflow_provider_nanogpt.api.errors import error_from_response
from airflow_provider_nanogpt.job_card import held_back_card
from airflow_provider_nanogpt.ledger import Budget, BudgetExceeded, WindowUse, to_micro
from airflow_provider_nanogpt.plugin.app import _row
from airflow_provider_nanogpt.plugin.jobs import Job

MIDNIGHT = float(calendar.timegm((2026, 12, 7, 0, 0, 0)))


def _capped_row(code: str, *, waiting: bool, ti_state: str) -> dict[str, object]:
    error = error_from_response(
        429,
        f'{{"error": {{"message": "Daily limit exceeded", "code": "{code}"}}}}',
        {},
        action="submit a video",
    )
    error.resets_at = MIDNIGHT  # type: ignore[attr-defined]
    card = held_back_card(
        conn_id="nanogpt_default", model="kling-video-v2", prompt="p", error=error, waiting=waiting
    )
    job = Job("dag", "run", "generate", -1, ti_state, card, datetime.now(UTC))
    return _row(job, "", "/nanogpt")


@pytest.mark.parametrize(
    ("code", "cap"),
    [
        ("daily_usd_limit_exceeded", "daily USD cap"),
        ("daily_rpd_limit_exceeded", "daily request cap"),
    ],
)
def test_a_task_failed_by_the_daily_cap_says_which_cap_and_when_it_resets(
    code: str, cap: str
) -> None:
    row = _capped_row(code, waiting=False, ti_state="failed")
    assert row["state"] == "daily_cap"
    assert row["note"] == f"{cap} reached, resets 00:00 UTC"
    assert row["charged"] == 0.0 and row["run_id"] is None and not row["refunded"]
    assert f"NanoGPT's {cap} for this API key is reached" in str(row["error"])


def test_a_task_waiting_for_the_daily_cap_says_it_waits() -> None:
    row = _capped_row("daily_usd_limit_exceeded", waiting=True, ti_state="deferred")
    assert row["state"] == "daily_cap"
    assert row["note"] == "daily USD cap reached, resets 00:00 UTC; waiting for the reset"


def _over_budget_row(*, waiting: bool, ti_state: str) -> dict[str, object]:
    budget = Budget("team video", "day", to_micro("0.50", what="limit"), "Europe/Berlin")
    use = WindowUse(budget, budget.window(MIDNIGHT - 3600), to_micro("0.35", what="spent"), 0)
    error = BudgetExceeded(use, to_micro("0.35", what="estimate"))
    card = held_back_card(
        conn_id="nanogpt_default", model="kling-video-v2", prompt="p", error=error, waiting=waiting
    )
    job = Job("dag", "run", "generate", -1, ti_state, card, datetime.now(UTC))
    return _row(job, "", "/nanogpt")


def test_a_task_failed_by_a_shared_budget_says_which_and_when_it_resets() -> None:
    row = _over_budget_row(waiting=False, ti_state="failed")
    assert row["state"] == "over_budget"
    # The Berlin day of 2026-12-06 23:00 UTC ends at 23:00 UTC that day.
    assert (
        row["note"] == "budget 'team video' ($0.50 per day, Europe/Berlin) full, resets 23:00 UTC"
    )
    assert row["charged"] == 0.0 and row["run_id"] is None and not row["refunded"]
    assert "$0.35 spent and $0.00 reserved" in str(row["error"])


@pytest.mark.parametrize(("ti_state", "waits"), [("deferred", True), ("failed", False)])
def test_a_task_waiting_for_a_shared_budget_says_it_waits(ti_state: str, waits: bool) -> None:
    row = _over_budget_row(waiting=True, ti_state=ti_state)
    assert row["state"] == "over_budget"
    assert str(row["note"]).endswith("resets 23:00 UTC; waiting for the reset") is waits
