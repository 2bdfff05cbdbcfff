"""Shared budgets: which budgets apply to a task, and the guard that reserves against them.

A budget belongs to a NanoGPT connection (extras ``budget_usd_per_day``,
``budget_usd_per_month``, reset at midnight in ``budget_timezone``), or is a named group budget
defined in the connection's ``budgets`` extra or in ``[nanogpt] budgets`` (JSON: name ->
``{"usd_per_day": .., "usd_per_month": .., "timezone": ..}``), which a task joins with the
operator's ``budgets=[...]`` or a DAG tag ``nanogpt-budget:<name>``. Every budget that applies
must allow the task. Their ledger is the database of the connection named by the NanoGPT
connection's ``budget_ledger_conn_id`` (see ``airflow_provider_nanogpt.ledger``).

With no budget configured nothing here opens a database or imports SQLAlchemy.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from airflow_provider_nanogpt.exceptions import NanoGPTBudgetError, NanoGPTConfigurationError
from airflow_provider_nanogpt.ledger import (
    PERIODS,
    Budget,
    Ledger,
    Moved,
    Period,
    to_micro,
    usd,
    zone,
)

DAG_TAG_PREFIX = "nanogpt-budget:"


@dataclass(frozen=True)
class BudgetPlan:
    """The budgets that apply to one task, and where their ledger lives."""

    budgets: tuple[Budget, ...]
    ledger_conn_id: str
    conn_id: str  # the NanoGPT connection the task sends through (the metrics' conn_id)


def _limit(where: str, name: str, value: object) -> int:
    try:
        return to_micro(value, what=name)
    except NanoGPTBudgetError:
        raise NanoGPTConfigurationError(
            f"{where}: {name}={value!r} is not a finite amount >= 0 in USD."
        ) from None


def _checked_zone(where: str, value: object) -> str:
    try:
        return zone(value).key  # type: ignore[arg-type]
    except NanoGPTConfigurationError as exc:
        raise NanoGPTConfigurationError(f"{where}: {exc}") from None


def _budgets(where: str, name: str, limits: Mapping[Period, object], tz: object) -> list[Budget]:
    timezone = _checked_zone(where, tz)
    return [
        Budget(name, period, _limit(where, f"usd_per_{period}", value), timezone)
        for period, value in limits.items()
        if value not in (None, "")
    ]


def _groups(where: str, raw: object) -> dict[str, list[Budget]]:
    """Named group budgets from a JSON object (or its text)."""
    if raw in (None, ""):
        return {}
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raise NanoGPTConfigurationError(f"{where}: budgets is not valid JSON.") from None
    if not isinstance(raw, Mapping):
        raise NanoGPTConfigurationError(
            f'{where}: budgets must be an object like {{"marketing": {{"usd_per_day": 5}}}}.'
        )
    groups: dict[str, list[Budget]] = {}
    for name, spec in raw.items():
        if not isinstance(spec, Mapping) or not set(spec) <= {
            "usd_per_day",
            "usd_per_month",
            "timezone",
        }:
            raise NanoGPTConfigurationError(
                f"{where}: budget {name!r} must be an object with usd_per_day, usd_per_month "
                f"and/or timezone, not {spec!r}."
            )
        limits = {period: spec.get(f"usd_per_{period}") for period in PERIODS}
        found = _budgets(f"{where}, budget {name!r}", str(name), limits, spec.get("timezone"))
        if not found:
            raise NanoGPTConfigurationError(
                f"{where}: budget {name!r} sets neither usd_per_day nor usd_per_month."
            )
        groups[str(name)] = found
    return groups


def connection_budget_name(conn_id: str) -> str:
    """The name of connection ``conn_id``'s own budgets (per day and per month)."""
    return f"connection {conn_id}"


def plan_budgets(
    conn_id: str,
    extras: Mapping[str, Any],
    names: Iterable[str] = (),
    config_budgets: object = None,
) -> BudgetPlan | None:
    """The budgets for a task of connection ``conn_id`` joining the group budgets ``names``.

    None when no budget applies. Raises NanoGPTConfigurationError, naming the setting, for an
    unreadable amount or time zone, an unknown group name, or budgets without a ledger.
    """
    where = f"Connection {conn_id!r}"
    limits = {period: extras.get(f"budget_usd_per_{period}") for period in PERIODS}
    budgets = _budgets(
        where, connection_budget_name(conn_id), limits, extras.get("budget_timezone")
    )
    groups = {
        **_groups("[nanogpt] budgets", config_budgets),
        **_groups(where, extras.get("budgets")),
    }
    for name in dict.fromkeys(names):
        if name not in groups:
            known = ", ".join(sorted(groups)) or "none are defined"
            raise NanoGPTConfigurationError(
                f"Budget {name!r} is not defined in connection {conn_id!r}'s budgets extra or "
                f"in [nanogpt] budgets (known: {known})."
            )
        budgets.extend(groups[name])
    if not budgets:
        return None
    ledger_conn_id = extras.get("budget_ledger_conn_id")
    if not isinstance(ledger_conn_id, str) or not ledger_conn_id.strip():
        raise NanoGPTConfigurationError(
            f"{where} has budgets ({', '.join(b.describe() for b in budgets)}) but no "
            "budget_ledger_conn_id naming the database that holds them; nothing was sent."
        )
    return BudgetPlan(tuple(budgets), ledger_conn_id.strip(), conn_id)


