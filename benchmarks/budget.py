"""Benchmark 8: what a shared budget adds to each submit (issue 22).

Per submit, a budgeted task opens its ledger and runs two transactions through the operator's
own ``BudgetGuard``: ``reserve_to_send`` just before the send (the reservation, recorded as sent),
``settle`` with NanoGPT's charge. The plan is a realistic one: the connection's daily budget and
a group's monthly budget, so every transaction locks two budget windows.

Baseline, in the same run and on the same database: three bare one-row write transactions per
submit (BEGIN, INSERT one row, COMMIT) through an engine configured as the ledger's (SQLite: WAL,
``BEGIN IMMEDIATE``). A commit is the least a durable record of "this money is reserved" can cost;
three are what a reserve, a mark-sent and a settle made as separate commits (as the ledger did
until it recorded the send with the reserve) cost at least. Kept at three, so figures from before
and after that change compare against the same yardstick.

Under concurrency, N worker *processes* (as Airflow's workers are) submit at once against the
same two budgets, and the baseline's N processes commit bare rows at once. The ledger serialises
every reserve on the budget windows' lock (PostgreSQL ``SELECT ... FOR UPDATE``; SQLite's one
writer); bare inserts on PostgreSQL do not wait for each other, so that ratio is the lock's cost.

SQLite is a ledger file on local disk; PostgreSQL a throwaway cluster started as the e2e suite
starts it (tests/e2e/postgres.py), but durable as a production server is (fsync and synchronous
commit on), so its commits cost what they would there. When PostgreSQL cannot be started the
benchmark says why and reports SQLite only. The quick mode (the smoke test) runs SQLite only.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks._common import Row, RunContext, percentile, report

NAME = "budget"
NANOGPT_CONN_ID = "nanogpt_bench"
LEDGER_CONN_ID = "nanogpt_bench_ledger"
ESTIMATE_USD = 0.25
# Limits no run comes near: the benchmark measures the bookkeeping, not a refusal.
LIMIT_USD = 1_000_000
GOAL_MS = {"sqlite": 5.0, "postgresql": 10.0}
BASELINE_TABLE = "nanogpt_bench_bare_rows"


@dataclass(frozen=True)
class Plan:
    submits: int  # sequential submits, one process
    workers: int  # processes submitting at once
    submits_per_worker: int
    postgres: bool


FULL = Plan(submits=300, workers=8, submits_per_worker=40, postgres=True)
QUICK = Plan(submits=20, workers=4, submits_per_worker=5, postgres=False)


# --- the ledger connection and the budget plan ----------------------------------------------


def _use_ledger(conn: dict[str, Any]) -> None:
    """Point the ledger connection at a database (``AIRFLOW_CONN_*``, inherited by children)."""
    os.environ[f"AIRFLOW_CONN_{LEDGER_CONN_ID.upper()}"] = json.dumps(conn)


def _budget_plan() -> Any:
    """The connection's daily budget and the group budget ``bench-team``'s monthly one."""
    from airflow_provider_nanogpt.shared_budget import plan_budgets

    extras = {
        "budget_usd_per_day": LIMIT_USD,
        "budgets": {"bench-team": {"usd_per_month": LIMIT_USD}},
        "budget_ledger_conn_id": LEDGER_CONN_ID,
    }
    return plan_budgets(NANOGPT_CONN_ID, extras, ["bench-team"])


def _forget_engines() -> None:
    """Close the process's ledger engines: before a fork (children must not share sockets or
    SQLite handles) and between databases."""
    from airflow_provider_nanogpt import ledger

    with ledger._ENGINES_LOCK:
        for engine in ledger._ENGINES.values():
            engine.dispose()
        ledger._ENGINES.clear()


# --- one submit, and its baseline -----------------------------------------------------------

_QUIET = logging.getLogger("benchmarks.budget")
_QUIET.setLevel(logging.ERROR)  # the guard's info line costs a level check, as in a quiet task


# Per phase of the budgeted submits of this process: where the time goes (a details line).
_PHASES: dict[str, list[float]] = {}


def _budgeted_submit(plan: Any, tag: str) -> float:
    """Seconds a budgeted task spends on its budget for one submit (what the operator calls)."""
    from airflow_provider_nanogpt.shared_budget import BudgetGuard

    guard = BudgetGuard(plan, lambda: ESTIMATE_USD, log=_QUIET)  # one guard per task
    steps: list[tuple[str, Callable[[], object]]] = [
        ("open ledger", lambda: guard.ledger),  # what the reserve would do first, timed apart
        ("reserve_to_send", lambda: guard.reserve_to_send(tag, 1)),
        ("settle", lambda: guard.settle(tag, 1, ESTIMATE_USD, "USD", run_id=f"run-{tag}")),
    ]
    total = 0.0
    for phase, step in steps:
        started = time.perf_counter()
        step()
        seconds = time.perf_counter() - started
        _PHASES.setdefault(phase, []).append(seconds)
        total += seconds
    return total


def _bare_engine() -> Any:
    """An engine for the ledger's database, configured as the ledger's own."""
    from airflow_provider_nanogpt.shared_budget import open_ledger

    engine = open_ledger(LEDGER_CONN_ID)._engine  # the one the ledger caches for this URL
    with engine.connect() as conn, conn.begin():
        conn.exec_driver_sql(
            f"CREATE TABLE IF NOT EXISTS {BASELINE_TABLE} "
            "(row_id VARCHAR(250) PRIMARY KEY, created_at DOUBLE PRECISION NOT NULL)"
        )
    return engine


def _bare_submit(engine: Any, tag: str) -> float:
    """Three one-row write transactions: what a reserve, a mark-sent and a settle made as three
    commits cost at least (the yardstick; see the module doc)."""
    from sqlalchemy import text

    sqlite = engine.dialect.name == "sqlite"
    started = time.perf_counter()
    for step in ("reserve", "mark", "settle"):
        with engine.connect() as conn:
            insert = text(f"INSERT INTO {BASELINE_TABLE} VALUES (:id, :now)")
            params = {"id": f"{tag}:{step}", "now": time.time()}
            if sqlite:  # the ledger's transactions (pysqlite's implicit BEGIN is off)
                conn.exec_driver_sql("BEGIN IMMEDIATE")
                conn.execute(insert, params)
                conn.exec_driver_sql("COMMIT")
            else:
                with conn.begin():
                    conn.execute(insert, params)
    return time.perf_counter() - started


def _sequential(submit: Callable[[str], float], count: int, prefix: str) -> list[float]:
    submit(f"{prefix}-warm-up")  # connects and creates tables: a cost of the first task only
    return [submit(f"{prefix}-{index}") for index in range(count)]


# --- concurrency: N processes at once -------------------------------------------------------


# Set before the pool forks, so every child inherits it: the processes start submitting together.
_START_LINE: Any = None


def _worker(args: tuple[str, int, int]) -> tuple[list[float], float, float]:
    """One process's submit times, and when its submits began and ended (epoch seconds)."""
    kind, worker, count = args
    budget_plan = _budget_plan()
    engine = _bare_engine() if kind == "bare" else None

    def submit(tag: str) -> float:
        if engine is not None:
            return _bare_submit(engine, tag)
        return _budgeted_submit(budget_plan, tag)

    prefix = f"{kind}-w{worker}"
    submit(f"{prefix}-warm-up")  # connect before the start line: measure submits, not connects
    _START_LINE.wait(timeout=60)
    began = time.time()
    seconds = [submit(f"{prefix}-{i}") for i in range(count)]
    return seconds, began, time.time()


