"""Approval above a threshold, through Airflow's own Human-in-the-loop, run by dag.test().

dag.test() resolves no Human-in-the-loop request itself: on Airflow 3.3 it keeps the run alive
while the task is ``awaiting_input``, before 3.3 it runs ``HITLTrigger`` in line, which polls the
database. So a person is played by a thread that answers each pending request through the REST
API's own handler (``update_hitl_detail``: what the Required Actions page calls), or, for the
timeout, runs the scheduler's own timeout sweep (3.3; before 3.3 the trigger times out itself).
Outcomes are read on the simulator: how many submissions reached NanoGPT.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow.providers.standard.version_compat import AIRFLOW_V_3_3_PLUS

from airflow_provider_nanogpt.simulator import NanoGPTSimulator
from tests.airflow.harness import errors, run_dag, stored_triggers
from tests.conftest import CANARY_KEY, connection_json

pytestmark = pytest.mark.usefixtures("airflow_db")

# Airflow 3.1's dag.test() runs HITLTrigger through its in-process supervisor, which does not
# answer the trigger's GetHITLDetailResponse (only the triggerer's does): the trigger gets None
# and fails, so no answer can reach the task. Airflow's own HITLOperator meets the same there.
# What 3.1's dag.test() can show (the request Airflow lists, the stored trigger, nothing sent)
# runs on every version below; the answer's handling on 3.1 is in tests/unit/test_approval.py.
answered_by_dag_test = pytest.mark.skipif(
    not AIRFLOW_V_3_3_PLUS,
    reason="Airflow 3.1's dag.test() cannot run HITLTrigger (its in-process supervisor answers "
    "the trigger's HITL lookup with None), so no answer reaches the task; needs 3.3's "
    "awaiting_input state",
)

PROMPT = "a paper boat on a *rainy* street"


@pytest.fixture
def sim(nanogpt_connection: NanoGPTSimulator) -> NanoGPTSimulator:
    nanogpt_connection.configure(time_scale=0.05, queue_seconds=2, render_seconds=8)
    return nanogpt_connection


# dag.test() logs this from its scheduling loop, only between task runs, while a task is parked.
_DAG_TEST_LOGGER = "airflow.sdk.definitions.dag"
_PARKED_LINE = "Waiting for Human-in-the-loop input"


class _ParkedSignal(logging.Handler):
    """Set each time dag.test() reports a task parked for input (its task run has returned)."""

    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.parked = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith(_PARKED_LINE):
            self.parked.set()


class _Approver:
    """Who answers the requests: ``choice`` ("Approve", "Reject") or None to let them time out.

    Like a person, it answers a request only once the task shows as waiting for input. In
    dag.test() that is when its loop says so, not as soon as the request row exists: after the
    in-process task run returns, dag.test() writes the task's final state back (``ti.set_state``,
    a ``session.merge`` of its stale copy). An answer landing between the task parking itself
    and that write-back had already resumed the task, and the write-back parks it again with
    the answer spent: the run then waits forever. (A deployed worker does no such write-back.)
    """

    def __init__(self, dag_id: str, choice: str | None) -> None:
        self.dag_id = dag_id
        self.choice = choice
        self.answered: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._signal = _ParkedSignal()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _Approver:
        # Import here, not in the thread: two threads importing Airflow's models deadlock.
        import airflow.api_fastapi.core_api.routes.public.hitl
        import airflow.jobs.scheduler_job_runner
        import airflow.models  # noqa: F401
        from airflow.models import import_all_models

        import_all_models()
        logging.getLogger(_DAG_TEST_LOGGER).addHandler(self._signal)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        logging.getLogger(_DAG_TEST_LOGGER).removeHandler(self._signal)

    def _run(self) -> None:
        waiting_since_parked = False  # a pending request seen, and the parked signal reset since
        while not self._stop.is_set():
            try:
                if not self._pending():
                    waiting_since_parked = False
                elif not waiting_since_parked:
                    # Only a parked line logged after this point proves the task run returned.
                    self._signal.parked.clear()
                    waiting_since_parked = True
                elif self._signal.parked.is_set():
                    self._answer_pending()
                    waiting_since_parked = False
            except Exception as exc:  # the run holds the SQLite DB; look again
                self.errors.append(repr(exc))
                print("APPROVER", repr(exc)[:500], flush=True)
            time.sleep(0.1)

    def _pending(self, session: Any = None) -> list[Any]:
        """(HITL detail, task instance) of this DAG's requests that have no answer yet."""
        from airflow.models.hitl import HITLDetail
        from airflow.models.taskinstance import TaskInstance
        from airflow.utils.session import create_session
        from sqlalchemy import select

        query = (
            select(HITLDetail, TaskInstance)
            .join(TaskInstance, TaskInstance.id == HITLDetail.ti_id)
            .where(TaskInstance.dag_id == self.dag_id, HITLDetail.responded_at.is_(None))
        )
        if session is not None:
            return list(session.execute(query).all())
        with create_session() as own:
            return list(own.execute(query).all())

    def _answer_pending(self) -> None:
        from airflow.utils.session import create_session

        if self.choice is None:
            _sweep_timeouts()
            return
        from airflow.api_fastapi.core_api.datamodels.hitl import UpdateHITLDetailPayload
        from airflow.api_fastapi.core_api.routes.public.hitl import update_hitl_detail

        with create_session() as session:
            for detail, ti in self._pending(session):
                self.answered.append(
                    {"subject": detail.subject, "body": detail.body, "options": detail.options}
                )
                # The REST API's own handler (what the Required Actions page calls).
                update_hitl_detail(
                    dag_id=ti.dag_id,
                    dag_run_id=ti.run_id,
                    task_id=ti.task_id,
                    update_hitl_detail_payload=UpdateHITLDetailPayload(
                        chosen_options=[self.choice], params_input={}
                    ),
                    user=_Person(),
                    session=session,
                    map_index=ti.map_index,
                )
                session.commit()


