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
    from airflow.models.dagrun import DagRun  # noqa: F401 (the table the store's key refers to)
    from airflow.models.task_state_store import TaskStateStoreModel
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    engine = create_engine("sqlite://")
    TaskStateStoreModel.__table__.create(engine)
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