def _concurrent(kind: str, plan: Plan) -> tuple[list[float], float]:
    """Per-submit seconds of ``plan.workers`` processes submitting at once, and the wall time."""
    global _START_LINE
    _forget_engines()
    context = multiprocessing.get_context("fork")  # the children inherit Airflow, imported
    _START_LINE = context.Barrier(plan.workers)
    jobs = [(kind, worker, plan.submits_per_worker) for worker in range(plan.workers)]
    with context.Pool(plan.workers) as pool:
        results = pool.map(_worker, jobs)
    wall = max(end for _, _, end in results) - min(began for _, began, _ in results)
    return [seconds for per_worker, _, _ in results for seconds in per_worker], wall


# --- one database ---------------------------------------------------------------------------


@contextmanager
def _postgres_ledger() -> Iterator[str]:
    from tests.e2e.postgres import PostgresCluster, ensure_installed

    cluster = PostgresCluster(ensure_installed(), database="ledger", durable=True)
    try:
        cluster.start()
        _use_ledger(
            {
                "conn_type": "postgres",
                "host": "127.0.0.1",
                "port": cluster.port,
                "login": cluster.user,
                "schema": cluster.database,
            }
        )
        yield "PostgreSQL (loopback, fsync on)"
    finally:
        _forget_engines()
        cluster.stop()


def _ms(values: list[float], q: float) -> float:
    return percentile(values, q) * 1000


