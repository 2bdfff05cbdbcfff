"""The approval wait before Airflow 3.3: the standard provider's ``HITLTrigger``, whose event also
carries the try's resume state (``dag.test()`` resumes a deferred task with the event alone, so the
event is the one channel; see ``airflow_provider_nanogpt.resume``). From 3.3 on the task waits in
the ``awaiting_input`` state instead, without a trigger."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from airflow.providers.standard.triggers.hitl import HITLTrigger
from airflow.triggers.base import TriggerEvent


class ApprovalTrigger(HITLTrigger):
    """``HITLTrigger`` (polls the request's answer, fails it at its timeout) plus ``carry``.

    :param carry: The try's ``SubmitState`` as plain JSON; it holds no secret.
    """

    def __init__(self, *, carry: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.carry = carry

    def serialize(self) -> tuple[str, dict[str, Any]]:
        _, kwargs = super().serialize()
        return f"{type(self).__module__}.{type(self).__qualname__}", {**kwargs, "carry": self.carry}

    async def run(self) -> AsyncIterator[TriggerEvent]:
        async for event in super().run():
            yield TriggerEvent({**event.payload, "carry": self.carry})  # type: ignore[no-untyped-call]
