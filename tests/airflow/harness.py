"""Run a test DAG with dag.test() and read back what Airflow recorded."""

from __future__ import annotations

import math
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from airflow_provider_nanogpt.ledger import Period, Window
from tests.airflow.execution_api import build_the_execution_api_once
from tests.conftest import TEST_DAGS


@dataclass
class DagOutcome:
    dag_id: str
    state: str
    run_id: str
    task_states: dict[str, str]
    try_numbers: dict[str, int]
    xcoms: dict[tuple[Any, ...], Any]
    observed_while_running: list[tuple[str, Any]] = field(default_factory=list)


def budget_dag(conf: dict[str, Any]) -> str:
    """The nanogpt_budget DAG that sets exactly the money guards present in ``conf`` (a guard
    the DAG sets but the conf leaves out renders to nothing, which fails the task)."""
    given = [name for name in ("min_balance_usd", "max_cost_usd") if name in conf]
    return "nanogpt_budget" if len(given) != 1 else f"nanogpt_budget_{given[0]}"


def load_dag(dag_id: str, path: Path = TEST_DAGS / "nanogpt_test_dags.py") -> Any:
    build_the_execution_api_once()
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow < 3.2
        from airflow.models.dagbag import DagBag  # type: ignore[no-redef]

    bag = DagBag(dag_folder=str(path))
    assert not bag.import_errors, bag.import_errors
    return bag.get_dag(dag_id)


def read_task_instances(dag_id: str, run_id: str) -> tuple[dict[str, str], dict[str, int]]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        tis = session.scalars(
            select(TaskInstance).where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)
        ).all()

        # Unmapped tasks by task_id; each mapped instance by "task_id[map_index]", so mapped
        # instances never collapse into one entry.
        def key(ti: TaskInstance) -> str:
            return ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"

        return (
            {key(ti): str(ti.state) for ti in tis},
            {key(ti): ti.try_number for ti in tis},
        )


def read_xcoms(dag_id: str, run_id: str) -> dict[tuple[Any, ...], Any]:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(
            select(XComModel).where(XComModel.dag_id == dag_id, XComModel.run_id == run_id)
        ).all()
        # Unmapped tasks are keyed (task_id, key); mapped ones (task_id, key, map_index).
        return {
            (r.task_id, r.key) if r.map_index < 0 else (r.task_id, r.key, r.map_index): (
                XComModel.deserialize_value(r)
            )
            for r in rows
        }


def run_dag(
    dag_id: str,
    conf: dict[str, Any],
    watch_task: str | tuple[str, ...] | None = None,
    path: Path = TEST_DAGS / "nanogpt_test_dags.py",
    *,
    without_logical_date: bool = False,
    watch_key: str = "run_id",
) -> DagOutcome:
    """dag.test() the DAG; optionally sample (task state, ``watch_key`` XCom) while it runs.

    ``watch_task`` may name several tasks: each sample then holds one entry per task, so a test
    need not depend on which of two parallel tasks dag.test() happens to run first.

    ``without_logical_date`` runs it as a REST trigger with ``logical_date: null`` or an asset
    event does: no ``ds``, ``logical_date`` or data interval in the template context.
    """
    dag = load_dag(dag_id, path)
    observed: list[tuple[str, Any]] = []
    stop = threading.Event()
    run_ids: list[str] = []
    watched = (watch_task,) if isinstance(watch_task, str) else (watch_task or ())

    def watch() -> None:
        from airflow.models.dagrun import DagRun
        from airflow.utils.session import create_session
        from sqlalchemy import select

        while not stop.is_set():
            try:
                if not run_ids:
                    with create_session() as session:
                        latest = session.scalars(
                            select(DagRun.run_id)
                            .where(DagRun.dag_id == dag_id, DagRun.conf == conf)
                            .order_by(DagRun.id.desc())
                        ).first()
                    if latest:
                        run_ids.append(latest)
                if run_ids and watched:
                    states, _ = read_task_instances(dag_id, run_ids[0])
                    xcoms = read_xcoms(dag_id, run_ids[0])
                    for task in watched:
                        observed.append((states.get(task, ""), xcoms.get((task, watch_key))))
            except Exception:  # the DB is busy with the run itself; sample again
                pass
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    if watch_task:
        watcher.start()
    try:
        # dag.test() stamps "now" as the logical date unless told None explicitly.
        dagrun = dag.test(run_conf=conf, **({"logical_date": None} if without_logical_date else {}))
    finally:
        stop.set()
        if watch_task:
            watcher.join(timeout=5)
    states, tries = read_task_instances(dag_id, dagrun.run_id)
    return DagOutcome(
        dag_id=dag_id,
        state=str(dagrun.state),
        run_id=dagrun.run_id,
        task_states=states,
        try_numbers=tries,
        xcoms=read_xcoms(dag_id, dagrun.run_id),
        observed_while_running=observed,
    )


def stored_triggers(classpath_suffix: str) -> list[dict[str, Any]]:
    """Decrypted kwargs of the trigger rows Airflow stored (dag.test() leaves them behind)."""
    from airflow.models.trigger import Trigger
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(select(Trigger)).all()
        return [dict(row.kwargs) for row in rows if row.classpath.endswith(classpath_suffix)]


