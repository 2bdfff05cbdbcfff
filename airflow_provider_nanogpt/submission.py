"""Submitting a NanoGPT video at most once per paid result: the one place that decides whether to
send, reattach, or wait and look again.

NanoGPT has no idempotency key and no cancel endpoint, and it creates jobs asynchronously. So:

* Every submission carries a tag (NanoGPT's ``conversationUUID``) derived from the task instance
  and a fingerprint of the request, and is recorded *before* it is sent (write-ahead, in Airflow
  3.3's task state store), so any later attempt knows a send may have happened.
* A POST is sent again only when NanoGPT proved nothing was created: a 429 from the submit
  endpoint, a 4xx error answer, or a connection that was never established. Anything else after
  the request left is *uncertain*: the attempt fails with ``NanoGPTSubmissionUncertainError`` and
  the record stays. A later try looks the tag up first; it sends again only if the lookup itself
  succeeded, found nothing of ours, and the settle time has passed since the uncertain send
  ("not listed yet" is not "not created").
* A recorded run that is queued, running or COMPLETED is reattached, never paid for again. Only a
  run that ended FAILED or CANCELLED (refunded) leads to a new submission.
* A delivered run is marked ``regenerate_after_clear``. Only a *clear* after that makes a new
  video: a retry in the same
  clear generation (a failure after delivery: a ``post_execute`` error, a worker killed before
  Airflow recorded success) reattaches to the delivered run and delivers it again. With
  ``[state_store] clear_on_success`` the record is wiped instead, which means the same: the tag
  includes the clear generation, so the new submission never finds the old run.
* Without a state store (Airflow before 3.3) a retry looks the tag up instead of reading a record.

Nothing here imports Airflow: the task's identity and its store come in as plain objects.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from airflow_provider_nanogpt import metrics
from airflow_provider_nanogpt.api.coerce import as_number, as_str
from airflow_provider_nanogpt.api.responses import RecoveredRun, Submission
from airflow_provider_nanogpt.api.retry import proves_nothing_created
from airflow_provider_nanogpt.api.status import VideoState
from airflow_provider_nanogpt.exceptions import (
    NanoGPTError,
    NanoGPTNotFoundError,
    NanoGPTPermanentError,
    NanoGPTRateLimitError,
    NanoGPTSubmissionUncertainError,
    NanoGPTSubmissionUnresolvedError,
)

if TYPE_CHECKING:
    from airflow_provider_nanogpt.hooks.nanogpt import NanoGPTHook
    from airflow_provider_nanogpt.shared_budget import BudgetGuard

STATE_KEY = "nanogpt_video_run"
DEFAULT_SETTLE_SECONDS = 60.0
# How much earlier than our own clock says NanoGPT's clock may date a run we created.
CLOCK_SKEW_SECONDS = 30.0
LOOKUP_LIMIT = 50
# A rate-limited lookup is not slept out inside the call for longer than this: it raises
# NanoGPTRateLimitError, and the operator waits (deferred when deferrable) and looks again.
LOOKUP_MAX_RATE_LIMIT_SLEEP = 5.0
# Fields that tag or route a request but do not change which video is generated.
_NOT_FINGERPRINTED = frozenset({"conversationUUID"})
_TAG_NAMESPACE = uuid.UUID("5b0c0a57-6d8e-4a43-9a57-0b5f3c1f7a10")
_ENDED_WITHOUT_CHARGE = (VideoState.FAILED, VideoState.CANCELLED)


# --- identity -----------------------------------------------------------------------------------


def fingerprint(payload: Mapping[str, Any]) -> str:
    """A stable hash of what would be generated, to tell a retry from a changed request."""
    relevant = {k: v for k, v in payload.items() if k not in _NOT_FINGERPRINTED}
    canonical = json.dumps(relevant, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def submission_tag(identity: str, request_fingerprint: str, generation: int | None) -> str:
    """The ``conversationUUID`` of this task instance's submissions of this request.

    ``generation`` (the first try number since the task was last cleared) makes a cleared task's
    new submission distinct from the run it delivered before. It is left out when no state store
    remembers the tag, so that any later try can derive it again.
    """
    suffix = "" if generation is None else f"|generation={generation}"
    return str(uuid.uuid5(_TAG_NAMESPACE, f"{identity}|{request_fingerprint}{suffix}"))


@dataclass(frozen=True)
class TaskAttempt:
    """Who is submitting: one try of one task instance."""

    identity: str  # dag / run / task / map index
    try_number: int
    generation: int | None  # first try number since the last clear; None when unknown
    started_at: float  # epoch seconds this try began
    # Epoch seconds before which no run of this task instance can exist (the DAG run's start).
    not_before: float | None = None


# --- the record -----------------------------------------------------------------------------------


class StateStore(Protocol):
    def get(self, key: str, default: Any = None) -> Any: ...

    def set(self, key: str, value: Any) -> None: ...

    def delete(self, key: str) -> None: ...


@dataclass(frozen=True)
class RunRecord:
    """What this task instance sent last. ``run_id`` is None while the outcome is uncertain."""

    fingerprint: str
    tag: str | None
    tag_is_users: bool
    sent_at: float
    try_number: int
    run_id: str | None = None
    model: str | None = None
    cost: float | None = None
    payment_source: str | None = None
    # Set once the run is delivered: a clear after that asks for a new video (a retry does not).
    # Stored as "delivered" by earlier releases.
    regenerate_after_clear: bool = False
    # The clear generation this run is for: the sending try's, or a later one's that took the
    # run over (a clear before delivery). None in records of earlier releases.
    generation: int | None = None

    @classmethod
    def from_json(cls, value: object) -> RunRecord | None:
        """Read a stored record, including the shape earlier releases wrote (run id only)."""
        if not isinstance(value, Mapping) or not isinstance(value.get("fingerprint"), str):
            return None
        run_id = as_str(value.get("run_id"))
        tag = as_str(value.get("tag"))
        if run_id is None and tag is None:
            return None
        return cls(
            fingerprint=value["fingerprint"],
            tag=tag,
            tag_is_users=bool(value.get("tag_is_users", False)),
            sent_at=as_number(value.get("sent_at")) or 0.0,
            try_number=int(as_number(value.get("try_number")) or 0),
            run_id=run_id,
            model=as_str(value.get("model")),
            cost=as_number(value.get("cost")),
            payment_source=as_str(value.get("payment_source")),
            regenerate_after_clear=bool(
                value.get("regenerate_after_clear", value.get("delivered", False))
            ),
            generation=_int_or_none(value.get("generation")),
        )

    def submission(self) -> Submission:
        assert self.run_id is not None
        return Submission(
            run_id=self.run_id,
            model=self.model,
            cost=self.cost,
            payment_source=self.payment_source,
            recovered=True,
        )


class RunRecords:
    """The task state store's view of this task instance's record (absent before Airflow 3.3).

    Reads and writes are not guarded: if the store fails, the attempt fails before sending.
    """

    def __init__(self, store: StateStore | None) -> None:
        self._store = store

    @property
    def available(self) -> bool:
        return self._store is not None

    def load(self) -> RunRecord | None:
        return None if self._store is None else RunRecord.from_json(self._store.get(STATE_KEY))

    def save(self, record: RunRecord) -> None:
        if self._store is not None:
            self._store.set(STATE_KEY, asdict(record))

    def forget(self) -> None:
        if self._store is not None:
            self._store.delete(STATE_KEY)

    def mark_regenerate_after_clear(self) -> None:
        """The recorded run is delivered: from now on only a clear makes a new video."""
        record = self.load()
        if record is not None and not record.regenerate_after_clear:
            self.save(replace(record, regenerate_after_clear=True))


# --- decisions ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attached:
    """The run this attempt delivers: just submitted, or an earlier one that is still good."""

    submission: Submission
    reattached: bool


@dataclass(frozen=True)
class LookUpLater:
    """Nothing found yet, and too early to conclude nothing was created: ask again at ``at``."""

    at: float
    reason: str


Decision = Attached | LookUpLater


def find_or_submit(
    hook: NanoGPTHook,
    records: RunRecords,
    attempt: TaskAttempt,
    payload: Mapping[str, Any],
    *,
    log: Any,
    settle_seconds: float = DEFAULT_SETTLE_SECONDS,
    before_send: Callable[[], object] = lambda: None,
    max_rate_limit_sleep: float | None = None,
    deadline: float | None = None,
    budget: BudgetGuard | None = None,
) -> Decision:
    """The run this attempt should deliver, sending the request only when that cannot pay twice.

    ``budget``: the shared budgets' guard. A send reserves its estimate first (one reservation
    per tag and sending try), settles it to the charge, and releases it when NanoGPT proved
    nothing was created or refunded the run; a reattached run reserves nothing.

    ``deadline`` (epoch seconds): no retry wait inside the calls made here goes past it; the
    error that would have been waited out is raised instead.

    Raises ``NanoGPTRateLimitError`` when the submit endpoint rate limited the request (nothing
    was created) or the lookup of an earlier send was rate limited (nothing was sent): either way
    the caller may wait and call again. ``NanoGPTSubmissionUncertainError`` when a send or a
    lookup left the outcome open, and ``NanoGPTSubmissionUnresolvedError`` when only a
    person can tell which run is this task's.
    """
    request_fingerprint = fingerprint(payload)
    users_tag = as_str(payload.get("conversationUUID"))

    def look_up(tag: str) -> list[RecoveredRun]:
        sleep = LOOKUP_MAX_RATE_LIMIT_SLEEP
        return _look_up(
            hook,
            tag,
            sleep if max_rate_limit_sleep is None else min(sleep, max_rate_limit_sleep),
            deadline,
        )

    record = records.load()
    if (
        record is not None
        and record.regenerate_after_clear
        and _cleared_since(record, attempt, log)
    ):
        record = None  # a clear after delivering asks for a new video
    if record is not None:
        if record.fingerprint != request_fingerprint:
            log.warning(
                "The request changed since %s; submitting the new request. The earlier one is "
                "left as it is (NanoGPT may charge it).",
                _describe(record),
            )
        elif record.run_id is not None:
            if (attached := _reattach(hook, record, log, deadline)) is not None:
                _take_over(records, record, attempt)
                return attached
            if budget is not None and record.tag is not None:
                budget.release(record.tag, record.try_number)  # refunded
        else:
            decision = _settle_uncertain(look_up, records, record, attempt, settle_seconds, log)
            if decision is not None:
                if isinstance(decision, Attached):
                    _take_over(records, records.load() or record, attempt)
                    if budget is not None and record.tag is not None:
                        # That send did make (and pay for) this run: its reservation is spent,
                        # not left open; the lookup names no charge, so the estimate counts.
                        budget.settle(
                            record.tag, record.try_number, None, None, decision.submission.run_id
                        )
                return decision
            if budget is not None and record.tag is not None:
                # Settled with nothing found: that send made no video, so it holds no budget.
                budget.release(record.tag, record.try_number)
    elif record is None and not records.available and attempt.try_number > 1:
        tag = users_tag or submission_tag(attempt.identity, request_fingerprint, None)
        decision = _look_up_earlier_try(
            look_up, tag, bool(users_tag), attempt, settle_seconds, payload.get("model"), log
        )
        if decision is not None:
            return decision
    return _send(
        hook,
        records,
        attempt,
        payload,
        request_fingerprint,
        users_tag,
        before_send=before_send,
        max_rate_limit_sleep=max_rate_limit_sleep,
        deadline=deadline,
        log=log,
        budget=budget,
    )


def _cleared_since(record: RunRecord, attempt: TaskAttempt, log: Any) -> bool:
    """Whether the task was cleared after ``record``'s run was sent (only a clear makes a new
    video: a retry of the try that delivered, after a failure past delivery, gets the same one).
    """
    if attempt.generation is None:
        log.warning(
            "Cannot tell whether the task was cleared since %s was delivered; delivering it "
            "again rather than paying for a new video.",
            _describe(record),
        )
        return False
    served = record.try_number if record.generation is None else record.generation
    return served < attempt.generation


def _take_over(records: RunRecords, record: RunRecord, attempt: TaskAttempt) -> None:
    """Record that this clear generation delivers ``record``'s run, sent before a clear: a retry
    after its delivery is then told from a clear after it."""
    if attempt.generation is not None and record.generation != attempt.generation:
        records.save(replace(record, generation=attempt.generation))


def _reattach(
    hook: NanoGPTHook, record: RunRecord, log: Any, deadline: float | None
) -> Attached | None:
    """The recorded run, unless it ended without a charge (then a new one is due)."""
    run_id = record.run_id
    try:
        state = hook.get_video_status(str(run_id), deadline=deadline).state
    except NanoGPTNotFoundError:
        state = VideoState.UNKNOWN  # a brand-new run; the wait's 404 rule decides
    if state in _ENDED_WITHOUT_CHARGE:
        log.info(
            "Run %s from an earlier attempt ended %s (NanoGPT refunds it); submitting a new video.",
            run_id,
            state.value,
        )
        return None
    log.info(
        "Reattaching to NanoGPT run %s from an earlier attempt (%s); not submitting again.",
        run_id,
        state.value,
    )
    return Attached(record.submission(), reattached=True)


def _settle_uncertain(
    look_up: Callable[[str], list[RecoveredRun]],
    records: RunRecords,
    record: RunRecord,
    attempt: TaskAttempt,
    settle_seconds: float,
    log: Any,
) -> Decision | None:
    """Resolve a recorded send whose outcome is unknown; None means nothing was created."""
    if attempt.try_number <= record.try_number:
        raise NanoGPTSubmissionUncertainError(
            f"{_describe(record)} has an unknown outcome and this try sent it: it is not sent "
            "again in the same try."
        )
    assert record.tag is not None
    runs = look_up(record.tag)
    found = _match(runs, record.tag, record.tag_is_users, record.sent_at - CLOCK_SKEW_SECONDS)
    if found is not None:
        records.save(replace(record, run_id=found.run_id, model=found.model or record.model))
        log.info(
            "The uncertain submission of try %d did create run %s; reattaching to it.",
            record.try_number,
            found.run_id,
        )
        return Attached(Submission(run_id=found.run_id, model=found.model, recovered=True), True)
    settle_at = record.sent_at + settle_seconds
    if time.time() < settle_at:
        return LookUpLater(settle_at, f"NanoGPT does not list {_describe(record)} yet")
    log.warning(
        "NanoGPT lists no run tagged %s %.0f s after %s; nothing was created, sending it again.",
        record.tag,
        time.time() - record.sent_at,
        _describe(record),
    )
    return None


def _look_up_earlier_try(
    look_up: Callable[[str], list[RecoveredRun]],
    tag: str,
    tag_is_users: bool,
    attempt: TaskAttempt,
    settle_seconds: float,
    model: object,
    log: Any,
) -> Decision | None:
    """Without a record, an earlier try may have sent the request: look for its run by tag."""
    runs = look_up(tag)
    since = None if attempt.not_before is None else attempt.not_before - CLOCK_SKEW_SECONDS
    found = _match(runs, tag, tag_is_users, since)
    if found is not None:
        log.info(
            "Found NanoGPT run %s (%s) from an earlier try of this task; reattaching to it.",
            found.run_id,
            found.state.value,
        )
        return Attached(
            Submission(run_id=found.run_id, model=found.model or as_str(model), recovered=True),
            reattached=True,
        )
    # This try began after any earlier try's send: waiting from its start is waiting long enough.
    settle_at = attempt.started_at + settle_seconds
    if time.time() < settle_at:
        return LookUpLater(settle_at, f"NanoGPT lists no run tagged {tag} yet")
    log.info(
        "NanoGPT lists no run tagged %s %.0f s into try %d; nothing was created, sending it again.",
        tag,
        time.time() - attempt.started_at,
        attempt.try_number,
    )
    return None


def _look_up(
    hook: NanoGPTHook, tag: str, max_rate_limit_sleep: float, deadline: float | None
) -> list[RecoveredRun]:
    """NanoGPT's recent runs carrying ``tag``; a failed lookup never counts as "nothing"."""
    try:
        return hook.recover_runs(
            limit=LOOKUP_LIMIT,
            conversation_uuid=tag,
            max_rate_limit_sleep=max_rate_limit_sleep,
            deadline=deadline,
        )
    except (NanoGPTPermanentError, NanoGPTRateLimitError):
        # A 429 tells when to ask again: the caller waits it out instead of failing the try
        # (a batch's retries would otherwise hit the 20-a-minute lookup limit back to back).
        raise
    except NanoGPTError as exc:
        raise NanoGPTSubmissionUncertainError(
            f"Could not look up NanoGPT runs tagged {tag} ({exc}), so whether an earlier "
            "submission created a job is still unknown. Nothing was sent; the next try looks "
            "again."
        ) from exc


