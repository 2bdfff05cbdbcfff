"""Approval above a threshold: a person decides, through Airflow's Human-in-the-loop, before a
video whose estimated cost exceeds ``approval_above_usd`` is paid for.

The request is Airflow's own (the standard provider's HITL): it is written with
``upsert_hitl_detail`` and listed on the Required Actions page. On Airflow 3.3+ the task parks in
the ``awaiting_input`` state (``TaskAwaitingInput``; the scheduler enforces the response timeout);
before 3.3 it defers to ``HITLTrigger`` (here ``ApprovalTrigger``, which only adds the try's
resume state to its event). Either way the task resumes in ``execute_after_approval``:

* Approve: the try goes on to the normal submit-and-wait path, and never asks again in this try
  (``SubmitState.approved`` travels on through later waits).
* Reject: the task is skipped; nothing was recorded or sent.
* No answer by the response timeout: ``NanoGPTApprovalTimeoutError``; nothing was sent.

The request is made from ``submission.find_or_submit``'s ``before_send``: after validation and the
cost checks, before anything is recorded or sent, and only when a new submission would be sent (a
retry that reattaches to an earlier run is not asked again; one whose run was refunded is, as it
pays anew). An estimate that cannot be made asks too: with a threshold set, nothing is submitted
unapproved.

The resume state (never the API key) travels in the awaiting-input kwargs on 3.3 (Airflow keeps
them beside the answer) and in the trigger's event before 3.3.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NoReturn

from airflow_provider_nanogpt.deadline import earliest
from airflow_provider_nanogpt.delivery import format_money
from airflow_provider_nanogpt.exceptions import (
    NanoGPTApprovalTimeoutError,
    NanoGPTConfigurationError,
    NanoGPTResumeStateError,
)

if TYPE_CHECKING:
    from airflow_provider_nanogpt.hooks.nanogpt import NanoGPTHook
    from airflow_provider_nanogpt.resume import SubmitState
    from airflow_provider_nanogpt.shared_budget import BudgetGuard

APPROVE = "Approve"
REJECT = "Reject"
RESUME_METHOD = "execute_after_approval"
# How every request's subject starts: the NanoGPT page counts the open requests by it (and by
# the start of earlier releases' subjects, whose requests may still be open after an upgrade).
SUBJECT_START = "Approve NanoGPT video"
SUBJECT_STARTS = (SUBJECT_START, "Approve a NanoGPT video")
# The subject shows the prompt's start only: the body shows it (nearly) whole.
SUBJECT_PROMPT_CHARS = 60
# A prompt longer than this is cut in the request (the task's rendered template shows it whole).
PROMPT_SHOWN_CHARS = 600
# The prompt is flattened onto one line after a label, so only inline syntax needs escaping.
_MARKDOWN_SPECIALS = frozenset("\\`*_{}[]()<>#|~")


# --- arguments --------------------------------------------------------------------------------


def threshold_argument(value: object) -> float | None:
    """``approval_above_usd`` as given to the operator: None, or a finite amount >= 0.

    Checked when the DAG is parsed, so a typo never switches the approval off.
    """
    if value is None:
        return None
    amount = _number(value)
    if amount is None or amount < 0:
        raise ValueError(
            f"approval_above_usd must be a finite amount in USD >= 0 (or None to use the "
            f"connection's default), got {value!r}"
        )
    return amount


def timeout_argument(value: object) -> float | None:
    """``approval_timeout`` as given to the operator (a timedelta or seconds): None or > 0 s."""
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, timedelta) else _number(value)
    if seconds is None or seconds <= 0:
        raise ValueError(
            f"approval_timeout must be a positive timedelta or number of seconds (or None to use "
            f"the connection's default), got {value!r}"
        )
    return seconds


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


# --- what the approver sees -------------------------------------------------------------------


def markdown_text(text: str, limit: int = PROMPT_SHOWN_CHARS) -> str:
    """``text`` as literal Markdown on one line, cut at ``limit`` characters (with a note)."""
    flat = " ".join(text.split())
    cut = len(flat) > limit
    shown = flat[:limit]
    escaped = "".join(f"\\{char}" if char in _MARKDOWN_SPECIALS else char for char in shown)
    return f"{escaped}… *(cut: {len(flat)} characters in all)*" if cut else escaped


def approval_body(
    payload: Mapping[str, Any],
    *,
    estimate: float | None,
    threshold: float,
    budgets_left: Sequence[str] = (),
    answer_by: float,
) -> str:
    """The request's Markdown: what would be bought, for how much, and until when to answer."""
    prompt = payload.get("prompt")
    length = payload.get("duration", payload.get("seconds"))
    resolution = payload.get("resolution")
    cost = (
        f"**{format_money(estimate, 'USD')}** (above the approval threshold "
        f"{format_money(threshold, 'USD')})"
        if estimate is not None
        else "**unknown**: NanoGPT's catalog pricing gives no estimate for this request, so it "
        "needs approval whatever the threshold"
    )
    lines = [
        f"- **Model:** {markdown_text(str(payload.get('model')))}",
        f"- **Prompt:** {markdown_text(prompt) if isinstance(prompt, str) and prompt else '—'}",
        f"- **Duration:** {markdown_text(str(length)) if length is not None else 'not set'}",
        f"- **Resolution:** {markdown_text(str(resolution)) if resolution else 'not set'}",
        f"- **Estimated cost:** {cost}",
    ]
    # Each shared budget that applies (docs/cost-control.md), before this video is reserved.
    lines += [f"- **Budget left:** {markdown_text(line)}" for line in budgets_left]
    lines += [
        "",
        f"Approve to submit it. Reject skips the task. Without an answer by "
        f"{_clock(answer_by)} the task fails. Nothing is paid unless approved.",
    ]
    return "\n".join(lines)


