"""Every metric the provider emits, through Airflow's own ``Stats`` (StatsD or OpenTelemetry,
whichever the deployment turned on under ``[metrics]``; nothing at all when neither is on).

This module owns the names, the tags and the import of ``Stats``; call sites call the small
named functions below, never ``Stats`` directly. docs/metrics.md lists the same names (a test
reads them from there, so the two cannot drift).

* ``Stats`` is imported on first emission, not at import: DAG files that use the operators are
  parsed constantly and must stay fast.
* A metric never fails a task: any error from the metrics backend is logged at debug and dropped.
* Tags are bounded and never secret: the connection id, the model, an outcome word, a budget
  name. Never the API key, a prompt, a run id or a URL.
* Money is counted in millionths of a US dollar (integers, which every StatsD server adds
  exactly), and only for amounts NanoGPT charged in USD: an amount in another or an unknown
  currency is counted by ``nanogpt.spend_not_usd``, never converted.
"""

from __future__ import annotations

import logging
import math
import re
from datetime import timedelta
from typing import Any

log = logging.getLogger(__name__)

PREFIX = "nanogpt."

SUBMISSIONS = PREFIX + "submissions"
REATTACHMENTS = PREFIX + "reattachments"
RATE_LIMIT_WAITS = PREFIX + "rate_limit_waits"
RATE_LIMIT_WAIT_TIME = PREFIX + "rate_limit_wait_time"
SPEND_USD_MICROS = PREFIX + "spend_usd_micros"
SPEND_NOT_USD = PREFIX + "spend_not_usd"
REFUNDS = PREFIX + "refunds"
REFUND_USD_MICROS = PREFIX + "refund_usd_micros"
QUEUE_TIME = PREFIX + "queue_time"
RENDER_TIME = PREFIX + "render_time"
STATUS_POLLS = PREFIX + "status_polls"
DOWNLOAD_BYTES = PREFIX + "download_bytes"
DOWNLOAD_TIME = PREFIX + "download_time"
BUDGET_RESERVED_USD_MICROS = PREFIX + "budget_reserved_usd_micros"
BUDGET_SETTLED_USD_MICROS = PREFIX + "budget_settled_usd_micros"
BUDGET_RELEASED_USD_MICROS = PREFIX + "budget_released_usd_micros"
BUDGET_EXCEEDED = PREFIX + "budget_exceeded"

USD_MICROS = 1_000_000
# The ``endpoint`` of a rate-limit wait the task takes between calls (see ``rate_limit_wait``).
TASK_WAIT = "task_wait"
UNKNOWN = "unknown"
# Airflow's stat names allow these characters only (airflow.metrics.validators).
_TAG_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-/]")
# Airflow refuses a stat name over 250 characters, tags included in InfluxDB mode.
TAG_VALUE_MAX_CHARS = 64


# --- the one door to Stats ------------------------------------------------------------------------


def _stats() -> Any:
    from airflow.providers.common.compat.sdk import Stats

    return Stats


def _incr(name: str, count: int, tags: dict[str, str]) -> None:
    try:
        _stats().incr(name, count=count, tags=tags)
    except Exception:  # a metric must never fail a task
        log.debug("Could not emit metric %s", name, exc_info=True)


def _timing(name: str, seconds: float, tags: dict[str, str]) -> None:
    try:
        _stats().timing(name, timedelta(seconds=max(0.0, seconds)), tags=tags)
    except Exception:  # a metric must never fail a task
        log.debug("Could not emit metric %s", name, exc_info=True)


def _label(value: object) -> str:
    """A tag value: the text given, or ``unknown`` (no tag is ever left out, so series stay
    consistent). Any character outside Airflow's stat-name set becomes ``_``, and it is cut at
    ``TAG_VALUE_MAX_CHARS``: in StatsD's InfluxDB mode the tags join the metric's name, and
    Airflow drops the whole metric when that name has another character (a space in a budget's
    name, say) or is too long."""
    if not isinstance(value, str) or not value.strip():
        return UNKNOWN
    return _TAG_UNSAFE.sub("_", value.strip())[:TAG_VALUE_MAX_CHARS]


