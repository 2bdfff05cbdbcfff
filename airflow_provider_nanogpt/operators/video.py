"""GenerateVideoOperator: submit a NanoGPT video once, then wait for it without a worker slot."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, NoReturn

from airflow.sdk import BaseOperator

from airflow_provider_nanogpt.links.video import VIDEO_URL_XCOM_KEY, NanoGPTVideoLink

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_nanogpt.api.responses import Submission
    from airflow_provider_nanogpt.api.status import VideoStatus
    from airflow_provider_nanogpt.durability import RunStore
    from airflow_provider_nanogpt.exceptions import NanoGPTRateLimitError
    from airflow_provider_nanogpt.hooks.nanogpt import NanoGPTHook
    from airflow_provider_nanogpt.triggers.video import VideoStatusTrigger

# A 429 whose Retry-After is at most this is slept on the worker; longer waits are deferred to the
# triggerer so rate-limited batches hold no worker slots.
RATE_LIMIT_SLEEP_ON_WORKER_SECONDS = 2.0
# A rate-limit window longer than this (a daily cap) fails the task instead of waiting for hours.
MAX_RATE_LIMIT_DEFERRAL_SECONDS = 900.0

# The framework's deferral timeout is only a backstop: the trigger's own deadline fires first and
# produces a clean timeout event with the run id.
DEFER_TIMEOUT_SLACK_SECONDS = 60


class GenerateVideoOperator(BaseOperator):
    """Generate a video with NanoGPT.

    Validates the request (no network), submits it once, pushes the run id to XCom at once, then
    waits: in the triggerer by default (``deferrable=True``, no worker slot held), or on the worker
    with ``deferrable=False``. A retry after the submission succeeded reattaches to the paid run
    (Airflow 3.3 task state store) instead of paying again.

    :param prompt: Text prompt. Required for text-to-video models.
    :param model: NanoGPT video model id, e.g. ``kling-video-v2``.
    :param duration: Model-specific duration, e.g. ``"5"`` (Kling) or ``"5s"`` (Veo).
    :param aspect_ratio: e.g. ``"16:9"``.
    :param resolution: e.g. ``"720p"``.
    :param negative_prompt: What to avoid.
    :param seed: Best-effort seed.
    :param image_url: Public http(s) image for image-to-video.
    :param image_path: Local path, ``file://`` or ObjectStoragePath URI of an image (max 4 MB),
        sent inline as ``imageDataUrl``.
    :param extra_params: Model-specific fields passed through as given (cfg_scale, num_frames, …).
    :param nanogpt_conn_id: The ``nanogpt`` connection.
    :param wait_for_completion: False returns the run id right after submitting.
    :param deferrable: Wait in the triggerer (default) instead of on the worker.
    :param poll_interval: Seconds between status checks (the floor; estimates may stretch it).
    :param timeout: Seconds from submission until the video must be ready.
    :param output_path: Where to save the video (path, ``file://``, ``s3://``, … templated).
    :param validate: Check the request against the documented model rules before sending.
    :param min_balance_usd: Fail before submitting when the account balance is below this.
    :param max_cost_usd: Fail before submitting when the estimated cost is above this (fails
        closed when the catalog pricing gives no estimate).

    On success, every ``Asset`` in ``outlets`` gets an event whose ``extra`` holds ``run_id``,
    ``video_url``, ``output_path`` and ``model``, for data-aware downstream DAGs.
    """

    template_fields: Sequence[str] = (
        "prompt",
        "model",
        "duration",
        "aspect_ratio",
        "resolution",
        "negative_prompt",
        "seed",
        "image_url",
        "image_path",
        "extra_params",
        "output_path",
        "nanogpt_conn_id",
        "min_balance_usd",
        "max_cost_usd",
    )
    template_fields_renderers = {"extra_params": "json", "prompt": "txt"}
    operator_extra_links = (NanoGPTVideoLink(),)
    ui_color = "#f2e3ff"

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
        extra_params: Mapping[str, Any] | None = None,
        nanogpt_conn_id: str = "nanogpt_default",
        wait_for_completion: bool = True,
        deferrable: bool = True,
        poll_interval: float = 5.0,
        timeout: float = 600.0,
        output_path: Any = None,
        validate: bool = True,
        min_balance_usd: float | None = None,
        max_cost_usd: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if poll_interval <= 0:
            raise ValueError(f"poll_interval must be positive, got {poll_interval!r}")
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout!r}")
        self.model = model
        self.prompt = prompt
        self.duration = duration
        self.aspect_ratio = aspect_ratio
        self.resolution = resolution
        self.negative_prompt = negative_prompt
        self.seed = seed
        self.image_url = image_url
        self.image_path = image_path
        self.extra_params = extra_params
        self.nanogpt_conn_id = nanogpt_conn_id
        self.wait_for_completion = wait_for_completion
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.output_path = output_path
        self.validate = validate
        self.min_balance_usd = min_balance_usd
        self.max_cost_usd = max_cost_usd

    def _limit(self, name: str) -> float | None:
        """A templated money limit as a number (Jinja renders text unless native rendering)."""
        value = getattr(self, name)
        if value is None or (isinstance(value, str) and value.strip() in ("", "None")):
            return None
        try:
            return float(value)
        except (TypeError, ValueError):
            from airflow_provider_nanogpt.exceptions import NanoGPTValidationError

            raise NanoGPTValidationError(f"{name}={value!r} is not a number") from None

    @cached_property
    def hook(self) -> NanoGPTHook:
        from airflow_provider_nanogpt.hooks.nanogpt import NanoGPTHook

        return NanoGPTHook(self.nanogpt_conn_id)

    # --- request -----------------------------------------------------------------------------

    def build_payload(self) -> dict[str, Any]:
        """The validated request body. Reads ``image_path``; makes no call to NanoGPT."""
        from airflow_provider_nanogpt.exceptions import NanoGPTValidationError
        from airflow_provider_nanogpt.images import image_data_url
        from airflow_provider_nanogpt.request import build_payload, check_image_url
        from airflow_provider_nanogpt.validation import validate_payload

        if self.image_url and self.image_path:
            raise NanoGPTValidationError(
                "Pass either image_url or image_path, not both. Nothing was sent."
            )
        if self.image_url:
            check_image_url(self.image_url)
        fields: dict[str, Any] = {
            "model": self.model,
            "prompt": self.prompt,
            "duration": self.duration,
            "aspect_ratio": self.aspect_ratio,
            "resolution": self.resolution,
            "negative_prompt": self.negative_prompt,
            "seed": self.seed,
            "image_url": self.image_url,
            "extra_params": self.extra_params,
        }
        if self.validate:
            # Check everything that needs no file read first, so a bad request fails fast.
            probe = build_payload(**fields, image_data_url="data:" if self.image_path else None)
            validate_payload(probe)
        data_url = image_data_url(self.image_path) if self.image_path else None
        return build_payload(**fields, image_data_url=data_url)

    # --- execution ---------------------------------------------------------------------------

    def execute(self, context: Context) -> Any:
        from airflow_provider_nanogpt.durability import RunStore
        from airflow_provider_nanogpt.request import fingerprint

        payload = self.build_payload()
        request_fingerprint = fingerprint(payload)
        store = RunStore(context)
        submission = self._reattach(context, store, payload, request_fingerprint)
        if submission is None:
            submission = self._submit(context, store, payload, request_fingerprint)
        self._publish(context, submission)
        if not self.wait_for_completion:
            store.mark_delivered()
            return submission.run_id
        return self._wait(context, submission.run_id)

    def _task_identity(self, context: Context) -> str:
        ti = context["ti"]
        return f"{ti.dag_id}/{ti.run_id}/{ti.task_id}/{getattr(ti, 'map_index', -1)}"

    def _reattach(
        self,
        context: Context,
        store: RunStore,
        payload: Mapping[str, Any],
        request_fingerprint: str,
    ) -> Submission | None:
        """The run an earlier attempt of this task already paid for, if it can still deliver."""
        from airflow_provider_nanogpt.api.responses import Submission
        from airflow_provider_nanogpt.api.status import VideoState
        from airflow_provider_nanogpt.request import correlation_id

        record = store.load()
        candidate: Submission | None = None
        if record is not None and not record.delivered:
            if record.fingerprint != request_fingerprint:
                self.log.info(
                    "The request changed since run %s was submitted; submitting a new video.",
                    record.run_id,
                )
                return None
            candidate = Submission(
                run_id=record.run_id, model=record.model, cost=record.cost, recovered=True
            )
        elif record is None and context["ti"].try_number > 1:
            # No record of an earlier attempt's run: before Airflow 3.3 there is no state store,
            # and even on 3.3 a worker can die between NanoGPT accepting the job and the record
            # being written. NanoGPT's recover endpoint finds a run carrying this task's tag.
            tag = correlation_id(self._task_identity(context), request_fingerprint)
            for run in self.hook.recover_runs(
                model=payload.get("model"), limit=10, conversation_uuid=tag
            ):
                if run.conversation_uuid == tag and run.state is not VideoState.FAILED:
                    candidate = Submission(run_id=run.run_id, model=run.model, recovered=True)
                    break
        if candidate is None:
            return None
        state = self.hook.get_video_status(candidate.run_id).state
        if state in (VideoState.FAILED, VideoState.CANCELLED):
            self.log.info(
                "Run %s from an earlier attempt ended %s; submitting a new video.",
                candidate.run_id,
                state.value,
            )
            return None
        self.log.info(
            "Reattaching to NanoGPT run %s from an earlier attempt (%s); not submitting again.",
            candidate.run_id,
            state.value,
        )
        return candidate

    def _submit(
        self,
        context: Context,
        store: RunStore,
        payload: Mapping[str, Any],
        request_fingerprint: str,
    ) -> Submission:
        from airflow_provider_nanogpt.budget import enforce_budget
        from airflow_provider_nanogpt.completion import format_money
        from airflow_provider_nanogpt.durability import StoredRun
        from airflow_provider_nanogpt.exceptions import NanoGPTRateLimitError
        from airflow_provider_nanogpt.request import correlation_id

        max_cost = self._limit("max_cost_usd")
        enforce_budget(
            self.hook,
            payload,
            min_balance_usd=self._limit("min_balance_usd"),
            max_cost_usd=max_cost,
            log=self.log,
        )
        tag = correlation_id(self._task_identity(context), request_fingerprint)
        try:
            submission = self.hook.submit_video(
                payload,
                correlation_id=tag,
                max_rate_limit_sleep=RATE_LIMIT_SLEEP_ON_WORKER_SECONDS
                if self.deferrable
                else None,
            )
        except NanoGPTRateLimitError as exc:
            self._defer_for_rate_limit(exc)
        store.save(
            StoredRun(
                run_id=submission.run_id,
                fingerprint=request_fingerprint,
                model=submission.model or self.model,
                cost=submission.cost,
            )
        )
        self.log.info(
            "Submitted NanoGPT video %s (model %s): pre-charged %s from %s, remaining balance %s.",
            submission.run_id,
            submission.model or self.model,
            format_money(submission.cost),
            submission.payment_source or "the account",
            format_money(submission.remaining_balance),
        )
        if max_cost is not None and submission.cost is not None and submission.cost > max_cost:
            self.log.warning(
                "NanoGPT pre-charged %s for %s, above max_cost_usd=%s (the estimate was lower).",
                format_money(submission.cost),
                submission.run_id,
                format_money(max_cost),
            )
        return submission

    def _defer_for_rate_limit(self, exc: NanoGPTRateLimitError) -> NoReturn:
        """Wait out a rate-limit window in the triggerer, then submit again.

        A 429 proves nothing was created, so resubmitting can never pay twice. Jitter spreads a
        rate-limited batch over the window instead of returning all at once.
        """
        from airflow.providers.standard.triggers.temporal import DateTimeTrigger

        wait = exc.retry_after if exc.retry_after is not None else 30.0
        if not self.deferrable or wait > MAX_RATE_LIMIT_DEFERRAL_SECONDS:
            raise exc
        # Retry-After names when a slot frees; come back just after it, a little spread out.
        wait = max(0.1, wait * random.uniform(1.0, 1.03))
        self.log.info(
            "NanoGPT is rate limiting submissions; waiting %.1f s in the triggerer.", wait
        )
        moment = datetime.now(UTC) + timedelta(seconds=wait)
        self.defer(
            trigger=DateTimeTrigger(moment=moment),
            method_name="execute_after_rate_limit",
        )

    def execute_after_rate_limit(
        self, context: Context, event: dict[str, Any] | None = None
    ) -> Any:
        return self.execute(context)

    def _publish(self, context: Context, submission: Submission) -> None:
        ti = context["ti"]
        ti.xcom_push(key="run_id", value=submission.run_id)
        ti.xcom_push(key="submission", value=submission.to_xcom())
        # The video link reads this key at every deferral; an empty value means "not ready yet".
        ti.xcom_push(key=VIDEO_URL_XCOM_KEY, value="")

    def _wait(self, context: Context, run_id: str) -> Any:
        from airflow_provider_nanogpt.completion import event_for

        status = self.hook.get_video_status(run_id)
        if status.is_terminal:
            return self._complete(context, event_for(status), status)
        trigger = self._trigger(run_id)
        if self.deferrable:
            self.defer(
                trigger=trigger,
                method_name="execute_complete",
                timeout=timedelta(
                    seconds=self.timeout + 2 * self.poll_interval + DEFER_TIMEOUT_SLACK_SECONDS
                ),
            )
        # Worker-side wait: the very same polling loop as the triggerer, run here.
        return self._complete(context, asyncio.run(trigger._wait()), None)

    def _trigger(self, run_id: str) -> VideoStatusTrigger:
        from airflow_provider_nanogpt.triggers.video import VideoStatusTrigger

        now = time.time()
        return VideoStatusTrigger(
            run_id=run_id,
            nanogpt_conn_id=self.nanogpt_conn_id,
            poll_interval=self.poll_interval,
            end_time=now + self.timeout,
            started_at=now,
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        from airflow_provider_nanogpt.completion import validate_event

        return self._complete(context, validate_event(event), None)

    def on_kill(self) -> None:
        # Only reachable while waiting on the worker (deferrable=False); the trigger has its own.
        self.log.warning(
            "Stopped waiting for the NanoGPT video. NanoGPT has no cancel endpoint: the job keeps "
            "running and may be charged; a retry of this task reattaches to it."
        )

    def _precharged_cost(self, context: Context) -> float | None:
        ti = context["ti"]
        submission = ti.xcom_pull(
            task_ids=ti.task_id, key="submission", map_indexes=getattr(ti, "map_index", -1)
        )
        cost = submission.get("cost") if isinstance(submission, Mapping) else None
        return float(cost) if isinstance(cost, int | float) else None

    def _complete(
        self, context: Context, event: Mapping[str, Any], status: VideoStatus | None
    ) -> dict[str, Any]:
        from airflow_provider_nanogpt.completion import complete
        from airflow_provider_nanogpt.durability import RunStore

        result = complete(
            context,
            event,
            status,
            hook=self.hook,
            model=self.model,
            output_path=self.output_path,
            outlets=self.outlets,
            log=self.log,
            precharged_cost=self._precharged_cost(context),
        )
        RunStore(context).mark_delivered()
        return result
