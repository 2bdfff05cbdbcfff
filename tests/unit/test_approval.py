"""approval_above_usd without Airflow running: the checks at DAG parse, what the approver reads,
and how an answer is turned into the try's next step."""

from __future__ import annotations

import logging
import math
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_nanogpt.approval import (
    PROMPT_SHOWN_CHARS,
    SUBJECT_PROMPT_CHARS,
    approval_body,
    approval_subject,
    approved_state,
    is_approval_subject,
    markdown_text,
)
from airflow_provider_nanogpt.exceptions import (
    NanoGPTApprovalTimeoutError,
    NanoGPTResumeStateError,
)
from airflow_provider_nanogpt.operators.video import GenerateVideoOperator
from airflow_provider_nanogpt.resume import SubmitState


@pytest.mark.parametrize(
    "value", [-0.01, math.nan, math.inf, -math.inf, "1.0", True, [1.0], "{{ params.cap }}"]
)
def test_a_threshold_that_is_not_a_finite_amount_fails_at_parse(value: object) -> None:
    with pytest.raises(ValueError, match="approval_above_usd must be a finite amount"):
        GenerateVideoOperator(
            task_id="generate", model="kling-video-v2", prompt="x", approval_above_usd=value
        )


@pytest.mark.parametrize("value", [0, -1, math.nan, math.inf, timedelta(0), "60", False])
def test_an_approval_timeout_that_is_not_positive_fails_at_parse(value: object) -> None:
    with pytest.raises(ValueError, match="approval_timeout must be a positive"):
        GenerateVideoOperator(
            task_id="generate", model="kling-video-v2", prompt="x", approval_timeout=value
        )


@pytest.mark.parametrize(
    ("given", "threshold", "timeout"),
    [(0, 0.0, None), (1, 1.0, None), (0.5, 0.5, 30.0), (None, None, 90.0)],
)
def test_valid_arguments_are_kept(
    given: float | None, threshold: float | None, timeout: float | None
) -> None:
    task = GenerateVideoOperator(
        task_id="generate",
        model="kling-video-v2",
        prompt="x",
        approval_above_usd=given,
        approval_timeout=None if timeout is None else timedelta(seconds=timeout),
    )
    assert (task.approval_above_usd, task.approval_timeout) == (threshold, timeout)


@pytest.mark.parametrize(
    "text", ["*bold* _it_ [link](http://x) `code` # head", "<script>alert(1)</script>", "a\\b|c"]
)
def test_the_prompt_is_shown_literally(text: str) -> None:
    shown = markdown_text(text)
    # Every Markdown/HTML character is escaped: removing the escapes gives the text back.
    assert shown.replace("\\", "") == text.replace("\\", "")
    assert all(shown[i - 1] == "\\" for i, char in enumerate(shown) if char in "*_[]`#<>|")


def test_a_long_prompt_is_cut_and_says_so() -> None:
    shown = markdown_text("x" * (PROMPT_SHOWN_CHARS + 50))
    assert shown.startswith("x" * PROMPT_SHOWN_CHARS + "…")
    assert f"{PROMPT_SHOWN_CHARS + 50} characters in all" in shown


def test_the_subjects_of_a_mapped_batch_tell_its_tasks_apart() -> None:
    # Airflow 3.1 and 3.2 list requests by subject and DAG only: each must name its task.
    subjects = {
        approval_subject(0.7, SimpleNamespace(task_id="generate", map_index=index), "a boat")
        for index in range(40)
    }
    assert len(subjects) == 40
    assert "Approve NanoGPT video generate [7] ($0.7000): “a boat”" in subjects


@pytest.mark.parametrize(
    ("estimate", "map_index", "prompt", "expected"),
    [
        (
            0.7,
            -1,
            "a  paper\nboat ",
            "Approve NanoGPT video generate ($0.7000): “a paper boat”",
        ),
        (None, -1, "a boat", "Approve NanoGPT video generate (unknown cost): “a boat”"),
        (0.7, 0, None, "Approve NanoGPT video generate [0] ($0.7000)"),
        (0.7, -1, "   ", "Approve NanoGPT video generate ($0.7000)"),
        (
            1.5,
            -1,
            "y" * (SUBJECT_PROMPT_CHARS + 1),
            f"Approve NanoGPT video generate ($1.5000): “{'y' * SUBJECT_PROMPT_CHARS}…”",
        ),
    ],
)
def test_the_subject_names_task_cost_and_prompt(
    estimate: float | None, map_index: int, prompt: object, expected: str
) -> None:
    task_instance = SimpleNamespace(task_id="generate", map_index=map_index)
    assert approval_subject(estimate, task_instance, prompt) == expected


