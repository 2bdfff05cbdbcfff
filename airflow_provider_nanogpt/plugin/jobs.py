"""Reading the video jobs and charges that tasks recorded, for the NanoGPT page.

A job is the ``nanogpt_job`` XCom a task pushed (see ``airflow_provider_nanogpt.job_card``),
joined to its task instance. Charges of earlier tries live in the task state store on Airflow
3.3 (``nanogpt_charge:<run id>``). Every query is restricted to the DAGs the user may read.

These are Airflow's ORM models, not a public API: one small module owns every query, so a change
in Airflow touches one place.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from itertools import islice
from typing import TYPE_CHECKING, Any

from airflow_provider_nanogpt.job_card import (
    CARD_FIELDS_IN_CHARGE,
    CHARGE_KEY_PREFIX,
    JOB_KEY,
    REFUNDED,
    WATCH_KEY,
    JobState,
)

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from airflow_provider_nanogpt.plugin.models import ChargeRow

PAGE_SIZE = 50
SECONDS_A_DAY = 86_400
# Task instance states in which a submitted job is still being waited for.
WAITING_TI_STATES = frozenset(
    {
        "deferred",
        "running",
        "queued",
        "scheduled",
        "up_for_retry",
        "up_for_reschedule",
        "restarting",
    }
)
STATES = ("rendering", "submitted", *(s.value for s in JobState if s is not JobState.SUBMITTED))


# The columns the job list sorts by (``order_by``, "-" first for descending), each with the
# direction a first click sorts in: numbers and times largest first, names A to Z.
SORTS = {"submitted": "-", "took": "-", "cost": "-", "task": "", "model": "", "state": ""}
DEFAULT_ORDER = "-submitted"


@dataclass(frozen=True)
class Filters:
    dag_id: str | None = None
    state: str | None = None
    since: date | None = None
    until: date | None = None  # inclusive
    page: int = 1
    # Case-insensitive part of the prompt (in the database, as the other filters).
    prompt: str | None = None
    order_by: str = DEFAULT_ORDER


@dataclass
class Job:
    dag_id: str
    dag_run_id: str
    task_id: str
    map_index: int
    ti_state: str | None
    card: dict[str, Any]
    updated: datetime
    # From NanoGPT, for jobs still rendering (filled in by the caller).
    progress: float | None = None
    eta_seconds: float | None = None
    # What the task's map_index_template rendered (Airflow's TaskInstance.rendered_map_index).
    map_label: str | None = None
    # A sensor waits for the run now (its own task submitted without waiting).
    sensor_waits: bool = False

    @property
    def task_label(self) -> str:
        """The task as Airflow's UI names it: ``generate [its label]``, else ``generate [1]``."""
        if self.map_index < 0:
            return self.task_id
        return f"{self.task_id} [{self.map_label or self.map_index}]"

    @property
    def state(self) -> str:
        card_state = self.card.get("state")
        if card_state != JobState.SUBMITTED:
            return str(card_state)
        waiting = (self.ti_state or "") in WAITING_TI_STATES or self.sensor_waits
        return "rendering" if waiting else "submitted"

    @property
    def note(self) -> str | None:
        """What held the submission back, in a few words: "daily USD cap reached, resets
        00:00 UTC", "budget 'team' ($5.00 per day, UTC) full, resets 00:00 UTC" (and whether the
        task still waits for the reset)."""
        from airflow_provider_nanogpt.api.coerce import as_amount
        from airflow_provider_nanogpt.exceptions import DAILY_CAP_NAMES, reset_clock

        resets_at = as_amount(self.card.get("resets_at"))
        cap, budget = self.card.get("daily_cap"), self.card.get("budget")
        if resets_at is None:
            return None
        if self.state == JobState.DAILY_CAP and isinstance(cap, str):
            what = f"{DAILY_CAP_NAMES.get(cap, 'daily cap')} reached"
        elif self.state == JobState.OVER_BUDGET and isinstance(budget, str):
            what = f"{budget} full"
        else:
            return None
        waiting = self.card.get("finished_at") is None and self.ti_state in WAITING_TI_STATES
        return f"{what}, resets {reset_clock(resets_at)}" + (
            "; waiting for the reset" if waiting else ""
        )

    @property
    def run_id(self) -> str | None:
        value = self.card.get("run_id")
        return value if isinstance(value, str) else None

    @property
    def submitted_at(self) -> datetime | None:
        return _when(self.card.get("submitted_at"))

    @property
    def finished_at(self) -> datetime | None:
        return _when(self.card.get("finished_at"))

    @property
    def has_video(self) -> bool:
        return self.state == JobState.COMPLETED and bool(
            self.card.get("video_url") or self.card.get("output_path")
        )


@dataclass
class Page:
    jobs: list[Job]
    total: int
    page: int
    pages: int


@dataclass
class Spend:
    """Charges made through this Airflow, per currency."""

    by_day: dict[str, dict[str, float]] = field(default_factory=dict)  # day -> currency -> sum
    by_dag: dict[str, dict[str, float]] = field(default_factory=dict)
    # (day, DAG) -> currency -> sum: the rows of the spend CSV, which add up to both tables.
    by_day_and_dag: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)
    totals: dict[str, float] = field(default_factory=dict)
    jobs: int = 0
    # Jobs whose cost does not count: none reported, not a finite number >= 0, or no known currency.
    unknown_cost: int = 0