def approval_subject(estimate: float | None, task_instance: Any, prompt: object) -> str:
    """The request's one line: the task, its cost and the prompt's start, in that order. Airflow
    3.1 and 3.2 list requests without their task and show only the subject's first two lines
    (about 50 characters), so a mapped batch's requests would otherwise look alike."""
    cost = format_money(estimate, "USD") if estimate is not None else "unknown cost"
    task = str(task_instance.task_id)
    map_index = getattr(task_instance, "map_index", -1)
    if isinstance(map_index, int) and map_index >= 0:
        task = f"{task} [{map_index}]"
    subject = f"{SUBJECT_START} {task} ({cost})"
    if isinstance(prompt, str) and prompt.strip():
        flat = " ".join(prompt.split())
        shown = flat if len(flat) <= SUBJECT_PROMPT_CHARS else f"{flat[:SUBJECT_PROMPT_CHARS]}…"
        subject = f"{subject}: “{shown}”"
    return subject


def is_approval_subject(column: Any) -> Any:
    """SQL: a Human-in-the-loop request's ``subject`` is one of ours (any release's)."""
    from sqlalchemy import or_

    return or_(*(column.startswith(start, autoescape=True) for start in SUBJECT_STARTS))


# --- asking -----------------------------------------------------------------------------------


def estimated_cost(hook: NanoGPTHook, payload: Mapping[str, Any]) -> float | None:
    """The request's USD estimate from NanoGPT's catalog (``budget.estimate_cost``), or None."""
    from airflow_provider_nanogpt.budget import estimate_cost

    model = next((m for m in hook.list_video_models() if m.id == payload.get("model")), None)
    return None if model is None else estimate_cost(model, payload)


def ask_if_above(
    task: Any,
    context: Mapping[str, Any],
    payload: Mapping[str, Any],
    state: SubmitState,
    budget: BudgetGuard | None = None,
) -> None:
    """Return when no approval is needed; else request one and park or defer the task (this
    never returns then). Called only right before a new submission would be sent; ``budget``
    is the task's shared-budget guard, whose budgets' remainders the request shows."""
    settings = task.hook.settings()
    threshold = task.approval_above_usd
    if threshold is None:
        threshold = settings.approval_above_usd
    if threshold is None or state.approved:
        return
    estimate = estimated_cost(task.hook, payload)
    if estimate is not None and estimate <= threshold:
        task.log.info(
            "Estimated cost %s is within approval_above_usd=%s; no approval needed.",
            format_money(estimate, "USD"),
            format_money(threshold, "USD"),
        )
        return
    now = time.time()
    own_timeout = task.approval_timeout
    if own_timeout is None:
        own_timeout = settings.approval_timeout
    # The answer must come while the try may still submit: by its deadline at the latest.
    answer_by = earliest(
        state.execution_deadline,
        state.started_at + task.timeout,
        None if own_timeout is None else now + own_timeout,
    )
    assert answer_by is not None  # task.timeout is always set
    if answer_by <= now:
        raise NanoGPTApprovalTimeoutError(
            "No time is left before the task's deadline to ask for approval of this "
            f"{payload.get('model')} video; nothing was submitted."
        )
    body = approval_body(
        payload,
        estimate=estimate,
        threshold=threshold,
        budgets_left=budget.left() if budget is not None else (),
        answer_by=answer_by,
    )
    subject = approval_subject(estimate, context["task_instance"], payload.get("prompt"))
    task.log.info(
        "Estimated cost %s exceeds approval_above_usd=%s: asking for approval (Required "
        "Actions), answer by %s. Nothing is sent until approved.",
        format_money(estimate, "USD"),
        format_money(threshold, "USD"),
        _clock(answer_by),
    )
    _request(task, context, subject, body, timedelta(seconds=answer_by - now), state)