BUDGET_LINES = ["$1.30 of budget 'team' ($2.00 per day, UTC) in the 2026-12-06 (day) window"]


@pytest.mark.parametrize(("estimate", "shown"), [(0.7, "$0.7000"), (None, "unknown")])
@pytest.mark.parametrize("budgets_left", [[], BUDGET_LINES, [*BUDGET_LINES, *BUDGET_LINES]])
def test_the_body_shows_what_is_bought(
    estimate: float | None, shown: str, budgets_left: list[str]
) -> None:
    body = approval_body(
        {"model": "kling-video-v2", "prompt": "a fox", "duration": "10", "resolution": "720p"},
        estimate=estimate,
        threshold=0.5,
        budgets_left=budgets_left,
        answer_by=0.0,
    )
    for part in ("kling-video-v2", "a fox", "10", "720p", shown, "1970-01-01 00:00:00 UTC"):
        assert part in body
    assert body.count("Budget left:") == len(budgets_left)  # one line per budget that applies
    if budgets_left:
        assert r"$1.30 of budget 'team' \($2.00 per day, UTC\)" in body


@pytest.mark.parametrize(
    ("spent", "reserved", "left"),
    [
        (0.0, 0.0, "$2.00"),
        (0.7, 0.0, "$1.30"),
        (0.7, 0.35, "$0.95"),
        (1.5, 0.5, "$0.00"),
        (2.4, 0.0, "$0.00"),
    ],
)
def test_the_budget_left_is_read_from_the_shared_ledger(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, spent: float, reserved: float, left: str
) -> None:
    import json

    from airflow_provider_nanogpt.ledger import Ledger, to_micro
    from airflow_provider_nanogpt.shared_budget import BudgetGuard, plan_budgets

    ledger_file = tmp_path / "ledger.db"
    monkeypatch.setenv(
        "AIRFLOW_CONN_LEDGER", json.dumps({"conn_type": "sqlite", "host": str(ledger_file)})
    )
    plan = plan_budgets(
        "nanogpt_default", {"budget_usd_per_day": 2, "budget_ledger_conn_id": "ledger"}
    )
    assert plan is not None
    ledger = Ledger.from_url(f"sqlite:///{ledger_file}")
    if spent:  # a settled earlier video (over the limit is possible by estimate error)
        ledger.reserve("a#try-1", "a", plan.budgets, to_micro(min(spent, 2.0), what="spent"))
        ledger.mark_sent("a#try-1")
        ledger.settle("a#try-1", to_micro(spent, what="spent"))
    if reserved:  # another task's open reservation
        ledger.reserve("b#try-1", "b", plan.budgets, to_micro(reserved, what="reserved"))

    (line,) = BudgetGuard(plan, lambda: 0.7, log=logging.getLogger("test")).left()
    assert line.startswith(f"{left} of budget 'connection nanogpt_default' ($2.00 per day, UTC)")


class _Task:
    log = logging.getLogger("test")
    execution_timeout = None


CARRY = SubmitState(started_at=100.0, execution_deadline=None).to_carry()
APPROVED = {"chosen_options": ["Approve"], "responded_by_user": {"id": "1", "name": "Ada"}}


@pytest.mark.parametrize(
    ("event", "carry"),
    [
        (APPROVED, CARRY),  # 3.3: the carry is a kwarg beside Airflow's answer
        ({**APPROVED, "carry": CARRY}, None),  # before 3.3: the trigger's event carries it
    ],
)
def test_approved_goes_on_with_the_tries_state_and_is_not_asked_again(
    event: dict[str, Any], carry: object
) -> None:
    state = approved_state(event, carry, task=_Task(), context={})
    assert state.started_at == 100.0
    assert state.approved
    # It travels through later waits (a rate limit) so a resume does not ask again.
    assert SubmitState.from_event(
        {"carry": state.to_carry()}, task=_Task(), context={}, log=_Task.log
    ).approved


