"""Remember which NanoGPT run a task instance paid for, across Airflow retries.

On Airflow 3.3+ the record lives in the task state store (``context["task_state_store"]``), which
is scoped to (dag run, task, map index) and survives retries. It holds the run id and the request
fingerprint; once the task succeeds it is marked delivered, so clearing a succeeded task generates
a new video while a retry after a failed download or a lost worker reattaches to the paid run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

STATE_KEY = "nanogpt_video_run"


@dataclass(frozen=True)
class StoredRun:
    run_id: str
    fingerprint: str
    model: str | None = None
    cost: float | None = None
    delivered: bool = False


class RunStore:
    """A thin, failure-tolerant view of the task state store (absent before Airflow 3.3)."""

    def __init__(self, context: Mapping[str, Any]) -> None:
        try:
            self._store = context.get("task_state_store")
        except Exception:  # pragma: no cover - a context without the accessor
            self._store = None

    @property
    def available(self) -> bool:
        return self._store is not None

    def load(self) -> StoredRun | None:
        if self._store is None:
            return None
        value = self._store.get(STATE_KEY)
        if not isinstance(value, Mapping) or not value.get("run_id"):
            return None
        return StoredRun(
            run_id=str(value["run_id"]),
            fingerprint=str(value.get("fingerprint", "")),
            model=value.get("model"),
            cost=value.get("cost"),
            delivered=bool(value.get("delivered", False)),
        )

    def save(self, run: StoredRun) -> None:
        if self._store is not None:
            self._store.set(STATE_KEY, asdict(run))

    def mark_delivered(self) -> None:
        run = self.load()
        if run is not None and not run.delivered:
            self.save(StoredRun(**{**asdict(run), "delivered": True}))
