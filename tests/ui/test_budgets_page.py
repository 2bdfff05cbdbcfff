"""The NanoGPT page's Budgets section and pending approvals, served by a real api-server.

Two DAGs spend from one connection's shared budget (dag.test() against the simulator, so the
ledger's settled rows are the tasks' own); open reservations are added through the ledger as a
task makes them; user ``limited`` may not read the second DAG. A second connection's ledger
cannot be opened. One task is made to wait for an approval request of its own.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from airflow_provider_nanogpt.ledger import Budget, Ledger, usd
from airflow_provider_nanogpt.simulator import NanoGPTSimulator
from tests.airflow.harness import DagOutcome, run_dag
from tests.conftest import CANARY_KEY, REPO, TEST_DAGS, connection_json
from tests.ui.apiserver import ApiServer, api_server
from tests.ui.restricted_auth import SECRET_DAG_ENV

pytestmark = [pytest.mark.usefixtures("airflow_db"), pytest.mark.integration]

BUDGET_DAGS = TEST_DAGS / "nanogpt_budget_dags.py"
HIDDEN_DAG = "nanogpt_shared_budget_b"  # user "limited" may not read it (restricted_auth)
SHOWN_DAG = "nanogpt_shared_budget_a"
BROKEN_CONN = "nanogpt_budget_broken_ledger"
TIMEZONE = "Europe/Berlin"
LIMIT = "5.00"
# Open reservations added beside the tasks' own: a video being sent, one just reserved, and a
# released and an expired one that count for nothing.
SENT_MICRO, RESERVED_MICRO, RELEASED_MICRO, EXPIRED_MICRO = 400_000, 250_000, 1_000_000, 700_000


@dataclass
class World:
    server: ApiServer
    sim: NanoGPTSimulator
    runs: dict[str, DagOutcome]
    ledger_file: Path


def _add_open_reservations(ledger_file: Path) -> None:
    budget = Budget(
        "connection nanogpt_default", "day", 5_000_000, TIMEZONE
    )  # as the tasks' plan names it
    ledger = Ledger.from_url(f"sqlite:///{ledger_file}")
    ledger.reserve("tag-sent#try-1", "tag-sent", [budget], SENT_MICRO)
    ledger.mark_sent("tag-sent#try-1")
    ledger.reserve("tag-reserved#try-1", "tag-reserved", [budget], RESERVED_MICRO)
    ledger.reserve("tag-released#try-1", "tag-released", [budget], RELEASED_MICRO)
    ledger.release("tag-released#try-1")
    stale = Ledger.from_url(f"sqlite:///{ledger_file}", ttl_seconds=0.0)
    stale.reserve("tag-expired#try-1", "tag-expired", [budget], EXPIRED_MICRO)


def _make_wait_for_approval(outcome: DagOutcome) -> None:
    """The task as it is while a person has not answered its approval request yet."""
    from airflow.models.hitl import HITLDetail
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from airflow_provider_nanogpt.approval import APPROVE, REJECT, SUBJECT_START

    try:
        from airflow.sdk.exceptions import TaskAwaitingInput  # noqa: F401

        waiting = "awaiting_input"  # Airflow 3.3+
    except ImportError:
        waiting = "deferred"  # before 3.3: deferred to the approval trigger
    with create_session() as session:
        ti = session.scalars(
            select(TaskInstance).where(
                TaskInstance.dag_id == outcome.dag_id, TaskInstance.run_id == outcome.run_id
            )
        ).one()
        ti.state = waiting
        session.add(
            HITLDetail(
                ti_id=ti.id,
                options=[APPROVE, REJECT],
                subject=f"{SUBJECT_START} for $1.00?",
                body="",
                params={},
            )
        )


def _store_broken_connection() -> None:
    from airflow.models.connection import Connection
    from airflow.utils.session import create_session
    from sqlalchemy import delete

    with create_session() as session:
        session.execute(delete(Connection).where(Connection.conn_id == BROKEN_CONN))
        session.add(
            Connection(
                conn_id=BROKEN_CONN,
                conn_type="nanogpt",
                password=CANARY_KEY,
                extra=json.dumps(
                    {"budget_usd_per_day": "1", "budget_ledger_conn_id": "broken_ledger"}
                ),
            )
        )


@pytest.fixture(scope="module")
def world(airflow_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    workdir = tmp_path_factory.mktemp("budgets-ui")
    ledger_file = workdir / "ledger.db"
    budgeted = connection_json(
        "",
        budget_usd_per_day=LIMIT,
        budget_timezone=TIMEZONE,
        budget_ledger_conn_id="budget_ledger",
    )
    ledger_conn = json.dumps({"conn_type": "sqlite", "host": str(ledger_file)})
    # A directory that does not exist: SQLite cannot open the file.
    broken = json.dumps({"conn_type": "sqlite", "host": str(workdir / "no" / "such" / "l.db")})
    with (
        NanoGPTSimulator(
            api_key=CANARY_KEY, time_scale=0.02, quiet=True, queue_seconds=2, render_seconds=8
        ) as sim,
        pytest.MonkeyPatch.context() as patch,
    ):
        conn = json.loads(budgeted)
        conn["host"] = sim.url
        patch.setenv("AIRFLOW_CONN_NANOGPT_DEFAULT", json.dumps(conn))
        patch.setenv("AIRFLOW_CONN_BUDGET_LEDGER", ledger_conn)
        runs = {
            "shown": run_dag(SHOWN_DAG, {}, path=BUDGET_DAGS),
            "hidden": run_dag(HIDDEN_DAG, {}, path=BUDGET_DAGS),
        }
        _add_open_reservations(ledger_file)
        _make_wait_for_approval(runs["shown"])
        _store_broken_connection()
        env = {
            "AIRFLOW_CONN_NANOGPT_DEFAULT": json.dumps(conn),
            "AIRFLOW_CONN_BUDGET_LEDGER": ledger_conn,
            "AIRFLOW_CONN_BROKEN_LEDGER": broken,
            SECRET_DAG_ENV: HIDDEN_DAG,
        }
        with api_server(workdir, env) as server:
            yield World(server, sim, runs, ledger_file)


def _budget_card(html: str, name: str) -> str:
    match = re.search(
        rf'<div class="card budget" data-budget="{re.escape(name)}\|day">(.*?)\n  </div>',
        html,
        re.S,
    )
    assert match, html[:3000]
    return match.group(1)


def _figure(card: str, figure: str) -> str:
    match = re.search(rf'data-figure="{figure}">([^<]*)<', card)
    assert match, card
    return match.group(1)


def _what_the_server_sees(page: str) -> str:
    """For a failure's message: the DAGs the page's user may read (its DAG filter's options)
    and the DAGs of the jobs it lists. (Once, on the Airflow 3.1 lane of a full run, the page
    showed the ledger's figures but nothing the module's DAG runs wrote to Airflow's DB.)"""
    select = re.search(r'<select name="dag_id">(.*?)</select>', page, re.S)
    readable = re.findall(r'<option value="([^"]+)"', select.group(1) if select else "")
    listed = sorted(set(re.findall(r'/dags/([^/"]+)/', page)))
    return f"readable DAGs: {readable}; DAGs of listed jobs: {listed}"


def test_budget_figures_come_from_the_ledger(world: World) -> None:
    assert world.runs["shown"].task_states == {"first": "success"}
    charged = round(sum(job["cost"] for job in world.sim.state()["jobs"]) * 1_000_000)
    assert charged == 1_050_000  # three videos at $0.35
    answer = world.server.get("/nanogpt/ui/jobs", "admin")
    assert answer.status_code == 200
    card = _budget_card(answer.text, "connection nanogpt_default")
    reserved = SENT_MICRO + RESERVED_MICRO  # released and expired ones count nothing
    assert _figure(card, "limit") == "$5.00"
    assert _figure(card, "spent") == usd(charged)
    assert _figure(card, "reserved") == usd(reserved)
    assert _figure(card, "left") == f"{usd(5_000_000 - charged - reserved)} left"
    # The next midnight in the budget's zone, and how far off it is.
    now = datetime.now(ZoneInfo(TIMEZONE))
    resets = _figure(card, "resets")
    next_day = datetime.fromordinal(now.date().toordinal() + 1).strftime("%Y-%m-%d")
    assert resets.startswith(f"{next_day} 00:00"), resets
    assert re.search(r"\(in \d+ (h|min)\)$", resets), resets
    # Each DAG with what it spent; the open reservations' tags name no DAG.
    assert re.search(
        rf'data-dag="{SHOWN_DAG}"><td>{SHOWN_DAG}</td><td class="num">\$0\.35<', card
    ), f"{card}\n{_what_the_server_sees(answer.text)}"
    assert re.search(
        rf'data-dag="{HIDDEN_DAG}"><td>{HIDDEN_DAG}</td><td class="num">\$0\.70<', card
    )
    assert f'no DAG recorded</td><td class="num">{usd(reserved)}<' in card
    assert 'class="spent" style="width:21.0%"' in card  # $1.05 of $5.00


def test_a_user_sees_no_name_of_a_dag_they_may_not_read(world: World) -> None:
    answer = world.server.get("/nanogpt/ui/jobs", "limited")
    assert answer.status_code == 200
    card = _budget_card(answer.text, "connection nanogpt_default")
    assert HIDDEN_DAG not in answer.text
    assert f'data-dag="{SHOWN_DAG}"' in card
    assert re.search(r'data-dag-others="1"><td>and 1 other DAG</td><td class="num">\$0\.70<', card)
    # The totals are the same for everyone.
    assert _figure(card, "spent") == "$1.05"


def test_an_unreachable_ledger_is_a_line_not_an_error(world: World) -> None:
    answer = world.server.get("/nanogpt/ui/jobs", "viewer")
    assert answer.status_code == 200
    problem = re.search(
        rf'data-conn="{BROKEN_CONN}"><div class="muted">Budgets of {BROKEN_CONN}</div>'
        r"<div>([^<]*)<",
        answer.text,
    )
    assert problem, _what_the_server_sees(answer.text)
    line = html.unescape(problem.group(1))
    assert "'broken_ledger'" in line and "cannot be read" in line
    assert str(world.ledger_file.parent) not in line  # no path or URL


def test_a_pending_approval_links_to_required_actions(world: World) -> None:
    answer = world.server.get("/nanogpt/ui/jobs", "admin")
    assert answer.status_code == 200
    assert re.search(
        r'id="approvals".*>1 waiting for approval</span>\s*'
        r'<a href="/required_actions\?response_received=false" target="_top">',
        answer.text,
    )
    row = re.search(
        rf'<tr data-run-id="[^"]*" data-state="[^"]*">\s*<td><a href="[^"]*/dags/{SHOWN_DAG}/'
        r".*?</tr>",
        answer.text,
        re.S,
    )
    assert row and "data-awaiting-approval" in row.group(0)
    hidden_row = re.search(rf"/dags/{HIDDEN_DAG}/.*?</tr>", answer.text, re.S)
    assert hidden_row and "data-awaiting-approval" not in hidden_row.group(0)


@pytest.mark.parametrize("token", [None, "not-a-token"])
def test_anonymous_is_sent_to_the_login(world: World, token: str | None) -> None:
    answer = world.server.get("/nanogpt/ui/jobs", token=token, follow=False)
    assert answer.status_code == 303
    assert "login" in answer.headers["location"]
    assert "Budgets" not in answer.text


def _budget_json(world: World, user: str) -> dict[str, object]:
    answer = world.server.get("/nanogpt/api/budgets", user)
    assert answer.status_code == 200, answer.text[:500]
    found = answer.json()
    (budget,) = [b for b in found["budgets"] if b["name"] == "connection nanogpt_default"]
    return {**found, "budget": budget}


def test_the_budgets_json_has_the_page_figures_as_numbers(world: World) -> None:
    found = _budget_json(world, "admin")
    budget = found["budget"]
    reserved = (SENT_MICRO + RESERVED_MICRO) / 1_000_000
    assert budget["currency"] == "USD" and budget["period"] == "day"
    assert budget["timezone"] == TIMEZONE and budget["conn_id"] == "nanogpt_default"
    assert budget["limit"] == 5.0
    assert budget["spent"] == pytest.approx(1.05, abs=1e-9)
    assert budget["reserved"] == pytest.approx(reserved, abs=1e-9)
    assert budget["left"] == pytest.approx(5.0 - 1.05 - reserved, abs=1e-9)
    # The next midnight in the budget's zone, as an instant.
    resets = datetime.fromisoformat(budget["resets_at"]).astimezone(ZoneInfo(TIMEZONE))
    assert (resets.hour, resets.minute) == (0, 0)
    assert resets.date().toordinal() == datetime.now(ZoneInfo(TIMEZONE)).date().toordinal() + 1
    assert budget["spent_by_dag"] == [
        {"dag_id": SHOWN_DAG, "amount": 0.35},
        {"dag_id": HIDDEN_DAG, "amount": 0.7},
    ]
    assert budget["no_dag_recorded"] == pytest.approx(reserved, abs=1e-9)
    assert found["pending_approvals"] == 1
    # Other test files of this worker may have stored connections too: this one's line.
    (problem,) = [p for p in found["problems"] if p["conn_id"] == BROKEN_CONN]
    assert "cannot be read" in problem["message"]
    assert CANARY_KEY not in json.dumps(found)


def test_the_budgets_json_names_only_readable_dags(world: World) -> None:
    found = _budget_json(world, "limited")
    budget = found["budget"]
    assert HIDDEN_DAG not in json.dumps(found)
    assert budget["spent_by_dag"] == [{"dag_id": SHOWN_DAG, "amount": 0.35}]
    assert (budget["other_dags"], budget["other_dags_amount"]) == (1, 0.7)
    assert budget["spent"] == pytest.approx(1.05, abs=1e-9)  # the totals are everyone's


@pytest.mark.parametrize("token", [None, "not-a-token"])
def test_the_budgets_json_needs_a_signed_in_user(world: World, token: str | None) -> None:
    answer = world.server.get("/nanogpt/api/budgets", token=token, follow=False)
    assert answer.status_code in (401, 403)
    assert "budgets" not in answer.text


def test_the_budgets_json_is_shaped_as_docs_ui_md_shows_it(world: World) -> None:
    doc = (REPO / "docs" / "ui.md").read_text()
    example = re.search(r"```json\n(\{\n  \"budgets\".*?)\n```", doc, re.S)
    assert example, "docs/ui.md has no /nanogpt/api/budgets example"
    shown = json.loads(example.group(1))
    found = _budget_json(world, "admin")
    assert set(found) - {"budget"} == set(shown)
    assert set(found["budget"]) == set(shown["budgets"][0])