# How each Airflow version hands the answer to execute_after_approval: 3.3 resumes from the
# awaiting_input state with the carry as a kwarg; before 3.3 ApprovalTrigger's event holds it.
ANSWER_SHAPES = [
    pytest.param(lambda answer: {"event": answer, "carry": CARRY}, id="3.3-awaiting-input"),
    pytest.param(lambda answer: {"event": {**answer, "carry": CARRY}}, id="3.1-trigger-event"),
]


def _operator() -> GenerateVideoOperator:
    return GenerateVideoOperator(
        task_id="generate", model="kling-video-v2", prompt="a fox", approval_above_usd=0.5
    )


@pytest.mark.parametrize("resume", ANSWER_SHAPES)
def test_rejected_skips(resume: Any) -> None:
    from airflow.providers.common.compat.sdk import AirflowSkipException

    answer = {**APPROVED, "chosen_options": ["Reject"]}
    with pytest.raises(AirflowSkipException, match="Ada rejected"):
        _operator().execute_after_approval({}, **resume(answer))


@pytest.mark.parametrize("resume", ANSWER_SHAPES)
def test_no_answer_fails_without_retry(resume: Any) -> None:
    from airflow.providers.common.compat.sdk import AirflowFailException

    answer = {"error": "The timeout has passed", "error_type": "timeout"}
    with pytest.raises(NanoGPTApprovalTimeoutError, match="nothing was submitted") as raised:
        _operator().execute_after_approval({}, **resume(answer))
    assert isinstance(raised.value, AirflowFailException)


def test_the_trigger_survives_serialisation_with_the_tries_state() -> None:
    """What the triggerer stores and rebuilds before 3.3 (no API key is among its kwargs)."""
    from datetime import UTC, datetime

    from airflow.sdk.module_loading import import_string

    from airflow_provider_nanogpt.triggers.approval import ApprovalTrigger

    trigger = ApprovalTrigger(
        ti_id="01a24c8b-54ae-726e-b6a4-4b2daf469803",
        options=["Approve", "Reject"],
        params={},
        defaults=None,
        multiple=False,
        timeout_datetime=datetime(2026, 12, 6, tzinfo=UTC),
        carry=CARRY,
    )
    classpath, kwargs = trigger.serialize()
    rebuilt = import_string(classpath)(**kwargs)
    assert type(rebuilt) is ApprovalTrigger
    assert rebuilt.serialize() == (classpath, kwargs)
    assert kwargs["carry"] == CARRY and kwargs["defaults"] is None  # no default: no auto-approve


@pytest.mark.parametrize(
    "event",
    [None, {}, {"chosen_options": []}, {"chosen_options": ["Maybe"]}, {"error_type": "unknown"}],
)
def test_an_unreadable_answer_sends_nothing(event: object) -> None:
    with pytest.raises(NanoGPTResumeStateError):
        approved_state(event, CARRY, task=_Task(), context={})


@pytest.mark.parametrize("carry", [None, {}, {"started_at": "soon"}, {**CARRY, "approved": 1}])
def test_an_approval_without_readable_state_sends_nothing(carry: object) -> None:
    with pytest.raises(NanoGPTResumeStateError):
        approved_state(APPROVED, carry, task=_Task(), context={})


def test_the_page_counts_requests_of_this_release_and_of_earlier_ones() -> None:
    """An upgrade may find requests open with an earlier release's subject: they still count;
    another operator's requests, and a lookalike with SQL wildcards, do not."""
    from sqlalchemy import Column, MetaData, String, Table, create_engine, insert, select

    table = Table("hitl", MetaData(), Column("subject", String))
    subjects = {
        approval_subject(0.7, SimpleNamespace(task_id="generate", map_index=2), "a boat"): True,
        "Approve a NanoGPT video for $0.7000?": True,  # before 2026-12-07
        "Approve the deploy to production": False,
        "Approve_NanoGPT%video": False,
    }
    engine = create_engine("sqlite://")
    with engine.begin() as conn:
        table.create(conn)
        conn.execute(insert(table), [{"subject": subject} for subject in subjects])
        found = set(
            conn.scalars(select(table.c.subject).where(is_approval_subject(table.c.subject)))
        )
    assert found == {subject for subject, ours in subjects.items() if ours}
