"""Reconciliation of the shared budgets against the simulator (loopback) and a SQLite ledger:
``sent`` reservations, and spend made with the same key outside Airflow."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from airflow_provider_nanogpt.api.responses import parse_usage_usd
from airflow_provider_nanogpt.exceptions import NanoGPTResponseError
from airflow_provider_nanogpt.hooks.nanogpt import NanoGPTHook
from airflow_provider_nanogpt.ledger import MICRO, Budget, Ledger
from airflow_provider_nanogpt.reconcile import (
    count_outside_spend,
    outside_spend_days,
    reconcile_connection,
    repair_sent,
)
from airflow_provider_nanogpt.simulator import NanoGPTSimulator
from tests.conftest import FAST_RETRIES

CONN = "nanogpt_default"
OWN = Budget(f"connection {CONN}", "day", 10 * MICRO)
GROUP = Budget("marketing", "day", 10 * MICRO)
ESTIMATE = 400_000
TAG = "0b6a0c1e-2222-4b4b-8c8c-00000000000{}"


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger.from_url(f"sqlite:///{tmp_path / 'ledger.db'}")


@pytest.fixture
def hook(nanogpt_connection: NanoGPTSimulator) -> NanoGPTHook:
    return NanoGPTHook(CONN, retry_policy=FAST_RETRIES)


def _sent(ledger: Ledger, rid: str, tag: str, budget: Budget = OWN) -> None:
    ledger.reserve(rid, tag, [budget], ESTIMATE)
    ledger.mark_sent(rid)


def _submit(hook: NanoGPTHook, sim: NanoGPTSimulator, prompt: str, tag: str) -> str:
    payload = {
        "model": "kling-video-v2",
        "prompt": prompt,
        "duration": "5",
        "conversationUUID": tag,
    }
    run_id = hook.submit_video(payload).run_id
    sim.advance(60)  # past any default job's end
    return run_id


def _counted(ledger: Ledger, budget: Budget = OWN) -> tuple[int, int]:
    use = ledger.use(budget)
    return use.spent_micro, use.reserved_micro


@pytest.mark.parametrize(
    ("prompt", "settle_seconds", "action", "state", "counted"),
    [
        ("completed", 0, "settled", "settled", (ESTIMATE, 0)),
        ("refunded [sim:fail]", 0, "released", "released", (0, 0)),
        ("refunded [sim:cancel]", 0, "released", "released", (0, 0)),
        (None, 0, "released", "released", (0, 0)),  # nothing created, after the settle time
        (None, 3600, "left", "sent", (0, ESTIMATE)),  # not listed *yet* is not "not created"
        ("running [sim:never]", 0, "left", "sent", (0, ESTIMATE)),
    ],
)
def test_each_outcome_settles_releases_or_leaves_the_reservation(
    hook: NanoGPTHook,
    nanogpt_connection: NanoGPTSimulator,
    ledger: Ledger,
    prompt: str | None,
    settle_seconds: float,
    action: str,
    state: str,
    counted: tuple[int, int],
) -> None:
    tag = TAG.format(1)
    _sent(ledger, f"{tag}#try-1", tag)
    run_id = _submit(hook, nanogpt_connection, prompt, tag) if prompt else None
    [verdict] = repair_sent(hook, ledger, CONN, settle_seconds=settle_seconds)
    assert verdict.action == action
    # A refunded run is found by tag as "nothing of ours that costs": the release names none.
    assert verdict.run_id == (run_id if action != "released" else None)
    assert ledger.state_of(f"{tag}#try-1")[OWN.key][0] == state
    assert _counted(ledger) == counted


@pytest.mark.parametrize("endpoint", ["recover", "status"])
def test_a_lookup_that_fails_leaves_the_reservation_counted(
    hook: NanoGPTHook, nanogpt_connection: NanoGPTSimulator, ledger: Ledger, endpoint: str
) -> None:
    tag = TAG.format(2)
    _sent(ledger, f"{tag}#try-1", tag)
    _submit(hook, nanogpt_connection, "completed", tag)
    nanogpt_connection.add_fault(endpoint, "500", count=10)
    [verdict] = repair_sent(hook, ledger, CONN, settle_seconds=0)
    assert verdict.action == "left"
    assert _counted(ledger) == (0, ESTIMATE)


def test_a_running_job_is_looked_up_by_its_run_id_next_time(
    hook: NanoGPTHook, nanogpt_connection: NanoGPTSimulator, ledger: Ledger
) -> None:
    tag = TAG.format(3)
    _sent(ledger, f"{tag}#try-1", tag)
    run_id = _submit(hook, nanogpt_connection, "slow [sim:queue=600]", tag)
    assert repair_sent(hook, ledger, CONN, settle_seconds=0)[0].action == "left"
    nanogpt_connection.add_fault("recover", "500", count=10)  # the run id needs no lookup
    nanogpt_connection.advance(700)
    [verdict] = repair_sent(hook, ledger, CONN, settle_seconds=0)
    assert (verdict.action, verdict.run_id) == ("settled", run_id)
    assert _counted(ledger) == (ESTIMATE, 0)


def test_a_run_another_reservation_paid_for_is_not_this_ones(
    hook: NanoGPTHook, nanogpt_connection: NanoGPTSimulator, ledger: Ledger
) -> None:
    # Try 1's send made nothing; try 2 resent under the same tag and settled: try 1 holds nothing.
    tag = TAG.format(4)
    _sent(ledger, f"{tag}#try-1", tag)
    run_id = _submit(hook, nanogpt_connection, "completed", tag)
    _sent(ledger, f"{tag}#try-2", tag)
    ledger.settle(f"{tag}#try-2", ESTIMATE, run_id=run_id)
    [verdict] = repair_sent(hook, ledger, CONN, settle_seconds=0)
    assert (verdict.reservation_id, verdict.action) == (f"{tag}#try-1", "released")
    assert _counted(ledger) == (ESTIMATE, 0)


def test_nothing_found_releases_only_this_connections_own_reservations(
    hook: NanoGPTHook, nanogpt_connection: NanoGPTSimulator, ledger: Ledger
) -> None:
    # A group budget is shared by connections with other keys: this key's empty list proves
    # nothing about a reservation that counts only there.
    tag = TAG.format(5)
    _sent(ledger, f"{tag}#try-1", tag, GROUP)
    [verdict] = repair_sent(hook, ledger, CONN, settle_seconds=0)
    assert verdict.action == "left"
    assert _counted(ledger, GROUP) == (0, ESTIMATE)


def test_reconciliation_stops_at_its_deadline(
    hook: NanoGPTHook, nanogpt_connection: NanoGPTSimulator, ledger: Ledger
) -> None:
    for n in range(3):
        _sent(ledger, f"{TAG.format(6)}-{n}#try-1", TAG.format(6) + str(n))
    started = time.monotonic()
    verdicts = repair_sent(hook, ledger, CONN, settle_seconds=0, deadline=time.time() - 1)
    assert [v.action for v in verdicts] == ["left"] * 3
    assert time.monotonic() - started < 2


# --- spend made with the same key outside Airflow ---------------------------------------------


def _job_cost(hook: NanoGPTHook, sim: NanoGPTSimulator, prompt: str, tag: str) -> int:
    _submit(hook, sim, prompt, tag)
    return round(sim.state()["jobs"][-1]["cost"] * MICRO)


def test_outside_spend_is_counted_once_beyond_what_airflow_holds(
    hook: NanoGPTHook, nanogpt_connection: NanoGPTSimulator, ledger: Ledger
) -> None:
    airflow_tag, outside_tag = TAG.format(7), TAG.format(8)
    _sent(ledger, f"{airflow_tag}#try-1", airflow_tag)
    airflow_cost = _job_cost(hook, nanogpt_connection, "airflow's", airflow_tag)
    ledger.settle(f"{airflow_tag}#try-1", airflow_cost)
    outside_cost = _job_cost(hook, nanogpt_connection, "a script's", outside_tag)
    _job_cost(hook, nanogpt_connection, "refunded [sim:fail]", outside_tag)  # costs nothing
    for _ in range(2):  # reconciling twice does not double-count
        [line] = count_outside_spend(hook, ledger, CONN, [OWN, GROUP])
        assert "outside Airflow is counted" in line
        assert _counted(ledger) == (airflow_cost + outside_cost, 0)
    assert _counted(ledger, GROUP) == (0, 0)  # a group budget is not this key's alone


@pytest.mark.parametrize("fault", ["500", "503", "404", "malformed", "reset"])
def test_an_unanswered_usage_records_nothing_and_warns(
    hook: NanoGPTHook, nanogpt_connection: NanoGPTSimulator, ledger: Ledger, fault: str
) -> None:
    _job_cost(hook, nanogpt_connection, "a script's", TAG.format(9))
    nanogpt_connection.add_fault("usage", fault, count=10)
    [line] = count_outside_spend(hook, ledger, CONN, [OWN])
    assert line.startswith("WARNING: ") and "counts only Airflow's own spend" in line
    assert _counted(ledger) == (0, 0)


@pytest.mark.parametrize(
    "body",
    [
        {"currency": "USD"},  # no list of days
        {"data": [{"day": "2026-01-01", "spend": 1.0}]},  # no currency named
        {"currency": "XNO", "data": [{"spend": 1.0}]},
        {"currency": "USD", "data": [{"spend": "NaN"}]},
        {"currency": "USD", "data": [{"spend": -1}]},
        {"currency": "USD", "data": [{"spend": 1.0, "refunds": float("inf")}]},
        {"currency": "USD", "data": [{"requests": 3}]},  # no spend figure
        {"currency": "USD", "data": ["1.0"]},
        "1.00",
    ],
)
def test_a_usage_answer_not_readable_as_usd_is_refused(body: object) -> None:
    with pytest.raises(NanoGPTResponseError):
        parse_usage_usd(body)


def test_a_usage_answer_nets_refunds() -> None:
    body = {
        "data": [
            {"currency": "USD", "cost": "1.5", "refunds": 0.5},
            {"currency": "usd", "spend": 2},
        ]
    }
    assert parse_usage_usd(body) == Decimal(3)


@pytest.mark.parametrize(
    ("timezone", "days"),
    [
        ("UTC", ("2026-03-10", "2026-03-10")),
        ("Europe/Berlin", ("2026-03-09", "2026-03-10")),  # its day starts 23:00 UTC the day before
        ("America/New_York", ("2026-03-10", "2026-03-11")),
    ],
)
def test_a_windows_utc_days_cover_all_of_it(timezone: str, days: tuple[str, str]) -> None:
    noon = datetime(2026, 3, 10, 12, tzinfo=UTC).timestamp()
    assert outside_spend_days(Budget("b", "day", MICRO, timezone), noon) == days


def test_reconcile_connection_counts_outside_spend_only_when_opted_in(
    simulator: NanoGPTSimulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from tests.airflow.harness import use_budget_ledger

    hook = NanoGPTHook(CONN, retry_policy=FAST_RETRIES)
    ledger_file = use_budget_ledger(monkeypatch, simulator.url, "10", tmp_path)
    cost = _job_cost(hook, simulator, "a script's", TAG.format(10))
    ledger = Ledger.from_url(f"sqlite:///{ledger_file}")
    reconcile_connection(CONN)
    assert _counted(ledger) == (0, 0)  # not opted in
    use_budget_ledger(monkeypatch, simulator.url, "10", tmp_path, budget_count_outside_spend="true")
    report = reconcile_connection(CONN)
    assert _counted(ledger) == (cost, 0)
    assert any("outside Airflow is counted" in note for note in report.notes)


def test_reconcile_connection_reads_budgets_stored_by_the_connection_form(
    simulator: NanoGPTSimulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The connection form stores extras as ``extra__nanogpt__<name>``, as the tasks read them."""
    import json

    from tests.conftest import connection_json

    hook = NanoGPTHook(CONN, retry_policy=FAST_RETRIES)
    ledger_file = tmp_path / "budget-ledger.db"
    form = {
        "extra__nanogpt__budget_usd_per_day": "10",
        "extra__nanogpt__budget_ledger_conn_id": "budget_ledger",
        "extra__nanogpt__budget_count_outside_spend": "true",
    }
    monkeypatch.setenv("AIRFLOW_CONN_NANOGPT_DEFAULT", connection_json(simulator.url, **form))
    monkeypatch.setenv(
        "AIRFLOW_CONN_BUDGET_LEDGER", json.dumps({"conn_type": "sqlite", "host": str(ledger_file)})
    )
    cost = _job_cost(hook, simulator, "a form's", TAG.format(11))
    report = reconcile_connection(CONN)
    assert _counted(Ledger.from_url(f"sqlite:///{ledger_file}")) == (cost, 0)
    assert any("outside Airflow is counted" in note for note in report.notes)