def clear_and_rerun(
    dag_id: str, run_id: str, path: Path = TEST_DAGS / "nanogpt_test_dags.py"
) -> DagOutcome:
    """Clear every task of a finished DAG run and run them again in the same run, as a user's
    Clear in the UI does (the tries go on counting; the task state store is not reset).

    dag.test() cannot do this: it always starts a new DAG run. This repeats its small scheduling
    loop for the existing run.
    """
    from airflow import settings
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import clear_task_instances
    from airflow.sdk.definitions.dag import _run_task
    from airflow.utils.state import DagRunState, TaskInstanceState
    from sqlalchemy import select

    try:
        from airflow.serialization.serialized_objects import DagSerialization as Serializer
    except ImportError:  # Airflow < 3.3
        from airflow.serialization.serialized_objects import (  # type: ignore[no-redef]
            SerializedDAG as Serializer,
        )

    dag = load_dag(dag_id, path)
    session = settings.Session()
    try:
        dag_run = session.scalar(
            select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)
        )
        clear_task_instances(dag_run.get_task_instances(session=session), session)
        dag_run.state = DagRunState.RUNNING
        session.commit()
        dag_run.dag = Serializer.deserialize_dag(Serializer.serialize_dag(dag))
        while dag_run.state == DagRunState.RUNNING:
            session.expire_all()
            schedulable, _ = dag_run.update_state(session=session)
            for ti in schedulable:
                if ti.state != TaskInstanceState.UP_FOR_RESCHEDULE:
                    ti.try_number += 1
                ti.state = TaskInstanceState.SCHEDULED
            session.commit()
            for ti in dag_run.get_task_instances(session=session):
                if ti.state == TaskInstanceState.SCHEDULED:
                    _run_task(ti=ti, task=dag.task_dict[ti.task_id], run_triggerer=True)
        state = str(dag_run.state)
    finally:
        session.close()
    states, tries = read_task_instances(dag_id, run_id)
    return DagOutcome(
        dag_id=dag_id,
        state=state,
        run_id=run_id,
        task_states=states,
        try_numbers=tries,
        xcoms=read_xcoms(dag_id, run_id),
    )


def task_state_store_rows(dag_id: str, run_id: str) -> list[dict[str, Any]]:
    """The task state store rows of a DAG run (Airflow 3.3+; empty before)."""
    import json

    try:
        from airflow.models.task_state_store import TaskStateStoreModel
    except ImportError:
        return []
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(
            select(TaskStateStoreModel).where(
                TaskStateStoreModel.dag_id == dag_id, TaskStateStoreModel.run_id == run_id
            )
        ).all()
        return [{"key": row.key, "value": json.loads(row.value)} for row in rows]


# The keys of the operator's return value, as documented.
RESULT_KEYS = frozenset(
    {"run_id", "model", "status", "video_url", "cost", "currency", "output_path"}
)


def errors(output: str, error_class: str) -> list[str]:
    """The lines of a dag.test() run's output that report ``error_class``."""
    return [line for line in output.splitlines() if re.match(rf"^\S*{error_class}: ", line)]


class ShortWindows:
    """``ledger.window_at`` for windows of a few seconds instead of a day: once ``armed``, the
    current window resets ``reset_in`` seconds after the task first reads it (dag.test() takes
    a while to start a task, so a reset counted from the test's start could pass before it).

    The ledger reads every window through ``window_at``, and the operator reads the reset from
    the ledger's ``BudgetExceeded``: patching this one function moves no clock anywhere else,
    and the production code needs no test-only seam.
    """

    def __init__(self, reset_in: float) -> None:
        self.reset_in = reset_in
        self.reset_at: float | None = None
        self.armed = False

    def __call__(self, period: Period, tz: ZoneInfo, now: float) -> Window:
        if self.armed and self.reset_at is None:
            self.reset_at = math.ceil(now) + self.reset_in  # windows reset on whole seconds
        if self.reset_at is None or now < self.reset_at:
            end = now + 86400 if self.reset_at is None else self.reset_at
            return Window(period, datetime(2000, 1, 1, tzinfo=tz), datetime.fromtimestamp(end, tz))
        later = datetime.fromtimestamp(self.reset_at + 86400, tz)
        return Window(period, datetime(2000, 1, 2, tzinfo=tz), later)


def use_budget_ledger(
    monkeypatch: Any, url: str, usd_per_day: str, tmp_path: Path, **extra: object
) -> Path:
    """Point ``nanogpt_default`` at the simulator ``url`` with a daily budget of ``usd_per_day``
    kept in a SQLite ledger under ``tmp_path`` (connection ``budget_ledger``), and any other
    connection ``extra``; its file."""
    import json

    from tests.conftest import connection_json

    ledger_file = tmp_path / "budget-ledger.db"
    monkeypatch.setenv(
        "AIRFLOW_CONN_NANOGPT_DEFAULT",
        connection_json(
            url, budget_usd_per_day=usd_per_day, budget_ledger_conn_id="budget_ledger", **extra
        ),
    )
    monkeypatch.setenv(
        "AIRFLOW_CONN_BUDGET_LEDGER", json.dumps({"conn_type": "sqlite", "host": str(ledger_file)})
    )
    return ledger_file
