"""The job card: what a task records about its NanoGPT job, for the NanoGPT page in the Airflow UI.

Workers in Airflow 3 have no metadata-DB access; they write through the Task SDK. So the card is
an XCom of the task instance (key ``nanogpt_job``), replaced as the job moves on (submitted, then
completed or how it ended). Airflow clears a task's XComs when a new try starts, so on Airflow 3.3
each charge is also kept in the task state store (key ``nanogpt_charge:<run id>``), which retries
do not erase: spend totals then include the jobs of earlier tries.

Plain JSON only; the API key never appears (it is not known here).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_nanogpt.events import VideoEvent

JOB_KEY = "nanogpt_job"
# A sensor's card for a run another task submitted: how it ended, never a charge of its own.
WATCH_KEY = "nanogpt_job_watch"
CHARGE_KEY_PREFIX = "nanogpt_charge:"
PROMPT_CHARS = 300


class JobState(enum.StrEnum):
    SUBMITTED = "submitted"
    COMPLETED = "completed"
    FAILED = "failed"
    BLOCKED = "blocked"  # by NanoGPT's content policy
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    ERROR = "error"  # the wait ended abnormally
    REJECTED = "rejected"  # NanoGPT refused the submission (4xx): no job, nothing charged
    # The API key's own daily cap held the submission back (waiting for its reset, or failed by
    # it): no job, nothing charged.
    DAILY_CAP = "daily_cap"
    # A shared budget held the submission back (waiting for its window's reset, or failed by
    # it): no job, nothing charged.
    OVER_BUDGET = "over_budget"


# NanoGPT refunds a job that ends so: it is not a charge.
REFUNDED = frozenset({JobState.FAILED, JobState.BLOCKED, JobState.CANCELLED})


def new_card(
    *,
    run_id: str | None,
    conn_id: str,
    model: str | None,
    prompt: object,
    cost: float | None,
    currency: str | None,
    submitted_at: float | None = None,
    submitted: bool = True,
) -> dict[str, Any]:
    """The card of a job just submitted (or reattached to, ``submitted=False``)."""
    text = prompt if isinstance(prompt, str) else None
    return {
        "run_id": run_id,
        "conn_id": conn_id,
        "model": model,
        "prompt": text[:PROMPT_CHARS] if text else None,
        "state": JobState.SUBMITTED.value,
        "error": None,
        "cost": cost,
        "currency": currency,
        # Whether this task paid for it (a sensor, or a reattach, only watched).
        "charged_here": submitted,
        "submitted_at": submitted_at if submitted_at is not None else time.time(),
        "finished_at": None,
        "video_url": None,
        "output_path": None,
    }


def watch_card(*, run_id: str, conn_id: str) -> dict[str, Any]:
    """A sensor's card while it waits for a run another task submitted (and paid): the run only.

    No prompt, cost or submission time: NanoGPT's status answer has none of the prompt, and the
    NanoGPT page reads them from the submitting task's card.
    """
    card = new_card(
        run_id=run_id,
        conn_id=conn_id,
        model=None,
        prompt=None,
        cost=None,
        currency=None,
        submitted=False,
    )
    card["submitted_at"] = None  # not when this sensor started: unknown here
    return card


def ended(card: Mapping[str, Any] | None, state: JobState, **fields: Any) -> dict[str, Any]:
    """``card`` (or a bare one) moved to a final ``state``."""
    return {**(card or {}), **fields, "state": state.value, "finished_at": time.time()}


def refused_card(
    *, conn_id: str, model: str | None, prompt: object, error: BaseException
) -> dict[str, Any]:
    """The card of a submission NanoGPT refused (``error.refused_submission``): blocked by its
    content policy or rejected, with its reason; no run id, and nothing charged."""
    from airflow_provider_nanogpt.exceptions import NanoGPTContentPolicyError

    card = new_card(
        run_id=None, conn_id=conn_id, model=model, prompt=prompt, cost=0.0, currency=None
    )
    card["charged_here"] = False
    blocked = isinstance(error, NanoGPTContentPolicyError)
    # The error's text is built from NanoGPT's answer and our own words: never the key.
    return ended(card, JobState.BLOCKED if blocked else JobState.REJECTED, error=str(error)[:500])


def held_back_card(
    *, conn_id: str, model: str | None, prompt: object, error: BaseException, waiting: bool
) -> dict[str, Any]:
    """The card of a submission a limit held back before anything was sent: the API key's daily
    cap (a NanoGPTDailyCapError: which cap and when it resets) or a full shared budget (a ledger
    ``BudgetExceeded``: which budget and when its window resets). No job and nothing charged;
    ended unless the task is ``waiting`` for the reset; a submission's card replaces it."""
    from airflow_provider_nanogpt.ledger import BudgetExceeded

    if isinstance(error, BudgetExceeded):
        state = JobState.OVER_BUDGET
        held: dict[str, Any] = {
            "budget": error.use.budget.describe(),
            "resets_at": error.resets_at.timestamp(),
        }
    else:
        state = JobState.DAILY_CAP
        held = {"daily_cap": getattr(error, "cap", None), "resets_at": error.resets_at}  # type: ignore[attr-defined]
    card = new_card(
        run_id=None, conn_id=conn_id, model=model, prompt=prompt, cost=0.0, currency=None
    )
    held.update(charged_here=False, error=str(error)[:500])
    if waiting:
        return {**card, **held, "state": state.value}
    return ended(card, state, **held)


