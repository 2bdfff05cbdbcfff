"""The shared budget ledger: reservations of estimated cost, held in a SQL database the user names.

Task code in Airflow 3 cannot reach Airflow's own database, and no Execution API store offers
compare-and-set, so the ledger lives in a database named by the NanoGPT connection's
``budget_ledger_conn_id`` (PostgreSQL in production, a SQLite file on one machine). The
*database* holds the lock: on PostgreSQL a ``SELECT ... FOR UPDATE`` of each budget window's row,
on SQLite ``BEGIN IMMEDIATE`` (one writer at a time). Every reserve, mark, settle and release is
one transaction.

A reservation row per (reservation, budget) moves through

    reserved --mark_sent--> sent --settle--> settled
        |                     |                 |
        +-- expired (TTL)     +---- release ----+--> released   (nothing created, or refunded)

A task's reservation starts as ``sent`` (``reserve(sent=True)``): it sends right after
reserving, so a separate ``mark_sent`` commit would protect nothing more.

* ``reserved``: counted, not sent yet. It expires ``ttl`` seconds after it was made (a crash
  between reserve and send); ``mark_sent`` refuses an expired one, so the send never happens.
* ``sent``: the request may have left; counted at the estimate until settled or released. It
  never expires by itself (money may have been spent): reconciliation
  (``airflow_provider_nanogpt.reconcile``) asks NanoGPT what became of it and settles or
  releases it (``resolve_sent``).
* ``settled``: counted at the charged amount (the estimate when the charge is unknown or not in
  USD).
* ``released``/``expired``: not counted. Reserving the same id again reopens the row.

Amounts are integer micro-dollars (never float sums). Nothing here imports Airflow, and
SQLAlchemy is imported only when a ledger is opened.
"""

from __future__ import annotations

import calendar
import functools
import math
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from airflow_provider_nanogpt.exceptions import NanoGPTBudgetError, NanoGPTConfigurationError

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine
    from sqlalchemy.sql.elements import TextClause

T = TypeVar("T")
MICRO = 1_000_000
Period = Literal["day", "month"]
PERIODS: tuple[Period, ...] = ("day", "month")
# A reservation not marked sent within this many seconds is dropped (its task crashed before
# sending). Reserve-to-send takes a second or two; the margin covers a slow state-store write.
DEFAULT_RESERVATION_TTL_SECONDS = 900.0
TABLE_RESERVATIONS = "nanogpt_budget_reservations"
TABLE_WINDOWS = "nanogpt_budget_windows"
# The row holding spend made with the same API key outside Airflow, one per budget window.
OUTSIDE_SPEND_PREFIX = "outside-spend:"
OUTSIDE_SPEND_TAG = "outside Airflow"

_DDL = (
    f"CREATE TABLE IF NOT EXISTS {TABLE_WINDOWS} ("
    " budget VARCHAR(250) NOT NULL,"
    " window_key VARCHAR(40) NOT NULL,"
    " created_at DOUBLE PRECISION NOT NULL,"
    " PRIMARY KEY (budget, window_key))",
    f"CREATE TABLE IF NOT EXISTS {TABLE_RESERVATIONS} ("
    " reservation_id VARCHAR(250) NOT NULL,"
    " budget VARCHAR(250) NOT NULL,"
    " window_key VARCHAR(40) NOT NULL,"
    " tag VARCHAR(250) NOT NULL,"
    " state VARCHAR(16) NOT NULL,"
    " estimate_micro BIGINT NOT NULL,"
    " charged_micro BIGINT,"
    " run_id VARCHAR(250),"
    " created_at DOUBLE PRECISION NOT NULL,"
    " expires_at DOUBLE PRECISION NOT NULL,"
    " updated_at DOUBLE PRECISION NOT NULL,"
    " PRIMARY KEY (reservation_id, budget))",
    f"CREATE INDEX IF NOT EXISTS ix_{TABLE_RESERVATIONS}_window"
    f" ON {TABLE_RESERVATIONS} (budget, window_key, state)",
    f"CREATE INDEX IF NOT EXISTS ix_{TABLE_RESERVATIONS}_tag ON {TABLE_RESERVATIONS} (tag)",
    # A refund or a final cost finds its reservations by NanoGPT's run id.
    f"CREATE INDEX IF NOT EXISTS ix_{TABLE_RESERVATIONS}_run ON {TABLE_RESERVATIONS} (run_id)"
    " WHERE run_id IS NOT NULL",
    # Only the reservations not sent yet (a handful): every reserve looks for expired ones, and
    # without it scans the whole table, which keeps every reservation ever made.
    f"CREATE INDEX IF NOT EXISTS ix_{TABLE_RESERVATIONS}_unsent"
    f" ON {TABLE_RESERVATIONS} (expires_at) WHERE state = 'reserved'",
)