class _Person:
    def get_id(self) -> str:
        return "ada"

    def get_name(self) -> str:
        return "Ada"


def _sweep_timeouts() -> None:
    """The scheduler's awaiting-input timeout sweep (3.3+; before, the trigger times out)."""
    from airflow.jobs.scheduler_job_runner import SchedulerJobRunner

    sweep = getattr(SchedulerJobRunner, "check_awaiting_input_timeouts", None)
    if sweep is not None:
        sweep(type("Sweeper", (), {"log": logging.getLogger("sweep")})())


@pytest.fixture
def approver() -> Iterator[Any]:
    started: list[_Approver] = []

    def start(dag_id: str, choice: str | None) -> _Approver:
        started.append(_Approver(dag_id, choice).__enter__())
        return started[-1]

    yield start
    for one in started:
        one.__exit__()


def submissions(sim: NanoGPTSimulator) -> int:
    return int(sim.state()["submit_requests"])


@answered_by_dag_test
def test_approved_submits_once_and_shows_what_is_bought(
    sim: NanoGPTSimulator, approver: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    person = approver("nanogpt_approval", "Approve")
    outcome = run_dag("nanogpt_approval", {"prompt": PROMPT})
    assert outcome.state == "success"
    assert submissions(sim) == 1
    (job,) = sim.state()["jobs"]
    assert outcome.xcoms[("generate", "return_value")]["run_id"] == job["runId"]
    (request,) = person.answered
    assert request["options"] == ["Approve", "Reject"]
    assert request["subject"] == f"Approve NanoGPT video generate ($0.7000): “{PROMPT}”"
    body = request["body"]
    assert "kling-video-v2" in body and "$0.7000" in body and "$0.5000" in body
    assert r"a paper boat on a \*rainy\* street" in body  # the prompt's Markdown is escaped
    assert CANARY_KEY not in body
    out = capfd.readouterr().out
    assert out.count("asking for approval") == 1  # the resume did not ask again
    assert CANARY_KEY not in out
    # Before 3.3 the wait is a trigger: its kwargs carry the resume state, never the key.
    assert all(CANARY_KEY not in repr(kw) for kw in stored_triggers("ApprovalTrigger"))


@answered_by_dag_test
def test_rejected_skips_and_sends_nothing(sim: NanoGPTSimulator, approver: Any) -> None:
    person = approver("nanogpt_approval", "Reject")
    outcome = run_dag("nanogpt_approval", {"prompt": f"{PROMPT} rejected"})
    assert outcome.task_states["generate"] == "skipped"
    assert submissions(sim) == 0
    assert len(person.answered) == 1


@answered_by_dag_test
def test_unanswered_fails_by_its_timeout_and_sends_nothing(
    sim: NanoGPTSimulator, approver: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    approver("nanogpt_approval_timeout", None)
    started = time.monotonic()
    outcome = run_dag("nanogpt_approval_timeout", {"prompt": f"{PROMPT} unanswered"})
    assert outcome.state == "failed"
    assert outcome.task_states["generate"] == "failed"
    assert submissions(sim) == 0
    # approval_timeout=1 s; HITLTrigger (before 3.3) looks every 5 s.
    assert time.monotonic() - started < 30
    assert len(errors(capfd.readouterr().out, "NanoGPTApprovalTimeoutError")) == 1


@answered_by_dag_test
def test_an_estimate_within_the_threshold_asks_nothing(
    sim: NanoGPTSimulator, approver: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    person = approver("nanogpt_approval", "Reject")  # would stop the video, if it were asked
    outcome = run_dag("nanogpt_approval", {"prompt": f"{PROMPT} cheap", "duration": "5"})
    assert outcome.state == "success"
    assert submissions(sim) == 1
    assert person.answered == []
    assert "no approval needed" in capfd.readouterr().out


@answered_by_dag_test
def test_a_retry_that_reattaches_is_not_asked_again(sim: NanoGPTSimulator, approver: Any) -> None:
    # Try 1 is approved, pays and delivers, then fails; try 2 reattaches to the paid run.
    person = approver("nanogpt_approval_fails_after_delivery", "Approve")
    outcome = run_dag("nanogpt_approval_fails_after_delivery", {"prompt": f"{PROMPT} retried"})
    assert outcome.state == "success"
    assert outcome.try_numbers["generate"] == 2
    assert submissions(sim) == 1
    assert len(person.answered) == 1


@answered_by_dag_test
def test_a_retry_after_a_refund_asks_again(sim: NanoGPTSimulator, approver: Any) -> None:
    # Try 1's job fails (refunded); try 2 pays for a new one: new money, a new approval.
    person = approver("nanogpt_approval_refunded_then_retried", "Approve")
    outcome = run_dag("nanogpt_approval_refunded_then_retried", {"prompt": f"{PROMPT} refund"})
    assert outcome.state == "success"
    assert submissions(sim) == 2
    assert len(person.answered) == 2


def _requests_of(dag_id: str, run_id: str) -> list[dict[str, Any]]:
    """The Human-in-the-loop requests Airflow lists (Required Actions) for a DAG run."""
    from airflow.models.hitl import HITLDetail
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(
            select(HITLDetail)
            .join(TaskInstance, TaskInstance.id == HITLDetail.ti_id)
            .where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)
        ).all()
        return [
            {"ti_id": str(row.ti_id), "subject": row.subject, "body": row.body}
            | {"options": row.options, "defaults": row.defaults}
            for row in rows
        ]


def test_the_request_shows_the_video_and_the_shared_budget_left_and_nothing_is_sent(
    sim: NanoGPTSimulator, approver: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Every version: the request Airflow lists, what waits for it, nothing sent unanswered."""
    from airflow_provider_nanogpt.ledger import Ledger, to_micro
    from airflow_provider_nanogpt.shared_budget import plan_budgets

    ledger_file = tmp_path / "ledger.db"
    extras = {"budget_usd_per_day": "2.00", "budget_ledger_conn_id": "budget_ledger"}
    monkeypatch.setenv("AIRFLOW_CONN_NANOGPT_DEFAULT", connection_json(sim.url, **extras))
    monkeypatch.setenv(
        "AIRFLOW_CONN_BUDGET_LEDGER", json.dumps({"conn_type": "sqlite", "host": str(ledger_file)})
    )
    plan = plan_budgets("nanogpt_default", extras)
    assert plan is not None
    spent = Ledger.from_url(f"sqlite:///{ledger_file}")  # an earlier $0.70 video, settled
    spent.reserve("earlier#try-1", "earlier", plan.budgets, to_micro(0.7, what="estimate"))
    spent.mark_sent("earlier#try-1")
    spent.settle("earlier#try-1", to_micro(0.7, what="charge"))
    if AIRFLOW_V_3_3_PLUS:
        approver("nanogpt_approval_timeout", None)  # nobody answers; Airflow times it out

    outcome = run_dag("nanogpt_approval_timeout", {"prompt": f"{PROMPT} listed", "duration": "10"})

    # Unanswered (3.3: timed out; 3.1: dag.test() cannot run the trigger): failed, not paid.
    assert outcome.task_states["generate"] == "failed"
    assert submissions(sim) == 0
    (request,) = _requests_of("nanogpt_approval_timeout", outcome.run_id)
    assert request["options"] == ["Approve", "Reject"]
    assert request["defaults"] is None  # no default answer: it never approves itself
    assert request["subject"] == (f"Approve NanoGPT video generate ($0.7000): “{PROMPT} listed”")
    body = request["body"]
    for shown in (
        "**Model:** kling-video-v2",
        r"**Prompt:** a paper boat on a \*rainy\* street listed",
        "**Duration:** 10",
        "**Estimated cost:** **$0.7000** (above the approval threshold $0.5000)",
        r"**Budget left:** $1.30 of budget 'connection nanogpt\_default' \($2.00 per day, UTC\)",
    ):
        assert shown in body
    assert CANARY_KEY not in body
    waits = [kw for kw in stored_triggers("ApprovalTrigger") if kw["ti_id"] == request["ti_id"]]
    if AIRFLOW_V_3_3_PLUS:
        assert waits == []  # the task waits in awaiting_input, without a trigger
    else:
        (kwargs,) = waits  # the triggerer's copy: the try's state, never the key
        assert kwargs["options"] == ["Approve", "Reject"] and kwargs["defaults"] is None
        assert kwargs["carry"]["approved"] is False
        assert CANARY_KEY not in repr(kwargs)


@answered_by_dag_test
def test_an_approval_is_not_asked_again_after_waiting_for_a_budget_reset(
    sim: NanoGPTSimulator,
    approver: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    from airflow_provider_nanogpt import ledger
    from airflow_provider_nanogpt.ledger import Budget, to_micro
    from tests.airflow.harness import ShortWindows, use_budget_ledger

    ledger_file = use_budget_ledger(monkeypatch, sim.url, "0.50", tmp_path)
    windows = ShortWindows(3)
    monkeypatch.setattr(ledger, "window_at", windows)
    daily = Budget("connection nanogpt_default", "day", to_micro("0.50", what="limit"), "UTC")
    shared = ledger.Ledger.from_url(f"sqlite:///{ledger_file}")
    shared.reserve("earlier#try-1", "earlier", [daily], to_micro("0.30", what="spent"))
    shared.settle("earlier#try-1", to_micro("0.30", what="spent"))
    person = approver("nanogpt_budget_full_wait_approved", "Approve")

    # The window resets 3 s after the task's first reserve, made once the person has answered
    # (answering takes longer than that in dag.test()).
    def arm_once_answered() -> None:
        while not person.answered:
            time.sleep(0.05)
        windows.armed = True

    threading.Thread(target=arm_once_answered, daemon=True).start()
    outcome = run_dag(
        "nanogpt_budget_full_wait_approved",
        {},
        path=Path(__file__).parents[1] / "dags" / "nanogpt_budget_dags.py",
    )

    assert outcome.task_states == {"over_budget": "success"}
    assert submissions(sim) == 1
    assert len(person.answered) == 1
    out = capfd.readouterr().out
    assert "Shared budget full until" in out  # it did wait for the reset
    assert out.count("asking for approval") == 1  # and the resume after it did not ask again


@pytest.mark.parametrize(
    ("threshold", "asked"), [(0.5, True), (1.0, False)], ids=["above_it", "within_it"]
)
def test_the_connection_sets_the_threshold_for_tasks_that_set_none(
    sim: NanoGPTSimulator,
    approver: Any,
    monkeypatch: pytest.MonkeyPatch,
    threshold: float,
    asked: bool,
) -> None:
    """Every version: a task without approval_above_usd asks when its connection's threshold is
    below the estimate (unset duration: $0.70), and nobody answering in the connection's
    approval_timeout fails it unpaid; within the threshold it submits without asking."""
    extras = {"approval_above_usd": threshold, "approval_timeout": 1.0}
    monkeypatch.setenv("AIRFLOW_CONN_NANOGPT_DEFAULT", connection_json(sim.url, **extras))
    if AIRFLOW_V_3_3_PLUS and asked:
        approver("nanogpt_deferrable", None)  # nobody answers; Airflow times it out

    outcome = run_dag("nanogpt_deferrable", {"prompt": f"{PROMPT} by the connection"})

    requests = _requests_of("nanogpt_deferrable", outcome.run_id)
    if asked:
        assert outcome.task_states["generate"] == "failed"
        assert submissions(sim) == 0
        (request,) = requests
        assert "(above the approval threshold $0.5000)" in request["body"]
    else:
        assert outcome.task_states["generate"] == "success"
        assert submissions(sim) == 1
        assert requests == []
