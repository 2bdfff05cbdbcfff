"""The state a deferred task needs when it resumes: it travels in the trigger's event, only there.

Airflow resumes a deferred task with ``{"event": payload}`` plus any kwargs given to ``defer()``,
but ``dag.test()`` resumes it with the event alone. So the event is the one channel: the
``carry`` of ``WaitUntilTrigger``'s event (a wait before submitting) and the
``execution_deadline`` of ``VideoStatusTrigger``'s event (the wait for the video). Nothing is
passed as ``defer()`` kwargs, and nothing missing is guessed: a guessed start would restart the
task's ``timeout``, so a missing or unreadable value raises ``NanoGPTResumeStateError``.

The one value an earlier release did not carry is the try's ``execution_deadline`` (provider
0.1.0 had none): when the key is absent it is counted from the task instance's start, as
``deadline.execution_deadline`` documents, and the log says so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, TypeGuard

from airflow_provider_nanogpt.exceptions import NanoGPTResumeStateError

EXECUTION_DEADLINE = "execution_deadline"

_RETRY_NOTE = (
    "This resume sent nothing; a retry (or a clear) starts the try afresh and looks any earlier "
    "submission up before sending, so it never pays twice."
)


@dataclass(frozen=True)
class SubmitState:
    """Where a try stands before its submission, carried through a wait in the triggerer."""

    started_at: float  # epoch seconds the try's execute began; ``timeout`` counts from it
    execution_deadline: float | None
    rate_limited_since: float | None = None
    rate_limit_deferrals: int = 0
    # A person approved this try's submission (approval_above_usd): a resume must not ask again.
    approved: bool = False

    def to_carry(self) -> dict[str, Any]:
        """The ``carry`` of the wait trigger (plain JSON)."""
        return asdict(self)

    @classmethod
    def from_event(
        cls, event: object, *, task: Any, context: Mapping[str, Any], log: Any
    ) -> SubmitState:
        """Read the carry of a ``WaitUntilTrigger`` event; raise when it is missing or broken."""
        carry = event.get("carry") if isinstance(event, Mapping) else None
        if not isinstance(carry, Mapping):
            raise NanoGPTResumeStateError(
                "The task resumed from a wait before submitting, but the wait's event carries no "
                f"state (event: {_shown(event)}). {_RETRY_NOTE}"
            )
        started_at = carry.get("started_at")
        if not _is_number(started_at):
            raise _unreadable("started_at", started_at)
        since = carry.get("rate_limited_since")
        if since is not None and not _is_number(since):
            raise _unreadable("rate_limited_since", since)
        deferrals = carry.get("rate_limit_deferrals", 0)
        if not isinstance(deferrals, int) or isinstance(deferrals, bool) or deferrals < 0:
            raise _unreadable("rate_limit_deferrals", deferrals)
        approved = carry.get("approved", False)
        if not isinstance(approved, bool):
            raise _unreadable("approved", approved)
        return cls(
            started_at=float(started_at),
            execution_deadline=carried_execution_deadline(
                carry, task=task, context=context, log=log
            ),
            rate_limited_since=None if since is None else float(since),
            rate_limit_deferrals=deferrals,
            approved=approved,
        )


def carried_execution_deadline(
    state: Mapping[str, Any], *, task: Any, context: Mapping[str, Any], log: Any
) -> float | None:
    """The try's deadline as the deferral carried it in ``state`` (an event or its carry).

    None carried means the try had no ``execution_timeout``; the key absent means the deferral
    began under provider 0.1.0, which carried none: then it counts from the task instance's start.
    """
    from airflow_provider_nanogpt.deadline import execution_deadline

    value = state.get(EXECUTION_DEADLINE)
    if value is not None and not _is_number(value):
        raise _unreadable(EXECUTION_DEADLINE, value)
    deadline = execution_deadline(task, context, value)
    if EXECUTION_DEADLINE not in state and deadline is not None:
        log.info(
            "This deferral carries no execution deadline (it began under provider 0.1.0); "
            "execution_timeout counts from the task instance's start."
        )
    return deadline


def ignore_deferral_kwargs(deferral_kwargs: Mapping[str, Any], log: Any) -> None:
    """Say so when a resume gets ``defer()`` kwargs: only a deferral made by an unreleased build
    passed any, and its event carries the same state, which is what is read."""
    if deferral_kwargs:
        log.warning(
            "Ignoring %s handed to this resume by the deferral: the resume state is read from "
            "the trigger's event only.",
            ", ".join(sorted(deferral_kwargs)),
        )


def _unreadable(name: str, value: object) -> NanoGPTResumeStateError:
    return NanoGPTResumeStateError(
        f"The task resumed with an unreadable {name}={_shown(value)} in its deferral's event. "
        f"{_RETRY_NOTE}"
    )


def _is_number(value: object) -> TypeGuard[int | float]:
    """A finite JSON number: NaN never compares past a deadline, so a wait counted from it
    would never end."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _shown(value: object) -> str:
    return repr(value)[:200]
