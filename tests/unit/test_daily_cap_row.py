"""A task held back by the key's daily cap, as the NanoGPT page's row shows it: the card the
operator writes (job_card.daily_cap_card) rendered by the page's own row code."""

from __future__ import annotations

import calendar
from datetime import UTC, datetime

import pytest

from airflow_provider_nanogpt.api.errors import error_from_response
from airflow_provider_nanogpt.job_card import daily_cap_card
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
    card = daily_cap_card(
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
