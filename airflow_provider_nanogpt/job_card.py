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
from typing import Any

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


# NanoGPT refunds a job that ends so: it is not a charge.
REFUNDED = frozenset({JobState.FAILED, JobState.BLOCKED, JobState.CANCELLED})


def new_card(
    *,
    run_id: str,
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


def ended(card: Mapping[str, Any] | None, state: JobState, **fields: Any) -> dict[str, Any]:
    """``card`` (or a bare one) moved to a final ``state``."""
    return {**(card or {}), **fields, "state": state.value, "finished_at": time.time()}


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
