"""The shared budget ledger on PostgreSQL, its production database (tests/unit/test_ledger.py runs
the same ledger on SQLite files).

PostgreSQL is where the ledger's own locking runs (row locks on the budget windows, taken in one
order) and where a pooled connection can go stale, so these run against a real throwaway
cluster (tests/e2e/postgres.py), each test on a database of its own.
"""

from __future__ import annotations

import concurrent.futures
import threading
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_provider_nanogpt.ledger import Budget, Ledger
from tests.e2e.lifecycle import unavailable
from tests.e2e.postgres import PostgresCluster, PostgresUnavailable, ensure_installed
from tests.unit import test_ledger as on_sqlite

pytestmark = pytest.mark.e2e

DAY = on_sqlite.DAY
# The fork pool of the SQLite tests, started before any ledger engine exists in this process.
processes = on_sqlite.processes


@pytest.fixture(scope="module")
def cluster(processes: concurrent.futures.ProcessPoolExecutor) -> Iterator[PostgresCluster]:
    try:
        cluster = PostgresCluster(ensure_installed(), database="ledger")
    except PostgresUnavailable as exc:
        unavailable("PostgreSQL ledger tests", "PostgreSQL", exc)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def new_database(cluster: PostgresCluster) -> str:
    """The URL of a new, empty database on ``cluster``."""
    name = f"ledger_{uuid.uuid4().hex[:12]}"
    cluster.create_database(name)
    return f"postgresql+psycopg2://{cluster.user}@127.0.0.1:{cluster.port}/{name}"


def close_every_connection(cluster: PostgresCluster, url: str) -> int:
    """What a server restart or an idle timeout does to the pool: the server ends every session
    on the ledger's database. Returns how many it ended."""
    admin = cluster.connect("postgres")
    try:
        admin.autocommit = True
        with admin.cursor() as cursor:
            cursor.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (url.rsplit("/", 1)[1],),
            )
            return int(cursor.fetchone()[0])
    finally:
        admin.close()


def test_a_pooled_connection_the_server_closed_does_not_fail_the_next_call(
    cluster: PostgresCluster,
) -> None:
    url = new_database(cluster)
    ledger = Ledger.from_url(url)
    ledger.reserve("a", "ta", [DAY], 400_000)
    assert close_every_connection(cluster, url) == 1  # the pool's one idle connection
    ledger.mark_sent("a")  # would fail on the dead connection without the retry
    assert close_every_connection(cluster, url) == 1
    assert ledger.settle("a", 300_000, run_id="run-a")
    assert close_every_connection(cluster, url) == 1
    use = ledger.use(DAY)
    assert (use.spent_micro, use.reserved_micro) == (300_000, 0)
    assert ledger.state_of("a") == {DAY.key: ("settled", 400_000, 300_000)}


@settings(
    max_examples=5,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(plans=st.lists(on_sqlite.plan_strategy, min_size=4, max_size=4))
def test_concurrent_threads_and_processes_never_overspend(
    cluster: PostgresCluster,
    processes: concurrent.futures.ProcessPoolExecutor,
    plans: list[list[tuple[str, int, int]]],
) -> None:
    on_sqlite.never_overspend(new_database(cluster), processes, plans)


TEAM = Budget("team", "month", 10**9)
OWN = Budget("connection nanogpt_default", "day", 10**9)


def submit_many(url: str, worker: str, budgets: list[Budget], count: int) -> int:
    """``count`` reserve, send and settle rounds against ``budgets``; how many were settled."""
    ledger = Ledger.from_url(url)
    for n in range(count):
        rid = f"{worker}-{n}"
        ledger.reserve(rid, rid, budgets, 1_000)
        ledger.mark_sent(rid)
        ledger.settle(rid, 1_000)
    return count


def test_reserves_against_the_same_windows_in_any_order_never_deadlock(
    cluster: PostgresCluster, processes: concurrent.futures.ProcessPoolExecutor
) -> None:
    # Every transaction locks both windows; the callers name them in opposite orders, and the
    # windows' rows do not exist yet when they start (the first reserves create them at once).
    url = new_database(cluster)
    start = threading.Barrier(2)

    def in_thread(worker: str, budgets: list[Budget]) -> int:
        start.wait(timeout=30)
        return submit_many(url, worker, budgets, 25)

    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as threads:
        futures = [
            processes.submit(submit_many, url, "p0", [OWN, TEAM], 25),
            processes.submit(submit_many, url, "p1", [TEAM, OWN], 25),
            threads.submit(in_thread, "t0", [OWN, TEAM]),
            threads.submit(in_thread, "t1", [TEAM, OWN]),
        ]
        settled = sum(future.result(timeout=120) for future in futures)
    ledger = Ledger.from_url(url)
    for budget in (OWN, TEAM):
        use = ledger.use(budget)
        assert (use.spent_micro, use.reserved_micro) == (settled * 1_000, 0)
    assert settled == 100