def connection_budgets(
    conn_id: str, extras: Mapping[str, Any], config_budgets: object = None
) -> BudgetPlan | None:
    """Every budget a task of connection ``conn_id`` may reserve against: its own, and, when it
    names a ledger, every group budget (its ``budgets`` extra and ``[nanogpt] budgets``).

    None when it has none; NanoGPTConfigurationError as ``plan_budgets`` raises it.
    """
    ledger = extras.get("budget_ledger_conn_id")
    has_ledger = isinstance(ledger, str) and bool(ledger.strip())
    groups = {
        **_groups("[nanogpt] budgets", config_budgets if has_ledger else None),
        **_groups(f"Connection {conn_id!r}", extras.get("budgets")),
    }
    return plan_budgets(conn_id, extras, groups, config_budgets if has_ledger else None)


def tag_budget_names(tags: Iterable[object]) -> list[str]:
    """Group budgets named by DAG tags ``nanogpt-budget:<name>``."""
    return [
        tag[len(DAG_TAG_PREFIX) :].strip()
        for tag in tags
        if isinstance(tag, str) and tag.startswith(DAG_TAG_PREFIX)
    ]


def config_budgets() -> object:
    """``[nanogpt] budgets`` from Airflow's configuration (None when unset)."""
    from airflow.providers.common.compat.sdk import conf

    return conf.get("nanogpt", "budgets", fallback=None)


# --- the ledger's database ---------------------------------------------------------------------


def ledger_url(conn_id: str, conn_type: str | None, host: str | None, **parts: Any) -> str:
    """A SQLAlchemy URL for the ledger connection (sqlite: host is the file path)."""
    from sqlalchemy.engine import URL

    kind = (conn_type or "").lower()
    if kind == "sqlite":
        path = (host or "").strip()
        if not path:
            raise NanoGPTConfigurationError(
                f"Budget ledger connection {conn_id!r} (sqlite) has no file path in its host."
            )
        return f"sqlite:///{path}"
    if kind in ("postgres", "postgresql"):
        return URL.create(
            _postgres_driver(),
            username=parts.get("login") or None,
            password=parts.get("password") or None,
            host=host or None,
            port=parts.get("port") or None,
            database=parts.get("schema") or None,
            query={k: str(v) for k, v in (parts.get("query") or {}).items()},
        ).render_as_string(hide_password=False)
    raise NanoGPTConfigurationError(
        f"Budget ledger connection {conn_id!r} is of type {conn_type!r}; use a postgres or "
        "sqlite connection."
    )


_POSTGRES_QUERY_EXTRAS = ("sslmode", "sslrootcert", "sslcert", "sslkey", "connect_timeout")


def _postgres_driver() -> str:
    import importlib.util

    for module, driver in (("psycopg2", "postgresql+psycopg2"), ("psycopg", "postgresql+psycopg")):
        if importlib.util.find_spec(module) is not None:
            return driver
    raise NanoGPTConfigurationError(
        "The budget ledger is a PostgreSQL database but neither psycopg2 nor psycopg is "
        "installed on this worker."
    )


def open_ledger(ledger_conn_id: str) -> Ledger:
    """The ledger in the database of Airflow connection ``ledger_conn_id``.

    Fails closed: a ledger that cannot be reached raises NanoGPTBudgetError (nothing is sent).
    """
    from airflow.sdk import BaseHook

    try:
        conn = BaseHook.get_connection(ledger_conn_id)
    except Exception as exc:
        raise NanoGPTBudgetError(
            f"The budget ledger connection {ledger_conn_id!r} cannot be read "
            f"({type(exc).__name__}), so the budget cannot be enforced; nothing was sent."
        ) from None
    extras = conn.extra_dejson or {}
    url = ledger_url(
        ledger_conn_id,
        conn.conn_type,
        conn.host,
        login=conn.login,
        password=conn.password,
        port=conn.port,
        schema=conn.schema,
        query={k: extras[k] for k in _POSTGRES_QUERY_EXTRAS if k in extras},
    )
    try:
        return Ledger.from_url(url)
    except Exception as exc:
        raise unreachable(ledger_conn_id, exc) from None