def _request(
    task: Any,
    context: Mapping[str, Any],
    subject: str,
    body: str,
    response_timeout: timedelta,
    state: SubmitState,
) -> NoReturn:
    """Write the request and wait for the answer as ``HITLOperator.execute`` does."""
    try:
        from airflow.providers.standard.version_compat import AIRFLOW_V_3_3_PLUS
        from airflow.sdk.execution_time.hitl import upsert_hitl_detail
    except ImportError as exc:
        raise NanoGPTConfigurationError(
            "approval_above_usd needs Airflow's Human-in-the-loop: install "
            f"apache-airflow-providers-standard on the workers ({exc}). Nothing was submitted."
        ) from None
    ti_id = context["task_instance"].id
    upsert_hitl_detail(
        ti_id=ti_id,
        options=[APPROVE, REJECT],
        subject=subject,
        body=body,
        defaults=None,  # no default: an unanswered request fails, it never approves itself
        multiple=False,
        params={},
        assigned_users=None,
    )
    carry = state.to_carry()
    if AIRFLOW_V_3_3_PLUS:
        from airflow.sdk.exceptions import TaskAwaitingInput

        # Airflow keeps these kwargs and adds the answer as ``event`` when it resumes the task.
        raise TaskAwaitingInput(
            method_name=RESUME_METHOD, kwargs={"carry": carry}, timeout=response_timeout
        )
    from airflow.sdk.timezone import utcnow

    from airflow_provider_nanogpt.triggers.approval import ApprovalTrigger

    task.defer(
        trigger=ApprovalTrigger(
            ti_id=ti_id,
            options=[APPROVE, REJECT],
            params={},
            defaults=None,
            multiple=False,
            timeout_datetime=utcnow() + response_timeout,
            carry=carry,
        ),
        method_name=RESUME_METHOD,
    )
    raise AssertionError("defer() returned")  # pragma: no cover - defer always raises


# --- the answer -------------------------------------------------------------------------------


def approved_state(
    event: object, carry: object, *, task: Any, context: Mapping[str, Any]
) -> SubmitState:
    """The try's state to submit with once approved; raises on a rejection or no answer.

    ``carry`` is the awaiting-input kwarg (3.3); before 3.3 the trigger put it in the event.
    """
    from airflow.providers.common.compat.sdk import AirflowSkipException

    from airflow_provider_nanogpt.resume import SubmitState

    answer = event if isinstance(event, Mapping) else {}
    if answer.get("error_type") == "timeout":
        raise NanoGPTApprovalTimeoutError(
            "Nobody approved or rejected this NanoGPT video before the approval's response "
            "timeout; nothing was submitted."
        )
    chosen = answer.get("chosen_options")
    if not isinstance(chosen, list) or len(chosen) != 1 or chosen[0] not in (APPROVE, REJECT):
        raise NanoGPTResumeStateError(
            "The approval request ended without a readable answer "
            f"({answer.get('error') or chosen!r}); nothing was submitted."
        )
    who = _responder(answer.get("responded_by_user"))
    if chosen[0] == REJECT:
        raise AirflowSkipException(f"{who} rejected this NanoGPT video; nothing was submitted.")
    task.log.info("%s approved this NanoGPT video; submitting it.", who)
    if carry is None:
        carry = answer.get("carry")
    state = SubmitState.from_event({"carry": carry}, task=task, context=context, log=task.log)
    return replace(state, approved=True)


def _responder(user: object) -> str:
    name = user.get("name") if isinstance(user, Mapping) else None
    return f"{name}" if isinstance(name, str) and name else "The approver"


def _clock(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
