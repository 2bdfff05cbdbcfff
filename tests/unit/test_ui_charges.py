"""The NanoGPT page's charge records read from the task state store (Airflow 3.3+), on a SQLite
table of Airflow's own model: the refunded-only read the job list uses keeps every refunded
record, however the JSON text is spaced."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_provider_nanogpt.job_card import CHARGE_KEY_PREFIX

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("airflow.models.task_state_store") is None,
    reason="no task state store before Airflow 3.3",
)
DAG = "video_dag"
# How a store might write the record: json.dumps' default, compact, pretty-printed.
LAYOUTS: list[dict[str, Any]] = [{}, {"separators": (",", ":")}, {"indent": 2}]


@pytest.fixture(scope="module")
def store() -> Iterator[Any]:
    """The task state store's table, and the XCom table its records' job cards are in (SQLite
    does not enforce their foreign keys unless told to: no DAG runs needed)."""
    from airflow.models.dagrun import DagRun  # noqa: F401 (the tables the keys refer to)
    from airflow.models.task_state_store import TaskStateStoreModel
    from airflow.models.taskinstance import TaskInstance  # noqa: F401
    from airflow.models.xcom import XComModel
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    engine = create_engine("sqlite://")
    TaskStateStoreModel.__table__.create(engine)
    XComModel.__table__.create(engine)
    with Session(engine) as session:
        yield session
    engine.dispose()


def _write(session: Any, records: list[tuple[dict[str, Any], dict[str, Any]]]) -> None:
    from airflow.models.task_state_store import TaskStateStoreModel
    from sqlalchemy import delete, insert

    session.execute(delete(TaskStateStoreModel))
    if not records:  # an empty parameter list would insert one row of NULLs
        return
    session.execute(
        insert(TaskStateStoreModel),
        [
            {
                "dag_run_id": 1,
                "task_id": "generate",
                "map_index": n,
                "key": f"{CHARGE_KEY_PREFIX}{record['run_id']}",
                "dag_id": DAG,
                "run_id": "manual__1",
                "value": json.dumps(record, **layout),
                "updated_at": datetime.now(UTC),
            }
            for n, (record, layout) in enumerate(records)
        ],
    )


RECORDS = st.lists(
    st.tuples(
        st.fixed_dictionaries(
            {
                "prompt": st.text(max_size=40) | st.just('say "refunded": true'),
                "state": st.sampled_from(["submitted", "completed", "failed", "blocked"]),
                "refunded": st.booleans(),
            }
        ),
        st.sampled_from(LAYOUTS),
    ),
    max_size=8,
)


@settings(max_examples=60, deadline=None)
@given(records=RECORDS)
def test_the_refunded_read_keeps_every_refunded_record(
    store: Any, records: list[tuple[dict[str, Any], dict[str, Any]]]
) -> None:
    from airflow_provider_nanogpt.plugin.models import charge_rows

    numbered = [
        ({**record, "run_id": f"vid_{n}"}, layout) for n, (record, layout) in enumerate(records)
    ]
    _write(store, numbered)
    every = {row.record["run_id"] for row in charge_rows(store, {DAG})}
    assert every == {record["run_id"] for record, _ in numbered}
    read = [row.record for row in charge_rows(store, {DAG}, refunded_only=True)]
    refunded = {record["run_id"] for record, _ in numbered if record["refunded"]}
    assert {r["run_id"] for r in read if r["refunded"] is True} == refunded
    # The database already left out the records that are plainly not refunded.
    assert all(r["refunded"] or "true" in json.dumps(r) for r in read)


def test_a_record_is_read_with_the_run_on_its_own_tasks_card(store: Any) -> None:
    """``own_card``: the NanoGPT run on the job card of the record's own task instance (the job
    list looks no further for a refunded job whose card is still there), else None: a card of
    another task or a sensor's card is not the task's own."""
    from airflow.models.xcom import XComModel
    from sqlalchemy import delete, insert

    from airflow_provider_nanogpt.job_card import JOB_KEY, WATCH_KEY
    from airflow_provider_nanogpt.plugin.models import charge_rows

    runs = [f"vid_{n}" for n in range(4)]
    _write(store, [({"run_id": run, "state": "failed", "refunded": True}, {}) for run in runs])
    store.execute(delete(XComModel))
    cards = [
        (0, JOB_KEY, "vid_0"),  # its card is still there
        (1, JOB_KEY, "vid_9"),  # a retry's card: another run
        (2, WATCH_KEY, "vid_2"),  # a sensor's card
        (7, JOB_KEY, "vid_3"),  # another task's card
    ]
    store.execute(
        insert(XComModel),
        [
            {
                "dag_run_id": 1,
                "task_id": "generate",
                "map_index": map_index,
                "key": key,
                "dag_id": DAG,
                "run_id": "manual__1",
                "value": {"run_id": run, "state": "failed"},
                "timestamp": datetime.now(UTC),
            }
            for map_index, key, run in cards
        ],
    )
    read = charge_rows(store, {DAG}, refunded_only=True, own_card=True)
    assert {row.record["run_id"]: row.card_run_id for row in read} == {
        "vid_0": "vid_0",
        "vid_1": "vid_9",
        "vid_2": None,
        "vid_3": None,
    }
    assert {row.card_run_id for row in charge_rows(store, {DAG})} == {None}  # not asked for