def _match(
    runs: list[RecoveredRun], tag: str, tag_is_users: bool, since: float | None
) -> RecoveredRun | None:
    """Our run among ``runs``, None when provably none exists; raises when it cannot be told.

    ``runs`` answered a lookup filtered by ``tag``. A row that names no ``conversationUUID``
    (absent, null, empty, not a string) may still be ours: only a row naming another tag, ended
    refunded, or created before ``since`` is provably not.
    """
    alive: list[RecoveredRun] = []
    undated: list[RecoveredRun] = []
    untagged: list[RecoveredRun] = []
    for run in runs:
        if run.state in _ENDED_WITHOUT_CHARGE:
            continue
        if run.conversation_uuid is not None and run.conversation_uuid != tag:
            continue
        created = _epoch(run.created_at)
        if created is not None and since is not None and created < since:
            continue
        if run.conversation_uuid is None:
            untagged.append(run)
        elif created is None:
            undated.append(run)
        else:
            alive.append(run)
    if tag_is_users and (alive or undated):
        raise NanoGPTSubmissionUnresolvedError(
            f"NanoGPT lists {_names(alive + undated)} with conversationUUID={tag!r}, which this "
            "task sets itself, so the provider cannot tell whether one is this task's video. "
            f"Check them (GET /api/generate-video/recover?conversationUUID={tag}). If none is, "
            "clear the task without its own conversationUUID to submit again."
        )
    if alive:
        return max(alive, key=lambda run: _epoch(run.created_at) or 0.0)
    if undated:
        raise NanoGPTSubmissionUnresolvedError(
            f"NanoGPT lists {_names(undated)} tagged {tag} without a readable creation time, so "
            "the provider cannot tell whether one is this submission's job. Check them before "
            "clearing the task."
        )
    if untagged:
        raise NanoGPTSubmissionUnresolvedError(
            f"NanoGPT's lookup of runs tagged {tag} returned {_names(untagged)} without a "
            "conversationUUID, so the provider cannot tell whether one is this submission's job "
            "and sends nothing rather than risk paying twice. Check them "
            f"(GET /api/generate-video/recover?conversationUUID={tag}) before clearing the task."
        )
    return None


