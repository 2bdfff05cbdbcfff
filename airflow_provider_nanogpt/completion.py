"""Waiting for a NanoGPT run and finishing the task: the half GenerateVideoOperator and
VideoStatusSensor share.

Both look once right away (a finished run needs no deferral), then wait in the triggerer (or on
the worker with ``deferrable=False``) with the same trigger, and finish through the same steps:
raise the event's typed error, or download the video and return the same small result.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, NoReturn

from airflow_provider_nanogpt.events import VideoEvent
from airflow_provider_nanogpt.exceptions import NanoGPTCompletedWithoutVideoError
from airflow_provider_nanogpt.job_card import JOB_KEY
from airflow_provider_nanogpt.links.video import VIDEO_URL_XCOM_KEY

if TYPE_CHECKING:
    from airflow.sdk import Context
    from airflow.triggers.base import BaseTrigger

    from airflow_provider_nanogpt.api.status import VideoStatus
    from airflow_provider_nanogpt.hooks.nanogpt import NanoGPTHook

# The framework's deferral timeout is only a backstop: the trigger's own deadline fires first and
# produces a clean timeout event with the run id.
DEFER_TIMEOUT_SLACK_SECONDS = 60


class VideoTaskMixin:
    """Waiting for and delivering one NanoGPT run; mixed into an operator or a sensor."""

    nanogpt_conn_id: str
    deferrable: bool
    output_path: Any
    outlets: Any
    log: Any
    # The model the task asked for, when it knows (the flat status shape does not name it).
    model: str | None = None

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
        context["ti"].xcom_push(key=VIDEO_URL_XCOM_KEY, value="")
        now = time.time()
        trigger = VideoStatusTrigger(
            run_id=run_id,
            nanogpt_conn_id=self.nanogpt_conn_id,
            poll_interval=poll_interval,
            end_time=now + timeout,
            started_at=now,
            execution_deadline=execution_deadline,
            execution_timeout=task_deadline.execution_timeout_seconds(self),
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
        from airflow_provider_nanogpt.job_card import JobState

        self._lineage_facts["run_id"] = event.run_id
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
                output_path=self.output_path,
                log=self.log,
            )
        except Exception as exc:
            self.end_card(context, card, event, job_state_for(event), error=str(exc)[:500])
            raise
        if result["cost"] is None:
            # The flat status shape carries no final cost; the pre-charge is the best known figure.
            result["cost"] = precharge
        self.end_card(
            context,
            card,
            event,
            JobState.COMPLETED,
            **{key: result[key] for key in ("cost", "currency", "video_url", "output_path")},
            model=result["model"],
        )
        context["ti"].xcom_push(key=VIDEO_URL_XCOM_KEY, value=status.video_url)
        self._lineage_facts.update(result)
        record_outlet_events(context, self.outlets, result, self.log)
        self.on_delivered(context)
        return result

    def raise_for_event(self, event: VideoEvent) -> None:
        event.raise_for_status()

    # The XCom key of this task's job card (see ``airflow_provider_nanogpt.job_card``).
    job_card_key: str = JOB_KEY

    def job_card(self, context: Context) -> dict[str, Any]:
        """This task's job card as pushed at submission (empty for a sensor, which pushes none)."""
        ti = context["ti"]
        card = ti.xcom_pull(
            task_ids=ti.task_id, key=self.job_card_key, map_indexes=getattr(ti, "map_index", -1)
        )
        return dict(card) if isinstance(card, Mapping) else {}

    def end_card(
        self,
        context: Context,
        card: Mapping[str, Any],
        event: VideoEvent,
        state: Any,
        **fields: Any,
    ) -> None:
        """Record how the job ended on this task's job card, for the NanoGPT page."""
        from airflow_provider_nanogpt.job_card import (
            CHARGE_KEY_PREFIX,
            REFUNDED,
            charge_record,
            ended,
        )

        base = dict(card)
        base.setdefault("run_id", event.run_id)
        base.setdefault("conn_id", self.nanogpt_conn_id)
        final = ended(base, state, **fields)
        context["ti"].xcom_push(key=self.job_card_key, value=final)
        store = context.get("task_state_store")
        if state in REFUNDED and final.get("charged_here") and store is not None:
            # A retry clears this card; the charge record outlives it and must say "refunded".
            store.set(CHARGE_KEY_PREFIX + str(final["run_id"]), charge_record(final))

    # --- OpenLineage: called by Airflow's OpenLineage listener when that provider is installed

    # Whether the run facet may carry the prompt; off for teams that treat prompts as sensitive.
    lineage_include_prompts: bool = True

    def lineage_inputs(self) -> list[object]:
        """Source media the task reads (paths, URIs, URLs)."""
        return []

    def lineage_request(self) -> dict[str, Any]:
        """The request parameters, as the DAG gave them."""
        return {}

    def get_openlineage_facets_on_start(self) -> Any:
        return self._openlineage(self.output_path)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        delivered = self._lineage_facts.get("output_path") or self._lineage_facts.get("video_url")
        return self._openlineage(delivered or self.output_path)

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> Any:
        return self._openlineage(self.output_path)

    @cached_property
    def _lineage_facts(self) -> dict[str, Any]:
        """What this attempt learned about its run (run id, cost, …), for the lineage events."""
        return {}

    def _openlineage(self, output: object) -> Any:
        try:
            from airflow_provider_nanogpt import lineage
        except ImportError:  # the OpenLineage provider is not installed
            return None
        facts = self._lineage_facts
        facet = lineage.run_facet(
            runId=facts.get("run_id"),
            model=facts.get("model") or self.model,
            cost=facts.get("cost"),
            currency=facts.get("currency"),
            request=lineage.request_summary(
                self.lineage_request(), include_prompts=self.lineage_include_prompts
            ),
            promptsIncluded=self.lineage_include_prompts,
        )
        return lineage.operator_lineage(self.lineage_inputs(), output, facet)

    def on_delivered(self, context: Context) -> None:
        """Called once the video is delivered."""


