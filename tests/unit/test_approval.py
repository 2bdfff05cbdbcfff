"""approval_above_usd without Airflow running: the checks at DAG parse, what the approver reads,
and how an answer is turned into the try's next step."""

from __future__ import annotations

import logging
import math
from datetime import timedelta
from typing import Any

import pytest

from airflow_provider_nanogpt.approval import (
    PROMPT_SHOWN_CHARS,
    approval_body,
    approved_state,
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


@pytest.mark.parametrize(("estimate", "shown"), [(0.7, "$0.7000"), (None, "unknown")])
@pytest.mark.parametrize(("budget_left", "budget_line"), [(None, False), (12.5, True)])
def test_the_body_shows_what_is_bought(
    estimate: float | None, shown: str, budget_left: float | None, budget_line: bool
) -> None:
    body = approval_body(
        {"model": "kling-video-v2", "prompt": "a fox", "duration": "10", "resolution": "720p"},
        estimate=estimate,
        threshold=0.5,
        budget_left=budget_left,
        answer_by=0.0,
    )
    for part in ("kling-video-v2", "a fox", "10", "720p", shown, "1970-01-01 00:00:00 UTC"):
        assert part in body
    assert ("Budget left" in body) is budget_line


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


def test_rejected_skips() -> None:
    from airflow.providers.common.compat.sdk import AirflowSkipException

    with pytest.raises(AirflowSkipException, match="Ada rejected"):
        approved_state({**APPROVED, "chosen_options": ["Reject"]}, CARRY, task=_Task(), context={})


def test_no_answer_fails_without_retry() -> None:
    from airflow.providers.common.compat.sdk import AirflowFailException

    event = {"error": "The timeout has passed", "error_type": "timeout"}
    with pytest.raises(NanoGPTApprovalTimeoutError, match="nothing was submitted") as raised:
        approved_state(event, CARRY, task=_Task(), context={})
    assert isinstance(raised.value, AirflowFailException)


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