# What a charge record keeps of the card: enough for the spend, and for the NanoGPT page to list
# a refunded job whose card a retry cleared.
CARD_FIELDS_IN_CHARGE = (
    "run_id",
    "conn_id",
    "model",
    "prompt",
    "cost",
    "currency",
    "state",
    "error",
    "submitted_at",
    "finished_at",
)


def charge_record(card: Mapping[str, Any]) -> dict[str, Any]:
    """What the task state store keeps of a charge (retries do not erase it); ``refunded`` once
    the job ended in a state NanoGPT refunds, so the spend no longer counts it."""
    return {
        **{key: card.get(key) for key in CARD_FIELDS_IN_CHARGE},
        "refunded": card.get("state") in REFUNDED,
    }


def precharge_on(card: Mapping[str, Any]) -> tuple[float | None, str | None]:
    """What NanoGPT pre-charged for the run, and in which currency, as the card recorded it.

    (None, None) when this task did not submit the run (a sensor's card has no cost).
    """
    from airflow_provider_nanogpt.api.coerce import as_amount, as_str
    from airflow_provider_nanogpt.api.responses import currency_of

    return as_amount(card.get("cost")), currency_of(as_str(card.get("currency")))


def job_state_for(event: VideoEvent) -> JobState:
    """The job card's state for an event that did not deliver a video."""
    from airflow_provider_nanogpt.events import EventStatus

    if event.status is EventStatus.FAILED:
        return JobState.BLOCKED if event.is_nsfw else JobState.FAILED
    return {
        EventStatus.CANCELLED: JobState.CANCELLED,
        EventStatus.TIMEOUT: JobState.TIMED_OUT,
    }.get(event.status, JobState.ERROR)


def attempt_of(ti: Any) -> tuple[Any, ...]:
    """Which attempt of which task instance ``ti`` (a task instance or its key) is."""
    return tuple(
        getattr(ti, name, None)
        for name in ("dag_id", "task_id", "run_id", "map_index", "try_number")
    )


class JobCardMixin:
    """Reading and ending a task's job card; mixed into the operator and the sensor."""

    nanogpt_conn_id: str
    # The XCom key of this task's job card (a sensor's says it only watched: WATCH_KEY).
    job_card_key: str = JOB_KEY
    # Whether the card is pushed at submission, before the wait (a sensor's only when it ends).
    card_pushed_at_submission: bool = True

    def push_xcom(self, context: Context, key: str, value: Any) -> None:
        """Push an XCom and remember it for this attempt, so that the attempt's own reads (the
        extra links at its end) need not ask Airflow, which logs every missing key as an error."""
        ti = context["ti"]
        ti.xcom_push(key=key, value=value)
        attempt = attempt_of(ti)
        if getattr(self, "_pushed_attempt", None) != attempt:
            # dag.test() runs every try (and map index) on one operator object: start afresh.
            self._pushed_attempt, self._pushed_xcoms = attempt, {}
        self._pushed_xcoms[key] = value

    def pushed_this_attempt(self, ti: Any, key: str) -> tuple[bool, Any]:
        """(True, value) when this process pushed ``key`` in the attempt of ``ti``."""
        if getattr(self, "_pushed_attempt", None) != attempt_of(ti):
            return False, None
        pushed: dict[str, Any] = self._pushed_xcoms
        return key in pushed, pushed.get(key)

    def job_card(self, context: Context) -> dict[str, Any]:
        """This task's job card as pushed at submission (empty for a sensor, which pushes none
        until it ends: nothing is read then, so Airflow logs no missing XCom)."""
        ti = context["ti"]
        known, card = self.pushed_this_attempt(ti, self.job_card_key)
        if not known and self.card_pushed_at_submission:
            # Pushed before a deferral, by the process that submitted.
            card = ti.xcom_pull(
                task_ids=ti.task_id,
                key=self.job_card_key,
                map_indexes=getattr(ti, "map_index", -1),
            )
        return dict(card) if isinstance(card, Mapping) else {}

    def end_card(
        self,
        context: Context,
        card: Mapping[str, Any],
        run_id: str,
        state: JobState,
        **fields: Any,
    ) -> None:
        """Record how the job ended on this task's job card, for the NanoGPT page."""
        base = dict(card)
        base.setdefault("run_id", run_id)
        base.setdefault("conn_id", self.nanogpt_conn_id)
        final = ended(base, state, **fields)
        self.push_xcom(context, self.job_card_key, final)
        if state in REFUNDED and final.get("charged_here"):
            from airflow_provider_nanogpt import metrics

            cost, currency = precharge_on(final)
            metrics.refunded(self.nanogpt_conn_id, final.get("model"), state.value, cost, currency)
        store = context.get("task_state_store")
        if state in REFUNDED and final.get("charged_here") and store is not None:
            # A retry clears this card; the charge record outlives it and must say "refunded".
            store.set(CHARGE_KEY_PREFIX + str(final["run_id"]), charge_record(final))
