"""VideoStatusSensor: wait for a NanoGPT run submitted elsewhere (``wait_for_completion=False``)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue

from airflow_provider_nanogpt.links.video import VIDEO_URL_XCOM_KEY, NanoGPTVideoLink

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_nanogpt.api.status import VideoStatus
    from airflow_provider_nanogpt.hooks.nanogpt import NanoGPTHook


class VideoStatusSensor(BaseSensorOperator):
    """Wait until a NanoGPT video run is finished; return the same dict as the operator.

    ``deferrable=True`` (default) waits in the triggerer through ``VideoStatusTrigger``;
    ``deferrable=False`` pokes in ``poke`` or ``reschedule`` mode. A FAILED, blocked or cancelled
    run fails the task with the same typed errors as ``GenerateVideoOperator``.

    :param run_id: NanoGPT run id (templated), typically
        ``"{{ ti.xcom_pull(task_ids='submit', key='run_id') }}"``.
    :param nanogpt_conn_id: The ``nanogpt`` connection.
    :param output_path: Where to save the video when ready (templated).
    :param deferrable: Wait in the triggerer (default).
    """

    template_fields: Sequence[str] = ("run_id", "output_path", "nanogpt_conn_id")
    operator_extra_links = (NanoGPTVideoLink(),)
    ui_color = "#f2e3ff"

    def __init__(
        self,
        *,
        run_id: str,
        nanogpt_conn_id: str = "nanogpt_default",
        output_path: Any = None,
        deferrable: bool = True,
        poke_interval: float = 5.0,
        timeout: float = 600.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(poke_interval=poke_interval, timeout=timeout, **kwargs)
        self.run_id = run_id
        self.nanogpt_conn_id = nanogpt_conn_id
        self.output_path = output_path
        self.deferrable = deferrable

    @cached_property
    def hook(self) -> NanoGPTHook:
        from airflow_provider_nanogpt.hooks.nanogpt import NanoGPTHook

        return NanoGPTHook(self.nanogpt_conn_id)

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        from airflow_provider_nanogpt.completion import event_for
        from airflow_provider_nanogpt.triggers.video import VideoStatusTrigger

        status = self.hook.get_video_status(self.run_id)
        if status.is_terminal:
            return self._complete(context, event_for(status), status)
        # The video link reads this key at every deferral; empty means "not ready yet".
        context["ti"].xcom_push(key=VIDEO_URL_XCOM_KEY, value="")
        now = time.time()
        self.defer(
            trigger=VideoStatusTrigger(
                run_id=self.run_id,
                nanogpt_conn_id=self.nanogpt_conn_id,
                poll_interval=self.poke_interval,
                end_time=now + self.timeout,
                started_at=now,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout + 2 * self.poke_interval + 60),
        )

    def poke(self, context: Context) -> PokeReturnValue | bool:
        from airflow_provider_nanogpt.completion import event_for

        status = self.hook.get_video_status(self.run_id)
        if not status.is_terminal:
            self.log.info(
                "NanoGPT video %s is %s%s",
                self.run_id,
                status.state.value.lower(),
                f": {text}" if (text := status.describe_progress()) else "",
            )
            return False
        return PokeReturnValue(
            is_done=True, xcom_value=self._complete(context, event_for(status), status)
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        from airflow.providers.common.compat.sdk import AirflowSensorTimeout

        from airflow_provider_nanogpt.completion import NO_CANCEL_NOTE, validate_event

        checked = validate_event(event, self.run_id)
        if checked["status"] == "timeout":
            # Same as poke/reschedule mode: a sensor timeout is final, not retried.
            raise AirflowSensorTimeout(f"{checked.get('message')}. {NO_CANCEL_NOTE}")
        return self._complete(context, checked, None)

    def _complete(
        self, context: Context, event: dict[str, Any], status: VideoStatus | None
    ) -> dict[str, Any]:
        from airflow_provider_nanogpt.completion import complete

        return complete(
            context,
            event,
            status,
            hook=self.hook,
            model=None,
            output_path=self.output_path,
            outlets=self.outlets,
            log=self.log,
        )
