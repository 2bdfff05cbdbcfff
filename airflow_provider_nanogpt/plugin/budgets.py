"""The shared budgets and the pending approvals, for the NanoGPT page.

Budgets are read as the tasks read them: the connection's extras through the hook's settings,
the plan through ``shared_budget``, the figures through ``Ledger.use``/``Ledger.use_by_tag`` (one
SQL definition of spent and reserved). Which DAG spent what comes from the ledger's rows: a
settled reservation names its NanoGPT run (``run_id``), whose job card names the DAG; on Airflow
3.3 a reservation's tag is also found in the submitting task's run record (task state store).

A ledger or connection that cannot be read is a line on the page, never an error page. DAG names
are shown only for DAGs the user may read; the others are counted, not named.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airflow_provider_nanogpt.ledger import MICRO, Budget, TagUse, usd, zone

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

# Airflow's Required Actions page, open requests only (the same path on 3.1 and 3.3).
REQUIRED_ACTIONS_PATH = "/required_actions?response_received=false"
# Task instance states of a task waiting for an answer: 3.3's own state; before, deferred to
# the approval trigger.
AWAITING_APPROVAL_STATES = ("awaiting_input", "deferred")
# The tags looked up in run records, at most (a window holds a few hundred videos at most).
MAX_TAGS_LOOKED_UP = 500


@dataclass
class BudgetView:
    """One budget as the page and ``/api/budgets`` show it: the ledger's figures (whole
    micro-dollars), formatted for the page by the properties below."""

    conn_id: str
    budget: Budget
    spent_micro: int
    reserved_micro: int
    resets_at_utc: datetime  # the window's end: its next reset
    now: float
    dags_micro: list[tuple[str, int]] = field(default_factory=list)  # (readable DAG, amount)
    other_dags: int = 0  # DAGs the user may not read that counted here
    other_micro: int | None = None
    unattributed_micro: int | None = None  # counted by reservations no DAG could be found for

    @property
    def name(self) -> str:
        return self.budget.name

    @property
    def period(self) -> str:
        return self.budget.period

    @property
    def timezone(self) -> str:
        return self.budget.timezone

    @property
    def left_micro(self) -> int | None:
        total = self.spent_micro + self.reserved_micro
        return max(0, self.budget.limit_micro - total) if total >= 0 else None

    @property
    def limit(self) -> str:
        return money(self.budget.limit_micro)

    @property
    def spent(self) -> str:
        return money(self.spent_micro)

    @property
    def reserved(self) -> str:
        return money(self.reserved_micro)

    @property
    def left(self) -> str:
        return money(self.left_micro)

    @property
    def resets_at(self) -> str:
        """The next reset in the budget's time zone."""
        return self.resets_at_utc.astimezone(zone(self.timezone)).strftime("%Y-%m-%d %H:%M %Z")

    @property
    def resets_in(self) -> str:
        return _resets_in(self.resets_at_utc.timestamp() - self.now)

    @property
    def spent_share(self) -> float:
        """Of the limit, 0..1, for the bar."""
        return _share(self.spent_micro, self.budget.limit_micro)

    @property
    def reserved_share(self) -> float:
        # The bar's second segment fills at most what the first leaves.
        return min(_share(self.reserved_micro, self.budget.limit_micro), 1.0 - self.spent_share)

    @property
    def dags(self) -> list[tuple[str, str]]:
        return [(dag, money(amount)) for dag, amount in self.dags_micro]

    @property
    def other_amount(self) -> str | None:
        return None if self.other_micro is None else money(self.other_micro)

    @property
    def unattributed(self) -> str | None:
        return None if self.unattributed_micro is None else money(self.unattributed_micro)

    def to_json(self) -> dict[str, Any]:
        """For ``/api/budgets``: amounts in USD (exact to the micro-dollar), times in ISO 8601."""
        return {
            "conn_id": self.conn_id,
            "name": self.name,
            "period": self.period,
            "timezone": self.timezone,
            "currency": "USD",
            "limit": _usd_number(self.budget.limit_micro),
            "spent": _usd_number(self.spent_micro),
            "reserved": _usd_number(self.reserved_micro),
            "left": _usd_number(self.left_micro),
            "resets_at": self.resets_at_utc.astimezone(UTC).isoformat(),
            "spent_by_dag": [
                {"dag_id": dag, "amount": _usd_number(amount)} for dag, amount in self.dags_micro
            ],
            "other_dags": self.other_dags,
            "other_dags_amount": _usd_number(self.other_micro),
            "no_dag_recorded": _usd_number(self.unattributed_micro),
        }


