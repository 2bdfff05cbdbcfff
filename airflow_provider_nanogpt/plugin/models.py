"""The Airflow ORM models the NanoGPT page reads, in one place (they are not a public API)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airflow.models.connection import Connection
from airflow.models.renderedtifields import RenderedTaskInstanceFields
from airflow.models.taskinstance import TaskInstance
from airflow.models.xcom import XComModel

from airflow_provider_nanogpt.job_card import CHARGE_KEY_PREFIX, JOB_KEY

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

__all__ = [
    "ChargeRow",
    "Connection",
    "TaskInstance",
    "XComModel",
    "charge_rows",
    "charge_table",
    "is_task_instance",
    "map_label",
    "rendered_fields",
    "same_task_instance",
]

# The columns that name one task instance, in every table the page reads.
TASK_INSTANCE_COLUMNS = ("dag_id", "run_id", "task_id", "map_index")


def task_instance_columns(table: Any) -> tuple[Any, ...]:
    """``table``'s columns that name a task instance (a model, an alias or a subquery's ``c``)."""
    return tuple(getattr(table, name) for name in TASK_INSTANCE_COLUMNS)


def same_task_instance(left: Any, right: Any) -> Any:
    """SQL: rows of ``left`` and ``right`` (models or aliases) belong to one task instance."""
    from sqlalchemy import and_

    return and_(*(getattr(left, name) == getattr(right, name) for name in TASK_INSTANCE_COLUMNS))


def is_task_instance(table: Any, dag_id: str, run_id: str, task_id: str, map_index: int) -> Any:
    """SQL: a row of ``table`` belongs to this task instance."""
    from sqlalchemy import and_

    key = (dag_id, run_id, task_id, map_index)
    return and_(
        *(
            getattr(table, name) == value
            for name, value in zip(TASK_INSTANCE_COLUMNS, key, strict=True)
        )
    )


@dataclass(frozen=True)
class ChargeRow:
    """One charge record of the task state store, and the task instance that made it."""

    id: int
    dag_id: str
    dag_run_id: str
    task_id: str
    map_index: int
    updated: datetime
    record: Mapping[str, Any]
    # The NanoGPT run id on the job card its task instance holds now (None: no card, or not
    # asked for: ``charge_rows(..., own_card=True)``).
    card_run_id: str | None = None


def map_label() -> Any:
    """The task instance's label from its ``map_index_template``, in SQL: the table's column, NULL
    when nothing was rendered (the ORM's ``rendered_map_index`` falls back to the index on 3.3
    but not on 3.1; the column means the same on both)."""
    return TaskInstance.__table__.c.rendered_map_index


def charge_table() -> Any:
    """The task state store's model on Airflow 3.3+, else None (no store before 3.3)."""
    try:
        from airflow.models.task_state_store import TaskStateStoreModel
    except ImportError:
        return None
    return TaskStateStoreModel


def charge_rows(
    session: Session, dag_ids: set[str], *, refunded_only: bool = False, own_card: bool = False
) -> Iterator[ChargeRow]:
    """The charge records of the readable DAGs: Airflow 3.3+, else nothing.

    ``refunded_only``: at least every record marked refunded (callers still check the flag). The
    database drops the others first, so a listing does not decode every charge ever made.
    ``own_card``: with the run id on the job card of the record's task instance
    (``card_run_id``), found through that task instance's keys rather than a search of every card.
    """
    table = charge_table()
    if table is None:
        return
    from sqlalchemy import and_, null, select

    card_run_id = XComModel.value["run_id"].as_string() if own_card else null()
    query = select(
        table.id,
        table.dag_id,
        table.run_id,
        table.task_id,
        table.map_index,
        table.updated_at,
        table.value,
        card_run_id,
    ).where(table.key.startswith(CHARGE_KEY_PREFIX, autoescape=True), table.dag_id.in_(dag_ids))
    if own_card:
        query = query.join(
            XComModel,
            and_(same_task_instance(XComModel, table), XComModel.key == JOB_KEY),
            isouter=True,
        )
    if refunded_only:
        # The value is JSON text: a record whose "refunded" is true has the key and, after it,
        # the literal true, however it is spaced; a false match is dropped by the caller.
        query = query.where(table.value.like('%"refunded"%true%'))
    for row_id, dag_id, run_id, task_id, map_index, updated, value, on_card in session.execute(
        query
    ):
        try:
            record = json.loads(value) if isinstance(value, str) else value
        except ValueError:
            continue
        if isinstance(record, Mapping):
            when = updated if updated.tzinfo else updated.replace(tzinfo=UTC)
            yield ChargeRow(row_id, dag_id, run_id, task_id, map_index, when, record, on_card)


def rendered_fields(
    session: Session, dag_id: str, run_id: str, task_id: str, map_index: int
) -> Mapping[str, Any] | None:
    """The task instance's rendered template fields, as its worker recorded them (no REST
    endpoint writes them, unlike XComs); None when there are none (pruned for old runs)."""
    from sqlalchemy import select

    table = RenderedTaskInstanceFields
    value = session.scalar(
        select(table.rendered_fields).where(
            is_task_instance(table, dag_id, run_id, task_id, map_index)
        )
    )
    if isinstance(value, str):  # some backends hand back the JSON text
        try:
            value = json.loads(value)
        except ValueError:
            return None
    return value if isinstance(value, Mapping) else None
