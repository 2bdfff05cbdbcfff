"""The NanoGPT page and the task-instance Video view: a FastAPI app mounted by the api-server.

Airflow protects none of a plugin's routes: every route here takes the user from the token the
Airflow UI uses (the ``_token`` cookie, or a Bearer header). Without a valid one (none, expired,
revoked, forged) the JSON endpoints answer 401 and the pages send the browser to Airflow's login,
which comes back to the page. A bad parameter is a 4xx: a JSON error for the JSON endpoints, a
readable message in the page's layout for the pages (``/ui/...``). Lists
show only jobs of DAGs the user may read, a job's view and video need read access to that task
instance, and a balance needs read access to that connection (403 otherwise). Responses carry
figures only: never the API key, a header, or a video URL's query string (videos are streamed
through this app).
"""

from __future__ import annotations

import mimetypes
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl, quote, urlencode

from airflow.api_fastapi.common.db.common import SessionDep
from airflow.api_fastapi.core_api.security import bearer_scheme, get_user
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from fastapi.security import HTTPAuthorizationCredentials
from fastapi.templating import Jinja2Templates

from airflow_provider_nanogpt.api.coerce import as_amount
from airflow_provider_nanogpt.job_card import PROMPT_CHARS, REFUNDED
from airflow_provider_nanogpt.plugin import budgets as budget_store
from airflow_provider_nanogpt.plugin import chart, export, live
from airflow_provider_nanogpt.plugin import jobs as job_store

URL_PREFIX = "/nanogpt"
_templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
# Progress for the rows of one page is fetched in parallel, within this budget.
PAGE_LIVE_BUDGET_SECONDS = 5.0
# The jobs CSV: every job the filters select, read this many at a time, up to a bound.
CSV_PAGE_SIZE = 200
MAX_CSV_JOBS = 50_000
# (CSV column, key of the page's row)
JOBS_CSV_COLUMNS = (
    ("dag_id", "dag_id"),
    ("dag_run_id", "dag_run_id"),
    ("task_id", "task_id"),
    ("map_index", "map_index"),
    ("map_label", "map_label"),
    ("state", "state"),
    ("nanogpt_run_id", "run_id"),
    ("model", "model"),
    ("prompt", "prompt"),
    ("cost", "cost"),
    ("charged", "charged"),
    ("currency", "currency"),
    ("refunded", "refunded"),
    ("submitted_at", "submitted_at"),
    ("duration_seconds", "duration_seconds"),
    ("output_path", "output_path"),
    ("error", "error"),
)
# The longest list query string a job's view carries back to the list.
MAX_BACK_CHARS = 2000


