"""The Airflow ORM models the NanoGPT page reads, in one place (they are not a public API)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from airflow.models.connection import Connection
from airflow.models.taskinstance import TaskInstance
from airflow.models.xcom import XComModel

from airflow_provider_nanogpt.job_card import CHARGE_KEY_PREFIX

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

__all__ = ["Connection", "TaskInstance", "XComModel", "charge_rows"]


def charge_rows(session: Session, dag_ids: set[str]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(dag id, charge record) from the task state store: Airflow 3.3+, else nothing."""
    try:
        from airflow.models.task_state_store import TaskStateStoreModel
    except ImportError:  # Airflow before 3.3 has no task state store
        return
    from sqlalchemy import select

    query = select(TaskStateStoreModel.dag_id, TaskStateStoreModel.value).where(
        TaskStateStoreModel.key.startswith(CHARGE_KEY_PREFIX),
        TaskStateStoreModel.dag_id.in_(dag_ids),
    )
    for dag_id, value in session.execute(query).all():
        try:
            record = json.loads(value) if isinstance(value, str) else value
        except ValueError:
            continue
        if isinstance(record, Mapping):
            yield dag_id, record