@dataclass
class BudgetProblem:
    """A connection, or one of its ledgers, whose budgets cannot be shown: why, readably."""

    conn_id: str
    message: str


@dataclass
class Budgets:
    views: list[BudgetView] = field(default_factory=list)
    problems: list[BudgetProblem] = field(default_factory=list)


def money(micro: object) -> str:
    """A ledger amount for the page: a whole, non-negative number of micro-dollars, else
    "unknown" (a hand-edited ledger row must not show as a figure)."""
    if isinstance(micro, bool) or not isinstance(micro, int) or micro < 0:
        return "unknown"
    return usd(micro)


def _usd_number(micro: object) -> float | None:
    """A ledger amount as a JSON number of USD; None where the page shows "unknown"."""
    if isinstance(micro, bool) or not isinstance(micro, int) or micro < 0:
        return None
    return micro / MICRO


def _share(part: int, limit: int) -> float:
    if limit <= 0:
        return 1.0 if part > 0 else 0.0
    share = part / limit
    return min(1.0, max(0.0, share)) if math.isfinite(share) else 0.0


def _resets_in(seconds: float) -> str:
    if seconds < 3600:
        return f"in {max(1, math.ceil(seconds / 60))} min"
    return f"in {math.ceil(seconds / 3600)} h"


def read_budgets(session: Session, conn_ids: list[str], readable: set[str], now: float) -> Budgets:
    """The budgets of ``conn_ids``, each counted once (two connections may share one)."""
    from airflow_provider_nanogpt.exceptions import NanoGPTError
    from airflow_provider_nanogpt.hooks.nanogpt import NanoGPTHook
    from airflow_provider_nanogpt.shared_budget import (
        config_budgets,
        connection_budgets,
        open_ledger,
    )

    result = Budgets()
    seen: set[tuple[str, str]] = set()
    for conn_id in conn_ids:
        try:
            extras = NanoGPTHook(conn_id, max_retries=0).settings().budget_extras
            plan = connection_budgets(conn_id, extras, config_budgets())
        except NanoGPTError as exc:
            result.problems.append(BudgetProblem(conn_id, str(exc)))
            continue
        if plan is None:
            continue
        budgets = [b for b in plan.budgets if (plan.ledger_conn_id, b.key) not in seen]
        seen.update((plan.ledger_conn_id, b.key) for b in budgets)
        if not budgets:
            continue
        try:
            ledger = open_ledger(plan.ledger_conn_id)
            uses = [(b, ledger.use(b, now), ledger.use_by_tag(b, now)) for b in budgets]
        except Exception as exc:  # unreachable, refused, a bad URL: a line, never a 500
            result.problems.append(
                BudgetProblem(
                    conn_id,
                    f"The budget ledger (connection {plan.ledger_conn_id!r}) cannot be read "
                    f"({type(exc).__name__}), so its {len(budgets)} budget"
                    f"{'s' if len(budgets) != 1 else ''} cannot be shown.",
                )
            )
            continue
        dag_of = _dags_of(session, [row for _, _, rows in uses for row in rows])
        for budget, use, rows in uses:
            result.views.append(_view(conn_id, budget, use, rows, dag_of, readable, now))
    return result


