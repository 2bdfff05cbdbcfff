"""The shared budget ledger (airflow_provider_nanogpt.ledger) against real SQLite files.

The concurrency property runs the same random reserve/settle/release/crash plans in several
threads and several processes at once against one SQLite file, and checks the ledger's
arithmetic while they run and after.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_provider_nanogpt.exceptions import NanoGPTBudgetError, NanoGPTConfigurationError
from airflow_provider_nanogpt.ledger import (
    MICRO,
    Budget,
    BudgetExceeded,
    Ledger,
    _create_engine,
    to_micro,
    window_at,
    zone,
)

DOLLAR = MICRO


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# 2024-05-10 12:00 UTC
NOON = datetime(2024, 5, 10, 12, tzinfo=UTC).timestamp()


@pytest.fixture
def clock() -> Clock:
    return Clock(NOON)


@pytest.fixture
def ledger(tmp_path: Path, clock: Clock) -> Ledger:
    return Ledger.from_url(f"sqlite:///{tmp_path / 'ledger.db'}", clock=clock, ttl_seconds=600)


DAY = Budget("connection nanogpt_default", "day", 1 * DOLLAR)
MONTH = Budget("connection nanogpt_default", "month", 3 * DOLLAR)
GROUP = Budget("marketing", "day", 5 * DOLLAR, "Europe/Berlin")


# --- money --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "micro"),
    [
        (0, 0),
        ("0.35", 350_000),
        (0.35, 350_000),
        (1, 1_000_000),
        ("0.0000001", 1),
        (12.5, 12_500_000),
    ],
)
def test_amounts_become_whole_micro_dollars_rounded_up(amount: object, micro: int) -> None:
    assert to_micro(amount, what="x") == micro


@pytest.mark.parametrize(
    "amount", [float("nan"), float("inf"), -0.01, "-1", True, None, "abc", [1]]
)
def test_an_amount_that_is_not_finite_non_negative_usd_blocks(amount: object) -> None:
    with pytest.raises(NanoGPTBudgetError, match="nothing was sent"):
        to_micro(amount, what="estimate")


# --- windows ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("period", "tz", "moment", "start", "end"),
    [
        (
            "day",
            "UTC",
            "2024-05-10T23:59:59+00:00",
            "2024-05-10T00:00:00+00:00",
            "2024-05-11T00:00:00+00:00",
        ),
        # 23:30 UTC is already the next day in Berlin (UTC+2 in May).
        (
            "day",
            "Europe/Berlin",
            "2024-05-10T23:30:00+00:00",
            "2024-05-11T00:00:00+02:00",
            "2024-05-12T00:00:00+02:00",
        ),
        # A 23-hour day (DST starts).
        (
            "day",
            "Europe/Berlin",
            "2024-03-31T12:00:00+00:00",
            "2024-03-31T00:00:00+01:00",
            "2024-04-01T00:00:00+02:00",
        ),
        (
            "month",
            "UTC",
            "2024-02-29T10:00:00+00:00",
            "2024-02-01T00:00:00+00:00",
            "2024-03-01T00:00:00+00:00",
        ),
        (
            "month",
            "America/New_York",
            "2025-01-01T03:00:00+00:00",
            "2024-12-01T00:00:00-05:00",
            "2025-01-01T00:00:00-05:00",
        ),
    ],
)
def test_windows_follow_the_reset_time_zone(
    period: Any, tz: str, moment: str, start: str, end: str
) -> None:
    window = window_at(period, zone(tz), datetime.fromisoformat(moment).timestamp())
    assert window.start == datetime.fromisoformat(start)
    assert window.end == datetime.fromisoformat(end)


@given(
    st.sampled_from(["day", "month"]),
    st.sampled_from(["UTC", "Europe/Berlin", "America/Santiago", "Asia/Kathmandu", "Pacific/Apia"]),
    st.floats(min_value=946_684_800, max_value=4_102_444_800),
)
def test_every_moment_lies_in_its_window(period: Any, tz: str, moment: float) -> None:
    window = window_at(period, zone(tz), moment)
    assert window.start.timestamp() <= moment < window.end.timestamp()
    # The next window starts where this one ends.
    assert window_at(period, zone(tz), window.end.timestamp()).start == window.end


@pytest.mark.parametrize("name", ["Mars/Olympus", "utc+2", 5, "../etc/passwd"])
def test_an_unknown_time_zone_is_refused_readably(name: Any) -> None:
    with pytest.raises(NanoGPTConfigurationError, match="IANA"):
        zone(name)


# --- opening ------------------------------------------------------------------------------------


@contextmanager
def statements(engine: Any) -> Iterator[list[tuple[str, Any]]]:
    """Every SQL statement ``engine`` sends to its database meanwhile, with its parameters."""
    from sqlalchemy import event

    seen: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_args: Any) -> None:
        seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def test_the_tables_are_created_once_per_engine_and_again_for_a_new_one(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    first = Ledger.from_url(f"sqlite:///{path}")
    with statements(first._engine) as seen:
        again = Ledger.from_url(f"sqlite:///{path}")  # every task and page opens the ledger
    assert again._engine is first._engine
    assert seen == []  # opening it again sends nothing to the database
    # The file deleted and a new engine made for the same URL: that engine creates the tables.
    first._engine.dispose()
    for leftover in tmp_path.iterdir():
        leftover.unlink()
    fresh = Ledger(_create_engine(f"sqlite:///{path}"))
    fresh.reserve("a", "ta", [DAY], 300_000)
    assert fresh.use(DAY).reserved_micro == 300_000


def test_no_statement_of_a_submit_reads_the_whole_ledger(tmp_path: Path) -> None:
    # The ledger keeps every reservation ever made: a statement that scans the table (or all of
    # an index on it) costs more each day, so each must search, or read only unsent ones.
    path = tmp_path / "ledger.db"
    ledger = Ledger.from_url(f"sqlite:///{path}")
    with statements(ledger._engine) as seen:
        ledger.reserve("a#1", "a", [DAY, MONTH, GROUP], 100_000, sent=True)
        ledger.settle("a#1", 90_000, run_id="run-a")
        ledger.reserve("b#1", "b", [DAY, GROUP], 100_000)
        ledger.mark_sent("b#1")
        ledger.release("b#1")
        # A refund, and a final cost, find their reservations by run id.
        for rid in ledger.reservations_of_run("run-a"):
            ledger.settle_final(rid, 95_000, "run-a")
    steps = []
    with closing(sqlite3.connect(path)) as db:
        for statement, parameters in seen:
            if statement.split()[0] not in ("BEGIN", "COMMIT"):
                plan = db.execute(f"EXPLAIN QUERY PLAN {statement}", parameters).fetchall()
                steps += [(statement.split()[0], row[3]) for row in plan]
    reads = [step for step in steps if "nanogpt_budget_reservations" in step[1]]
    assert len(reads) >= 8
    whole = [step for step in reads if step[1].startswith("SCAN") and "_unsent" not in step[1]]
    assert whole == []


# --- reservations -------------------------------------------------------------------------------


def test_reserve_until_the_limit_then_refuse_naming_budget_spend_and_reset(ledger: Ledger) -> None:
    for n in range(2):
        ledger.reserve(f"r{n}", f"t{n}", [DAY], 350_000)
        ledger.mark_sent(f"r{n}")
    ledger.settle("r0", 350_000, run_id="run-0")
    with pytest.raises(BudgetExceeded) as caught:
        ledger.reserve("r2", "t2", [DAY], 350_000)
    message = str(caught.value)
    assert "'connection nanogpt_default'" in message
    assert "$0.35 spent and $0.35 reserved" in message
    assert "$1.00 per day" in message
    assert "resets at 2024-05-11T00:00:00+00:00" in message
    assert ledger.state_of("r2") == {}  # nothing reserved


def test_re_reserving_the_same_submission_returns_it_and_counts_it_once(ledger: Ledger) -> None:
    first = ledger.reserve("sub", "tag", [DAY], 600_000)
    again = ledger.reserve("sub", "tag", [DAY], 600_000)
    assert (first.reused, again.reused) == (False, True)
    assert ledger.use(DAY).total_micro == 600_000
    ledger.mark_sent("sub")
    assert ledger.reserve("sub", "tag", [DAY], 600_000).reused
    assert ledger.use(DAY).reserved_micro == 600_000


def test_settle_counts_the_charge_and_unknown_charge_keeps_the_estimate(ledger: Ledger) -> None:
    ledger.reserve("a", "ta", [DAY], 400_000)
    ledger.mark_sent("a")
    ledger.settle("a", 250_000, run_id="run-a")
    ledger.reserve("b", "tb", [DAY], 300_000)
    ledger.mark_sent("b")
    ledger.settle("b", None, run_id="run-b")  # charged in XNO, or not reported
    use = ledger.use(DAY)
    assert (use.spent_micro, use.reserved_micro) == (550_000, 0)


@pytest.mark.parametrize("stage", ["reserved", "sent", "settled"])
def test_release_frees_the_amount_at_any_stage_and_is_idempotent(
    ledger: Ledger, stage: str
) -> None:
    ledger.reserve("a", "ta", [DAY, MONTH], 900_000)
    if stage in ("sent", "settled"):
        ledger.mark_sent("a")
    if stage == "settled":
        ledger.settle("a", 900_000)
    assert ledger.release("a")
    assert not ledger.release("a")
    assert ledger.use(DAY).total_micro == ledger.use(MONTH).total_micro == 0
    # Released, the id can be reserved again (a new send after a refund or a 429).
    assert not ledger.reserve("a", "ta", [DAY, MONTH], 900_000).reused


def test_every_budget_must_allow_it_and_a_refusal_reserves_none(ledger: Ledger) -> None:
    month = Budget("connection nanogpt_default", "month", 500_000)
    ledger.reserve("a", "ta", [DAY, month, GROUP], 400_000)
    with pytest.raises(BudgetExceeded, match="per month"):
        ledger.reserve("b", "tb", [GROUP, DAY, month], 200_000)
    assert ledger.use(DAY).total_micro == 400_000
    assert ledger.use(GROUP).total_micro == 400_000


def test_a_reservation_never_sent_expires_and_can_no_longer_be_sent(
    ledger: Ledger, clock: Clock
) -> None:
    ledger.reserve("crashed", "t1", [DAY], 800_000)  # the worker died before sending
    ledger.reserve("in-flight", "t2", [DAY], 200_000)
    ledger.mark_sent("in-flight")
    clock.now += 601
    assert ledger.use(DAY).reserved_micro == 200_000  # a sent request never expires
    ledger.reserve("next", "t3", [DAY], 800_000)
    with pytest.raises(NanoGPTBudgetError, match="expired"):
        ledger.mark_sent("crashed")


def test_a_reservation_made_to_send_is_sent_at_once_and_never_expires(
    ledger: Ledger, clock: Clock
) -> None:
    held = ledger.reserve("a#1", "a", [DAY, MONTH], 400_000, sent=True)
    assert (held.state, held.reused) == ("sent", False)
    assert ledger.state_of("a#1") == {
        DAY.key: ("sent", 400_000, None),
        MONTH.key: ("sent", 400_000, None),
    }
    clock.now += 601  # past the TTL: the request may have left, so it stays counted
    ledger.reserve("a#2", "a", [DAY], 100_000)  # a later try drops only what was never sent
    assert ledger.use(DAY).reserved_micro == 500_000
    assert [s.reservation_id for s in ledger.sent()] == ["a#1"]  # what reconciliation asks about
    # Reserved earlier and reserved again to send: the same reservation, now sent.
    again = ledger.reserve("a#2", "a", [DAY], 100_000, sent=True)
    assert (again.state, again.reused) == ("sent", True)
    assert ledger.use(DAY).reserved_micro == 500_000
    assert ledger.state_of("a#2") == {DAY.key: ("sent", 100_000, None)}


def test_a_later_try_drops_an_earlier_try_s_unsent_reservation(ledger: Ledger) -> None:
    ledger.reserve("tag#1", "tag", [DAY], 700_000)
    ledger.reserve("tag#2", "tag", [DAY], 700_000)  # fits only once try 1's is dropped
    with pytest.raises(NanoGPTBudgetError, match="expired or was released"):
        ledger.mark_sent("tag#1")  # a zombie try 1 cannot send any more
    ledger.mark_sent("tag#2")


def test_a_new_window_starts_empty_and_the_reservation_keeps_its_own(
    ledger: Ledger, clock: Clock
) -> None:
    ledger.reserve("a", "ta", [DAY], 1 * DOLLAR)
    ledger.mark_sent("a")
    clock.now += 12 * 3600  # past midnight UTC
    ledger.reserve("b", "tb", [DAY], 1 * DOLLAR)
    ledger.settle("a", 1 * DOLLAR)  # settles into yesterday's window
    assert ledger.use(DAY).total_micro == 1 * DOLLAR


def test_reconciliation_changes_only_rows_still_sent(ledger: Ledger) -> None:
    ledger.reserve("a", "ta", [DAY], 500_000)
    ledger.mark_sent("a")
    ledger.settle("a", 200_000, run_id="run-a")  # the task answered first
    ledger.reserve("b", "tb", [DAY], 300_000)
    ledger.mark_sent("b")
    assert [s.reservation_id for s in ledger.sent()] == ["b"]
    assert not ledger.resolve_sent("a", created=False)  # settled by its task: kept
    assert ledger.resolve_sent("b", created=True, run_id="run-b")
    assert ledger.use(DAY).spent_micro == 500_000
    assert ledger.reservations_of_run("run-b") == ["b"]


def test_overshoot_is_bounded_by_the_estimate_error_of_jobs_in_flight(ledger: Ledger) -> None:
    ledger.reserve("a", "ta", [DAY], 500_000)
    ledger.reserve("b", "tb", [DAY], 500_000)
    for rid in "ab":
        ledger.mark_sent(rid)
    ledger.settle("a", 600_000)  # NanoGPT charged more than the estimate
    ledger.settle("b", 500_000)
    assert ledger.use(DAY).total_micro == 1 * DOLLAR + (600_000 - 500_000)
    with pytest.raises(BudgetExceeded):
        ledger.reserve("c", "tc", [DAY], 0)  # over: nothing more, not even a free video


# --- concurrency ----------------------------------------------------------------------------------

LIMIT = 1 * DOLLAR
OPS = (
    "settle",
    "release",
    "crash_before_send",
    "crash_after_send",
    "reserve_twice",
    "reserve_to_send",  # the operator's path: reserved as sent in one transaction, then settled
    "refund_after_settle",
)
plan_strategy = st.lists(
    st.tuples(
        st.sampled_from(OPS),
        st.integers(min_value=1, max_value=400_000),
        # Charged, in percent of the estimate: above 100 is estimate error (NanoGPT charged more
        # than the catalog's price said), the only overshoot the guarantee allows.
        st.integers(min_value=0, max_value=200),
    ),
    min_size=1,
    max_size=8,
)


def run_plan(url: str, worker: str, plan: list[tuple[str, int, int]]) -> list[tuple[str, int, int]]:
    """Run ``plan`` against the ledger; return what each granted reservation now counts, and by
    how much its charge exceeded its estimate."""
    ledger = Ledger.from_url(url)
    counted: list[tuple[str, int]] = []
    for n, (op, estimate, percent) in enumerate(plan):
        rid = f"{worker}-{n}"
        try:
            ledger.reserve(rid, rid, [DAY], estimate, sent=op == "reserve_to_send")
        except BudgetExceeded:
            continue
        if op == "crash_before_send":
            counted.append((rid, estimate, 0))  # counted until its TTL passes
            continue
        if op == "reserve_twice":
            assert ledger.reserve(rid, rid, [DAY], estimate).reused
        if op != "reserve_to_send":
            ledger.mark_sent(rid)
        charged = estimate * percent // 100
        if op == "release":
            ledger.release(rid)
        elif op in ("settle", "reserve_to_send"):
            ledger.settle(rid, charged)
            counted.append((rid, charged, max(0, charged - estimate)))
        elif op == "refund_after_settle":
            ledger.settle(rid, charged)
            ledger.release(rid)  # NanoGPT refunded it: it stops counting, overcharge and all
        else:
            counted.append((rid, estimate, 0))
    return counted


@pytest.fixture(scope="module")
def processes() -> Iterator[concurrent.futures.ProcessPoolExecutor]:
    # fork: a spawned child would spend seconds importing Airflow again. Forked before any
    # thread of the test starts; the children only open ledgers at URLs new to them.
    context = multiprocessing.get_context("fork")
    with concurrent.futures.ProcessPoolExecutor(max_workers=2, mp_context=context) as pool:
        for started in [pool.submit(int) for _ in range(2)]:
            started.result()  # both started once for the module, not per example
        yield pool


@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(plans=st.lists(plan_strategy, min_size=4, max_size=4))
def test_concurrent_threads_and_processes_never_overspend(
    tmp_path: Path,
    processes: concurrent.futures.ProcessPoolExecutor,
    plans: list[list[tuple[str, int, int]]],
) -> None:
    never_overspend(f"sqlite:///{tmp_path / f'{uuid.uuid4().hex}.db'}", processes, plans)


def never_overspend(
    url: str,
    processes: concurrent.futures.ProcessPoolExecutor,
    plans: list[list[tuple[str, int, int]]],
) -> None:
    """Run four ``plans`` at once against the new ledger at ``url``, two in ``processes`` and two
    in threads, watching the total as they run; check it never passed the limit and ends at
    exactly what the plans left counted."""
    watcher = Ledger.from_url(url)
    done = threading.Event()
    seen: list[int] = []

    def watch() -> None:
        while not done.wait(0.002):
            seen.append(watcher.use(DAY).total_micro)

    monitor = threading.Thread(target=watch)
    monitor.start()
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as threads:
        futures = [
            processes.submit(run_plan, url, "p0", plans[0]),
            processes.submit(run_plan, url, "p1", plans[1]),
            threads.submit(run_plan, url, "t0", plans[2]),
            threads.submit(run_plan, url, "t1", plans[3]),
        ]
        counted = [item for future in futures for item in future.result()]
    done.set()
    monitor.join()

    use = watcher.use(DAY)
    # The guarantee (docs/cost-control.md): within the limit, except by what NanoGPT charged above
    # the estimates; at all times, so also while the workers run (a refunded video's overcharge
    # counted only while it was settled, so it is added for the watch).
    overcharged = sum(over for _, _, over in counted)
    refunded_over = sum(
        max(0, estimate * percent // 100 - estimate)
        for plan in plans
        for op, estimate, percent in plan
        if op == "refund_after_settle"
    )
    assert use.total_micro <= LIMIT + overcharged
    assert max(seen, default=0) <= LIMIT + overcharged + refunded_over
    # Exactly what the workers left counted, each reservation once.
    assert use.total_micro == sum(amount for _, amount, _ in counted)
    assert len({rid for rid, _, _ in counted}) == len(counted)


def test_an_unknown_charge_never_replaces_a_known_one(ledger: Ledger) -> None:
    # A later settle without a USD charge (a lookup that found the run names none) keeps what
    # NanoGPT charged, or raised it to: falling back to the estimate could count less.
    ledger.reserve("a", "ta", [DAY], 350_000, sent=True)
    ledger.settle("a", 350_000, run_id="run-a")
    ledger.settle_final("a", 400_000, "run-a")
    ledger.settle("a", None, run_id="run-a")
    assert ledger.state_of("a")[DAY.key] == ("settled", 350_000, 400_000)
    assert ledger.use(DAY).spent_micro == 400_000
