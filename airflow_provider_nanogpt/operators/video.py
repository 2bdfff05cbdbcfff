"""GenerateVideoOperator: submit a NanoGPT video once, then wait for it without a worker slot."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, NoReturn, get_args

from airflow.sdk import BaseOperator

from airflow_provider_nanogpt.completion import VideoTaskMixin
from airflow_provider_nanogpt.links.video import NanoGPTSavedVideoLink, NanoGPTVideoLink
from airflow_provider_nanogpt.request import REQUEST_FIELDS

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_nanogpt.api.responses import Submission
    from airflow_provider_nanogpt.exceptions import NanoGPTDailyCapError, NanoGPTRateLimitError
    from airflow_provider_nanogpt.ledger import BudgetExceeded
    from airflow_provider_nanogpt.resume import SubmitState
    from airflow_provider_nanogpt.shared_budget import BudgetGuard
    from airflow_provider_nanogpt.submission import Decision, LookUpLater, RunRecords, TaskAttempt

# A 429 whose Retry-After is at most this is slept on the worker; longer waits are deferred to the
# triggerer so rate-limited batches hold no worker slots. A deferral costs a task start on the
# worker (about 0.3-0.5 s in the scale-out test), so sleeping longer than that is a loss: with
# many tasks after one freed slot, most wake to another 429.
RATE_LIMIT_SLEEP_ON_WORKER_SECONDS = 0.5
# A wait this short is slept on the worker: a deferral's round trip through the triggerer takes
# about as long.
SHORT_WAIT_ON_WORKER_SECONDS = 10.0
# A rate-limit window longer than this fails the task instead of waiting for hours. A per-key
# daily cap (NanoGPTDailyCapError) is waited for whenever it resets within the task's deadline.
MAX_RATE_LIMIT_DEFERRAL_SECONDS = 900.0
# Deferrals for a 429 without Retry-After: 5 s, 10 s, 20 s … up to 5 minutes, with jitter.
RATE_LIMIT_BACKOFF_BASE_SECONDS = 5.0
RATE_LIMIT_BACKOFF_MAX_SECONDS = 300.0

# What a task does when a shared budget does not allow its video: fail before sending, or wait
# (holding no reservation and no slot) for the budget's window to reset within its deadline.
OnBudgetExceeded = Literal["fail", "wait"]


# Mapped tasks are labelled with their prompt (shortened) instead of [0], [1], ... in the UI.
# Unmapped tasks render nothing, so Airflow records no label for them.
DEFAULT_MAP_INDEX_TEMPLATE = (
    "{% if ti.map_index >= 0 %}"
    "{{ ((task.prompt or task.model or '') | string).replace('\\n', ' ')"
    " | truncate(60, True, '…', 0) }}"
    "{% endif %}"
)


class GenerateVideoOperator(VideoTaskMixin, BaseOperator):
    """Generate a video with NanoGPT.

    Validates the request (the documented model rules, and ``extra_params`` keys against
    NanoGPT's model catalog), submits it once, pushes the run id to XCom at once, then waits: in
    the triggerer by default (``deferrable=True``, no worker slot held), or on the worker with
    ``deferrable=False``. Retries and clears never pay twice for one video: see
    ``airflow_provider_nanogpt.submission`` and docs/retries-and-clears.md.

    :param prompt: Text prompt. Required for text-to-video models.
    :param model: NanoGPT video model id, e.g. ``kling-video-v2``.
    :param duration: Model-specific duration, e.g. ``"5"`` (Kling) or ``"5s"`` (Veo).
    :param aspect_ratio: e.g. ``"16:9"``.
    :param resolution: e.g. ``"720p"``.
    :param negative_prompt: What to avoid.
    :param seed: Best-effort seed.
    :param image_url: Public http(s) image for image-to-video, sent as ``imageUrl``.
    :param image_path: Local path, ``file://`` or ObjectStoragePath URI of a PNG, JPEG, GIF or
        WebP image, sent inline as ``imageDataUrl`` (at most 4,000,000 characters once encoded,
        a file of about 3 MB). Exclusive with ``image_url``.
    :param video_url: Public http(s) source video for extend, edit, upscale and lipsync models,
        sent as ``videoUrl`` (the way to pass a video over the inline limit).
    :param video_path: Like ``image_path``, for an MP4, MOV or WebM source video, sent inline as
        ``videoDataUrl``. Exclusive with ``video_url``.
    :param audio_url: Public http(s) audio for lipsync and avatar models, sent as ``audioUrl``.
    :param audio_path: Like ``image_path``, for MP3, WAV, M4A or OGG audio, sent inline as
        ``audioDataUrl``. Exclusive with ``audio_url``.
    :param extra_params: Model-specific fields passed through as given (cfg_scale, num_frames, …).
        With ``validate``, their keys are checked against the model's catalog entry at execute
        time: a key the catalog does not list fails before sending, naming the closest one.
    :param allow_unlisted_params: ``extra_params`` keys to send although NanoGPT's catalog does
        not list them (a parameter NanoGPT added after its catalog); True allows any key.
    :param nanogpt_conn_id: The ``nanogpt`` connection.
    :param wait_for_completion: False returns the run id right after submitting.
    :param deferrable: Wait in the triggerer (default) instead of on the worker.
    :param poll_interval: Seconds between status checks (the floor; estimates may stretch it).
    :param timeout: Seconds from submission until the video must be ready; also the longest
        time spent waiting out rate limits, or a shared budget's reset, before submitting.
    :param output_path: Where to save the video (path, ``file://``, ``s3://``, … templated).
    :param validate: Check the request against the documented model rules, and
        ``extra_params`` against NanoGPT's catalog, before sending.
    :param min_balance_usd: Fail before submitting when the account balance is below this.
    :param max_cost_usd: Fail before submitting when the estimated cost is above this (fails
        closed when the catalog pricing gives no estimate).
    :param settle_seconds: After a submission whose outcome is unknown (a timeout or 5xx after
        sending), how long NanoGPT's run list must go on showing nothing before a retry sends
        the request again.
    :param approval_above_usd: Ask a person (Airflow's Human-in-the-loop, on the Required
        Actions page) before submitting a video whose estimated cost exceeds this many USD, or
        whose cost cannot be estimated. Reject skips the task; no answer fails it. Default: the
        connection's ``approval_above_usd`` extra; unset there too, no approval is asked.
    :param approval_timeout: How long to wait for the answer (timedelta or seconds), never past
        the try's deadline (``execution_timeout``, ``timeout``). Default: the connection's
        ``approval_timeout`` extra, else the try's deadline.
    :param lineage_include_prompts: Whether OpenLineage events carry the prompt (with the other
        request parameters). False leaves prompts out, for teams that treat them as sensitive.
    :param budgets: Names of shared group budgets (defined in the connection's ``budgets`` extra
        or ``[nanogpt] budgets``) this task spends from, besides the connection's own budget
        and those named by DAG tags ``nanogpt-budget:<name>``. See docs/cost-control.md.
    :param on_budget_exceeded: ``"fail"`` (default): a send a shared budget does not allow
        fails before sending with ``NanoGPTBudgetError``. ``"wait"``: the task waits (deferred,
        holding no reservation; on the worker with ``deferrable=False``) until the budget's
        window resets, then reserves again; it fails as ``"fail"`` does when the reset comes
        after its deadline (``timeout`` from the try's start, or ``execution_timeout``).

    On success, every ``Asset`` in ``outlets`` gets an event whose ``extra`` holds ``run_id``,
    ``model``, ``cost``, ``currency``, ``video_url`` and ``output_path``, for data-aware
    downstream DAGs; every ``AssetAlias`` gets an event for the asset at the rendered
    ``output_path``, with the same extra.
    """

    template_fields: Sequence[str] = (
        *REQUEST_FIELDS,
        "output_path",
        "nanogpt_conn_id",
        "min_balance_usd",
        "max_cost_usd",
    )
    template_fields_renderers = {"extra_params": "json", "prompt": "txt"}
    operator_extra_links = (NanoGPTVideoLink(), NanoGPTSavedVideoLink())
    ui_color = "#f2e3ff"

    @classmethod
    def partial(cls, **kwargs: Any) -> Any:  # type: ignore[override]
        """``BaseOperator.partial``, labelling mapped tasks with their prompt unless the DAG sets
        its own ``map_index_template`` (the template must be on the mapped task itself: Airflow
        reads it before the task is unmapped)."""
        kwargs.setdefault("map_index_template", DEFAULT_MAP_INDEX_TEMPLATE)
        return super().partial(**kwargs)

    def __init__(
        self,
        *,
        model: str,
        prompt: str | None = None,
        duration: str | int | None = None,
        aspect_ratio: str | None = None,
        resolution: str | None = None,
        negative_prompt: str | None = None,
        seed: int | str | None = None,
        image_url: str | None = None,
        image_path: Any = None,
        video_url: str | None = None,
        video_path: Any = None,
        audio_url: str | None = None,
        audio_path: Any = None,
        extra_params: Mapping[str, Any] | None = None,
        allow_unlisted_params: bool | Sequence[str] = (),
        nanogpt_conn_id: str = "nanogpt_default",
        wait_for_completion: bool = True,
        deferrable: bool = True,
        poll_interval: float = 5.0,
        timeout: float = 600.0,
        output_path: Any = None,
        validate: bool = True,
        min_balance_usd: float | None = None,
        max_cost_usd: float | None = None,
        settle_seconds: float = 60.0,
        lineage_include_prompts: bool = True,
        budgets: Sequence[str] = (),
        on_budget_exceeded: OnBudgetExceeded = "fail",
        approval_above_usd: float | None = None,
        approval_timeout: timedelta | float | None = None,
        **kwargs: Any,
    ) -> None:
        arguments = locals()  # the request parameters are listed once, in VideoRequest
        super().__init__(**kwargs)
        if poll_interval <= 0:
            raise ValueError(f"poll_interval must be positive, got {poll_interval!r}")
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout!r}")
        if settle_seconds < 0:
            raise ValueError(f"settle_seconds must not be negative, got {settle_seconds!r}")
        for name in REQUEST_FIELDS:
            setattr(self, name, arguments[name])
        self.allow_unlisted_params = (
            allow_unlisted_params
            if isinstance(allow_unlisted_params, bool)
            else tuple(allow_unlisted_params)
        )
        self.nanogpt_conn_id = nanogpt_conn_id
        self.wait_for_completion = wait_for_completion
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.output_path = output_path
        self.validate = validate
        self.min_balance_usd = min_balance_usd
        self.max_cost_usd = max_cost_usd
        # Which guards the DAG set, before rendering: one whose template renders to nothing
        # must fail, not switch itself off.
        self._money_guards_given = frozenset(
            name
            for name, value in (
                ("min_balance_usd", min_balance_usd),
                ("max_cost_usd", max_cost_usd),
            )
            if value is not None
        )
        self.settle_seconds = settle_seconds
        self.lineage_include_prompts = lineage_include_prompts
        if isinstance(budgets, str) or not all(isinstance(name, str) for name in budgets):
            raise ValueError(f"budgets must be a list of budget names, got {budgets!r}")
        self.budgets = tuple(budgets)
        if on_budget_exceeded not in get_args(OnBudgetExceeded):
            raise ValueError(
                f"on_budget_exceeded must be 'fail' or 'wait', got {on_budget_exceeded!r}."
            )
        self.on_budget_exceeded = on_budget_exceeded
        from airflow_provider_nanogpt.approval import threshold_argument, timeout_argument

        self.approval_above_usd = threshold_argument(approval_above_usd)
        self.approval_timeout = timeout_argument(approval_timeout)

    def _limit(self, name: str) -> float | None:
        """A templated money guard as an amount (Jinja renders text unless native rendering).

        Raises NanoGPTBudgetError when a guard the DAG set rendered to nothing or to junk.
        """
        from airflow_provider_nanogpt.budget import guard_amount

        return guard_amount(name, getattr(self, name), given=name in self._money_guards_given)

    def build_payload(self) -> dict[str, Any]:
        """The validated request body. Reads the ``*_path`` files; never submits.

        With ``validate``, ``extra_params`` keys are checked against NanoGPT's catalog: one
        ``GET /api/v1/video-models``, here on the worker (never at DAG parse), only when there
        are ``extra_params``.
        """
        from airflow_provider_nanogpt.request import VideoRequest

        request = VideoRequest(**{name: getattr(self, name) for name in REQUEST_FIELDS})
        payload = request.payload(validate=self.validate)
        if self.validate:
            from airflow_provider_nanogpt.validation import check_catalog_parameters

            check_catalog_parameters(
                self.hook,
                request.model,
                request.extra_fields(),
                self.log,
                self.allow_unlisted_params,
            )
        return payload

    # --- execution ---------------------------------------------------------------------------

    def execute(self, context: Context) -> Any:
        from airflow_provider_nanogpt.deadline import execution_deadline
        from airflow_provider_nanogpt.resume import SubmitState

        started_at = time.time()
        return self._submit_and_wait(
            context,
            SubmitState(
                started_at=started_at,
                execution_deadline=execution_deadline(self, context, started_at=started_at),
            ),
        )

    def execute_after_wait(
        self, context: Context, event: Any = None, **deferral_kwargs: Any
    ) -> Any:
        """Carry on after waiting in the triggerer (a rate-limit window or a settle time).

        The try's state comes from the event's ``carry`` only (see ``airflow_provider_nanogpt.
        resume``); missing or unreadable, it raises ``NanoGPTResumeStateError``. Its deadline is
        the try's original one: a resume must not restart execution_timeout.
        """
        from airflow_provider_nanogpt.resume import SubmitState, ignore_deferral_kwargs

        ignore_deferral_kwargs(deferral_kwargs, self.log)
        state = SubmitState.from_event(event, task=self, context=context, log=self.log)
        return self._submit_and_wait(context, state)

    def _submit_and_wait(self, context: Context, state: SubmitState) -> Any:
        """Find or submit this task's run (waiting out rate limits and settle times), then wait
        for it and deliver it."""
        from airflow_provider_nanogpt.exceptions import NanoGPTError, NanoGPTRateLimitError
        from airflow_provider_nanogpt.ledger import BudgetExceeded
        from airflow_provider_nanogpt.submission import LookUpLater, RunRecords

        payload = self._payload_to_send()
        records = RunRecords(context.get("task_state_store"))
        attempt = self._attempt(context, state.started_at)
        budget = self._budget_guard(context, payload)
        while True:
            try:
                decision = self._find_or_submit(context, records, attempt, payload, state, budget)
            except NanoGPTRateLimitError as exc:
                state = self._wait_out_rate_limit(context, exc, state)
                continue
            except BudgetExceeded as exc:
                if self.on_budget_exceeded != "wait":
                    self._budget_refused(context, exc, waiting=False)
                    raise
                self._wait_for_budget(context, exc, state)
                continue  # reserve again, once per wakeup: others may have filled the window
            except NanoGPTError as exc:
                if exc.refused_submission:
                    self._publish_refusal(context, exc)
                raise
            if not isinstance(decision, LookUpLater):
                break
            self._wait_to_look_again(decision, state)

        submission = decision.submission
        if not decision.reattached:
            self._log_submission(submission)
        else:
            from airflow_provider_nanogpt import metrics

            metrics.reattached(self.nanogpt_conn_id, submission.model or self.model)
        self._publish(context, submission)
        if not self.wait_for_completion:
            records.mark_regenerate_after_clear()
            return submission.run_id
        return self.wait_and_deliver(
            context,
            submission.run_id,
            poll_interval=self.poll_interval,
            timeout=self.timeout,
            just_submitted=not decision.reattached,
            execution_deadline=state.execution_deadline,
        )

    def _payload_to_send(self) -> dict[str, Any]:
        """The request body, once every check that needs no send has passed."""
        # Before anything is sent (even a lookup): a guard that renders to nothing fails here.
        self._limit("min_balance_usd")
        self._limit("max_cost_usd")
        payload = self.build_payload()
        if self.output_path:
            from airflow_provider_nanogpt.storage import check_destination

            # Before paying: a video that cannot be saved must not be bought.
            check_destination(self.output_path, self.hook.settings().output_base_dir)
        return payload

    def _find_or_submit(
        self,
        context: Context,
        records: RunRecords,
        attempt: TaskAttempt,
        payload: Mapping[str, Any],
        state: SubmitState,
        budget: BudgetGuard | None,
    ) -> Decision:
        """One pass of ``submission.find_or_submit``, its waits bounded by the task's limits."""
        from airflow_provider_nanogpt.deadline import earliest
        from airflow_provider_nanogpt.exceptions import NanoGPTDeadlinePassedError
        from airflow_provider_nanogpt.submission import find_or_submit

        # In-call retry waits (a 429's Retry-After, a backoff) end by the task's deadline too.
        since = state.rate_limited_since
        deadline = earliest(state.execution_deadline, (since or state.started_at) + self.timeout)
        try:
            return find_or_submit(
                self.hook,
                records,
                attempt,
                payload,
                log=self.log,
                settle_seconds=self.settle_seconds,
                before_send=lambda: self._before_send(context, payload, state, budget),
                max_rate_limit_sleep=RATE_LIMIT_SLEEP_ON_WORKER_SECONDS
                if self.deferrable
                else None,
                deadline=deadline,
                budget=budget,
            )
        except NanoGPTDeadlinePassedError as exc:
            if since is None:
                raise
            # Waiting out the 429 (and resuming from it) used up what was left: nothing sent.
            raise self._rate_limited_too_long(since, 0.0, "HTTP 429") from exc

    def _wait_out_rate_limit(
        self, context: Context, exc: NanoGPTRateLimitError, state: SubmitState
    ) -> SubmitState:
        """Wait out a 429 (the submit's, or the lookup's of an earlier send: nothing was sent),
        and return the state to ask again with. A daily cap's wait, or the failure when it
        resets too late, is on the job card too, for the NanoGPT page."""
        from airflow_provider_nanogpt.exceptions import NanoGPTDailyCapError

        since = state.rate_limited_since or time.time()
        try:
            wait = self._rate_limit_wait(
                exc, since, state.rate_limit_deferrals, state.execution_deadline
            )
        except NanoGPTDailyCapError as final:
            self._publish_held_back(context, final, waiting=False)
            raise
        if isinstance(exc, NanoGPTDailyCapError):
            self._publish_held_back(context, exc, waiting=True)
        from airflow_provider_nanogpt import metrics

        metrics.rate_limit_wait(self.nanogpt_conn_id, metrics.TASK_WAIT, wait)
        state = replace(
            state, rate_limited_since=since, rate_limit_deferrals=state.rate_limit_deferrals + 1
        )
        # Short Retry-Afters were slept inside the call: whatever is left here is deferred.
        self._wait_until(time.time() + wait, state, "NanoGPT is rate limiting", on_worker_up_to=0)
        return state

    def _wait_for_budget(self, context: Context, exc: BudgetExceeded, state: SubmitState) -> None:
        """Wait until the full budget's window resets, or raise when that is past the task's
        deadline (``timeout`` from the try's start, or ``execution_timeout``). Nothing was sent
        and the reserve that refused reserved nothing, so the wait holds no budget."""
        from airflow_provider_nanogpt.exceptions import describe_duration

        now = time.time()
        resets_at = exc.resets_at.timestamp()
        deadline, limit = self._reset_deadline(state.started_at, state.execution_deadline)
        if resets_at > deadline:
            self._budget_refused(context, exc, waiting=False)
            final = exc.advised(
                f"That is after this task's {limit} ends, so it does not wait for the reset. "
                "Nothing was paid. To let it wait, give it a timeout (and execution_timeout) "
                f"longer than {describe_duration(resets_at - now)}; or raise the budget."
            )
            self.log.warning("%s", final)
            raise final from exc
        self._budget_refused(context, exc, waiting=True)
        self.log.warning(
            "%s Nothing was paid and no reservation is held while waiting; the task waits for "
            "the reset (on_budget_exceeded='wait'), then tries to reserve again.",
            exc,
        )
        self._wait_until(
            now + _just_after(resets_at, deadline, now),
            state,
            f"Shared budget full until {_clock(resets_at)}",
            on_worker_up_to=0,
        )

    def _budget_refused(self, context: Context, exc: BudgetExceeded, *, waiting: bool) -> None:
        """A full shared budget held this submission back: counted in the metrics, and a job
        card for the NanoGPT page (which budget, when it resets, whether the task waits)."""
        from airflow_provider_nanogpt import metrics

        budget = exc.use.budget
        action = "waiting" if waiting else "failed"
        metrics.budget_exceeded(self.nanogpt_conn_id, budget.name, budget.period, action)
        self._publish_held_back(context, exc, waiting=waiting)

    def _wait_to_look_again(self, decision: LookUpLater, state: SubmitState) -> None:
        """Wait until an earlier send may be listed, unless that passes the try's deadline."""
        self._check_settle_wait(decision.at, decision.reason, state.execution_deadline)
        self._wait_until(
            decision.at,
            state,
            f"{decision.reason}; looking again at {_clock(decision.at)}",
            on_worker_up_to=SHORT_WAIT_ON_WORKER_SECONDS,
        )

    def _wait_until(
        self, moment: float, state: SubmitState, why: str, *, on_worker_up_to: float
    ) -> None:
        """Wait until ``moment`` (epoch seconds; the caller has checked it is within the try's
        deadline): in the triggerer when deferrable and the wait is longer than
        ``on_worker_up_to`` seconds (the task resumes in ``execute_after_wait`` with ``state``),
        else asleep on the worker."""
        wait = max(0.0, moment - time.time())
        deferred = self.deferrable and wait > on_worker_up_to
        where = "in the triggerer" if deferred else "on the worker"
        self.log.info("%s; waiting %.1f s %s.", why, wait, where)
        if deferred:
            self._resume_at(moment, state)
        time.sleep(wait)

    def _attempt(self, context: Context, started_at: float) -> TaskAttempt:
        from airflow_provider_nanogpt.submission import TaskAttempt

        ti = context["ti"]
        max_tries = getattr(ti, "max_tries", None)
        # Airflow's own reckoning of the first try since the last clear (max_tries grows then).
        generation = (
            max(1, max_tries - (self.retries or 0) + 1) if isinstance(max_tries, int) else None
        )
        dag_run = context.get("dag_run")
        earliest = getattr(dag_run, "run_after", None) or getattr(dag_run, "start_date", None)
        return TaskAttempt(
            identity=f"{ti.dag_id}/{ti.run_id}/{ti.task_id}/{getattr(ti, 'map_index', -1)}",
            try_number=int(ti.try_number),
            generation=generation,
            started_at=started_at,
            not_before=earliest.timestamp() if isinstance(earliest, datetime) else None,
        )

    def _budget_guard(self, context: Context, payload: Mapping[str, Any]) -> BudgetGuard | None:
        """The shared budgets' guard, or None (and no database touched) when none applies."""
        from airflow_provider_nanogpt.budget import estimate_for
        from airflow_provider_nanogpt.shared_budget import BudgetGuard, budget_plan_for

        dag = context.get("dag") or (self.dag if self.has_dag() else None)  # type: ignore[no-untyped-call]
        tags = getattr(dag, "tags", None) or ()
        extras = self.hook.settings().budget_extras
        plan = budget_plan_for(self.nanogpt_conn_id, extras, self.budgets, tags)
        if plan is None:
            return None
        return BudgetGuard(plan, lambda: estimate_for(self.hook, payload), log=self.log)

    def _before_send(
        self,
        context: Context,
        payload: Mapping[str, Any],
        state: SubmitState,
        budget: BudgetGuard | None,
    ) -> None:
        """The checks right before a new submission: the cost guards, then the approval."""
        from airflow_provider_nanogpt.approval import ask_if_above

        self._check_budget(payload)
        ask_if_above(self, context, payload, state, budget)

    def execute_after_approval(
        self, context: Context, event: Any = None, carry: Any = None, **deferral_kwargs: Any
    ) -> Any:
        """Carry on after the approval request: submit when approved (see ``approval``)."""
        from airflow_provider_nanogpt.approval import approved_state
        from airflow_provider_nanogpt.resume import ignore_deferral_kwargs

        ignore_deferral_kwargs(deferral_kwargs, self.log)
        state = approved_state(event, carry, task=self, context=context)
        return self._submit_and_wait(context, state)

    def _check_budget(self, payload: Mapping[str, Any]) -> None:
        from airflow_provider_nanogpt.budget import enforce_budget

        enforce_budget(
            self.hook,
            payload,
            min_balance_usd=self._limit("min_balance_usd"),
            max_cost_usd=self._limit("max_cost_usd"),
            log=self.log,
        )

    def _rate_limit_wait(
        self,
        exc: NanoGPTRateLimitError,
        since: float,
        deferrals: int,
        execution_deadline: float | None = None,
    ) -> float:
        """Seconds to wait out a 429, or raise once waiting would pass ``timeout`` or the try's
        ``execution_deadline``.

        The 429 answered the submit (it proves nothing was created) or the lookup of an earlier
        send (nothing was sent since): either way, asking again later never pays twice. Jitter
        spreads a rate-limited batch over the window instead of returning all at once.
        """
        from airflow_provider_nanogpt.api.retry import RetryPolicy
        from airflow_provider_nanogpt.exceptions import NanoGPTDailyCapError, NanoGPTRateLimitError

        if isinstance(exc, NanoGPTDailyCapError):
            return self._daily_cap_wait(exc, since, execution_deadline)
        if exc.retry_after is not None:
            if exc.retry_after > MAX_RATE_LIMIT_DEFERRAL_SECONDS:
                raise exc  # a daily cap: fail with NanoGPT's explanation instead of waiting hours
            # Retry-After names when a slot frees; come back just after it, a little spread out.
            wait = max(0.1, exc.retry_after * random.uniform(1.0, 1.03))
        else:
            backoff = RetryPolicy(
                base_delay=RATE_LIMIT_BACKOFF_BASE_SECONDS,
                max_delay=RATE_LIMIT_BACKOFF_MAX_SECONDS,
            )
            wait = backoff.backoff(deferrals + 1)
        if time.time() - since + wait > self.timeout:
            raise self._rate_limited_too_long(since, wait, str(exc)) from exc
        if execution_deadline is not None and time.time() + wait > execution_deadline:
            from airflow_provider_nanogpt.deadline import (
                before_submitting_ended,
                execution_timeout_seconds,
            )

            waiting_for = f"waiting {wait:.0f} s more for NanoGPT's rate limit"
            raise NanoGPTRateLimitError(
                f"{before_submitting_ended(execution_timeout_seconds(self), waiting_for)}. "
                f"Nothing was submitted. Last answer: {exc}"
            ) from exc
        return wait

    def _daily_cap_wait(
        self, exc: NanoGPTDailyCapError, since: float, execution_deadline: float | None
    ) -> float:
        """Seconds until the key's daily cap resets, or raise when that is past the task's
        deadline (``timeout`` since the first 429, or ``execution_timeout``). Either way the
        log says it plainly: nothing was sent, so nothing is paid."""
        from airflow_provider_nanogpt.exceptions import NanoGPTDailyCapError, describe_duration

        now = time.time()
        reached = exc.reached(now)
        deadline, limit = self._reset_deadline(since, execution_deadline)
        if exc.resets_at > deadline:
            message = (
                f"{reached}, after this task's {limit} ends. Nothing was submitted and nothing "
                "was paid. Raise the cap in NanoGPT's settings for this API key, or let the task "
                f"wait for the reset: give it a timeout (and execution_timeout) longer than "
                f"{describe_duration(exc.resets_at - now)}."
            )
            self.log.warning("%s", message)
            raise NanoGPTDailyCapError(
                message,
                cap=exc.cap,
                resets_at=exc.resets_at,
                status_code=exc.http_status,
                error_type=exc.error_type,
                request_id=exc.request_id,
                retry_after=exc.retry_after,
            ) from exc
        self.log.warning(
            "%s. Nothing was submitted and nothing was paid; the task waits for the reset "
            "(within its deadline), then submits once.",
            reached,
        )
        return _just_after(exc.resets_at, deadline, now)

    def _reset_deadline(self, since: float, execution_deadline: float | None) -> tuple[float, str]:
        """When a wait for a limit's reset (a daily cap, a shared budget) must be over:
        ``timeout`` from ``since`` or the try's ``execution_deadline``, whichever comes first;
        and that limit, named for messages."""
        from airflow_provider_nanogpt.deadline import earliest, execution_timeout_seconds

        deadline = earliest(execution_deadline, since + self.timeout)
        assert deadline is not None  # since + timeout always bounds it
        if deadline == execution_deadline:
            return deadline, f"execution_timeout ({execution_timeout_seconds(self) or 0:g} s)"
        return deadline, f"timeout ({self.timeout:g} s)"

    def _rate_limited_too_long(
        self, since: float, wait: float, last_answer: str
    ) -> NanoGPTRateLimitError:
        from airflow_provider_nanogpt.exceptions import NanoGPTRateLimitError

        return NanoGPTRateLimitError(
            f"NanoGPT kept rate limiting this submission for {time.time() - since:.0f} s; "
            f"waiting another {wait:.0f} s would pass timeout={self.timeout:g} s. Nothing was "
            f"submitted. Last answer: {last_answer}"
        )

    def _check_settle_wait(
        self, moment: float, reason: str, execution_deadline: float | None
    ) -> None:
        """Raise when looking again at ``moment`` would pass the try's ``execution_deadline``."""
        if execution_deadline is None or moment <= execution_deadline:
            return
        from airflow_provider_nanogpt.deadline import (
            before_submitting_ended,
            execution_timeout_seconds,
        )
        from airflow_provider_nanogpt.exceptions import NanoGPTSubmissionUncertainError

        waiting_for = f"waiting until {_clock(moment)} to look again ({reason})"
        raise NanoGPTSubmissionUncertainError(
            f"{before_submitting_ended(execution_timeout_seconds(self), waiting_for)}. The next "
            "try looks the earlier submission up again and reattaches to it if it exists."
        )

    def _resume_at(self, moment: float, state: SubmitState) -> NoReturn:
        from airflow_provider_nanogpt.triggers.wait import WaitUntilTrigger

        self.defer(
            trigger=WaitUntilTrigger(moment=moment, carry=state.to_carry()),
            method_name="execute_after_wait",
        )

    def _publish(self, context: Context, submission: Submission) -> None:
        self.remember_for_lineage(
            run_id=submission.run_id,
            model=submission.model or self.model,
            cost=submission.cost,
            currency=submission.currency,
        )
        from airflow_provider_nanogpt.job_card import (
            CHARGE_KEY_PREFIX,
            JOB_KEY,
            charge_record,
            new_card,
        )

        ti = context["ti"]
        ti.xcom_push(key="run_id", value=submission.run_id)
        ti.xcom_push(key="submission", value=submission.to_xcom())
        card = new_card(
            run_id=submission.run_id,
            conn_id=self.nanogpt_conn_id,
            model=submission.model or self.model,
            prompt=getattr(self, "prompt", None),
            cost=submission.cost,
            currency=submission.currency,
        )
        self.push_xcom(context, JOB_KEY, card)
        store = context.get("task_state_store")
        if store is not None and not submission.recovered and submission.cost is not None:
            # Kept past retries (which clear XComs), so spend totals include earlier tries.
            store.set(CHARGE_KEY_PREFIX + submission.run_id, charge_record(card))

    def _publish_refusal(self, context: Context, error: BaseException) -> None:
        """A job card for a submission NanoGPT refused, so the NanoGPT page lists it."""
        from airflow_provider_nanogpt.job_card import JOB_KEY, refused_card

        card = refused_card(
            conn_id=self.nanogpt_conn_id,
            model=self.model,
            prompt=getattr(self, "prompt", None),
            error=error,
        )
        context["ti"].xcom_push(key=JOB_KEY, value=card)

    def _publish_held_back(self, context: Context, error: BaseException, *, waiting: bool) -> None:
        """A job card for a task held back by the key's daily cap or a full shared budget:
        waiting for the reset, or failed by it. Nothing was submitted; a submission's card
        replaces it."""
        from airflow_provider_nanogpt.job_card import JOB_KEY, held_back_card

        card = held_back_card(
            conn_id=self.nanogpt_conn_id,
            model=self.model,
            prompt=getattr(self, "prompt", None),
            error=error,
            waiting=waiting,
        )
        try:
            context["ti"].xcom_push(key=JOB_KEY, value=card)
        except Exception as exc:  # the page's card must not hide the limit's own error
            self.log.warning("Could not record the job card (%s).", type(exc).__name__)

    def _log_submission(self, submission: Submission) -> None:
        from airflow_provider_nanogpt.delivery import format_money

        currency = submission.currency
        self.log.info(
            "Submitted NanoGPT video %s (model %s): pre-charged %s from %s, remaining balance %s.",
            submission.run_id,
            submission.model or self.model,
            format_money(submission.cost, currency),
            submission.payment_source or "the account",
            format_money(submission.remaining_balance, currency),
        )
        max_cost = self._limit("max_cost_usd")
        if max_cost is None or submission.cost is None:
            return
        if currency != "USD":
            # Only like is compared with like: a charge in XNO says nothing about a USD cap.
            self.log.warning(
                "NanoGPT charged %s for %s; max_cost_usd=%s was checked against the USD estimate "
                "only.",
                format_money(submission.cost, currency),
                submission.run_id,
                format_money(max_cost, "USD"),
            )
        elif submission.cost > max_cost:
            self.log.warning(
                "NanoGPT pre-charged %s for %s, above max_cost_usd=%s (the estimate was lower).",
                format_money(submission.cost, currency),
                submission.run_id,
                format_money(max_cost, "USD"),
            )

    def lineage_inputs(self) -> list[object]:
        from airflow_provider_nanogpt.media import MEDIA_KINDS

        return [
            location
            for kind in MEDIA_KINDS
            for name in (kind.url_parameter, kind.path_parameter)
            if (location := getattr(self, name, None))
        ]

    def lineage_request(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in REQUEST_FIELDS}

    def on_refunded(self, context: Context, run_id: str) -> None:
        # NanoGPT refunds the run: its reservation stops counting against the shared budgets
        # now, not when a retry or clear of this task happens to look at it again.
        self._after_answer(context, lambda budget: budget.release_run(run_id))

    def on_final_cost(
        self, context: Context, run_id: str, cost: float, currency: str | None
    ) -> None:
        # The shared budgets count what the video finally cost where it is above the pre-charge.
        self._after_answer(context, lambda budget: budget.settle_run(run_id, cost, currency))

    def _after_answer(self, context: Context, update: Callable[[BudgetGuard], None]) -> None:
        """Update the shared budgets after NanoGPT settled a run (delivered or refunded). It
        never fails the task: the budgets are read again here (the configuration may have
        changed while the video rendered), and a budget not updated keeps counting the
        pre-charge, never less."""
        try:
            budget = self._budget_guard(context, {})  # an update estimates nothing
            if budget is not None:
                update(budget)
        except Exception as exc:
            self.log.warning(
                "Could not update the shared budgets for this run (%s: %s); they keep counting "
                "what they counted.",
                type(exc).__name__,
                str(exc).splitlines()[0][:300] if str(exc) else "",
            )

    def on_delivered(self, context: Context) -> None:
        from airflow_provider_nanogpt.submission import RunRecords

        RunRecords(context.get("task_state_store")).mark_regenerate_after_clear()

    def on_kill(self) -> None:
        # Only reachable while waiting on the worker (deferrable=False); the trigger has its own.
        self.log.warning(
            "Stopped waiting for the NanoGPT video. NanoGPT has no cancel endpoint: the job keeps "
            "running and may be charged; a retry of this task reattaches to it."
        )


def _just_after(resets_at: float, deadline: float, now: float) -> float:
    """Seconds from ``now`` to wait for a reset at ``resets_at``: just after it, spread a little
    so a batch held back by the same limit does not return at once; never past ``deadline``."""
    return min(max(0.1, (resets_at - now) * random.uniform(1.0, 1.03)), deadline - now)


def _clock(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%H:%M:%S UTC")
