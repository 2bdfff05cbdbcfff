"""VideoStatusTrigger: wait for a NanoGPT video in the triggerer, without holding a worker slot."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_nanogpt.polling import DEFAULT_MAX_CONSECUTIVE_ERRORS, next_poll_delay
from airflow_provider_nanogpt.resume import EXECUTION_DEADLINE

__all__ = ["VideoStatusTrigger", "next_poll_delay"]


class VideoStatusTrigger(BaseTrigger):
    """Poll NanoGPT's status endpoint until the run is terminal or its deadline passes.

    Kwargs are primitives only (never the key): a triggerer restart re-creates the trigger from
    them, and it only ever polls, so a restart can never submit or pay again. The loop and its
    rules live in ``airflow_provider_nanogpt.polling``, shared with the worker-side wait.

    :param run_id: NanoGPT run id (``vid_…``).
    :param nanogpt_conn_id: Airflow connection id.
    :param poll_interval: Normal seconds between polls (the floor).
    :param end_time: Wall-clock deadline (epoch seconds); a ``timeout`` event fires then.
    :param max_poll_interval: Ceiling for estimate-guided sleeps.
    :param max_consecutive_errors: Transient failures in a row before an ``error`` event.
    :param started_at: When the wait began (epoch seconds), for the waited time in messages.
    :param execution_deadline: The try's start plus the task's ``execution_timeout`` (epoch
        seconds): Airflow does not apply ``execution_timeout`` while a task is deferred, so the
        trigger ends the wait by it too, with an event naming ``execution_timeout``.
    :param execution_timeout: The task's ``execution_timeout`` in seconds, for that message.
    :param model: The run's model, to tag the queue and render time metrics (docs/metrics.md).
    """

    def __init__(
        self,
        run_id: str,
        nanogpt_conn_id: str = "nanogpt_default",
        poll_interval: float = 5.0,
        end_time: float | None = None,
        max_poll_interval: float = 60.0,
        max_consecutive_errors: int = DEFAULT_MAX_CONSECUTIVE_ERRORS,
        started_at: float | None = None,
        execution_deadline: float | None = None,
        execution_timeout: float | None = None,
        model: str | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.run_id = run_id
        self.nanogpt_conn_id = nanogpt_conn_id
        self.poll_interval = float(poll_interval)
        self.end_time = end_time
        self.max_poll_interval = float(max_poll_interval)
        self.max_consecutive_errors = int(max_consecutive_errors)
        self.started_at = started_at if started_at is not None else time.time()
        self.execution_deadline = execution_deadline
        self.execution_timeout = execution_timeout
        self.model = model

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "run_id": self.run_id,
                "nanogpt_conn_id": self.nanogpt_conn_id,
                "poll_interval": self.poll_interval,
                "end_time": self.end_time,
                "max_poll_interval": self.max_poll_interval,
                "max_consecutive_errors": self.max_consecutive_errors,
                "started_at": self.started_at,
                "execution_deadline": self.execution_deadline,
                "execution_timeout": self.execution_timeout,
                "model": self.model,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow_provider_nanogpt.polling import wait_for_video

        event = await wait_for_video(self.run_id, log=self.log, **self.wait_kwargs())
        # The try's deadline travels in the event, the one channel to the resume (dag.test()
        # resumes with the event alone); None says the try has no execution_timeout.
        payload = {**event.to_payload(), EXECUTION_DEADLINE: self.execution_deadline}
        yield TriggerEvent(payload)  # type: ignore[no-untyped-call]

    def wait_kwargs(self) -> dict[str, Any]:
        """This trigger's settings as keyword arguments of ``polling.wait_for_video``."""
        kwargs = self.serialize()[1]
        del kwargs["run_id"]
        return kwargs

    async def on_kill(self) -> None:
        self.log.warning(
            "Stopped waiting for NanoGPT video %s. NanoGPT has no cancel endpoint: the job keeps "
            "running and may be charged.",
            self.run_id,
        )