def precharge_on(card: Mapping[str, Any]) -> tuple[float | None, str | None]:
    """What NanoGPT pre-charged for the run, and in which currency, as the card recorded it.

    (None, None) when this task did not submit the run (a sensor's card has no cost).
    """
    from airflow_provider_nanogpt.api.coerce import as_amount, as_str
    from airflow_provider_nanogpt.api.responses import currency_of

    return as_amount(card.get("cost")), currency_of(as_str(card.get("currency")))


def job_state_for(event: VideoEvent) -> Any:
    """The job card's state for an event that did not deliver a video."""
    from airflow_provider_nanogpt.events import EventStatus
    from airflow_provider_nanogpt.job_card import JobState

    if event.status is EventStatus.FAILED:
        return JobState.BLOCKED if event.is_nsfw else JobState.FAILED
    return {
        EventStatus.CANCELLED: JobState.CANCELLED,
        EventStatus.TIMEOUT: JobState.TIMED_OUT,
    }.get(event.status, JobState.ERROR)


def deliver(
    hook: NanoGPTHook,
    status: VideoStatus,
    *,
    run_id: str,
    model: str | None,
    currency: str | None,
    output_path: Any,
    log: Any,
) -> dict[str, Any]:
    """Download (if asked) and build the task's small return value for a finished job."""
    from airflow_provider_nanogpt.hooks.video_hosts import redact_url
    from airflow_provider_nanogpt.polling import nothing_to_deliver

    if not status.is_deliverable or status.video_url is None:
        raise NanoGPTCompletedWithoutVideoError(nothing_to_deliver(run_id, status), run_id=run_id)
    saved_to = None
    if output_path:
        saved_to = hook.download_video(status.video_url, output_path).path
    log.info(
        "NanoGPT video %s is ready: %s (final cost %s)",
        run_id,
        redact_url(status.video_url),
        format_money(status.cost, currency),
    )
    return {
        "run_id": run_id,
        "model": model or status.model,
        "status": "success",
        "video_url": status.video_url,
        "cost": status.cost,
        "currency": currency,
        "output_path": saved_to,
    }


EVENT_EXTRA_KEYS = ("run_id", "model", "cost", "currency", "video_url", "output_path")


def record_outlet_events(
    context: Mapping[str, Any], outlets: Any, result: Mapping[str, Any], log: Any
) -> None:
    """Describe the video in each Asset outlet event, for downstream DAGs.

    A fixed ``Asset`` gets the details as its event's extra. An ``AssetAlias`` gets an event for
    the asset at the rendered ``output_path`` (``/videos/{{ ds }}/x.mp4`` cannot be named when
    the DAG is written), with the same extra.
    """
    from airflow.sdk import Asset, AssetAlias

    extra = {key: result.get(key) for key in EVENT_EXTRA_KEYS}
    for outlet in outlets or ():
        if isinstance(outlet, Asset):
            context["outlet_events"][outlet].extra = extra
        elif isinstance(outlet, AssetAlias):
            uri = asset_uri(result.get("output_path"))
            if uri is None:
                log.warning(
                    "No output_path, so no asset to add to the alias %r: a short-lived video URL "
                    "does not name a lasting asset.",
                    outlet.name,
                )
                continue
            context["outlet_events"][outlet].add(Asset(uri), extra=extra)


def asset_uri(output_path: object) -> str | None:
    """The Asset URI of a saved video: ``file:///abs/path`` or the object-storage URI."""
    import os

    if not output_path:
        return None
    text = str(output_path)
    return text if "://" in text else f"file://{os.path.abspath(text)}"


def format_money(value: float | None, currency: str | None) -> str:
    """An amount with its currency, never a dollar sign on something that is not dollars."""
    if value is None:
        return "unknown"
    if currency == "USD":
        return f"${value:.4f}"
    return f"{value:.4f} {currency}" if currency else f"{value:.4f} (currency unknown)"