def create_app(base_path: str) -> FastAPI:
    """The app; ``base_path`` is the path part of Airflow's ``[api] base_url`` ("" at the root)."""
    app = FastAPI(title="NanoGPT for Airflow", docs_url=None, redoc_url=None, openapi_url=None)
    here = base_path + URL_PREFIX

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        return _error_response(request, exc.status_code, str(exc.detail), here, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def parameter_error(request: Request, exc: RequestValidationError) -> Response:
        return _error_response(request, 400, _explain(exc), here)

    @app.get("/ui/jobs", response_class=HTMLResponse)
    def jobs_page(
        request: Request, user: GetUserDep, session: SessionDep, filters: FiltersQuery
    ) -> HTMLResponse:
        readable = _readable_dags(user, session)
        listing = job_store.list_jobs(session, readable, filters)
        _add_progress(listing.jobs)
        charges = _spend_of(
            session, readable, SpendFilters(filters.dag_id, filters.since, filters.until)
        )
        query = {
            k: str(v)
            for k, v in (
                ("dag_id", filters.dag_id),
                ("state", filters.state),
                ("since", filters.since),
                ("until", filters.until),
                ("q", filters.prompt),
                (
                    "order_by",
                    filters.order_by if filters.order_by != job_store.DEFAULT_ORDER else "",
                ),
            )
            if v
        }
        rows = [_row(job, base_path, here) for job in listing.jobs]
        for row in rows:  # a job's view links back to the list as it is shown now
            row["view_link"] += "&" + urlencode({"back": request.url.query})
        approvals = budget_store.pending_approvals(session, readable)
        waiting = {(a.dag_id, a.dag_run_id, a.task_id, a.map_index) for a in approvals}
        for row in rows:
            key = (row["dag_id"], row["dag_run_id"], row["task_id"], row["map_index"])
            row["awaiting_approval"] = key in waiting
        spend_query = {k: v for k, v in query.items() if k in ("dag_id", "since", "until")}

        def sort_link(column: str) -> str:
            """The column header's link: this column, the other way if it is the current one."""
            current = filters.order_by
            first = job_store.SORTS[column] + column
            wanted = (
                (column if current.startswith("-") else "-" + column)
                if current.lstrip("-") == column
                else first
            )
            return f"{here}/ui/jobs?{urlencode({**query, 'order_by': wanted})}"

        return _templates.TemplateResponse(
            request,
            "jobs.html",
            {
                "here": here,
                "base": base_path,
                "jobs": rows,
                "charts": chart.spend_charts(charges.by_day, filters.since, filters.until),
                "layout": chart,
                "jobs_csv": f"{here}/api/jobs.csv?{urlencode(query)}",
                "spend_csv": f"{here}/api/spend.csv?{urlencode(spend_query)}",
                "listing": listing,
                "spend": charges,
                "filters": filters,
                "states": job_store.STATES,
                "dag_ids": sorted(readable),
                "query": query,
                "page_link": lambda n: f"{here}/ui/jobs?{urlencode({**query, 'page': n})}",
                "sort_link": sort_link,
                "rendering": any(job.state == "rendering" for job in listing.jobs),
                "budgets": budget_store.read_budgets(
                    session, job_store.connection_ids(session, readable), readable, time.time()
                ),
                "approvals": approvals,
                "required_actions": base_path + budget_store.REQUIRED_ACTIONS_PATH,
            },
        )

    @app.get("/ui/video", response_class=HTMLResponse)
    def video_page(
        request: Request,
        user: GetUserDep,
        session: SessionDep,
        task: TaskInstanceQuery,
        back: str | None = None,
    ) -> HTMLResponse:
        job, ti = _one_job(user, session, task)
        if job is not None:
            _add_progress([job])  # on the first render too, not only after the page's refresh
        row = _row(job, base_path, here) if job else None
        return _templates.TemplateResponse(
            request,
            "video.html",
            {
                "here": here,
                "job": row,
                "ti": ti,
                "api": f"{here}/api/job?{urlencode(ti)}",
                # Opened from the list ("Watch"): the way back to it, with its filters.
                "back_link": None if back is None else _list_link(here, back),
            },
        )

    @app.get("/api/jobs")
    def jobs_json(user: GetUserDep, session: SessionDep, filters: FiltersQuery) -> dict[str, Any]:
        listing = job_store.list_jobs(session, _readable_dags(user, session), filters)
        _add_progress(listing.jobs)
        return {
            "jobs": [_row(job, base_path, here) for job in listing.jobs],
            "total": listing.total,
            "page": listing.page,
            "pages": listing.pages,
        }

    @app.get("/api/jobs.csv")
    def jobs_csv(user: GetUserDep, session: SessionDep, filters: FiltersQuery) -> Response:
        """Every job the filters select (all pages, up to MAX_CSV_JOBS), read a page at a time
        while the file is sent."""
        readable = _readable_dags(user, session)
        total, jobs = job_store.every_job(session, readable, filters, MAX_CSV_JOBS, CSV_PAGE_SIZE)

        def rows() -> Iterator[list[Any]]:
            for job in jobs:
                row = _row(job, base_path, here)
                yield [row[key] for _, key in JOBS_CSV_COLUMNS]

        named = ["nanogpt-jobs", filters.dag_id, filters.state, filters.since, filters.until]
        return _csv_response(
            export.csv_lines([name for name, _ in JOBS_CSV_COLUMNS], rows()),
            export.file_name([str(part) for part in named if part], ".csv"),
            {"X-Total-Count": str(total), "X-Truncated": str(total > MAX_CSV_JOBS).lower()},
        )

    @app.get("/api/spend.csv")
    def spend_csv(user: GetUserDep, session: SessionDep, spent: SpendQuery) -> Response:
        """The spend the page shows, a row per day, DAG and currency (they add up to its
        Total, Per day and Per DAG figures)."""
        charges = _spend(user, session, spent)
        rows = (
            [day, dag_id, currency, amount]
            for (day, dag_id), sums in charges.by_day_and_dag.items()
            for currency, amount in sorted(sums.items())
        )
        named = ["nanogpt-spend", spent.dag_id, spent.since, spent.until]
        return _csv_response(
            export.csv_lines(["day", "dag_id", "currency", "amount"], rows),
            export.file_name([str(part) for part in named if part], ".csv"),
        )

    @app.get("/api/spend")
    def spend_json(user: GetUserDep, session: SessionDep, spent: SpendQuery) -> dict[str, Any]:
        charges = _spend(user, session, spent)
        return {
            "label": "Charges made through this Airflow",
            "totals": charges.totals,
            "by_day": charges.by_day,
            "by_dag": charges.by_dag,
            "jobs": charges.jobs,
            "jobs_without_cost": charges.unknown_cost,
        }

    @app.get("/api/balances")
    def balances_json(user: GetUserDep, session: SessionDep) -> dict[str, Any]:
        from airflow.api_fastapi.app import get_auth_manager
        from airflow.api_fastapi.auth.managers.models.resource_details import ConnectionDetails

        manager = get_auth_manager()
        readings = []
        for conn_id in job_store.connection_ids(session, _readable_dags(user, session)):
            details = ConnectionDetails(conn_id=conn_id)
            if manager.is_authorized_connection(method="GET", details=details, user=user):
                reading = live.balance(conn_id)
                readings.append({"conn_id": conn_id, "usd": reading.usd, "error": reading.error})
        return {"balances": readings}

    @app.get("/api/budgets")
    def budgets_json(user: GetUserDep, session: SessionDep) -> dict[str, Any]:
        """The Budgets section as JSON (for a dashboard or an alert): the same figures, for the
        same connections, naming only the DAGs the user may read."""
        readable = _readable_dags(user, session)
        found = budget_store.read_budgets(
            session, job_store.connection_ids(session, readable), readable, time.time()
        )
        return {
            "budgets": [view.to_json() for view in found.views],
            "problems": [{"conn_id": p.conn_id, "message": p.message} for p in found.problems],
            "pending_approvals": len(budget_store.pending_approvals(session, readable)),
        }

    @app.get("/api/job")
    def job_json(user: GetUserDep, session: SessionDep, task: TaskInstanceQuery) -> dict[str, Any]:
        job, _ = _one_job(user, session, task)
        if job is None:
            raise HTTPException(404, "This task has no NanoGPT job (yet).")
        _add_progress([job])
        return _row(job, base_path, here)

    @app.get("/video")
    def video(
        request: Request,
        user: GetUserDep,
        session: SessionDep,
        task: TaskInstanceQuery,
        download: bool = False,
    ) -> StreamingResponse:
        job, _ = _one_job(user, session, task)
        if job is None or not job.has_video:
            raise HTTPException(404, "No video for this task.")
        # The connection and the saved path are the task's own (its rendered template fields),
        # not the card's: the card is an editable XCom, and its conn_id would pick the base dir
        # and the video hosts allowed.
        source = job_store.video_source(session, job)
        wanted = request.headers.get("range")
        # The saved copy first: NanoGPT's URL may have expired. It is read only under the
        # connection's output_base_dir.
        stream = live.stream_saved_video(source.conn_id, source.output_path, wanted)
        if stream is None:
            url = job.card.get("video_url")
            if not isinstance(url, str):
                raise HTTPException(404, "The saved video cannot be read, and there is no URL.")
            try:
                stream = live.stream_video(source.conn_id, url, wanted)
            except Exception as exc:  # the URL expired or was refused: say so, without the URL
                raise HTTPException(
                    502, f"The video could not be fetched ({type(exc).__name__})."
                ) from None
        headers = dict(stream.headers)
        if download:  # saved as "<DAG>__<task [label]>__<run>.mp4"
            extension = mimetypes.guess_extension(headers.get("Content-Type", "")) or ""
            name = export.file_name([job.dag_id, job.task_label, job.dag_run_id], extension)
            headers["Content-Disposition"] = export.content_disposition(name)
        return StreamingResponse(stream.chunks, status_code=stream.status_code, headers=headers)

    return app


# --- helpers ------------------------------------------------------------------------------------

NOT_SIGNED_IN = "Not signed in to Airflow (no token, or it expired or is not valid)."


async def _signed_in_user(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> Any:
    """The user, read by Airflow's own ``get_user`` (Bearer header, else the ``_token`` cookie).

    Airflow answers 403 for a token it cannot use (revoked, forged, unreadable) and 401 for a
    missing or expired one; to this app all of them mean "not signed in": 401, or the login page.
    """
    try:
        # Positional: the second parameter is the OAuth2 form's copy of the Bearer header.
        return await get_user(request, None, bearer)
    except HTTPException as exc:
        if exc.status_code in (401, 403):
            raise HTTPException(
                401, NOT_SIGNED_IN, headers={"WWW-Authenticate": "Bearer"}
            ) from None
        raise


GetUserDep = Annotated[Any, Depends(_signed_in_user)]


def _is_page(request: Request) -> bool:
    """Whether the request is for one of the HTML pages (``/ui/...``) rather than JSON."""
    route = request.scope.get("route")
    return str(getattr(route, "path", "")).startswith("/ui/")


def _error_response(
    request: Request,
    status: int,
    message: str,
    here: str,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """An error: JSON for the JSON endpoints; for a page, the login (401) or a readable page."""
    if not _is_page(request):
        return JSONResponse({"detail": message}, status_code=status, headers=dict(headers or {}))
    if status == 401:
        return RedirectResponse(_login_url(request), status_code=303)
    return _templates.TemplateResponse(
        request, "error.html", {"here": here, "message": message}, status_code=status
    )


def _login_url(request: Request) -> str:
    """Airflow's login page, coming back to ``request``'s page once signed in."""
    from airflow.api_fastapi.app import get_auth_manager

    back = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    login = get_auth_manager().get_url_login(next_url=back)
    if "next=" in login:
        return login
    # Auth managers that ignore next_url (the simple one before 3.3): what Airflow's own
    # /auth/login route does.
    return f"{login}{'&' if '?' in login else '?'}{urlencode({'next': back})}"


def _explain(exc: RequestValidationError) -> str:
    """A validation error as one readable sentence (parameter names, not FastAPI's JSON)."""
    problems = []
    for error in exc.errors():
        name = str(error.get("loc", ("", "?"))[-1])
        problems.append(
            f"{name} is missing" if error.get("type") == "missing" else f"{name} is not valid"
        )
    return "Bad request: " + "; ".join(problems or ["the parameters are not valid"]) + "."


def _readable_dags(user: Any, session: Any) -> set[str]:
    from airflow.api_fastapi.app import get_auth_manager

    # Not Airflow's ReadableDagsFilterDep: it needs app state a plugin's sub-app does not have.
    return set(get_auth_manager().get_authorized_dag_ids(user=user, method="GET", session=session))


@dataclass
class TaskInstanceRef:
    """The task instance a view is about, from the query string (the UI's ``{MAP_INDEX}`` is
    left literal for unmapped tasks)."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: str = "-1"


TaskInstanceQuery = Annotated[TaskInstanceRef, Depends()]


def _one_job(
    user: Any, session: Any, task: TaskInstanceRef
) -> tuple[job_store.Job | None, dict[str, str]]:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import (
        DagAccessEntity,
        DagDetails,
    )

    dag_id, run_id, task_id, map_index = task.dag_id, task.run_id, task.task_id, task.map_index
    allowed = get_auth_manager().is_authorized_dag(
        method="GET",
        access_entity=DagAccessEntity.TASK_INSTANCE,
        details=DagDetails(id=dag_id),
        user=user,
    )
    if not allowed:
        raise HTTPException(403, "You may not read this DAG's task instances.")
    index = int(map_index) if map_index.lstrip("-").isdigit() else -1  # "{MAP_INDEX}": unmapped
    readable = _readable_dags(user, session)
    job = job_store.find_job(session, readable, dag_id, run_id, task_id, index)
    if job is None and " " in run_id:
        # Airflow 3.1 puts run ids into plugin URLs unencoded: their "+" arrives as a space.
        run_id = run_id.replace(" ", "+")
        job = job_store.find_job(session, readable, dag_id, run_id, task_id, index)
    ti = {"dag_id": dag_id, "run_id": run_id, "task_id": task_id, "map_index": str(index)}
    return job, ti


def _add_progress(jobs: list[job_store.Job]) -> None:
    """Live progress for the rendering jobs shown, fetched in parallel within the page's budget.

    The page waits for none past the budget: the calls still running end by their own deadline
    in the background, those not started are dropped, and their rows show no live figure.
    """
    rendering = [job for job in jobs if job.state == "rendering" and job.run_id]
    if not rendering:
        return
    pool = ThreadPoolExecutor(max_workers=8)
    asked = {
        pool.submit(
            live.progress, str(job.card.get("conn_id") or "nanogpt_default"), job.run_id or ""
        ): job
        for job in rendering
    }
    done, _ = wait(asked, timeout=PAGE_LIVE_BUDGET_SECONDS)
    pool.shutdown(wait=False, cancel_futures=True)
    for future in done:
        reading = future.result()
        if reading is not None:
            job = asked[future]
            job.progress, job.eta_seconds = reading.progress, reading.eta_seconds


def _row(job: job_store.Job, base: str, here: str) -> dict[str, Any]:
    card = job.card
    ti_path = (
        f"{base}/dags/{quote(job.dag_id)}/runs/{quote(job.dag_run_id)}/tasks/{quote(job.task_id)}"
        + (f"/mapped/{job.map_index}" if job.map_index >= 0 else "")
    )
    ti_query = urlencode(
        {
            "dag_id": job.dag_id,
            "run_id": job.dag_run_id,
            "task_id": job.task_id,
            "map_index": job.map_index,
        }
    )
    submitted, finished = job.submitted_at, job.finished_at
    output = card.get("output_path")
    # A refused submission (no run id) was never charged, so nothing was given back either.
    refunded = job.state in REFUNDED and job.run_id is not None
    cost = as_amount(card.get("cost"))  # an edited card's "lots" is shown as unknown, not a 500
    return {
        "dag_id": job.dag_id,
        "dag_run_id": job.dag_run_id,
        "task_id": job.task_id,
        "map_index": job.map_index,
        "map_label": job.map_label,
        "task_label": job.task_label,
        "ti_state": job.ti_state,
        "ti_link": ti_path,
        "view_link": f"{here}/ui/video?{ti_query}",
        "video_link": f"{here}/video?{ti_query}" if job.has_video else None,
        "download_link": f"{here}/video?{ti_query}&download=true" if job.has_video else None,
        "run_id": job.run_id,
        "model": card.get("model"),
        "prompt": card.get("prompt"),
        "state": job.state,
        "note": job.note,
        "error": card.get("error"),
        "cost": cost,
        "currency": card.get("currency"),
        "refunded": refunded,
        # What the job costs in the end: NanoGPT gives a refunded job's charge back.
        "charged": 0.0 if refunded else cost,
        "submitted_at": _iso(submitted),
        "duration_seconds": round((finished - submitted).total_seconds(), 1)
        if submitted and finished
        else None,
        "output_path": output.split("?", 1)[0] if isinstance(output, str) else None,
        "progress": job.progress,
        "eta_seconds": job.eta_seconds,
    }


def _filters(
    dag_id: str | None = None,
    state: str | None = None,
    since: str | None = None,
    until: str | None = None,
    page: str | None = None,
    q: str | None = None,
    order_by: str | None = None,
) -> job_store.Filters:
    """The job list's filters, from the query string (400 for an unknown state, a bad date,
    page, sort column, or a prompt search longer than a card keeps)."""
    if state and state not in job_store.STATES:
        raise HTTPException(400, f"state must be one of {', '.join(job_store.STATES)}")
    if order_by and order_by.removeprefix("-") not in job_store.SORTS:
        names = ", ".join(job_store.SORTS)
        raise HTTPException(400, f"order_by must be one of {names} (with - first: descending)")
    if q and len(q) > PROMPT_CHARS:
        raise HTTPException(400, f"q (the prompt search) must be at most {PROMPT_CHARS} characters")
    number = int(page) if page and page.isdecimal() and len(page) <= 100 else None
    if page and not number:  # past the last page is the last page (list_jobs); 0 is no page
        raise HTTPException(400, "page must be a whole number from 1")
    return job_store.Filters(
        dag_id=dag_id or None,
        state=state or None,
        since=_day(since, "since"),
        until=_day(until, "until"),
        page=number or 1,
        prompt=q.strip() or None if q else None,
        order_by=order_by or job_store.DEFAULT_ORDER,
    )


FiltersQuery = Annotated[job_store.Filters, Depends(_filters)]


@dataclass(frozen=True)
class SpendFilters:
    dag_id: str | None
    since: date | None
    until: date | None


def _spend_filters(
    dag_id: str | None = None, since: str | None = None, until: str | None = None
) -> SpendFilters:
    return SpendFilters(dag_id or None, _day(since, "since"), _day(until, "until"))


SpendQuery = Annotated[SpendFilters, Depends(_spend_filters)]


def _spend(user: Any, session: Any, spent: SpendFilters) -> job_store.Spend:
    return _spend_of(session, _readable_dags(user, session), spent)


def _spend_of(session: Any, readable: set[str], spent: SpendFilters) -> job_store.Spend:
    """The spend of the readable DAGs (of ``spent.dag_id`` only, when it names one)."""
    spent_by = readable & {spent.dag_id} if spent.dag_id else readable
    return job_store.spend(session, spent_by, spent.since, spent.until)


def _csv_response(
    lines: Iterator[str], name: str, headers: Mapping[str, str] | None = None
) -> StreamingResponse:
    return StreamingResponse(
        lines,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": export.content_disposition(name), **(headers or {})},
    )


def _list_link(here: str, back: str) -> str:
    """The job list with the query string a view was opened with: only ever this app's list
    (the query is parsed and re-encoded, so nothing in it can point elsewhere)."""
    pairs = parse_qsl(back[:MAX_BACK_CHARS], keep_blank_values=True)
    query = urlencode([(k, v) for k, v in pairs if k != "back"])
    return f"{here}/ui/jobs" + (f"?{query}" if query else "")


def _day(value: str | None, name: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise HTTPException(400, f"{name} must be a date like 2026-01-31") from None


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if moment else None