def list_jobs(
    session: Session, dag_ids: set[str], filters: Filters, page_size: int | None = None
) -> Page:
    """One page of jobs (``page_size``, PAGE_SIZE by default), newest submission first, of the
    readable DAGs.

    Besides the job cards, the refunded jobs whose card a retry cleared: their charge record
    (task state store, Airflow 3.3+) is all that is left of them, and each is a row of its own.
    """
    from sqlalchemy import func

    from airflow_provider_nanogpt.plugin.models import XComModel, task_instance_columns

    query = _job_rows(dag_ids, filters)
    if filters.state:
        query = _with_state(query, filters.state, dag_ids)
    sortable = query
    if _sort_key(filters.order_by) == "state" and not filters.state:
        sortable = _joined(query)  # the state a row shows depends on its task instance
    size = page_size or PAGE_SIZE
    orphans = _refunded_without_card(session, dag_ids, filters)
    if orphans:
        listing = _page_with_orphans(session, dag_ids, sortable, orphans, filters, size)
    else:
        # Counted and sorted on the cards' keys alone, then the page's rows read whole.
        total = session.scalar(query.with_only_columns(func.count())) or 0
        pages = max(1, -(-total // size))
        page = min(max(1, filters.page), pages)
        ti_keys = task_instance_columns(XComModel)
        order = _page_order(
            _card_sort_value(filters.order_by, dag_ids), _card_submitted(), filters.order_by
        )
        keys = session.execute(
            sortable.with_only_columns(*ti_keys)
            .order_by(*order, *ti_keys)
            .limit(size)
            .offset((page - 1) * size)
        ).all()
        cards = _read_cards(session, keys)
        jobs = [job for key in keys if (job := cards.get(tuple(key))) is not None]
        listing = Page(jobs, total, page, pages)
    _refine_with_watchers(session, dag_ids, listing.jobs)
    return listing


def every_job(
    session: Session, dag_ids: set[str], filters: Filters, limit: int, page_size: int = 200
) -> tuple[int, Iterator[Job]]:
    """How many jobs the filters select, and the first ``limit`` of them, in the page's order,
    read ``page_size`` at a time as they are consumed (for a file sent while it is read).

    The first page is read with ``session``; the rest with a session of their own: a request's
    session may be closed before a streamed response has been sent.
    """
    first = list_jobs(session, dag_ids, replace(filters, page=1), page_size)
    wanted = min(first.total, limit)

    def jobs() -> Iterator[Job]:
        yield from first.jobs
        from airflow.utils.session import create_session

        with create_session() as own:
            for number in range(2, -(-wanted // page_size) + 1):
                yield from list_jobs(own, dag_ids, replace(filters, page=number), page_size).jobs

    return first.total, islice(jobs(), wanted)


def find_job(
    session: Session,
    dag_ids: set[str],
    dag_id: str,
    dag_run_id: str,
    task_id: str,
    map_index: int,
) -> Job | None:
    """The job of one task instance: its own card, or the one of the run it watches (a
    sensor's), completed with what the submitting task's card knows; ``dag_ids`` are the DAGs
    the user may read, whose cards may be read for that."""
    from sqlalchemy import select

    from airflow_provider_nanogpt.plugin.models import XComModel, is_task_instance

    for key in (JOB_KEY, WATCH_KEY):
        query = _joined(select(XComModel, *_ti_columns())).where(
            XComModel.key == key,
            is_task_instance(XComModel, dag_id, dag_run_id, task_id, map_index),
        )
        row = session.execute(query).first()
        if row is None:
            continue
        job = _job(*row)
        if key == JOB_KEY:
            _refine_with_watchers(session, dag_ids, [job])
        else:
            _add_submitters_facts(session, dag_ids, job)
        return job
    return None


# What a sensor's card lacks and the submitting task's card has. NanoGPT's status answer has no
# prompt (and no currency), so the submitter's card is the one source of all of them.
SUBMITTER_FACTS = ("prompt", "model", "submitted_at", "cost", "currency")


def _add_submitters_facts(session: Session, dag_ids: set[str], job: Job) -> None:
    """Fill the facts a sensor's card lacks (None there) from the card of the task that
    submitted its run, in a DAG the user may read: its prompt, submission time, and the
    pre-charge and its currency until the sensor records the final cost."""
    from sqlalchemy import select

    from airflow_provider_nanogpt.plugin.models import XComModel

    if job.run_id is None or all(job.card.get(k) is not None for k in SUBMITTER_FACTS):
        return
    value = session.scalar(
        select(XComModel.value)
        .where(
            XComModel.key == JOB_KEY,
            XComModel.dag_id.in_(dag_ids),
            XComModel.value["run_id"].as_string() == job.run_id,
        )
        .limit(1)
    )
    submitter = _card(value)
    job.card = {
        **job.card,
        **{
            k: submitter.get(k)
            for k in SUBMITTER_FACTS
            if job.card.get(k) is None and submitter.get(k) is not None
        },
    }


@dataclass(frozen=True)
class VideoSource:
    """Where the api-server may read a job's video from, as the task itself was configured: its
    connection (None: no trusted one, so no saved file and the strictest URL rules) and the path
    it saved to. Never from the job card, an XCom anyone with XCom write access can edit."""

    conn_id: str | None
    output_path: str | None


def video_source(session: Session, job: Job) -> VideoSource:
    """The connection and ``output_path`` of the job's task, from its rendered template fields
    (both are template fields of GenerateVideoOperator and VideoStatusSensor)."""
    from airflow_provider_nanogpt.plugin.models import rendered_fields

    fields = rendered_fields(session, job.dag_id, job.dag_run_id, job.task_id, job.map_index)
    conn_id, output_path = (fields or {}).get("nanogpt_conn_id"), (fields or {}).get("output_path")
    return VideoSource(
        conn_id if isinstance(conn_id, str) and conn_id else None,
        output_path if isinstance(output_path, str) and output_path else None,
    )


def spend(session: Session, dag_ids: set[str], since: date | None, until: date | None) -> Spend:
    """Charges per day and per DAG: one per NanoGPT run, refunded (failed) jobs left out.

    Added up in the database (``_spend_rows``): the page shows this on every view, and reading
    every card and charge into Python cost most of a view with 10,000 jobs.
    """
    result = Spend()
    by_day: dict[str, dict[str, float]] = {}
    by_dag: dict[str, dict[str, float]] = {}
    for epoch_day, dag_id, currency, amount, jobs, unknown in session.execute(
        _spend_rows(session, dag_ids, since, until)
    ):
        result.jobs += int(jobs)
        result.unknown_cost += int(unknown or 0)
        if currency is None:  # the group of jobs without a cost that counts
            continue
        day = (EPOCH_DATE + timedelta(days=int(epoch_day))).isoformat()
        amount = float(amount)
        sums: tuple[tuple[dict[Any, dict[str, float]], Any], ...] = (
            (by_day, day),
            (by_dag, dag_id),
            (result.by_day_and_dag, (day, dag_id)),
        )
        for table, key in sums:
            figures = table.setdefault(key, {})
            figures[currency] = figures.get(currency, 0.0) + amount
        result.totals[currency] = result.totals.get(currency, 0.0) + amount
    result.by_day = dict(sorted(by_day.items(), reverse=True))
    result.by_dag = dict(sorted(by_dag.items()))
    result.by_day_and_dag = dict(sorted(result.by_day_and_dag.items()))
    return result


# Where epoch day numbers count from; the range of times Python's datetime can hold (years 1 to
# 9999): a submission time outside it is no time, as ``_when`` decides.
EPOCH_DATE = date(1970, 1, 1)
FIRST_SECOND, AFTER_LAST_SECOND = -62_135_596_800, 253_402_300_800
LARGEST_FLOAT = 1.7976931348623157e308
# What the spend reads of a card or charge record.
DOCUMENT_FIELDS = ("run_id", "submitted_at", "cost", "currency", "state", "refunded")


def _spend_rows(session: Session, dag_ids: set[str], since: date | None, until: date | None) -> Any:
    """SQL: the spend, one row per (epoch day, DAG, currency) with its sum, the number of jobs
    and how many of them have no cost that counts (currency NULL: those jobs' group).

    The money rules, in one place:
    * a job is a NanoGPT run id (a JSON string), from a job card or a charge record (Airflow
      3.3+) of a readable DAG; a document that is not valid JSON is not read;
    * a run is left out when any of them says NanoGPT refunded it (a card in a refunded state,
      a record with ``"refunded": true``);
    * its figures are those of its card when the card has a cost, else of its charge record,
      else of its card;
    * it counts on the UTC day of its ``submitted_at`` (a JSON number Python's datetime can
      hold), and only in the date range;
    * its cost counts when it is a JSON number, finite and >= 0, in a known currency
      (``KNOWN_CURRENCIES``); otherwise the job counts as one without a known cost.
    """
    from sqlalchemy import Integer, and_, case, func, literal, select, union_all

    from airflow_provider_nanogpt.api.responses import KNOWN_CURRENCIES
    from airflow_provider_nanogpt.plugin.models import XComModel, charge_table

    dialect = session.get_bind().dialect.name
    card = _JsonDocument(
        XComModel, (XComModel.key == JOB_KEY, XComModel.dag_id.in_(dag_ids)), dialect, "cards"
    )
    sources = [
        select(
            card.string("run_id").label("nanogpt_run"),
            card.rows.c.dag_id,
            card.number("submitted_at").label("submitted_at"),
            card.number("cost").label("cost"),
            card.string("currency").label("currency"),
            case((card.string("state").in_(sorted(REFUNDED)), 1), else_=0).label("refunded"),
            # The card with a cost, then the charge record, then the card without one.
            case((card.present("cost"), 2), else_=0).label("rank"),
        )
    ]
    store = charge_table()
    if store is not None:
        charge_records = (
            store.key.startswith(CHARGE_KEY_PREFIX, autoescape=True),
            store.dag_id.in_(dag_ids),
        )
        record = _JsonDocument(store, charge_records, dialect, "charge_records")
        sources.append(
            select(
                record.string("run_id"),
                record.rows.c.dag_id,
                record.number("submitted_at"),
                record.number("cost"),
                record.string("currency"),
                case((record.is_true("refunded"), 1), else_=0),
                literal(1, Integer),
            )
        )
    ranked = _one_per_run(union_all(*sources).subquery(), dialect)
    at = ranked.c.submitted_at
    counted = and_(
        ranked.c.cost.is_not(None),
        ranked.c.cost >= 0,
        ranked.c.cost <= card.bound(LARGEST_FLOAT),
        ranked.c.currency.in_(sorted(KNOWN_CURRENCIES)),
    )
    has_time = and_(at >= card.bound(FIRST_SECOND), at < card.bound(AFTER_LAST_SECOND))
    # Plain columns to group by (PostgreSQL does not match a grouped expression's parameters).
    judged = select(
        # Only a time datetime can hold has a day (no integer overflow in the cast).
        case((has_time, _epoch_day(at, dialect)), else_=None).label("day"),
        ranked.c.dag_id,
        case((counted, ranked.c.currency), else_=None).label("currency"),
        case((counted, ranked.c.cost), else_=None).label("cost"),
    ).subquery()
    conditions: list[Any] = [judged.c.day.is_not(None)]
    if since is not None:
        conditions.append(judged.c.day >= (since - EPOCH_DATE).days)
    if until is not None:
        conditions.append(judged.c.day <= (until - EPOCH_DATE).days)
    return (
        select(
            judged.c.day,
            judged.c.dag_id,
            judged.c.currency,
            func.sum(judged.c.cost),
            func.count(),
            func.count() - func.count(judged.c.cost),  # jobs without a cost that counts
        )
        .where(*conditions)
        .group_by(judged.c.day, judged.c.dag_id, judged.c.currency)
    )


def _one_per_run(runs: Any, dialect: str) -> Any:
    """SQL: of ``runs`` (the documents, with their ``rank``), one per NanoGPT run that nothing
    says was refunded: the one of highest rank, then of the first DAG by name.

    SQLite groups instead of numbering the rows (a window function costs it several times a
    GROUP BY: a third of the page's spend at 10,000 jobs): with exactly one ``min()`` in a
    grouped query, SQLite takes the other columns from the row holding that minimum (its
    documented "bare columns"), so the key ``2 - rank`` then the DAG picks the same document.
    """
    from sqlalchemy import String, cast, func, select

    per_run = runs.c.nanogpt_run
    figures = (runs.c.dag_id, runs.c.submitted_at, runs.c.cost, runs.c.currency)
    if dialect == "sqlite":
        first = func.min(cast(2 - runs.c.rank, String) + runs.c.dag_id)
        return (
            select(*figures, first.label("first"))
            .where(per_run.is_not(None))
            .group_by(per_run)
            .having(func.sum(runs.c.refunded) == 0)  # not a min() or max(): see above
            .subquery()
        )
    ranked = (
        select(
            *figures,
            func.row_number()
            .over(partition_by=per_run, order_by=(runs.c.rank.desc(), runs.c.dag_id))
            .label("place"),
            func.max(runs.c.refunded).over(partition_by=per_run).label("any_refunded"),
        )
        .where(per_run.is_not(None))
        .subquery()
    )
    return (
        select(*(ranked.c[f.name] for f in figures))
        .where(ranked.c.place == 1, ranked.c.any_refunded == 0)
        .subquery()
    )


class _JsonDocument:
    """The fields of a JSON document column as SQL values of the right JSON type only (NULL
    otherwise), in the database's own JSON functions: SQLite ``json_extract``, PostgreSQL
    ``jsonb``, MySQL ``JSON_EXTRACT``. A document that is not valid JSON has no fields."""

    def __init__(self, table: Any, where: tuple[Any, ...], dialect: str, name: str):
        """The ``value`` documents of ``table``'s rows that ``where`` selects, with their
        ``dag_id`` (``rows``), each read once: the fields are taken from what was read."""
        from sqlalchemy import case, cast, func, select
        from sqlalchemy.dialects.postgresql import JSONB

        self.dialect = dialect
        column = table.value
        read: Any
        if dialect == "postgresql":
            # XComs are json, charge records text: jsonb reads both (and rejects invalid text).
            read = cast(column, JSONB)
        elif dialect == "mysql":
            read = case((func.json_valid(column) == 1, column), else_=None)
        else:
            # SQLite parses a document at each function call: one call takes every field into
            # a small array (json_extract raises on a malformed document, json_valid does not).
            valid = case((func.json_valid(column) == 1, column), else_=None)
            read = func.json_extract(valid, *(f"$.{field}" for field in DOCUMENT_FIELDS))
        rows = select(table.dag_id.label("dag_id"), read.label("document")).where(*where).cte(name)
        if dialect != "mysql":  # read once, not once per field the outer query names
            rows = rows.prefix_with("MATERIALIZED")
        self.rows = rows
        self.document = rows.c.document

    def _path(self, name: str) -> str:
        if self.dialect == "sqlite":
            return f"$[{DOCUMENT_FIELDS.index(name)}]"
        return f"$.{name}"

    def _type(self, name: str) -> Any:
        from sqlalchemy import func

        if self.dialect == "postgresql":
            return func.jsonb_typeof(self.document[name])
        if self.dialect == "mysql":
            return func.json_type(func.json_extract(self.document, self._path(name)))
        return func.json_type(self.document, self._path(name))

    def _text(self, name: str) -> Any:
        from sqlalchemy import func

        if self.dialect == "postgresql":
            return self.document[name].astext
        if self.dialect == "mysql":
            return func.json_unquote(func.json_extract(self.document, self._path(name)))
        return func.json_extract(self.document, self._path(name))

    def string(self, name: str) -> Any:
        from sqlalchemy import String, case, type_coerce

        string = "STRING" if self.dialect == "mysql" else ("string" if self.postgres else "text")
        return type_coerce(case((self._type(name) == string, self._text(name))), String)

    def number(self, name: str) -> Any:
        """A JSON number (never true/false or a numeric string), as a float."""
        from sqlalchemy import Float, Numeric, case, cast

        if self.postgres:  # numeric: a huge one (1e999) is a value, not a cast error
            return case((self._type(name) == "number", cast(self._text(name), Numeric)), else_=None)
        kinds = (
            ["INTEGER", "UNSIGNED INTEGER", "DOUBLE", "DECIMAL"]
            if self.dialect == "mysql"
            else ["integer", "real"]
        )
        return case((self._type(name).in_(kinds), cast(self._text(name), Float)), else_=None)

    def present(self, name: str) -> Any:
        """Whether the field is there and not null."""
        return self._type(name).not_in(["null", "NULL"])

    def is_true(self, name: str) -> Any:
        if self.dialect == "sqlite":
            return self._type(name) == "true"
        boolean = "boolean" if self.postgres else "BOOLEAN"
        return (self._type(name) == boolean) & (self._text(name) == "true")

    def bound(self, value: float) -> Any:
        """A number to compare ``number`` values with, of their SQL type."""
        from decimal import Decimal

        from sqlalchemy import Float, Numeric, literal

        if self.postgres:  # numeric against a float would cast the numeric, and 1e999 fails
            return literal(Decimal(repr(value)), Numeric)
        return literal(value, Float)

    @property
    def postgres(self) -> bool:
        return self.dialect == "postgresql"


def _epoch_day(seconds: Any, dialect: str) -> Any:
    """SQL: the UTC day (days since 1970-01-01) of a time in epoch seconds."""
    from sqlalchemy import Integer, cast, func

    if dialect == "sqlite":  # no FLOOR in every build; the cast truncates, so shift past 0 first
        shift = -(FIRST_SECOND // SECONDS_A_DAY) + 1
        return cast(seconds / SECONDS_A_DAY + shift, Integer) - shift
    return cast(func.floor(seconds / SECONDS_A_DAY), Integer)


def connection_ids(session: Session, dag_ids: set[str]) -> list[str]:
    """The ``nanogpt`` connections: stored ones, and those the readable jobs name (a connection
    can live in an environment variable or a secrets backend)."""
    from sqlalchemy import select

    from airflow_provider_nanogpt.plugin.models import Connection, XComModel

    stored = session.scalars(select(Connection.conn_id).where(Connection.conn_type == "nanogpt"))
    named = session.scalars(
        select(XComModel.value["conn_id"].as_string())
        .where(XComModel.key == JOB_KEY, XComModel.dag_id.in_(dag_ids))
        .distinct()
    )
    return sorted({*stored, *(c for c in named if isinstance(c, str) and c)})


# --- query pieces -------------------------------------------------------------------------------


def _ti_columns() -> tuple[Any, Any]:
    """What a job row reads from its task instance: its state and its rendered map label."""
    from airflow_provider_nanogpt.plugin.models import TaskInstance, map_label

    return TaskInstance.state, map_label()


def _joined(query: Any, table: Any = None) -> Any:
    """``query`` joined to the task instance of its rows (of ``table``: the XComs by default)."""
    from airflow_provider_nanogpt.plugin.models import TaskInstance, XComModel, same_task_instance

    table = XComModel if table is None else table
    return query.join(TaskInstance, same_task_instance(TaskInstance, table), isouter=True)


def _job_rows(dag_ids: set[str], filters: Filters) -> Any:
    """SQL: the job cards the filters select, without their task instances (``_joined``: a
    join that costs a count a lookup per card)."""
    from sqlalchemy import func, select

    from airflow_provider_nanogpt.plugin.models import XComModel

    query = select(XComModel).where(XComModel.key == JOB_KEY, XComModel.dag_id.in_(dag_ids))
    if filters.dag_id:
        query = query.where(XComModel.dag_id == filters.dag_id)
    # The submission day, as the spend counts it: not when the card was last written.
    if filters.since:
        query = query.where(_card_submitted() >= _day_start(filters.since))
    if filters.until:
        query = query.where(_card_submitted() < _day_start(filters.until) + SECONDS_A_DAY)
    if filters.prompt:
        prompt = func.lower(XComModel.value["prompt"].as_string())
        query = query.where(prompt.contains(filters.prompt.lower(), autoescape=True))
    return query


def _sort_key(order_by: str) -> str:
    return order_by.removeprefix("-")


def _sorted(value: Any, order_by: str) -> Any:
    return value.desc() if order_by.startswith("-") else value.asc()


def _card_sort_value(order_by: str, dag_ids: set[str]) -> Any:
    """The column ``order_by`` names, in SQL, never NULL (not all databases have NULLS LAST):
    an unknown number is -1, an unknown name empty; the state as the row shows it."""
    from sqlalchemy import func

    from airflow_provider_nanogpt.plugin.models import XComModel

    card = XComModel.value
    key = _sort_key(order_by)
    if key == "state":
        return _shown_state(dag_ids)
    if key == "submitted":
        return _card_submitted()
    if key == "took":
        finished = func.coalesce(
            card["finished_at"].as_float(), _sensors_card(dag_ids, "finished_at")
        )
        return func.coalesce(finished - card["submitted_at"].as_float(), -1.0)
    if key == "cost":
        # A run a sensor saw end: its final cost, as the row shows it.
        return func.coalesce(_sensors_card(dag_ids, "cost"), card["cost"].as_float(), -1.0)
    if key == "task":
        return XComModel.dag_id
    return func.coalesce(card["model"].as_string(), "")


def _sensors_card(dag_ids: set[str], field: str) -> Any:
    """SQL: ``field`` of the card of a sensor that saw the card's run end (as the row shows it:
    ``_refine_with_watchers``), NULL when none did."""
    from sqlalchemy import select
    from sqlalchemy.orm import aliased

    from airflow_provider_nanogpt.plugin.models import XComModel, task_instance_columns

    watch = aliased(XComModel)
    return (
        select(watch.value[field].as_float())
        .where(
            watch.key == WATCH_KEY,
            watch.dag_id.in_(dag_ids),
            watch.value["run_id"].as_string() == XComModel.value["run_id"].as_string(),
            watch.value["state"].as_string() != JobState.SUBMITTED.value,
        )
        # The same sensor as the row shows when several saw the run end.
        .order_by(*task_instance_columns(watch))
        .limit(1)
        .scalar_subquery()
    )


def _record_sort_value(order_by: str, charge: ChargeRow) -> float | str:
    """``_card_sort_value`` for a card-less refunded job, from its charge record."""
    record = charge.record
    key = _sort_key(order_by)
    if key == "task":
        return charge.dag_id
    if key in ("model", "state"):
        value = _charge_state(record) if key == "state" else record.get(key)
        return value if isinstance(value, str) else ""
    if key == "took":
        submitted, finished = _seconds(record.get("submitted_at")), record.get("finished_at")
        return _seconds(finished) - submitted if _seconds(finished) else -1.0
    if key == "cost":
        cost = record.get("cost")
        return float(cost) if isinstance(cost, int | float) and not isinstance(cost, bool) else -1.0
    return _seconds(record.get("submitted_at"))


def _card_submitted() -> Any:
    """A job card's submission time (epoch seconds) in SQL: what the page sorts and filters by.

    0 for a card without one, so that every database sorts it last (not all support NULLS LAST).
    """
    from sqlalchemy import func

    from airflow_provider_nanogpt.plugin.models import XComModel

    return func.coalesce(XComModel.value["submitted_at"].as_float(), 0.0)


def _with_state(query: Any, state: str, dag_ids: set[str]) -> Any:
    return _joined(query).where(_shown_state(dag_ids) == state)


def _shown_state(dag_ids: set[str]) -> Any:
    """SQL: a card's state as its row shows it (``Job.state`` after ``_refine_with_watchers``):
    a submitted run ended as a sensor's card says, or rendering while a task waits for it."""
    from sqlalchemy import and_, case, func, select
    from sqlalchemy.orm import aliased

    from airflow_provider_nanogpt.plugin.models import XComModel

    card_state = XComModel.value["state"].as_string()
    submitted = card_state == JobState.SUBMITTED.value
    watch = aliased(XComModel)
    watch_state = watch.value["state"].as_string()
    sensor_saw_end = (
        select(watch_state)
        .where(
            watch.key == WATCH_KEY,
            watch.dag_id.in_(dag_ids),
            watch.value["run_id"].as_string() == XComModel.value["run_id"].as_string(),
            watch_state != JobState.SUBMITTED.value,
        )
        .limit(1)
        .scalar_subquery()
    )
    own_task_waits, sensor_waits = _waited_for(dag_ids)
    return case(
        (and_(submitted, own_task_waits), "rendering"),
        (and_(submitted, sensor_saw_end.is_not(None)), sensor_saw_end),
        (and_(submitted, sensor_waits), "rendering"),
        else_=func.coalesce(card_state, ""),
    )


def _waited_for(dag_ids: set[str]) -> tuple[Any, Any]:
    """SQL, never NULL: whether the card's run is waited for now by its own task, and whether
    by a sensor whose card (in a readable DAG) still says it waits."""
    from sqlalchemy import and_, exists
    from sqlalchemy.orm import aliased

    from airflow_provider_nanogpt.plugin.models import TaskInstance, XComModel, same_task_instance

    waiting = sorted(WAITING_TI_STATES)
    watch, sensor = aliased(XComModel), aliased(TaskInstance)
    sensor_waits = exists().where(
        watch.key == WATCH_KEY,
        watch.dag_id.in_(dag_ids),
        watch.value["run_id"].as_string() == XComModel.value["run_id"].as_string(),
        watch.value["state"].as_string() == JobState.SUBMITTED.value,
        same_task_instance(sensor, watch),
        sensor.state.in_(waiting),
    )
    own_task_waits = and_(TaskInstance.state.is_not(None), TaskInstance.state.in_(waiting))
    return own_task_waits, sensor_waits


def _refine_with_watchers(session: Session, dag_ids: set[str], jobs: list[Job]) -> None:
    """A job submitted by one task and waited for by a sensor: the sensor knows how it ended,
    or that it is still waiting (the job is then rendering)."""
    from sqlalchemy import select

    from airflow_provider_nanogpt.plugin.models import XComModel, task_instance_columns

    waiting = {job.run_id: job for job in jobs if job.state == "submitted" and job.run_id}
    if not waiting:
        return
    query = (
        _joined(select(XComModel, _ti_columns()[0]))
        .where(
            XComModel.key == WATCH_KEY,
            XComModel.dag_id.in_(dag_ids),
            XComModel.value["run_id"].as_string().in_(sorted(waiting)),
        )
        # When several sensors saw the run end, the first in this order speaks for it, as in
        # the sort (_sensors_card): the row and its place in the list agree.
        .order_by(*task_instance_columns(XComModel))
    )
    ended: set[str] = set()
    for xcom, sensor_state in session.execute(query).all():
        watched = _value(xcom)
        run_id = str(watched.get("run_id"))
        job = waiting.get(run_id)
        if job is None:
            continue
        if watched.get("state") != JobState.SUBMITTED:
            if run_id not in ended:
                ended.add(run_id)
                job.card = {**job.card, **{k: v for k, v in watched.items() if v is not None}}
        elif (_state_name(sensor_state) or "") in WAITING_TI_STATES:
            job.sensor_waits = True


def _refunded_without_card(
    session: Session, dag_ids: set[str], filters: Filters
) -> dict[int, ChargeRow]:
    """Charge records of refunded jobs that no job card shows any more (a retry cleared the
    try's XComs), under the page's filters; by record id. Nothing before Airflow 3.3."""
    from sqlalchemy import select

    from airflow_provider_nanogpt.plugin.models import XComModel, charge_rows

    if filters.state and filters.state not in REFUNDED:
        return {}
    found: dict[str, ChargeRow] = {}
    for charge in charge_rows(session, dag_ids, refunded_only=True, own_card=True):
        run_id = charge.record.get("run_id")
        if (
            charge.record.get("refunded") is True
            and isinstance(run_id, str)
            # Most refunded jobs keep their card in the task that paid: no search for those.
            and charge.card_run_id != run_id
            and (not filters.dag_id or charge.dag_id == filters.dag_id)
            and (not filters.state or _charge_state(charge.record) == filters.state)
            and _submitted_in_range(charge.record, filters.since, filters.until)
            and _prompt_matches(charge.record, filters.prompt)
        ):
            found[run_id] = charge
    if found:
        carded = session.scalars(
            select(XComModel.value["run_id"].as_string()).where(
                XComModel.key == JOB_KEY,
                XComModel.dag_id.in_(dag_ids),
                XComModel.value["run_id"].as_string().in_(sorted(found)),
            )
        )
        for run_id in carded:
            found.pop(run_id, None)
    return {charge.id: charge for charge in found.values()}


def _prompt_matches(record: Mapping[str, Any], part: str | None) -> bool:
    prompt = record.get("prompt")
    return not part or (isinstance(prompt, str) and part.lower() in prompt.lower())


def _page_with_orphans(
    session: Session,
    dag_ids: set[str],
    cards: Any,
    orphans: dict[int, ChargeRow],
    filters: Filters,
    size: int,
) -> Page:
    """Cards and card-less refunded jobs in one order (submission time), paged in the database:
    a union of the two, then the page's cards read."""
    from sqlalchemy import (
        Float,
        Integer,
        String,
        case,
        cast,
        func,
        literal,
        null,
        select,
        union_all,
    )

    from airflow_provider_nanogpt.plugin.models import (
        TaskInstance,
        XComModel,
        charge_table,
        map_label,
        task_instance_columns,
    )

    store = charge_table()
    # The records' submission times are known here (few rows): handed to the database as values.
    submitted = {
        charge_id: _seconds(charge.record.get("submitted_at"))
        for charge_id, charge in orphans.items()
    }
    # The sort column too: the records' values are handed over the same way.
    sort_type = String if _sort_key(filters.order_by) in ("task", "model", "state") else Float
    sorted_by = {
        charge_id: _record_sort_value(filters.order_by, charge)
        for charge_id, charge in orphans.items()
    }
    card_keys = cards.with_only_columns(
        cast(null(), Integer).label("charge_id"),
        XComModel.dag_id.label("dag_id"),
        XComModel.run_id.label("run_id"),
        XComModel.task_id.label("task_id"),
        XComModel.map_index.label("map_index"),
        _card_submitted().label("at"),
        cast(_card_sort_value(filters.order_by, dag_ids), sort_type).label("sort_value"),
        # A card's task instance is read with the card, for the page's rows only.
        cast(null(), String).label("ti_state"),
        cast(null(), String).label("map_label"),
    )
    charge_keys = _joined(
        select(
            store.id,
            store.dag_id,
            store.run_id,
            store.task_id,
            store.map_index,
            case(
                {k: literal(v, Float) for k, v in submitted.items()},
                value=store.id,
                else_=literal(0.0, Float),
            ),
            case(
                {k: literal(v, sort_type) for k, v in sorted_by.items()},
                value=store.id,
                else_=literal("" if sort_type is String else -1.0, sort_type),
            ),
            TaskInstance.state,
            map_label(),
        ),
        store,
    ).where(store.id.in_(sorted(orphans)))
    both = union_all(card_keys, charge_keys).subquery()
    total = session.scalar(select(func.count()).select_from(both)) or 0
    pages = max(1, -(-total // size))
    page = min(max(1, filters.page), pages)
    ti_keys = task_instance_columns(both.c)
    keys = session.execute(
        select(both)
        .order_by(
            *_page_order(both.c.sort_value, both.c.at, filters.order_by),
            *ti_keys,
            both.c.charge_id,
        )
        .limit(size)
        .offset((page - 1) * size)
    ).all()
    cards = _read_cards(
        session, [(k.dag_id, k.run_id, k.task_id, k.map_index) for k in keys if k.charge_id is None]
    )
    jobs: list[Job] = []
    for k in keys:
        if k.charge_id is not None:
            jobs.append(_refunded_job(orphans[k.charge_id], k.ti_state, k.map_label))
        elif (found := cards.get((k.dag_id, k.run_id, k.task_id, k.map_index))) is not None:
            jobs.append(found)
    return Page(jobs=jobs, total=total, page=page, pages=pages)


def _page_order(sort_value: Any, submitted: Any, order_by: str) -> tuple[Any, ...]:
    """A page's ORDER BY before the task instance's keys: the column sorted by, then the newest
    submission first (not twice when that is the column: each term is computed for every row)."""
    first = _sorted(sort_value, order_by)
    return (first,) if _sort_key(order_by) == "submitted" else (first, submitted.desc())


def _read_cards(
    session: Session, keys: Sequence[Sequence[Any]]
) -> dict[tuple[str, str, str, int], Job]:
    """The jobs of the cards of these task instances (dag_id, run_id, task_id, map_index): the
    rows of one page, each read whole with its task instance."""
    from sqlalchemy import and_, or_, select

    from airflow_provider_nanogpt.plugin.models import XComModel, is_task_instance

    if not keys:
        return {}
    # The key in every term: the database then looks each card up by its task instance (an
    # index) instead of going through every card of the key.
    read = _joined(select(XComModel, *_ti_columns())).where(
        or_(
            *(
                and_(
                    XComModel.key == JOB_KEY,
                    is_task_instance(XComModel, dag_id, run_id, task_id, map_index),
                )
                for dag_id, run_id, task_id, map_index in keys
            )
        ),
    )
    jobs = (_job(*row) for row in session.execute(read).all())
    return {(job.dag_id, job.dag_run_id, job.task_id, job.map_index): job for job in jobs}


def _charge_state(record: Mapping[str, Any]) -> str:
    """How a refunded job ended; records written before they said so are "failed"."""
    state = record.get("state")
    return str(state) if state in REFUNDED else JobState.FAILED.value


def _refunded_job(charge: ChargeRow, ti_state: Any, map_label: str | None) -> Job:
    """A row for a refunded job whose card is gone: what its charge record kept."""
    record = charge.record
    card = {
        **{key: record.get(key) for key in CARD_FIELDS_IN_CHARGE},
        "state": _charge_state(record),
        "charged_here": True,
        "video_url": None,
        "output_path": None,
    }
    return Job(
        dag_id=charge.dag_id,
        dag_run_id=charge.dag_run_id,
        task_id=charge.task_id,
        map_index=charge.map_index,
        ti_state=_state_name(ti_state),
        card=card,
        updated=charge.updated,
        map_label=map_label,
    )


def _job(xcom: Any, ti_state: Any, map_label: str | None = None) -> Job:
    return Job(
        dag_id=xcom.dag_id,
        dag_run_id=xcom.run_id,
        task_id=xcom.task_id,
        map_index=xcom.map_index,
        ti_state=_state_name(ti_state),
        card=_value(xcom),
        updated=xcom.timestamp,
        map_label=map_label or None,
    )


def _state_name(ti_state: Any) -> str | None:
    if not ti_state:
        return None
    return str(ti_state.value if hasattr(ti_state, "value") else ti_state)


def _value(xcom: Any) -> dict[str, Any]:
    return _card(xcom.value)


def _card(value: Any) -> dict[str, Any]:
    if isinstance(value, str):  # some backends hand back the JSON text
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return dict(value) if isinstance(value, Mapping) else {}


def _seconds(value: object) -> float:
    """A card's time (epoch seconds) as the page sorts by it: 0 when there is none."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _when(value: object) -> datetime | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):  # an edited card: no time
            return None
    return None


def _day_start(day: date) -> float:
    """Midnight UTC starting ``day``, in epoch seconds (a float: no overflow after date.max)."""
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()


def _in_range(day: date, since: date | None, until: date | None) -> bool:
    return (since is None or day >= since) and (until is None or day <= until)


def _submitted_in_range(card: Mapping[str, Any], since: date | None, until: date | None) -> bool:
    """Whether the job was submitted in the date range (UTC days), as the spend counts it."""
    if since is None and until is None:
        return True
    when = _when(card.get("submitted_at"))
    return when is not None and _in_range(when.date(), since, until)


__all__ = [
    "CHARGE_KEY_PREFIX",
    "DEFAULT_ORDER",
    "PAGE_SIZE",
    "SORTS",
    "STATES",
    "Filters",
    "Job",
    "Page",
    "Spend",
    "VideoSource",
    "connection_ids",
    "every_job",
    "find_job",
    "list_jobs",
    "spend",
    "video_source",
]