def _tags(conn_id: str, **more: object) -> dict[str, str]:
    return {"conn_id": _label(conn_id), **{key: _label(value) for key, value in more.items()}}


def usd_micros(amount: float) -> int | None:
    """``amount`` USD in whole micro-dollars; None for an amount that is no money figure
    (NaN, infinite, negative, not a number)."""
    if isinstance(amount, bool) or not isinstance(amount, int | float):
        return None
    if not math.isfinite(amount) or amount < 0:
        return None
    return round(amount * USD_MICROS)


def _incr_usd(name: str, amount_usd: float, tags: dict[str, str]) -> None:
    """Count ``amount_usd`` as micro-dollars; an amount that is no money figure is left out (a
    metric never fails a task, and never counts a made-up figure)."""
    micros = usd_micros(amount_usd)
    if micros is None:
        log.debug("Not counting %s: %r is not a USD amount", name, amount_usd)
        return
    _incr(name, micros, tags)


# --- submission --------------------------------------------------------------------------------


def submitted(conn_id: str, model: str | None, outcome: str) -> None:
    """One submission sent: ``accepted`` (a job was created), ``daily_cap`` or ``refused``
    (NanoGPT proved none was), or ``uncertain`` (it may have been)."""
    _incr(SUBMISSIONS, 1, _tags(conn_id, model=model, outcome=outcome))


def refusal_outcome(exc: BaseException) -> str:
    """The ``outcome`` of a submission that failed: ``daily_cap`` (the API key's own daily cap
    refused it), ``refused`` (any other proof that nothing was created) or ``uncertain``."""
    from airflow_provider_nanogpt.api.retry import proves_nothing_created
    from airflow_provider_nanogpt.exceptions import NanoGPTDailyCapError

    if not proves_nothing_created(exc):
        return "uncertain"
    return "daily_cap" if isinstance(exc, NanoGPTDailyCapError) else "refused"


def reattached(conn_id: str, model: str | None) -> None:
    """A try picked up a run an earlier try had paid for, instead of submitting."""
    _incr(REATTACHMENTS, 1, _tags(conn_id, model=model))


def charged(
    conn_id: str,
    model: str | None,
    amount: float | None,
    currency: str | None,
    budget: str | None = None,
) -> None:
    """NanoGPT's pre-charge for a job just created. Only USD is summed as money."""
    if amount is None:
        return
    if currency == "USD":
        tags = _tags(conn_id, model=model)
        if budget:
            tags["budget"] = _label(budget)
        _incr_usd(SPEND_USD_MICROS, amount, tags)
    else:
        _incr(SPEND_NOT_USD, 1, _tags(conn_id, model=model, currency=currency))


def refunded(
    conn_id: str, model: str | None, outcome: str, amount: float | None, currency: str | None
) -> None:
    """A run this task paid for ended in a state NanoGPT refunds (failed, blocked, cancelled)."""
    _incr(REFUNDS, 1, _tags(conn_id, model=model, outcome=outcome))
    if amount is not None and currency == "USD":
        _incr_usd(REFUND_USD_MICROS, amount, _tags(conn_id, model=model))


def rate_limit_wait(conn_id: str | None, endpoint: str, seconds: float) -> None:
    """NanoGPT answered 429 and the provider waits ``seconds`` before asking ``endpoint`` (an
    API path, or ``download``) again; ``TASK_WAIT`` when the task itself waits, deferred or
    asleep, after the call gave up (a long Retry-After, the API key's daily cap)."""
    tags = _tags(conn_id or UNKNOWN, endpoint=endpoint)
    _incr(RATE_LIMIT_WAITS, 1, tags)
    _timing(RATE_LIMIT_WAIT_TIME, seconds, tags)


# --- waiting ---------------------------------------------------------------------------------


