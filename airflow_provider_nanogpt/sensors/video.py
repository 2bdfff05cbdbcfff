"""VideoStatusSensor: wait for a NanoGPT run submitted elsewhere (``wait_for_completion=False``)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue

from airflow_provider_nanogpt.completion import VideoTaskMixin
from airflow_provider_nanogpt.job_card import WATCH_KEY, watch_card
from airflow_provider_nanogpt.links.video import NanoGPTSavedVideoLink, NanoGPTVideoLink

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_nanogpt.events import VideoEvent
    from airflow_provider_nanogpt.polling import PollTracker


class VideoStatusSensor(VideoTaskMixin, BaseSensorOperator):
    """Wait until a NanoGPT video run is finished; return the same dict as the operator.

    ``deferrable=True`` (default) waits in the triggerer through ``VideoStatusTrigger``;
    ``deferrable=False`` pokes in ``poke`` or ``reschedule`` mode. Every path reads NanoGPT's
    answers by the same rules as ``GenerateVideoOperator`` (a brand-new run may answer 404 a few
    times) and fails with the same typed errors.

    :param run_id: NanoGPT run id (templated), typically
        ``"{{ ti.xcom_pull(task_ids='submit', key='run_id') }}"``.
    :param nanogpt_conn_id: The ``nanogpt`` connection.
    :param output_path: Where to save the video when ready (templated).
    :param deferrable: Wait in the triggerer (default).
    """

    template_fields: Sequence[str] = ("run_id", "output_path", "nanogpt_conn_id")
    # The run was submitted (and paid) elsewhere: this task's card only says that it waits, then
    # how the run ended. Nothing of it is read back after a deferral: it holds only the run id.
    job_card_key = WATCH_KEY
    card_pushed_at_submission = False
    operator_extra_links = (NanoGPTVideoLink(), NanoGPTSavedVideoLink())
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
        self._tracker: PollTracker | None = None
        self._poking_since = time.time()
        self._deadline: float | None = None

    def execute(self, context: Context) -> Any:
        from airflow_provider_nanogpt.deadline import execution_deadline

        # execution_timeout counts from here, as Airflow's own alarm does.
        self._deadline = execution_deadline(self, context, started_at=time.time())
        # The card says "waiting" from now on, not only once the wait ends: the NanoGPT page
        # shows the run as rendering, with its progress, while this task waits.
        self.push_xcom(
            context, WATCH_KEY, watch_card(run_id=self.run_id, conn_id=self.nanogpt_conn_id)
        )
        if not self.deferrable:
            return super().execute(context)
        return self.wait_and_deliver(
            context,
            self.run_id,
            poll_interval=self.poke_interval,
            timeout=self.timeout,
            execution_deadline=self._deadline,
        )

    def poke(self, context: Context) -> PokeReturnValue | bool:
        from airflow_provider_nanogpt.deadline import execution_deadline
        from airflow_provider_nanogpt.polling import PollTracker, check_once

        if self._tracker is None or self._tracker.run_id != self.run_id:
            self._tracker = PollTracker(self.run_id)
            self._poking_since = time.time()
        deadline = self._deadline or execution_deadline(self, context)
        self._raise_at_deadline(deadline)
        event, status = check_once(self.hook, self._tracker, self.log, deadline=deadline)
        if event is None:
            if self.mode == "poke" and deadline is not None:
                # Airflow sleeps poke_interval after this, past the deadline if it comes first,
                # and then ends the try with a bare AirflowTaskTimeout: end it here, by name.
                left = deadline - time.time()
                if left < self.poke_interval:
                    time.sleep(max(0.0, left))
                    self._raise_at_deadline(deadline)
            return False
        return PokeReturnValue(
            is_done=True, xcom_value=self.finish(context, event, status, deadline=deadline)
        )

    def _raise_at_deadline(self, deadline: float | None) -> None:
        """Fail the try, naming execution_timeout, once its deadline has passed."""
        from airflow_provider_nanogpt.deadline import execution_timeout_seconds
        from airflow_provider_nanogpt.events import VideoEvent

        if deadline is not None and time.time() >= deadline:
            waited = time.time() - self._poking_since
            seconds = execution_timeout_seconds(self) or 0.0
            VideoEvent.execution_timed_out(self.run_id, waited, seconds).raise_for_status()

    def raise_for_event(self, event: VideoEvent) -> None:
        from airflow.providers.common.compat.sdk import AirflowSensorTimeout

        from airflow_provider_nanogpt.events import NO_CANCEL_NOTE, EventStatus

        if event.status is EventStatus.TIMEOUT and event.execution_timeout is None:
            # Same as poke/reschedule mode: a sensor timeout is final, not retried. The task's
            # execution_timeout is not: it raises NanoGPTJobTimeoutError, as Airflow's own would
            # be retried.
            raise AirflowSensorTimeout(f"{event.message}. {NO_CANCEL_NOTE}")
        event.raise_for_status()