def unreachable(ledger_conn_id: str, exc: BaseException) -> NanoGPTBudgetError:
    # Only the error's class and first line: a driver's message never carries the password,
    # but a URL might, and the URL is not repeated here.
    first_line = str(exc).splitlines()[0][:200] if str(exc) else ""
    return NanoGPTBudgetError(
        f"The budget ledger database (connection {ledger_conn_id!r}) cannot be used: "
        f"{type(exc).__name__}: {first_line}. The budget cannot be enforced, so nothing was sent."
    )


# --- the guard ------------------------------------------------------------------------------


class BudgetGuard:
    """Reserves one submission's estimated cost against its budgets, then settles or releases.

    The reservation id is the submission tag and the try that sends it: a re-reserve of the same
    send returns the open reservation, and a reattached run reserves nothing.
    """

    def __init__(
        self, plan: BudgetPlan, estimate_usd: Callable[[], float | None], *, log: Any
    ) -> None:
        self.plan = plan
        self.log = log
        self._estimate_usd = estimate_usd  # read only when a send needs a reservation
        self._estimate_micro: int | None = None
        self._ledger: Ledger | None = None

    @property
    def estimate_micro(self) -> int:
        if self._estimate_micro is None:
            estimate = self._estimate_usd()
            if estimate is None:
                names = ", ".join(b.describe() for b in self.plan.budgets)
                raise NanoGPTBudgetError(
                    "The cost of this video cannot be estimated from NanoGPT's model catalog, "
                    f"so the shared {names} cannot be enforced; nothing was sent. Set the "
                    "duration and resolution, or use a model with readable pricing."
                )
            self._estimate_micro = to_micro(estimate, what="estimated cost")
        return self._estimate_micro

    @property
    def ledger(self) -> Ledger:
        if self._ledger is None:
            self._ledger = open_ledger(self.plan.ledger_conn_id)
        return self._ledger

    @staticmethod
    def reservation_id(tag: str, try_number: int) -> str:
        return f"{tag}#try-{try_number}"

    def _call(self, fn: Any) -> Any:
        try:
            return fn()
        except NanoGPTBudgetError:
            raise
        except Exception as exc:
            raise unreachable(self.plan.ledger_conn_id, exc) from None

    def reserve_to_send(self, tag: str, try_number: int) -> None:
        """Reserve the estimate against every budget, recorded as sent: the caller sends the
        request next. One ledger transaction: a reserve then a separate ``mark_sent`` would cost
        a commit more and protect nothing more (nothing may fail between the two), and a task
        that dies after it leaves the amount counted until reconciliation, as a send may have
        left. Raises, before anything is sent, when a budget does not allow it."""
        rid = self.reservation_id(tag, try_number)
        estimate = self.estimate_micro
        held = self._call(
            lambda: self.ledger.reserve(rid, tag, self.plan.budgets, estimate, sent=True)
        )
        if not held.reused:
            from airflow_provider_nanogpt import metrics

            for budget in held.budgets:
                metrics.budget_reserved(
                    self.plan.conn_id, budget.name, budget.period, held.estimate_micro
                )
        verb = "Holding the earlier" if held.reused else "Reserved"
        self.log.info(
            "%s reservation of %s against %s.",
            verb,
            usd(held.estimate_micro),
            ", ".join(b.describe() for b in self.plan.budgets),
        )

    def left(self) -> list[str]:
        """Per budget, what its current window has left (limit less spent and reserved), as a
        line for a person; read-only. An unreachable ledger raises, as a reserve would."""

        def read() -> list[str]:
            lines = []
            for budget in self.plan.budgets:
                use = self.ledger.use(budget)
                left = max(0, budget.limit_micro - use.total_micro)
                lines.append(
                    f"{usd(left)} of {budget.describe()} in the {use.label} window "
                    f"({usd(use.spent_micro)} spent, {usd(use.reserved_micro)} reserved)"
                )
            return lines

        result: list[str] = self._call(read)
        return result

    def settle(
        self,
        tag: str,
        try_number: int,
        cost: float | None,
        currency: str | None,
        run_id: str | None = None,
    ) -> None:
        """Count the reservation at NanoGPT's charge; ``run_id`` (NanoGPT's) ties it to the job,
        which names its DAG on the NanoGPT page."""
        charged = None
        if cost is not None and currency == "USD":
            try:
                charged = to_micro(cost, what="charged cost")
            except NanoGPTBudgetError:
                charged = None
        if cost is None and currency is None:
            self.log.info(
                "NanoGPT did not say what run %s was charged; its reserved estimate is counted "
                "as spend.",
                run_id,
            )
        elif charged is None:
            self.log.warning(
                "NanoGPT's charge (%s %s) is not a USD amount; the reserved estimate stays "
                "counted as spend.",
                cost,
                currency,
            )
        rid = self.reservation_id(tag, try_number)
        self._after_send(
            lambda: count_moves(
                self.plan.conn_id, self.ledger.settle(rid, charged, run_id), "settled", charged
            )
        )

    def release(self, tag: str, try_number: int) -> None:
        rid = self.reservation_id(tag, try_number)
        self._after_send(
            lambda: count_moves(self.plan.conn_id, self.ledger.release(rid), "released")
        )

    def settle_run(self, run_id: str, cost: float, currency: str | None) -> None:
        """NanoGPT's final cost of run ``run_id``: each reservation that paid for it counts it
        where it is above the pre-charge it was settled at (``Ledger.settle_final``: never
        lower). A cost that is not a USD amount changes nothing."""
        if currency != "USD":
            return
        try:
            charged = to_micro(cost, what="final cost")
        except NanoGPTBudgetError:
            self.log.warning(
                "NanoGPT's final cost %r of run %s is not an amount; its pre-charge stays "
                "counted in the shared budgets.",
                cost,
                run_id,
            )
            return

        def settle_each() -> None:
            ledger = self.ledger
            for rid in ledger.reservations_of_run(run_id):
                moved = ledger.settle_final(rid, charged, run_id)
                count_moves(self.plan.conn_id, moved, "settled", charged, raise_only=True)

        self._after_send(settle_each)

    def release_run(self, run_id: str) -> None:
        """NanoGPT refunded run ``run_id``: each reservation that paid for it stops counting.
        Found by the run id its settle recorded, so no run record (Airflow 3.3's task state
        store) is needed."""

        def release_each() -> None:
            ledger = self.ledger
            for rid in ledger.reservations_of_run(run_id):
                count_moves(self.plan.conn_id, ledger.release(rid), "released")

        self._after_send(release_each)

    def _after_send(self, update: Callable[[], None]) -> None:
        # After NanoGPT answered, a ledger failure must not fail the task (the video exists or
        # provably does not): the reservation then stays counted at its estimate.
        try:
            update()
        except Exception as exc:
            self.log.warning(
                "Could not update the budget ledger (%s); the reservation stays counted at its "
                "estimate until its window resets.",
                type(exc).__name__,
            )