# --- money ------------------------------------------------------------------------------------


def to_micro(amount: object, *, what: str) -> int:
    """``amount`` USD as whole micro-dollars, rounded up (a reservation never undercounts).

    Raises NanoGPTBudgetError for anything that is not a finite amount >= 0 (a bool, NaN,
    infinity, a negative number, junk): a budget fails closed.
    """
    if isinstance(amount, bool) or amount is None:
        raise NanoGPTBudgetError(f"{what}={amount!r} is not an amount in USD; nothing was sent.")
    try:
        value = Decimal(str(amount)) if isinstance(amount, float) else Decimal(amount)  # type: ignore[arg-type]
    except (InvalidOperation, TypeError, ValueError):
        raise NanoGPTBudgetError(
            f"{what}={amount!r} is not an amount in USD; nothing was sent."
        ) from None
    if not value.is_finite() or value < 0:
        raise NanoGPTBudgetError(
            f"{what}={amount!r} is not a finite amount >= 0 USD; nothing was sent."
        )
    return int((value * MICRO).to_integral_value(rounding=ROUND_CEILING))


def usd(micro: int) -> str:
    """``micro`` micro-dollars as a dollar figure for messages (cents, or finer when needed)."""
    value = Decimal(micro) / MICRO
    text = f"{value:.2f}" if value == value.quantize(Decimal("0.01")) else f"{value.normalize():f}"
    return f"${text}"


# --- windows ----------------------------------------------------------------------------------


def zone(name: str | None) -> ZoneInfo:
    """The IANA time zone ``name`` (UTC when unset); a readable error for anything else."""
    if name in (None, ""):
        return ZoneInfo("UTC")
    if not isinstance(name, str):
        raise NanoGPTConfigurationError(f"budget_timezone={name!r} is not an IANA time zone name.")
    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise NanoGPTConfigurationError(
            f"budget_timezone={name!r} is not an IANA time zone name (e.g. 'UTC', "
            "'Europe/Berlin', 'America/New_York')."
        ) from None


@dataclass(frozen=True)
class Window:
    """One day or month of a budget, in the budget's reset time zone."""

    period: Period
    start: datetime  # aware, in the budget's zone
    end: datetime  # the next reset

    @property
    def key(self) -> str:
        fmt = "%Y-%m-%d" if self.period == "day" else "%Y-%m"
        return f"{self.period}:{self.start.strftime(fmt)}"


def window_at(period: Period, tz: ZoneInfo, now: float) -> Window:
    """The ``period`` window containing epoch second ``now`` in ``tz``."""
    # Whole seconds: fromtimestamp rounds to the nearest microsecond, which would put the last
    # instant of a window into the next one. Resets fall on whole seconds.
    local = datetime.fromtimestamp(math.floor(now), tz)
    if period == "day":
        start_date = local.date()
        end_date = start_date + timedelta(days=1)
    elif period == "month":
        start_date = local.date().replace(day=1)
        days = calendar.monthrange(start_date.year, start_date.month)[1]
        end_date = start_date + timedelta(days=days)
    else:  # pragma: no cover - Period is closed
        raise ValueError(period)
    return Window(period, _local_midnight(start_date, tz), _local_midnight(end_date, tz))


def _local_midnight(day: Any, tz: ZoneInfo) -> datetime:
    # Midnight may not exist (a DST jump at 00:00): the wall time is then read with the offset
    # before the jump, which lands just after it once normalised through UTC.
    wall = datetime(day.year, day.month, day.day, tzinfo=tz)
    return wall.astimezone(UTC).astimezone(tz)


# --- budgets ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Budget:
    """A limit in USD per day or month, reset at midnight in ``timezone``."""

    name: str  # e.g. "connection nanogpt_default" or a group budget's name
    period: Period
    limit_micro: int
    timezone: str = "UTC"

    @property
    def key(self) -> str:
        return f"{self.name}|{self.period}"

    def window(self, now: float) -> Window:
        return window_at(self.period, zone(self.timezone), now)

    def describe(self) -> str:
        return f"budget {self.name!r} ({usd(self.limit_micro)} per {self.period}, {self.timezone})"


