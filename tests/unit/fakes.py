"""Stand-ins for the task runtime's parts the operator uses, to call its methods directly the way
Airflow's Task Runner does after a deferral."""

from __future__ import annotations

from datetime import datetime
from typing import Any


class FakeTaskInstance:
    """The parts of ``context["ti"]`` the operator uses."""

    def __init__(self, start_date: datetime | None = None) -> None:
        self.dag_id, self.run_id, self.task_id = "resume_dag", "manual_1", "generate"
        self.map_index = -1
        self.try_number = 1
        self.max_tries = 0
        self.start_date = start_date
        self.xcoms: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[key] = value

    def xcom_pull(self, task_ids: Any = None, key: str = "return_value", **_: Any) -> Any:
        return self.xcoms.get(key)


class FakeStateStore(dict[str, Any]):
    def set(self, key: str, value: Any) -> None:
        self[key] = value

    def delete(self, key: str) -> None:
        self.pop(key, None)
