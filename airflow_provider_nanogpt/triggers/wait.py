"""WaitUntilTrigger: wait in the triggerer before submitting, carrying the task's state along."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

# Sleep in slices, so a clock that jumps (a suspended VM) is noticed within this long.
MAX_SLEEP_SECONDS = 60.0


class WaitUntilTrigger(BaseTrigger):
    """Fire at ``moment`` (epoch seconds) with ``{"moment": …, "carry": carry}``.

    Like the standard provider's DateTimeTrigger, except that the state the task needs on
    resuming travels in the event. Airflow's triggerer keeps a deferral's ``kwargs``, but
    ``dag.test()`` replaces them with the event, and a wait that forgot how long it had already
    waited would never end there.

    :param moment: When to fire, epoch seconds (wall clock, so a restarted trigger keeps it).
    :param carry: Plain JSON values handed back to the task (no secrets: events are logged).
    """

    def __init__(self, moment: float, carry: dict[str, Any] | None = None) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.moment = float(moment)
        self.carry = dict(carry or {})

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {"moment": self.moment, "carry": self.carry},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        remaining = self.moment - time.time()
        while remaining > 0:
            await asyncio.sleep(min(remaining, MAX_SLEEP_SECONDS))
            remaining = self.moment - time.time()
        yield TriggerEvent({"moment": self.moment, "carry": self.carry})  # type: ignore[no-untyped-call]