@dataclass(frozen=True)
class WindowUse:
    """What one budget's window holds: settled spend and open (reserved or sent) amounts."""

    budget: Budget
    window: Window
    spent_micro: int
    reserved_micro: int

    @property
    def total_micro(self) -> int:
        return self.spent_micro + self.reserved_micro

    @property
    def label(self) -> str:
        return f"{self.window.key.split(':', 1)[1]} ({self.window.period})"


@dataclass(frozen=True)
class TagUse:
    """What one submission tag (and NanoGPT run, once settled) counts in a budget's window."""

    tag: str
    run_id: str | None
    spent_micro: int
    reserved_micro: int


@dataclass(frozen=True)
class SentReservation:
    """A reservation whose request may have left and whose outcome was never recorded."""

    reservation_id: str
    tag: str
    run_id: str | None
    estimate_micro: int
    sent_at: float  # epoch seconds it was marked sent
    budgets: frozenset[str]  # the keys of the budgets it counts in


@dataclass(frozen=True)
class Moved:
    """One budget's row of a reservation that changed state, as it was before the change."""

    budget_key: str  # Budget.key: "<name>|<period>"
    from_state: str
    estimate_micro: int
    charged_micro: int | None  # the charge counted before (a settled row), else None

    @property
    def budget_name(self) -> str:
        return self.budget_key.rsplit("|", 1)[0]

    @property
    def period(self) -> str:
        return self.budget_key.rsplit("|", 1)[-1]

    @property
    def counted_micro(self) -> int:
        """What the row counted before the change: its charge once settled, else its estimate."""
        if self.from_state == "settled" and self.charged_micro is not None:
            return self.charged_micro
        return self.estimate_micro


@dataclass(frozen=True)
class Reservation:
    reservation_id: str
    estimate_micro: int
    budgets: tuple[Budget, ...]
    state: str
    reused: bool  # an existing reservation for the same id was returned


class BudgetExceeded(NanoGPTBudgetError):
    """A reserve would take a budget over its limit; nothing was reserved or sent."""

    def __init__(self, use: WindowUse, estimate_micro: int, *, advice: str = "") -> None:
        self.use = use
        self.estimate_micro = estimate_micro
        self.resets_at = use.window.end
        super().__init__(
            f"The shared {use.budget.describe()} does not allow this video: "
            f"{usd(use.spent_micro)} spent and {usd(use.reserved_micro)} reserved in the "
            f"{use.label} window, and this video is estimated at {usd(estimate_micro)}. "
            f"It resets at {use.window.end.isoformat()}. Nothing was sent to NanoGPT."
            + (f" {advice}" if advice else "")
        )

    def advised(self, advice: str) -> BudgetExceeded:
        """The same refusal, its message ending with what to do about it."""
        return BudgetExceeded(self.use, self.estimate_micro, advice=advice)


# --- the ledger -----------------------------------------------------------------------------