def _view(
    conn_id: str,
    budget: Budget,
    use: Any,
    rows: list[TagUse],
    dag_of: dict[str, str],
    readable: set[str],
    now: float,
) -> BudgetView:
    counted: dict[str | None, int] = defaultdict(int)
    for row in rows:
        dag = dag_of.get(f"run:{row.run_id}") or dag_of.get(f"tag:{row.tag}")
        counted[dag] += row.spent_micro + row.reserved_micro
    shown = sorted((dag, n) for dag, n in counted.items() if dag is not None and dag in readable)
    hidden = [n for dag, n in counted.items() if dag is not None and dag not in readable]
    return BudgetView(
        conn_id=conn_id,
        budget=budget,
        spent_micro=use.spent_micro,
        reserved_micro=use.reserved_micro,
        resets_at_utc=use.window.end,
        now=now,
        dags_micro=shown,
        other_dags=len(hidden),
        other_micro=sum(hidden) if hidden else None,
        unattributed_micro=counted[None] if counted.get(None) else None,
    )


def _dags_of(session: Session, rows: list[TagUse]) -> dict[str, str]:
    """``run:<NanoGPT run id>`` and ``tag:<submission tag>`` -> the DAG that submitted it, over
    every DAG (the caller names only the readable ones)."""
    from sqlalchemy import or_, select

    from airflow_provider_nanogpt.job_card import JOB_KEY
    from airflow_provider_nanogpt.plugin.models import XComModel, charge_table
    from airflow_provider_nanogpt.submission import STATE_KEY

    found: dict[str, str] = {}
    run_ids = sorted({row.run_id for row in rows if row.run_id})
    if run_ids:
        run_id = XComModel.value["run_id"].as_string()
        query = select(XComModel.dag_id, run_id).where(
            XComModel.key == JOB_KEY, run_id.in_(run_ids)
        )
        for dag_id, run in session.execute(query):
            found[f"run:{run}"] = dag_id
    store = charge_table()  # Airflow 3.3+: the submitting task's run record keeps the tag
    tags = sorted({row.tag for row in rows if f"run:{row.run_id}" not in found})
    if store is not None and tags:
        tags = tags[:MAX_TAGS_LOOKED_UP]
        query = select(store.dag_id, store.value).where(
            store.key == STATE_KEY,
            or_(*(store.value.contains(f'"{tag}"', autoescape=True) for tag in tags)),
        )
        wanted = set(tags)
        for dag_id, value in session.execute(query):
            for tag in wanted:
                if f'"{tag}"' in str(value):
                    found[f"tag:{tag}"] = dag_id
    return found


# --- approvals ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PendingApproval:
    dag_id: str
    dag_run_id: str
    task_id: str
    map_index: int
    subject: str


def pending_approvals(session: Session, readable: set[str]) -> list[PendingApproval]:
    """NanoGPT approval requests with no answer yet, of tasks still waiting, in readable DAGs."""
    from sqlalchemy import select

    from airflow_provider_nanogpt.approval import is_approval_subject
    from airflow_provider_nanogpt.plugin.models import TaskInstance

    try:
        from airflow.models.hitl import HITLDetail
    except ImportError:  # an Airflow without Human-in-the-loop: nothing can wait
        return []
    query = (
        select(
            TaskInstance.dag_id,
            TaskInstance.run_id,
            TaskInstance.task_id,
            TaskInstance.map_index,
            HITLDetail.subject,
        )
        .join(TaskInstance, TaskInstance.id == HITLDetail.ti_id)
        .where(
            HITLDetail.responded_at.is_(None),
            is_approval_subject(HITLDetail.subject),
            TaskInstance.state.in_(AWAITING_APPROVAL_STATES),
            TaskInstance.dag_id.in_(readable),
        )
        .order_by(HITLDetail.created_at)
    )
    return [PendingApproval(*row) for row in session.execute(query)]
