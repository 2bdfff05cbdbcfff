"""The NanoGPT page's spend, added up in the database, against a plain reference computation.

Job cards and charge records of every shape a card or record might take (a cost as a number, a
numeric string, NaN, infinite, negative, huge, null or missing; known, unknown and missing
currencies; refunded states; submission times either side of midnight UTC) are written as JSON
text into Airflow's own ``xcom`` and ``task_state_store`` tables, and ``spend()`` (what the page's
totals, chart and CSV show) must equal ``reference_spend``: the money rules written out in Python.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from airflow_provider_nanogpt.job_card import CHARGE_KEY_PREFIX, JOB_KEY, WATCH_KEY
from airflow_provider_nanogpt.plugin import jobs as job_store

HAS_STATE_STORE = importlib.util.find_spec("airflow.models.task_state_store") is not None
READABLE = {"dag_a", "dag_b"}
DAGS = [*sorted(READABLE), "dag_hidden"]
RUN_IDS = [f"vid_{n}" for n in range(3)]  # few: cards and records of one run meet
MIDNIGHT = 1_800_057_600  # 2027-01-16 00:00 UTC
NOT_JSON = object()  # a field written as NaN/Infinity: a document no JSON parser accepts
KNOWN = {"USD", "XNO"}
REFUNDED_STATES = {"failed", "blocked", "cancelled"}
MISSING = object()

AMOUNTS = st.one_of(
    st.floats(min_value=0, max_value=1e6, allow_nan=False),
    st.floats(min_value=0, max_value=1e6, allow_nan=False),  # mostly a cost that counts
    st.integers(min_value=-5, max_value=10**20),
    st.floats(min_value=-1e6, max_value=-1e-9),
    st.sampled_from([-0.01, 1e308, 1.5e308, math.inf, -math.inf, "1.5", "lots", "", True, None]),
    st.just(NOT_JSON),
    st.just(MISSING),
)
CURRENCIES = st.sampled_from(["USD", "XNO", "usd", "EUR", "", None, 5, MISSING])
# Seconds either side of a few UTC midnights (whole milliseconds: sub-microsecond instants are
# not a day a person could tell apart), and times that are no time at all.
TIMES = st.one_of(
    st.builds(
        lambda day, ms: MIDNIGHT + day * 86_400 + ms / 1000,
        st.integers(-2, 2),
        st.integers(-3_600_000, 3_600_000),
    ),
    st.integers(min_value=-(10**6), max_value=10**6).map(lambda n: MIDNIGHT + n),
    st.floats(min_value=-62_135_596_800, max_value=0).map(lambda at: round(at, 3)),  # before 1970
    st.sampled_from([0, -86_400.5, 1e20, -1e20, "1800000000", True, None, math.inf, MISSING]),
)
STATES = st.sampled_from(
    ["submitted", "completed", *sorted(REFUNDED_STATES), "timed_out", "rejected", 3, MISSING]
)


def _document(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not MISSING}


CARDS = st.builds(
    _document,
    run_id=st.sampled_from(RUN_IDS) | st.sampled_from([None, 7, MISSING]),
    state=STATES,
    cost=AMOUNTS,
    currency=CURRENCIES,
    submitted_at=TIMES,
)
RECORDS = st.builds(
    _document,
    run_id=st.sampled_from(RUN_IDS) | st.sampled_from([None, MISSING]),
    refunded=st.sampled_from([True, False, "true", 1, None, MISSING]),
    state=STATES,
    cost=AMOUNTS,
    currency=CURRENCIES,
    submitted_at=TIMES,
)
# (DAG, document) pairs; at most one card and one charge record per NanoGPT run (as the operator
# writes them: a card per task, a charge record per run in its task's store).
Rows = list[tuple[str, dict[str, Any]]]


def _one_per_run(rows: Rows) -> Rows:
    seen: set[Any] = set()
    kept = []
    for dag_id, document in rows:
        run_id = document.get("run_id")
        if isinstance(run_id, str) and run_id in seen:
            continue
        seen.add(run_id)
        kept.append((dag_id, document))
    return kept


ROWS_OF = {
    "cards": st.lists(st.tuples(st.sampled_from(DAGS), CARDS), min_size=1, max_size=6),
    "records": st.lists(st.tuples(st.sampled_from(DAGS), RECORDS), max_size=6),
}
AROUND = date(2027, 1, 16)
DAYS = st.none() | st.none() | st.integers(-3, 3).map(lambda n: AROUND + timedelta(days=n))


def _json_text(document: Mapping[str, Any]) -> str:
    """The document as a store writes it: an infinite number as 1e999 (valid JSON, infinite when
    read), a NaN field as the NaN token (not JSON: the document cannot be read)."""
    fields = []
    for key, value in document.items():
        if value is NOT_JSON:
            text = "NaN"
        elif isinstance(value, float) and math.isinf(value):
            text = "1e999" if value > 0 else "-1e999"
        else:
            text = json.dumps(value)
        fields.append(f"{json.dumps(key)}: {text}")
    return "{" + ", ".join(fields) + "}"


def _read(text: str) -> dict[str, Any] | None:
    """Strict JSON, as the database reads it: NaN and Infinity are not JSON."""

    def not_json(token: str) -> Any:
        raise ValueError(token)

    try:
        value = json.loads(text, parse_constant=not_json)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def reference_spend(
    cards: Rows, records: Rows, readable: set[str], since: date | None, until: date | None
) -> job_store.Spend:
    """The money rules, plainly: per NanoGPT run, nothing if anything says it was refunded; else
    its card's figures when the card has a cost, else its charge record's, else its card's; on
    the UTC day it was submitted; a cost counts if it is a finite number >= 0 in a known
    currency, else the job is one without a known cost."""
    candidates: dict[str, list[tuple[int, str, dict[str, Any]]]] = {}
    refunded: set[str] = set()
    for rank_if_cost, rank_if_none, rows in ((2, 0, cards), (1, 1, records)):
        for dag_id, document in rows:
            read = _read(_json_text(document))
            if dag_id not in readable or read is None or not isinstance(read.get("run_id"), str):
                continue
            run_id = read["run_id"]
            if rows is cards and read.get("state") in REFUNDED_STATES:
                refunded.add(run_id)
            if rows is records and read.get("refunded") is True:
                refunded.add(run_id)
            rank = rank_if_cost if read.get("cost") is not None else rank_if_none
            candidates.setdefault(run_id, []).append((rank, dag_id, read))
    spent = job_store.Spend()
    for run_id, found in candidates.items():
        if run_id in refunded:
            continue
        _, dag_id, chosen = max(found, key=lambda candidate: candidate[0])
        at = _number(chosen.get("submitted_at"))
        if at is None or not -62_135_596_800 <= at < 253_402_300_800:
            continue
        day = date(1970, 1, 1) + timedelta(days=math.floor(at / 86_400))
        if (since and day < since) or (until and day > until):
            continue
        spent.jobs += 1
        cost, currency = _number(chosen.get("cost")), chosen.get("currency")
        if cost is None or not math.isfinite(cost) or cost < 0 or currency not in KNOWN:
            spent.unknown_cost += 1
            continue
        for table, key in (
            (spent.by_day, day.isoformat()),
            (spent.by_dag, dag_id),
            (spent.by_day_and_dag, (day.isoformat(), dag_id)),
        ):
            sums = table.setdefault(key, {})  # type: ignore[attr-defined]
            sums[currency] = sums.get(currency, 0.0) + cost
        spent.totals[currency] = spent.totals.get(currency, 0.0) + cost
    return spent


# Another database to run against (a SQLAlchemy URL, e.g. an empty PostgreSQL database): the
# tables are created there and dropped afterwards. SQLite in memory by default.
DB_URL = os.environ.get("NANOGPT_SPEND_TEST_DB", "sqlite://")


@pytest.fixture(scope="module")
def metadata_db() -> Iterator[Any]:
    """Airflow's own ``xcom`` and ``task_state_store`` tables, in a database of their own
    (without their foreign keys: no DAG runs needed for the cards and records the page reads)."""
    from airflow.models.dagrun import DagRun  # noqa: F401 (tables the keys refer to)
    from airflow.models.taskinstance import TaskInstance  # noqa: F401
    from airflow.models.xcom import XComModel
    from sqlalchemy import Column, MetaData, Table, create_engine
    from sqlalchemy.orm import Session

    from airflow_provider_nanogpt.plugin.models import charge_table

    tables = MetaData()
    for model in (XComModel, charge_table()) if HAS_STATE_STORE else (XComModel,):
        columns = model.__table__.columns
        Table(model.__tablename__, tables, *(Column(c.name, c.type) for c in columns))
    engine = create_engine(DB_URL)
    tables.create_all(engine)
    try:
        with Session(engine) as session:
            yield session
    finally:
        tables.drop_all(engine)
        engine.dispose()


def _store(session: Any, cards: Rows, records: Rows) -> None:
    """The documents as JSON text, exactly as given (no ORM type re-encodes them)."""
    from sqlalchemy import column, delete, insert, table

    from airflow_provider_nanogpt.plugin.models import XComModel, charge_table

    written = datetime(2027, 1, 16, tzinfo=UTC)
    session.execute(delete(XComModel))
    # A plain table of this Airflow's xcom columns (3.1 has no dag_result): the text goes as is.
    names = [c.name for c in XComModel.__table__.columns if c.name != "id"]
    xcom = table("xcom", *map(column, names))
    rows = [
        {
            "dag_run_id": 1,
            "task_id": "generate",
            "map_index": n,
            "key": key,
            "dag_id": dag_id,
            "run_id": "manual__1",
            "value": _json_text(doc),
            "timestamp": written,
            "dag_result": False,
        }
        for n, (dag_id, doc) in enumerate(cards)
        # A sensor's card beside each: never a charge of its own.
        for key in (JOB_KEY, WATCH_KEY)
    ]
    rows = [{k: v for k, v in row.items() if k in names} for row in rows]
    if rows:
        session.execute(insert(xcom), rows)
    store = charge_table()
    if store is None:
        return
    session.execute(delete(store))
    if records:
        session.execute(
            insert(store),
            [
                {
                    "dag_run_id": 1,
                    "task_id": "generate",
                    "map_index": n,
                    "key": f"{CHARGE_KEY_PREFIX}{doc.get('run_id')}",
                    "dag_id": dag_id,
                    "run_id": "manual__1",
                    "value": _json_text(doc),
                    "updated_at": written,
                }
                for n, (dag_id, doc) in enumerate(records)
            ],
        )


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(cards=ROWS_OF["cards"], records=ROWS_OF["records"], since=DAYS, until=DAYS)
def test_the_spend_added_up_in_the_database_follows_the_money_rules(
    metadata_db: Any, cards: Rows, records: Rows, since: date | None, until: date | None
) -> None:
    cards, records = _one_per_run(cards), _one_per_run(records) if HAS_STATE_STORE else []
    if not DB_URL.startswith("sqlite"):
        # PostgreSQL refuses NaN in a json column, and cannot tell a malformed text apart
        # without raising (no json_valid before version 16): real stores hold JSON.
        assume(NOT_JSON not in [v for _, doc in cards + records for v in doc.values()])
    _store(metadata_db, cards, records)
    got = job_store.spend(metadata_db, READABLE, since, until)
    want = reference_spend(cards, records, READABLE, since, until)
    assert (got.jobs, got.unknown_cost) == (want.jobs, want.unknown_cost)
    assert got.totals == pytest.approx(want.totals, rel=1e-9)
    assert list(got.by_day) == sorted(want.by_day, reverse=True)  # newest day first
    for name in ("by_day", "by_dag", "by_day_and_dag"):
        got_sums, want_sums = getattr(got, name), getattr(want, name)
        assert got_sums.keys() == want_sums.keys()
        for key, sums in want_sums.items():
            assert got_sums[key] == pytest.approx(sums, rel=1e-9), (name, key)
