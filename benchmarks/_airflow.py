"""Just enough of a task's runtime to call operator methods directly, as the Task Runner does."""

from __future__ import annotations

import contextvars
import importlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

# The provider's fixed real-time waits. Against a time-scaled simulator they must shrink with the
# clock, or a 0.5 s margin would count as 10 simulated seconds at time_scale 0.05.
REAL_TIME_CONSTANTS = (
    ("airflow_provider_nanogpt.polling", "ETA_MARGIN_SECONDS"),
    ("airflow_provider_nanogpt.operators.video", "RATE_LIMIT_SLEEP_ON_WORKER_SECONDS"),
)


class FakeTaskInstance:
    """The parts of ``context["ti"]`` the operator uses: identity, XCom push and pull."""

    def __init__(self, task_id: str) -> None:
        self.dag_id = "nanogpt_benchmarks"
        self.run_id = "bench"
        self.task_id = task_id
        self.map_index = -1
        self.try_number = 1
        self.xcoms: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[key] = value

    def xcom_pull(self, task_ids: Any = None, key: str = "return_value", **_: Any) -> Any:
        return self.xcoms.get(key)


class FakeStateStore(dict[str, Any]):
    """The Airflow 3.3 task state store, as far as the operator uses it."""

    def set(self, key: str, value: Any) -> None:
        self[key] = value

    def delete(self, key: str) -> None:
        self.pop(key, None)


def task_context(task_id: str) -> dict[str, Any]:
    return {"ti": FakeTaskInstance(task_id), "task_state_store": FakeStateStore()}


def task_deferred() -> Any:
    """``TaskDeferred`` from ``airflow.sdk.exceptions`` (newer SDKs) or ``airflow.exceptions``."""
    for name in ("airflow.sdk.exceptions", "airflow.exceptions"):
        try:
            found = getattr(importlib.import_module(name), "TaskDeferred", None)
        except ImportError:
            continue
        if found is not None:
            return found
    raise ImportError("this Airflow has no TaskDeferred")


def call_as_task(op: Any, method: Callable[..., Any], context: Any, **kwargs: Any) -> Any:
    """Call ``method`` the way the Task Runner does, so the executor safeguard stays quiet."""
    from airflow.sdk.bases.operator import ExecutorSafeguard

    run_context = contextvars.copy_context()
    run_context.run(ExecutorSafeguard.tracker.set, op)
    return run_context.run(method, context=context, **kwargs)


@contextmanager
def provider_waits_scaled(scale: float) -> Iterator[list[str]]:
    """Multiply the provider's real-time constants by ``scale`` for the duration.

    Only the constants that exist are touched (yielded as ``module.NAME``), so the benchmarks
    keep running while the provider changes.
    """
    saved: list[tuple[Any, str, float]] = []
    for module_name, name in REAL_TIME_CONSTANTS:
        module = importlib.import_module(module_name)
        if isinstance(getattr(module, name, None), int | float):
            saved.append((module, name, getattr(module, name)))
            setattr(module, name, getattr(module, name) * scale)
    try:
        yield [f"{module.__name__.split('.', 1)[-1]}.{name}" for module, name, _ in saved]
    finally:
        for module, name, value in saved:
            setattr(module, name, value)