def status_polled(conn_id: str, outcome: object) -> None:
    """One status check, tagged with the state it read (or ``error``)."""
    state = getattr(outcome, "state", None)
    label = str(getattr(state, "value", "error")).lower()
    _incr(STATUS_POLLS, 1, _tags(conn_id, outcome=label))


class RunStages:
    """Queue and render times of one run, as a polling wait witnesses them.

    A stage is timed only when its start was seen: the queue from the wait's start until a poll
    first reads the run running (only if an earlier poll read it queued), the render from then
    until a poll reads it completed. Both are as precise as the poll interval.
    """

    def __init__(self, conn_id: str, model: str | None, waiting_since: float) -> None:
        self.conn_id = conn_id
        self.model = model
        self.waiting_since = waiting_since
        self.seen_queued = False
        self.running_since: float | None = None

    def observe(self, outcome: object, now: float) -> None:
        from airflow_provider_nanogpt.api.status import VideoState

        state = getattr(outcome, "state", None)
        model = self.model or getattr(outcome, "model", None)
        if state is VideoState.QUEUED:
            self.seen_queued = True
        elif state is VideoState.RUNNING and self.running_since is None:
            self.running_since = now
            if self.seen_queued:
                _timing(QUEUE_TIME, now - self.waiting_since, _tags(self.conn_id, model=model))
        elif state is VideoState.COMPLETED and self.running_since is not None:
            _timing(RENDER_TIME, now - self.running_since, _tags(self.conn_id, model=model))
            self.running_since = None  # timed once


# --- delivery --------------------------------------------------------------------------------


def downloaded(conn_id: str, size_bytes: int, seconds: float) -> None:
    """A video saved: its size and how long the download took (retries included)."""
    tags = _tags(conn_id)
    _incr(DOWNLOAD_BYTES, size_bytes, tags)
    _timing(DOWNLOAD_TIME, seconds, tags)


# --- budgets (called by the shared budgets' guard and by reconciliation) -----------------------


def _budget_tags(conn_id: str, budget: str, period: str) -> dict[str, str]:
    return _tags(conn_id, budget=budget, period=period)


def _incr_budget_micros(
    name: str,
    conn_id: str,
    budget: str,
    period: str,
    amount_micro: int,
    more: dict[str, str] | None = None,
) -> None:
    # The ledger's amounts are whole micro-dollars >= 0; anything else is never counted.
    if isinstance(amount_micro, bool) or not isinstance(amount_micro, int) or amount_micro < 0:
        log.debug("Not counting %s: %r is not a micro-USD amount", name, amount_micro)
        return
    if amount_micro == 0:  # a free video: nothing to add
        return
    tags = _budget_tags(conn_id, budget, period)
    tags.update({key: _label(value) for key, value in (more or {}).items()})
    _incr(name, amount_micro, tags)


def budget_reserved(conn_id: str, budget: str, period: str, amount_micro: int) -> None:
    """USD set aside from ``budget``'s ``period`` window before a submission."""
    _incr_budget_micros(BUDGET_RESERVED_USD_MICROS, conn_id, budget, period, amount_micro)


def budget_settled(conn_id: str, budget: str, period: str, amount_micro: int) -> None:
    """USD of a reservation turned into spend (what NanoGPT charged, or the estimate)."""
    _incr_budget_micros(BUDGET_SETTLED_USD_MICROS, conn_id, budget, period, amount_micro)


def budget_released(
    conn_id: str, budget: str, period: str, amount_micro: int, released_from: str
) -> None:
    """USD given back to ``budget``: from a ``reservation`` (nothing was created) or from
    ``spend`` (NanoGPT refunded a run already settled)."""
    _incr_budget_micros(
        BUDGET_RELEASED_USD_MICROS, conn_id, budget, period, amount_micro, {"from": released_from}
    )


def budget_exceeded(conn_id: str, budget: str, period: str, action: str) -> None:
    """A submission a full budget did not allow: the task ``failed`` or is ``waiting`` for the
    window's reset. Nothing was sent."""
    _incr(BUDGET_EXCEEDED, 1, {**_budget_tags(conn_id, budget, period), "action": _label(action)})