class Ledger:
    """Reservations against budgets, in one SQL database (SQLAlchemy Core, lazily imported)."""

    def __init__(
        self,
        engine: Engine,
        *,
        ttl_seconds: float = DEFAULT_RESERVATION_TTL_SECONDS,
        clock: Any = time.time,
    ) -> None:
        self._engine = engine
        self._postgres = engine.dialect.name == "postgresql"
        self.ttl_seconds = ttl_seconds
        self._clock = clock
        if engine not in _TABLES_READY:  # two threads may both create: harmless
            self._create_tables()
            _TABLES_READY.add(engine)

    # -- opening

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> Ledger:
        return cls(_engine(url), **kwargs)

    def _create_tables(self) -> None:
        """Create the tables and indexes that are missing: once per engine in a process (every
        guard and page opens the ledger; a task process opens it once)."""
        from sqlalchemy import exc

        def create(conn: Connection) -> None:
            for ddl in _DDL:
                conn.execute(_sql(ddl))

        for attempt in range(3):
            try:
                return self._run(create)
            except exc.IntegrityError:
                # PostgreSQL: two processes creating the same table at once; the other won.
                if attempt == 2:
                    raise

    @contextmanager
    def _transaction(self, *, write: bool = True) -> Iterator[Connection]:
        """One transaction; a writing one holds the database's write lock for budgets (see the
        module doc). A reading one sees one consistent snapshot and blocks no writer."""
        with self._engine.connect() as conn:
            if self._postgres:
                with conn.begin():
                    yield conn
            else:
                # The engine leaves transactions to us (pysqlite's own handling is off), so the
                # write lock is taken at BEGIN, not at the first write after reading the sums.
                conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    yield conn
                except BaseException:
                    conn.exec_driver_sql("ROLLBACK")
                    raise
                conn.exec_driver_sql("COMMIT")

    def _run(self, body: Callable[[Connection], T], *, write: bool = True) -> T:
        """``body`` in one transaction (``_transaction``), run once more on a new connection when
        the pooled one it was given turns out closed by the server (a restart, an idle timeout).

        This replaces a ping before every transaction (``pool_pre_ping``, one more round trip
        each). Running the body again is safe: SQLAlchemy drops the pool's connections on a
        disconnect, and every operation here leaves the same rows when run twice, even after a
        commit whose answer was lost (a reserve finds its own reservation and returns it).
        """
        from sqlalchemy import exc

        try:
            with self._transaction(write=write) as conn:
                return body(conn)
        except exc.DBAPIError as error:
            if not error.connection_invalidated:
                raise
        with self._transaction(write=write) as conn:
            return body(conn)

    # -- operations

    def reserve(
        self,
        reservation_id: str,
        tag: str,
        budgets: Sequence[Budget],
        estimate_micro: int,
        *,
        sent: bool = False,
    ) -> Reservation:
        """Reserve ``estimate_micro`` against every budget, all or nothing.

        Idempotent: a reservation already open (reserved, sent or settled) under this id is
        returned as it is. Earlier tries' reservations of the same ``tag`` that were never sent
        are dropped (that try is over; ``mark_sent`` refuses them, so they can never be sent).
        Raises ``BudgetExceeded`` naming the first budget that does not allow it.

        ``sent``: the caller sends the request as soon as this returns, so the reservation is
        recorded as sent in the same transaction (as ``mark_sent`` would record it, one commit
        fewer): it never expires.
        """
        if estimate_micro < 0:
            raise NanoGPTBudgetError("A negative cost estimate cannot be reserved.")
        budgets = _unique(budgets)
        now = self._clock()

        def body(conn: Connection) -> Reservation:
            windows = self._lock_windows(conn, budgets, now)
            self._expire(conn, now, tag=tag, keep=reservation_id)
            rows = conn.execute(
                _sql(
                    f"SELECT state, estimate_micro FROM {TABLE_RESERVATIONS} "
                    "WHERE reservation_id = :rid"
                ),
                {"rid": reservation_id},
            ).all()
            open_rows = [row for row in rows if row.state in _OPEN]
            if open_rows:
                state = str(open_rows[0].state)
                if sent and state == "reserved":  # unexpired: _expire has just run
                    self._mark_sent(conn, reservation_id, now)
                    state = "sent"
                return Reservation(
                    reservation_id,
                    int(open_rows[0].estimate_micro),
                    tuple(budgets),
                    state,
                    reused=True,
                )
            for use in self._uses(conn, budgets, windows, now):
                if use.total_micro + estimate_micro > use.budget.limit_micro:
                    raise BudgetExceeded(use, estimate_micro)
            state = "sent" if sent else "reserved"
            if rows:  # released or expired: reserving the same id again reopens it
                conn.execute(
                    _sql(f"DELETE FROM {TABLE_RESERVATIONS} WHERE reservation_id = :rid"),
                    {"rid": reservation_id},
                )
            values, params = _rows_of(
                "(:rid, :budget_{n}, :window_{n}, :tag, :state, :estimate, NULL, NULL, "
                ":now, :expires, :now)",
                [{"budget": b.key, "window": windows[b.key].key} for b in budgets],
            )
            conn.execute(
                _sql(
                    f"INSERT INTO {TABLE_RESERVATIONS} (reservation_id, budget, window_key, tag, "
                    "state, estimate_micro, charged_micro, run_id, created_at, expires_at, "
                    f"updated_at) VALUES {values}"
                ),
                {
                    **params,
                    "rid": reservation_id,
                    "tag": tag,
                    "state": state,
                    "estimate": estimate_micro,
                    "now": now,
                    "expires": now + self.ttl_seconds,
                },
            )
            return Reservation(reservation_id, estimate_micro, tuple(budgets), state, False)

        return self._run(body)

    def mark_sent(self, reservation_id: str) -> None:
        """Record that the request is about to leave: from now on the amount never expires.

        Raises NanoGPTBudgetError when the reservation is gone or expired (then nothing may be
        sent: its amount is no longer counted).
        """
        now = self._clock()

        def body(conn: Connection) -> None:
            self._lock_windows_of(conn, reservation_id)
            states = {
                row.state
                for row in conn.execute(
                    _sql(
                        f"SELECT state, expires_at FROM {TABLE_RESERVATIONS} "
                        "WHERE reservation_id = :rid"
                    ),
                    {"rid": reservation_id},
                )
                if row.state in ("sent", "settled")
                or (row.state == "reserved" and row.expires_at > now)
            }
            if not states:
                raise NanoGPTBudgetError(
                    f"The budget reservation {reservation_id} expired or was released before "
                    "the request was sent, so it is no longer counted; nothing was sent. A "
                    "retry reserves again."
                )
            self._mark_sent(conn, reservation_id, now)

        self._run(body)

    def _mark_sent(self, conn: Connection, reservation_id: str, now: float) -> None:
        conn.execute(
            _sql(
                f"UPDATE {TABLE_RESERVATIONS} SET state = 'sent', updated_at = :now "
                "WHERE reservation_id = :rid AND state = 'reserved'"
            ),
            {"rid": reservation_id, "now": now},
        )

    def settle(
        self, reservation_id: str, charged_micro: int | None, run_id: str | None = None
    ) -> list[Moved]:
        """Count the reservation at what NanoGPT charged (None: the charge is unknown or not in
        USD, so the estimate stays counted as spend). The rows changed; none when there is
        nothing to settle."""
        return self._move(reservation_id, "settled", _OPEN, charged_micro, run_id)

    def settle_final(self, reservation_id: str, charged_micro: int, run_id: str) -> list[Moved]:
        """Count NanoGPT's final cost of the reservation's run where it is above what is counted
        (the pre-charge): never lower. NanoGPT's docs do not say a lower final cost is given
        back, so counting it would let the budget spend money that was taken."""
        return self._move(reservation_id, "settled", _OPEN, charged_micro, run_id, raise_only=True)

    def release(self, reservation_id: str) -> list[Moved]:
        """Stop counting the reservation: nothing was created, or NanoGPT refunded the job.
        Idempotent; the rows changed, none when it was not counted."""
        return self._move(reservation_id, "released", _OPEN)

    def sent(self) -> list[SentReservation]:
        """Every reservation in state ``sent`` (the request may have left, the outcome was never
        recorded), oldest first: what reconciliation asks NanoGPT about."""
        found: dict[str, SentReservation] = {}
        rows = self._run(
            lambda conn: conn.execute(
                _sql(
                    f"SELECT reservation_id, budget, tag, run_id, estimate_micro, updated_at "
                    f"FROM {TABLE_RESERVATIONS} WHERE state = 'sent'"
                )
            ).all(),
            write=False,
        )
        for r in rows:
            seen = found.get(r.reservation_id)
            budgets = (seen.budgets if seen else frozenset()) | {str(r.budget)}
            found[r.reservation_id] = SentReservation(
                str(r.reservation_id),
                str(r.tag),
                r.run_id or (seen.run_id if seen else None),
                int(r.estimate_micro),
                min(float(r.updated_at), seen.sent_at if seen else math.inf),
                budgets,
            )
        return sorted(found.values(), key=lambda s: s.sent_at)

    def resolve_sent(
        self,
        reservation_id: str,
        *,
        created: bool,
        charged_micro: int | None = None,
        run_id: str | None = None,
    ) -> list[Moved]:
        """Reconciliation's verdict on a ``sent`` reservation: settled (``created``: at
        ``charged_micro``, the estimate when None) or released. Only a row still ``sent`` changes,
        so a task that settled it meanwhile keeps its own answer. The rows changed."""
        to = "settled" if created else "released"
        return self._move(reservation_id, to, ("sent",), charged_micro, run_id)

    def _move(
        self,
        reservation_id: str,
        to: str,
        from_states: Sequence[str],
        charged_micro: int | None = None,
        run_id: str | None = None,
        *,
        raise_only: bool = False,
    ) -> list[Moved]:
        """Move the reservation's rows in ``from_states`` to state ``to`` (settled: at
        ``charged_micro``, the estimate when None; with ``raise_only`` a settled row keeps a
        higher charge), recording ``run_id`` when given; one transaction holding its windows'
        locks. The rows changed, as they were before (what the metrics count); none when no row
        is in ``from_states``."""
        charge = ""
        if to == "settled":
            # An unknown charge (None) never replaces a known one: a row settled before keeps it.
            charge = ", charged_micro = COALESCE(:charged, charged_micro, estimate_micro)"
        if to == "settled" and raise_only:
            charge = (
                ", charged_micro = CASE WHEN charged_micro IS NOT NULL AND charged_micro >= "
                ":charged THEN charged_micro ELSE COALESCE(:charged, estimate_micro) END"
            )
        where = f"WHERE reservation_id = :rid AND state IN ({', '.join(map(repr, from_states))})"
        now = self._clock()

        def body(conn: Connection) -> list[Moved]:
            self._lock_windows_of(conn, reservation_id)
            before = conn.execute(
                _sql(
                    f"SELECT budget, state, estimate_micro, charged_micro "
                    f"FROM {TABLE_RESERVATIONS} {where}"
                ),
                {"rid": reservation_id},
            ).all()
            if not before:
                return []
            conn.execute(
                _sql(
                    f"UPDATE {TABLE_RESERVATIONS} SET state = :to{charge}, "
                    f"run_id = COALESCE(:run_id, run_id), updated_at = :now {where}"
                ),
                {
                    "rid": reservation_id,
                    "to": to,
                    "charged": charged_micro,
                    "run_id": run_id,
                    "now": now,
                },
            )
            return [
                Moved(str(r.budget), str(r.state), int(r.estimate_micro), r.charged_micro)
                for r in before
            ]

        return self._run(body)

    def record_outside_spend(self, budget: Budget, now: float, key_spent_micro: int) -> int:
        """Count what the API key spent in ``budget``'s window at ``now`` beyond what the ledger
        holds for Airflow (settled and sent rows): one settled row per window, replaced on every
        call, so reconciling twice counts it once. Returns the amount it now holds."""
        window = budget.window(now)
        rid = f"{OUTSIDE_SPEND_PREFIX}{window.key}"

        def body(conn: Connection) -> int:
            self._lock_windows(conn, [budget], now)
            airflow = conn.execute(
                _sql(
                    "SELECT COALESCE(SUM(CASE WHEN state = 'settled' THEN charged_micro "
                    "WHEN state = 'sent' THEN estimate_micro ELSE 0 END), 0) AS held "
                    f"{_OF_WINDOW} AND reservation_id <> :rid"
                ),
                {"budget": budget.key, "window": window.key, "rid": rid},
            ).one()
            outside = max(0, key_spent_micro - int(airflow.held))
            conn.execute(
                _sql(f"DELETE FROM {TABLE_RESERVATIONS} WHERE reservation_id = :rid"),
                {"rid": rid},
            )
            conn.execute(
                _sql(
                    f"INSERT INTO {TABLE_RESERVATIONS} (reservation_id, budget, window_key, "
                    "tag, state, estimate_micro, charged_micro, run_id, created_at, "
                    "expires_at, updated_at) VALUES (:rid, :budget, :window, :tag, "
                    "'settled', :amount, :amount, NULL, :now, :now, :now)"
                ),
                {
                    "rid": rid,
                    "budget": budget.key,
                    "window": window.key,
                    "tag": OUTSIDE_SPEND_TAG,
                    "amount": outside,
                    "now": now,
                },
            )
            return outside

        return self._run(body)

    def note_run(self, reservation_id: str, run_id: str) -> None:
        """Record which NanoGPT run a still-``sent`` reservation paid for (its job has not
        ended): the next reconciliation asks about that run directly."""
        self._run(
            lambda conn: conn.execute(
                _sql(
                    f"UPDATE {TABLE_RESERVATIONS} SET run_id = :run_id "
                    "WHERE reservation_id = :rid AND state = 'sent'"
                ),
                {"rid": reservation_id, "run_id": run_id},
            )
        )

    def reservations_of_run(self, run_id: str) -> list[str]:
        """The reservations that recorded NanoGPT run ``run_id``."""
        rows = self._run(
            lambda conn: conn.execute(
                _sql(f"SELECT reservation_id FROM {TABLE_RESERVATIONS} WHERE run_id = :run_id"),
                {"run_id": run_id},
            ).all(),
            write=False,
        )
        return sorted({row.reservation_id for row in rows})

    def use(self, budget: Budget, now: float | None = None) -> WindowUse:
        """The budget's current window: spent and reserved (read-only)."""
        at = self._clock() if now is None else now
        window = budget.window(at)
        return self._run(
            lambda conn: self._uses(conn, [budget], {budget.key: window}, at)[0], write=False
        )

    def state_of(self, reservation_id: str) -> dict[str, tuple[str, int, int | None]]:
        """Per budget: (state, estimate, charged) of a reservation (for tests and diagnostics)."""
        rows = self._run(
            lambda conn: conn.execute(
                _sql(
                    f"SELECT budget, state, estimate_micro, charged_micro FROM "
                    f"{TABLE_RESERVATIONS} WHERE reservation_id = :rid"
                ),
                {"rid": reservation_id},
            ).all(),
            write=False,
        )
        return {r.budget: (r.state, int(r.estimate_micro), r.charged_micro) for r in rows}

    # -- internals

    def _lock_windows(
        self, conn: Connection, budgets: Iterable[Budget], now: float
    ) -> dict[str, Window]:
        """Create and lock each budget's current window row (PostgreSQL; see ``_lock_rows``)."""
        windows = {budget.key: budget.window(now) for budget in budgets}
        if self._postgres:
            keys = [{"budget": key, "window": w.key} for key, w in sorted(windows.items())]
            values, params = _rows_of("(:budget_{n}, :window_{n}, :now)", keys)
            # Sorted, so two transactions creating the same new rows wait for each other in
            # the same order.
            conn.execute(
                _sql(
                    f"INSERT INTO {TABLE_WINDOWS} (budget, window_key, created_at) "
                    f"VALUES {values} ON CONFLICT DO NOTHING"
                ),
                {**params, "now": now},
            )
            self._lock_rows(conn, *_rows_of(_A_WINDOW, keys, " OR "))
        return windows

    def _lock_windows_of(self, conn: Connection, reservation_id: str) -> None:
        """Lock the window rows of a reservation's budgets (its reserve created them)."""
        if self._postgres:
            self._lock_rows(
                conn,
                f"(budget, window_key) IN (SELECT budget, window_key FROM {TABLE_RESERVATIONS} "
                "WHERE reservation_id = :rid)",
                {"rid": reservation_id},
            )

    def _lock_rows(self, conn: Connection, where: str, params: dict[str, Any]) -> None:
        """PostgreSQL: lock the window rows ``where`` selects, in one statement and in one global
        order (byte order, as Python sorts them, whatever the database's collation), so two
        transactions wanting the same windows never deadlock. ORDER BY comes before FOR UPDATE:
        rows are locked in the order sorted. SQLite needs none: BEGIN IMMEDIATE holds its one
        write lock."""
        conn.execute(
            _sql(
                f"SELECT budget FROM {TABLE_WINDOWS} WHERE {where} "
                'ORDER BY budget COLLATE "C", window_key COLLATE "C" FOR UPDATE'
            ),
            params,
        )

    def _expire(self, conn: Connection, now: float, *, tag: str, keep: str) -> None:
        """Drop reservations never sent: past their TTL, or an earlier try's of this tag."""
        conn.execute(
            _sql(
                f"UPDATE {TABLE_RESERVATIONS} SET state = 'expired', updated_at = :now "
                "WHERE state = 'reserved' AND (expires_at <= :now "
                "OR (tag = :tag AND reservation_id <> :keep))"
            ),
            {"now": now, "tag": tag, "keep": keep},
        )

    def _uses(
        self, conn: Connection, budgets: Sequence[Budget], windows: dict[str, Window], now: float
    ) -> list[WindowUse]:
        """What each budget's window holds, in ``budgets``' order: one query for all of them."""
        where, params = _rows_of(
            _A_WINDOW, [{"budget": b.key, "window": windows[b.key].key} for b in budgets], " OR "
        )
        sums = {
            (row.budget, row.window_key): row
            for row in conn.execute(
                _sql(
                    f"SELECT budget, window_key, {_COUNTED} FROM {TABLE_RESERVATIONS} "
                    f"WHERE {where} GROUP BY budget, window_key"
                ),
                {**params, "now": now},
            )
        }
        uses = []
        for budget in budgets:
            window = windows[budget.key]
            row = sums.get((budget.key, window.key))
            spent, reserved = (int(row.spent), int(row.reserved)) if row else (0, 0)
            uses.append(WindowUse(budget, window, spent, reserved))
        return uses

    def use_by_tag(self, budget: Budget, now: float | None = None) -> list[TagUse]:
        """The budget's current window per submission tag and NanoGPT run: what each counts
        (read-only; the same sums as ``use``, so they add up to it). Rows counting nothing are
        left out."""
        at = self._clock() if now is None else now
        window = budget.window(at)
        rows = self._run(
            lambda conn: conn.execute(
                _sql(f"SELECT tag, run_id, {_COUNTED} {_OF_WINDOW} GROUP BY tag, run_id"),
                {"budget": budget.key, "window": window.key, "now": at},
            ).all(),
            write=False,
        )
        return [
            TagUse(str(r.tag), r.run_id, int(r.spent), int(r.reserved))
            for r in rows
            if r.spent or r.reserved
        ]