def _measure(database: str, label: str, plan: Plan) -> list[Row]:
    _forget_engines()
    _PHASES.clear()
    budget_plan = _budget_plan()
    budgeted = _sequential(lambda tag: _budgeted_submit(budget_plan, tag), plan.submits, "seq")
    engine = _bare_engine()
    bare = _sequential(lambda tag: _bare_submit(engine, tag), plan.submits, "bare-seq")
    report(
        f"budget {database}: {plan.submits} submits one after another: budgeted median "
        f"{_ms(budgeted, 50):.2f} ms p95 {_ms(budgeted, 95):.2f} ms; three bare commits median "
        f"{_ms(bare, 50):.2f} ms p95 {_ms(bare, 95):.2f} ms"
    )
    phases = ", ".join(f"{phase} {_ms(values[1:], 50):.2f}" for phase, values in _PHASES.items())
    report(f"budget {database}: medians per phase (ms), one after another: {phases}")
    busy, busy_wall = _concurrent("budgeted", plan)
    bare_busy, bare_wall = _concurrent("bare", plan)
    total = plan.workers * plan.submits_per_worker
    report(
        f"budget {database}: {plan.workers} processes x {plan.submits_per_worker} submits at "
        f"once: budgeted median {_ms(busy, 50):.2f} ms p95 {_ms(busy, 95):.2f} ms "
        f"({total / busy_wall:.0f} submits/s); bare median {_ms(bare_busy, 50):.2f} ms p95 "
        f"{_ms(bare_busy, 95):.2f} ms ({total / bare_wall:.0f}/s)"
    )
    _check_ledger(budget_plan, plan)
    goal = GOAL_MS[database]
    return [
        Row(
            NAME,
            f"{label}: budget cost per submit, median",
            "ms",
            _ms(budgeted, 50),
            [("3 bare one-row commits", _ms(bare, 50))],
            f"< {goal:g} ms",
            _ms(budgeted, 50) < goal,
            note="reserve, recorded as sent, + settle, 2 budgets",
        ),
        Row(
            NAME,
            f"{label}: budget cost per submit, p95",
            "ms",
            _ms(budgeted, 95),
            [("3 bare one-row commits, p95", _ms(bare, 95))],
            f"< {goal:g} ms",
            _ms(budgeted, 95) < goal,
        ),
        Row(
            NAME,
            f"{label}: per submit with {plan.workers} processes at once, median",
            "ms",
            _ms(busy, 50),
            [(f"bare commits, {plan.workers} processes", _ms(bare_busy, 50))],
            note="all on the same 2 budgets",
        ),
        Row(
            NAME,
            f"{label}: per submit with {plan.workers} processes at once, p95",
            "ms",
            _ms(busy, 95),
            [(f"bare commits, {plan.workers} processes, p95", _ms(bare_busy, 95))],
        ),
    ]


def _check_ledger(budget_plan: Any, plan: Plan) -> None:
    """Every measured submit was counted once in both budgets: the benchmark measured real work."""
    from airflow_provider_nanogpt.shared_budget import open_ledger

    ledger = open_ledger(LEDGER_CONN_ID)
    # Warm-ups count too: one sequential, one per process.
    submits = plan.submits + 1 + plan.workers * (plan.submits_per_worker + 1)
    expected = round(submits * ESTIMATE_USD * 1_000_000)
    for budget in budget_plan.budgets:
        use = ledger.use(budget)
        if (use.spent_micro, use.reserved_micro) != (expected, 0):
            raise RuntimeError(
                f"{budget.describe()}: spent {use.spent_micro} reserved {use.reserved_micro} "
                f"micro-USD, expected {expected} spent for {submits} submits"
            )


def run(ctx: RunContext) -> list[Row]:
    plan = QUICK if ctx.quick else FULL
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="nanogpt-bench-ledger-") as root:
        _use_ledger({"conn_type": "sqlite", "host": str(Path(root) / "ledger.db")})
        rows += _measure("sqlite", "SQLite (file, WAL)", plan)
        _forget_engines()  # before its file goes
    if not plan.postgres:
        report("budget: PostgreSQL not measured in the quick mode")
        return rows
    with ExitStack() as stack:
        try:
            label = stack.enter_context(_postgres_ledger())
        except Exception as exc:  # a machine without PostgreSQL still gets its SQLite figures
            why = f"{type(exc).__name__}: {exc}"
            report(f"budget: PostgreSQL could not be started, so SQLite only: {why}")
            return rows
        rows += _measure("postgresql", label, plan)
    return rows