def _send(
    hook: NanoGPTHook,
    records: RunRecords,
    attempt: TaskAttempt,
    payload: Mapping[str, Any],
    request_fingerprint: str,
    users_tag: str | None,
    *,
    before_send: Callable[[], object],
    max_rate_limit_sleep: float | None,
    deadline: float | None,
    log: Any,
    budget: BudgetGuard | None = None,
) -> Attached:
    before_send()
    generation = attempt.generation if records.available else None
    tag = users_tag or submission_tag(attempt.identity, request_fingerprint, generation)
    if budget is not None:
        budget.reserve_to_send(tag, attempt.try_number)  # raises, before sending, when over
    record = RunRecord(
        fingerprint=request_fingerprint,
        tag=tag,
        tag_is_users=users_tag is not None,
        sent_at=time.time(),
        try_number=attempt.try_number,
        model=as_str(payload.get("model")),
        generation=attempt.generation,
    )
    records.save(record)  # before sending: a crash mid-request leaves a trace to look up
    try:
        submission = hook.submit_video(
            {**payload, "conversationUUID": tag},
            max_rate_limit_sleep=max_rate_limit_sleep,
            deadline=deadline,
        )
    except NanoGPTError as exc:
        metrics.submitted(hook.nanogpt_conn_id, record.model, metrics.refusal_outcome(exc))
        if proves_nothing_created(exc):
            records.forget()
            if budget is not None:
                budget.release(tag, attempt.try_number)
            # NanoGPT's own refusal (an HTTP answer), not a connection never made.
            exc.refused_submission = (
                isinstance(exc, NanoGPTPermanentError) and exc.http_status is not None
            )
            raise
        if isinstance(exc, NanoGPTPermanentError):
            # Uncertain, and a retry would meet the same answer (a redirect, say): a person
            # fixes the cause, then a clear settles the send as usual.
            raise NanoGPTSubmissionUnresolvedError(
                f"{_uncertain(exc, record, users_tag)} Fix the cause first: retrying as it is "
                "would fail the same way."
            ) from exc
        raise NanoGPTSubmissionUncertainError(_uncertain(exc, record, users_tag)) from exc
    model = submission.model or record.model
    metrics.submitted(hook.nanogpt_conn_id, model, "accepted")
    metrics.charged(hook.nanogpt_conn_id, model, submission.cost, submission.currency)
    records.save(
        replace(
            record,
            run_id=submission.run_id,
            model=submission.model or record.model,
            cost=submission.cost,
            payment_source=submission.payment_source,
        )
    )
    if budget is not None:
        budget.settle(
            tag, attempt.try_number, submission.cost, submission.currency, submission.run_id
        )
    return Attached(submission, reattached=False)