# What a budget's window counts, in one place (``use`` and ``use_by_tag``): settled rows at their
# charge, sent ones and unexpired reserved ones at their estimate; released and expired: nothing.
_COUNTED = (
    "COALESCE(SUM(CASE WHEN state = 'settled' THEN charged_micro ELSE 0 END), 0) AS spent, "
    "COALESCE(SUM(CASE WHEN state = 'sent' OR (state = 'reserved' AND expires_at > :now) "
    "THEN estimate_micro ELSE 0 END), 0) AS reserved"
)
# The states in which a reservation counts (or, settled, may be settled again).
_OPEN = ("reserved", "sent", "settled")
_OF_WINDOW = f"FROM {TABLE_RESERVATIONS} WHERE budget = :budget AND window_key = :window"
# One budget window among several (joined with OR: both databases then search the index for each,
# where a row-value IN list makes SQLite scan all of it).
_A_WINDOW = "(budget = :budget_{n} AND window_key = :window_{n})"


@functools.lru_cache(maxsize=256)
def _sql(statement: str) -> TextClause:
    """``statement`` as a SQLAlchemy text clause, made once: building one parses its bind
    parameters each time, a good part of a SQLite transaction's CPU time."""
    from sqlalchemy import text

    return text(statement)


def _rows_of(
    template: str, rows: Sequence[dict[str, Any]], joiner: str = ", "
) -> tuple[str, dict[str, Any]]:
    """``template`` (placeholders ending ``_{n}``) once per row, joined, and the parameters for
    them: several rows in one statement, one round trip."""
    sql = joiner.join(template.format(n=n) for n in range(len(rows)))
    params = {f"{name}_{n}": value for n, row in enumerate(rows) for name, value in row.items()}
    return sql, params


