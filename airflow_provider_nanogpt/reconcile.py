"""Reconciliation of a connection's shared budgets with what NanoGPT actually did.

A reservation marked ``sent`` whose task died before recording NanoGPT's answer stays counted at
its estimate (money may have been spent). Reconciliation asks NanoGPT about each one sent longer
ago than the settle time, by its run id when the ledger has one, else by its submission tag
through the same lookup the submission path uses (``submission._look_up`` and ``_match``):

* a job found that COMPLETED: settled (at the estimate: NanoGPT's status names no currency for
  its ``cost``, and a figure in an unknown currency is never counted as USD);
* a job found that ended FAILED or CANCELLED (NanoGPT refunds it): released;
* a job still queued or running: left counted, its run id recorded for next time;
* a lookup that succeeded and found nothing of ours: released ("not listed yet" is not "not
  created", so only after the settle time, as the submission protocol decides);
* a lookup that failed, or an answer that cannot be told apart: left counted.

"Nothing found" proves nothing for a reservation that counts only in group budgets, which tasks of
other connections (other API keys) may share: such a one is only ever settled or released on what
this key's NanoGPT account shows of it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, timedelta
from typing import TYPE_CHECKING, Any, Literal

from airflow_provider_nanogpt.api.status import VideoState
from airflow_provider_nanogpt.exceptions import (
    NanoGPTBudgetError,
    NanoGPTError,
    NanoGPTRateLimitError,
    NanoGPTSubmissionUnresolvedError,
)
from airflow_provider_nanogpt.ledger import (
    PERIODS,
    Budget,
    Ledger,
    SentReservation,
    to_micro,
    usd,
)
from airflow_provider_nanogpt.submission import (
    CLOCK_SKEW_SECONDS,
    DEFAULT_SETTLE_SECONDS,
    LOOKUP_MAX_RATE_LIMIT_SLEEP,
    _look_up,
    _match,
)

if TYPE_CHECKING:
    from airflow_provider_nanogpt.hooks.nanogpt import NanoGPTHook

Action = Literal["settled", "released", "left"]
_REFUNDED = (VideoState.FAILED, VideoState.CANCELLED)


@dataclass(frozen=True)
class Verdict:
    """What reconciliation did with one ``sent`` reservation, and why."""

    reservation_id: str
    action: Action
    reason: str
    run_id: str | None = None

    def line(self) -> str:
        return f"{self.reservation_id}: {self.action} ({self.reason})"


@dataclass
class ReconcileReport:
    """One reconciliation of a connection's budgets."""

    conn_id: str
    verdicts: list[Verdict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        if not self.verdicts and not self.notes:
            return [f"Connection {self.conn_id!r}: no sent reservation to reconcile."]
        return [*(v.line() for v in self.verdicts), *self.notes]

    def to_json(self) -> dict[str, Any]:
        return {
            "conn_id": self.conn_id,
            "reservations": [
                {
                    "reservation_id": v.reservation_id,
                    "action": v.action,
                    "reason": v.reason,
                    "run_id": v.run_id,
                }
                for v in self.verdicts
            ],
            "notes": list(self.notes),
        }


def own_budget_keys(conn_id: str) -> frozenset[str]:
    """The ledger keys of connection ``conn_id``'s own budgets (only its tasks reserve there)."""
    from airflow_provider_nanogpt.shared_budget import connection_budget_name

    name = connection_budget_name(conn_id)
    return frozenset(Budget(name, period, 0).key for period in PERIODS)


def repair_sent(
    hook: NanoGPTHook,
    ledger: Ledger,
    conn_id: str,
    *,
    settle_seconds: float = DEFAULT_SETTLE_SECONDS,
    deadline: float | None = None,
    clock: Callable[[], float] = time.time,
) -> list[Verdict]:
    """Settle or release each ``sent`` reservation NanoGPT can account for (see the module doc).

    ``deadline`` (epoch seconds): no call goes past it; reservations not reached are left.
    """
    own = own_budget_keys(conn_id)
    verdicts: list[Verdict] = []
    rate_limited = False
    for sent in ledger.sent():
        now = clock()
        if now - sent.sent_at < settle_seconds:
            verdicts.append(
                _left(sent, f"sent {now - sent.sent_at:.0f} s ago, within the settle time")
            )
            continue
        if rate_limited or (deadline is not None and now >= deadline):
            why = "NanoGPT's lookup is rate limited" if rate_limited else "out of time"
            verdicts.append(_left(sent, f"not looked up: {why}"))
            continue
        try:
            verdicts.append(_resolve(hook, ledger, sent, bool(sent.budgets & own), now, deadline))
        except NanoGPTRateLimitError:
            rate_limited = True
            verdicts.append(_left(sent, "NanoGPT's lookup is rate limited; try again later"))
        except NanoGPTError as exc:
            verdicts.append(_left(sent, f"NanoGPT could not tell: {exc}"))
    return verdicts


def _resolve(
    hook: NanoGPTHook,
    ledger: Ledger,
    sent: SentReservation,
    ours: bool,
    now: float,
    deadline: float | None,
) -> Verdict:
    run_id = sent.run_id
    if run_id is None:
        runs = _look_up(hook, sent.tag, LOOKUP_MAX_RATE_LIMIT_SLEEP, deadline)
        # A run another reservation already paid for is not this one's (a later try's resend
        # under the same tag, say).
        unclaimed = [
            run
            for run in runs
            if set(ledger.reservations_of_run(run.run_id)) <= {sent.reservation_id}
        ]
        try:
            found = _match(unclaimed, sent.tag, False, sent.sent_at - CLOCK_SKEW_SECONDS)
        except NanoGPTSubmissionUnresolvedError as exc:
            return _left(sent, f"cannot tell which run is its: {exc}")
        if found is None:
            if not ours:
                return _left(
                    sent,
                    "NanoGPT lists no run of it for this key, but it counts only in group "
                    "budgets that another connection's key may have sent it through",
                )
            _resolved(hook, ledger, sent.reservation_id, created=False)
            return Verdict(
                sent.reservation_id,
                "released",
                f"NanoGPT lists no run tagged {sent.tag} {now - sent.sent_at:.0f} s after it "
                "was sent, or only refunded ones",
            )
        run_id = found.run_id
    state = hook.get_video_status(run_id, deadline=deadline).state
    if state is VideoState.COMPLETED:
        _resolved(hook, ledger, sent.reservation_id, created=True, run_id=run_id)
        return Verdict(
            sent.reservation_id,
            "settled",
            f"run {run_id} completed; counted at its estimate {usd(sent.estimate_micro)}",
            run_id,
        )
    if state in _REFUNDED:
        _resolved(hook, ledger, sent.reservation_id, created=False, run_id=run_id)
        return Verdict(
            sent.reservation_id, "released", f"run {run_id} ended {state.value} (refunded)", run_id
        )
    ledger.note_run(sent.reservation_id, run_id)
    return _left(sent, f"run {run_id} is {state.value}", run_id)


def _left(sent: SentReservation, reason: str, run_id: str | None = None) -> Verdict:
    return Verdict(
        sent.reservation_id,
        "left",
        f"{reason}; still counted at {usd(sent.estimate_micro)}",
        run_id or sent.run_id,
    )


def outside_spend_days(budget: Budget, now: float) -> tuple[str, str]:
    """The UTC days (``from``, ``to``, inclusive) covering ``budget``'s window at ``now``. A
    window in another time zone straddles UTC days: every day it touches is included, so the
    key's spend is counted more, never less."""
    window = budget.window(now)
    first = window.start.astimezone(UTC).date()
    last = (window.end - timedelta(microseconds=1)).astimezone(UTC).date()
    return first.isoformat(), last.isoformat()


def count_outside_spend(
    hook: NanoGPTHook,
    ledger: Ledger,
    conn_id: str,
    budgets: Iterable[Budget],
    *,
    deadline: float | None = None,
    clock: Callable[[], float] = time.time,
) -> list[str]:
    """Record, in each of connection ``conn_id``'s own budgets, what its API key spent beyond
    the ledger's own figures (NanoGPT's usage endpoint). An answer that is not a readable USD
    amount records nothing: the budget then counts only Airflow's own spend. Report lines."""
    own = own_budget_keys(conn_id)
    lines = []
    for budget in budgets:
        if budget.key not in own:
            continue
        now = clock()
        first, last = outside_spend_days(budget, now)
        try:
            spent = to_micro(hook.get_usage_usd(first, last, deadline=deadline), what="usage")
        except (NanoGPTError, NanoGPTBudgetError) as exc:
            lines.append(
                f"WARNING: outside spend not counted in {budget.describe()}: NanoGPT's usage "
                f"({first} to {last}) could not be read ({exc}); the budget counts only "
                "Airflow's own spend."
            )
            continue
        outside = ledger.record_outside_spend(budget, now, spent)
        lines.append(
            f"{budget.describe()}: the key spent {usd(spent)} from {first} to {last} (UTC); "
            f"{usd(outside)} of it outside Airflow is counted."
        )
    return lines


def _resolved(
    hook: NanoGPTHook,
    ledger: Ledger,
    reservation_id: str,
    *,
    created: bool,
    run_id: str | None = None,
) -> None:
    """Record the verdict on a ``sent`` reservation, and count it in the budget metrics."""
    from airflow_provider_nanogpt.shared_budget import count_moves

    moved = ledger.resolve_sent(reservation_id, created=created, run_id=run_id)
    count_moves(hook.nanogpt_conn_id, moved, "settled" if created else "released")


def reconcile_connection(
    conn_id: str = "nanogpt_default",
    *,
    settle_seconds: float = DEFAULT_SETTLE_SECONDS,
    timeout: float = 300.0,
    log: Any = None,
) -> ReconcileReport:
    """Reconcile connection ``conn_id``'s shared budgets; the report of what changed.

    Usable from a DAG's ``@task`` and from ``python -m airflow_provider_nanogpt reconcile``.
    A connection without budgets has nothing to reconcile. Bounded by ``timeout`` seconds.
    """
    from airflow_provider_nanogpt.hooks.nanogpt import NanoGPTHook
    from airflow_provider_nanogpt.shared_budget import (
        config_budgets,
        connection_budgets,
        open_ledger,
    )

    logger = log or logging.getLogger(__name__)
    deadline = time.time() + timeout
    report = ReconcileReport(conn_id)
    hook = NanoGPTHook(conn_id)
    try:
        # As the tasks read them (the connection form's extra__nanogpt__ names too); a missing
        # or unreadable connection raises the hook's own readable error.
        extras = hook.settings().budget_extras
        plan = connection_budgets(conn_id, extras, config_budgets())
        if plan is None:
            report.notes.append(f"Connection {conn_id!r} has no shared budget: nothing to do.")
        else:
            ledger = open_ledger(plan.ledger_conn_id)
            report.verdicts = repair_sent(
                hook, ledger, conn_id, settle_seconds=settle_seconds, deadline=deadline
            )
            if _opted_in(extras.get("budget_count_outside_spend")):
                report.notes += count_outside_spend(
                    hook, ledger, conn_id, plan.budgets, deadline=deadline
                )
    finally:
        hook.close()
    for line in report.lines():
        if line.startswith("WARNING: "):
            logger.warning("%s", line.removeprefix("WARNING: "))
        else:
            logger.info("%s", line)
    return report


def _opted_in(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "on")
    return value is True