def _uncertain(exc: NanoGPTError, record: RunRecord, users_tag: str | None) -> str:
    head = (
        f"NanoGPT may have created, and charged, this video: the submission failed after it was "
        f"sent ({exc}). It was not sent again."
    )
    if users_tag:
        return (
            f"{head} This task sets its own conversationUUID={users_tag!r}, so its run cannot be "
            f"told apart from others with that tag: check GET /api/generate-video/recover?"
            f"conversationUUID={users_tag} or the NanoGPT dashboard. A retry sends again only if "
            "that list shows no run created since this attempt."
        )
    return (
        f"{head} A retry of this task looks the job up by its tag {record.tag} and reattaches to "
        "it; it sends again only if NanoGPT's run list shows no such job after the settle time."
    )


def _describe(record: RunRecord) -> str:
    what = f"run {record.run_id}" if record.run_id else f"the submission tagged {record.tag}"
    return f"{what} (try {record.try_number})" if record.try_number else what


def _names(runs: list[RecoveredRun]) -> str:
    shown = ", ".join(f"{run.run_id} ({run.state.value.lower()})" for run in runs[:5])
    return f"run {shown}" if len(runs) == 1 else f"runs {shown}"


def _int_or_none(value: object) -> int | None:
    number = as_number(value)
    return None if number is None else int(number)


def _epoch(value: str | None) -> float | None:
    """Epoch seconds of an ISO-8601 timestamp; None when missing, unreadable or without a zone."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.timestamp() if parsed.tzinfo is not None else None