def _unique(budgets: Sequence[Budget]) -> list[Budget]:
    seen: dict[str, Budget] = {}
    for budget in budgets:
        seen.setdefault(budget.key, budget)
    if not seen:
        raise ValueError("reserve() needs at least one budget")
    return list(seen.values())


# --- engines --------------------------------------------------------------------------------

_ENGINES: dict[str, Engine] = {}
_ENGINES_LOCK = threading.Lock()
# The engines whose database this process has already run _DDL on. Per engine, not per URL: an
# engine disposed and made anew for the same URL (a SQLite file deleted and created again) runs
# it again. Still safe when several processes create at once (_create_tables).
_TABLES_READY: weakref.WeakSet[Engine] = weakref.WeakSet()
SQLITE_BUSY_TIMEOUT_SECONDS = 30.0


def _engine(url: str) -> Engine:
    """One engine per database URL per process (engines pool connections)."""
    with _ENGINES_LOCK:
        engine = _ENGINES.get(url)
        if engine is None:
            engine = _ENGINES[url] = _create_engine(url)
        return engine


def _create_engine(url: str) -> Engine:
    from sqlalchemy import create_engine, event

    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS, "check_same_thread": False},
        )

        @event.listens_for(engine, "connect")
        def _own_transactions(dbapi_connection: Any, _record: Any) -> None:
            # Turn pysqlite's implicit BEGIN off: Ledger._transaction issues BEGIN IMMEDIATE.
            dbapi_connection.isolation_level = None
            # Readers (a budget's totals) then never block the one writer, nor it them.
            dbapi_connection.execute("PRAGMA journal_mode=WAL")

        return engine
    # No pool_pre_ping: Ledger._run retries a transaction whose pooled connection was closed.
    return create_engine(url)