def count_moves(
    conn_id: str,
    moved: Sequence[Moved],
    to: str,
    charged_micro: int | None = None,
    *,
    raise_only: bool = False,
) -> None:
    """The budget metrics of a settle or release (by a task or by reconciliation): per budget
    row, what became spend (at ``charged_micro``, the estimate when None) or was given back. A
    settled row settled again counts only the difference (mirroring ``Ledger._move``: an unknown
    charge keeps the known one, ``raise_only`` keeps a higher one), so that settled less
    released-from-spend stays what the ledger counts as spent."""
    from airflow_provider_nanogpt import metrics

    for row in moved:
        if to == "settled":
            amount = row.estimate_micro if charged_micro is None else charged_micro
            if row.from_state == "settled":  # settled again: count only the change
                if charged_micro is None or raise_only:  # the ledger keeps the known charge
                    amount = max(amount, row.counted_micro) if raise_only else row.counted_micro
                amount -= row.counted_micro
                if amount < 0:
                    metrics.budget_released(conn_id, row.budget_name, row.period, -amount, "spend")
                    continue
            if amount:
                metrics.budget_settled(conn_id, row.budget_name, row.period, amount)
        elif to == "released":
            released_from = "spend" if row.from_state == "settled" else "reservation"
            metrics.budget_released(
                conn_id, row.budget_name, row.period, row.counted_micro, released_from
            )


def budget_plan_for(
    conn_id: str, extras: Mapping[str, Any], names: Sequence[str], dag_tags: Iterable[object]
) -> BudgetPlan | None:
    """The plan for a task, reading ``[nanogpt] budgets`` only when a budget may apply."""
    wanted = [*names, *tag_budget_names(dag_tags)]
    needs_config = bool(wanted)
    return plan_budgets(conn_id, extras, wanted, config_budgets() if needs_config else None)
