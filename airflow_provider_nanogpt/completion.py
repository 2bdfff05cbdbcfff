"""Waiting for a NanoGPT run and finishing the task: the half GenerateVideoOperator and
VideoStatusSensor share.

Both look once right away (a finished run needs no deferral), then wait in the triggerer (or on
the worker with ``deferrable=False``) with the same trigger, and finish through the same steps:
raise the event's typed error, or deliver the video and return the same small result. The other
concerns live in their own modules: delivering (``delivery``), the job card (``job_card``) and
OpenLineage (``task_lineage``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, NoReturn

from airflow_provider_nanogpt.events import VideoEvent
from airflow_provider_nanogpt.job_card import JobCardMixin
from airflow_provider_nanogpt.links.video import VIDEO_URL_XCOM_KEY
from airflow_provider_nanogpt.task_lineage import LineageMixin

if TYPE_CHECKING:
    from airflow.sdk import Context
    from airflow.triggers.base import BaseTrigger

    from airflow_provider_nanogpt.api.status import VideoStatus
    from airflow_provider_nanogpt.hooks.nanogpt import NanoGPTHook

# The framework's deferral timeout is only a backstop: the trigger's own deadline fires first and
# produces a clean timeout event with the run id.
DEFER_TIMEOUT_SLACK_SECONDS = 60


class VideoTaskMixin(JobCardMixin, LineageMixin):
    """Waiting for and delivering one NanoGPT run; mixed into an operator or a sensor."""

    nanogpt_conn_id: str
    deferrable: bool
    output_path: Any
    outlets: Any
    log: Any

    if TYPE_CHECKING:

        def defer(
            self,
            *,
            trigger: BaseTrigger,
            method_name: str,
            kwargs: dict[str, Any] | None = None,
            timeout: timedelta | int | float | None = None,
        ) -> NoReturn: ...

    @cached_property
    def hook(self) -> NanoGPTHook:
        from airflow_provider_nanogpt.hooks.nanogpt import NanoGPTHook

        return NanoGPTHook(self.nanogpt_conn_id)

    def wait_and_deliver(
        self,
        context: Context,
        run_id: str,
        *,
        poll_interval: float,
        timeout: float,
        just_submitted: bool = False,
        execution_deadline: float | None = None,
    ) -> dict[str, Any]:
        """Finish now if the run is over; otherwise wait in the triggerer (or here), then finish.

        ``just_submitted``: the run was created a moment ago and cannot be over yet, so a
        deferrable task defers at once instead of asking first (one status call, and worker
        time, saved per video). The wait ends after ``timeout`` or at ``execution_deadline``
        (the try's start plus ``execution_timeout``, epoch seconds), whichever comes first;
        without one given, it is computed from the task instance's start.
        """
        from airflow_provider_nanogpt import deadline as task_deadline
        from airflow_provider_nanogpt.polling import PollTracker, check_once, wait_for_video
        from airflow_provider_nanogpt.triggers.video import VideoStatusTrigger

        execution_deadline = task_deadline.execution_deadline(self, context, execution_deadline)
        if not (just_submitted and self.deferrable):
            event, status = check_once(
                self.hook, PollTracker(run_id), self.log, deadline=execution_deadline
            )
            if event is not None:
                return self.finish(context, event, status, deadline=execution_deadline)
        # The video link reads this key at every deferral; empty means "not ready yet".
        self.push_xcom(context, VIDEO_URL_XCOM_KEY, "")
        now = time.time()
        trigger = VideoStatusTrigger(
            run_id=run_id,
            nanogpt_conn_id=self.nanogpt_conn_id,
            poll_interval=poll_interval,
            end_time=now + timeout,
            started_at=now,
            execution_deadline=execution_deadline,
            execution_timeout=task_deadline.execution_timeout_seconds(self),
            model=getattr(self, "model", None),
        )
        if self.deferrable:
            ends_at = task_deadline.earliest(now + timeout, execution_deadline) or now + timeout
            self.defer(
                trigger=trigger,
                method_name="execute_complete",
                # A backstop past the trigger's own deadline, whichever limit sets it.
                timeout=timedelta(
                    seconds=max(0.0, ends_at - now)
                    + 2 * poll_interval
                    + DEFER_TIMEOUT_SLACK_SECONDS
                ),
            )
        # Worker-side wait: the very same loop the trigger runs in the triggerer.
        waited = asyncio.run(wait_for_video(run_id, log=self.log, **trigger.wait_kwargs()))
        return self.finish(context, waited, None, deadline=execution_deadline)

    def execute_complete(
        self, context: Context, event: dict[str, Any] | None = None, **deferral_kwargs: Any
    ) -> Any:
        """Finish after the wait in the triggerer; its state comes from the event only."""
        from airflow_provider_nanogpt.resume import (
            carried_execution_deadline,
            ignore_deferral_kwargs,
        )

        ignore_deferral_kwargs(deferral_kwargs, self.log)
        video_event = VideoEvent.from_payload(event)
        assert isinstance(event, Mapping)  # from_payload refuses anything else
        deadline = carried_execution_deadline(event, task=self, context=context, log=self.log)
        return self.finish(context, video_event, None, deadline=deadline)

    def finish(
        self,
        context: Context,
        event: VideoEvent,
        status: VideoStatus | None,
        *,
        deadline: float | None = None,
    ) -> dict[str, Any]:
        """Raise the event's error, or deliver the video and return the task's result.

        Events carry no URL (the triggerer logs them), so unless the caller holds the finished
        status, it is read again from NanoGPT, which caches terminal results; ``deadline``
        (epoch seconds) bounds that read and its retry waits.
        """
        from airflow_provider_nanogpt.delivery import deliver, record_outlet_events
        from airflow_provider_nanogpt.job_card import (
            REFUNDED,
            JobState,
            job_state_for,
            precharge_on,
        )

        self.remember_for_lineage(run_id=event.run_id)
        card = self.job_card(context)
        try:
            self.raise_for_event(event)
            if status is None or not status.is_deliverable:
                status = self.hook.get_video_status(event.run_id, deadline=deadline)
            # NanoGPT states no currency for a final cost: it is the one the job was paid in.
            precharge, currency = precharge_on(card)
            result = deliver(
                self.hook,
                status,
                run_id=event.run_id,
                model=self.model,
                currency=currency,
                precharge=precharge,
                output_path=self.output_path,
                log=self.log,
            )
        except Exception as exc:
            ended_as = job_state_for(event)
            self.end_card(context, card, event.run_id, ended_as, error=str(exc)[:500])
            if ended_as in REFUNDED:
                self.on_refunded(context, event.run_id)
            raise
        self.end_card(
            context,
            card,
            event.run_id,
            JobState.COMPLETED,
            **{key: result[key] for key in ("cost", "currency", "video_url", "output_path")},
            model=result["model"],
        )
        if status.cost is not None and status.cost != precharge:
            self.on_final_cost(context, event.run_id, status.cost, currency)
        self.push_xcom(context, VIDEO_URL_XCOM_KEY, status.video_url)
        self.remember_for_lineage(**result)
        record_outlet_events(context, self.outlets, result, self.log)
        self.on_delivered(context)
        return result

    def raise_for_event(self, event: VideoEvent) -> None:
        event.raise_for_status()

    def on_final_cost(
        self, context: Context, run_id: str, cost: float, currency: str | None
    ) -> None:
        """Called when NanoGPT's final cost of a delivered run differs from its pre-charge."""

    def on_refunded(self, context: Context, run_id: str) -> None:
        """Called when the run ended without a charge (failed, blocked, cancelled)."""

    def on_delivered(self, context: Context) -> None:
        """Called once the video is delivered."""
