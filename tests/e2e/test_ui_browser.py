"""The NanoGPT page and the Video tab, as a person sees them: headless Chromium, signed in
through Airflow's login form, against a real deployment (PostgreSQL, scheduler, triggerer,
dag-processor, api-server) whose jobs ran for real against the simulator. In the same
deployment, the approval path on Airflow's own Required Actions page (the scenario of
tests/ui/required_actions.py; tests/ui/test_approval_browser.py runs it on Airflow 3.1).

Screenshots of every view are kept as test artifacts (``NANOGPT_ARTIFACTS``, default
``test-artifacts/`` in the repository). With ``NANOGPT_UPDATE_SCREENSHOTS=1`` the test also
rewrites the screenshots docs/ui.md shows (docs/images/), so CI never touches tracked files.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest

from tests.conftest import ARTIFACTS as ARTIFACTS_ROOT
from tests.conftest import REPO
from tests.e2e.chromium import (
    LAUNCH_ARGS,
    ChromiumUnavailable,
    ensure_chromium,
)
from tests.e2e.conftest import E2E_DAGS
from tests.e2e.dags.nanogpt_e2e_approval_dags import APPROVAL_CONN_ID
from tests.e2e.deployment import Deployment, Rest, wait_for
from tests.e2e.lifecycle import unavailable
from tests.e2e.postgres import PostgresCluster, PostgresUnavailable, ensure_installed
from tests.ui.apiserver import USERS, signed_in_users
from tests.ui.required_actions import (
    APPROVAL_CONNECTIONS,
    APPROVAL_DAG,
    APPROVAL_DAGS,
    approval_settings,
    approve_reject_and_time_out,
    log_in,
)
from tests.ui.restricted_auth import SECRET_DAG_ENV

pytestmark = pytest.mark.e2e

ARTIFACTS = ARTIFACTS_ROOT / "ui"
DAG = "nanogpt_e2e_deferred"
SECRET_DAG = "nanogpt_e2e_triggerer_restart"  # user "limited" may not read this one
TASK = "generate"
# Renders of a few seconds: a trigger that fires about a second after its task deferred meets
# Airflow 3.3.2's scheduler race (apache/airflow#72716), which fails the resumed try.
QUICK = "[sim:queue=0][sim:render=5]"
PROMPTS = {
    "completed": f"a calm sea at dawn {QUICK}",
    "failed": f"a storm over the harbour [sim:fail]{QUICK}",
    "rendering": "a very slow sunrise [sim:queue=0][sim:render=900]",
    "secret": f"the secret product launch {QUICK}",
}
SETTLED = {"completed": "success", "failed": "failed", "rendering": "deferred", "secret": "success"}
THEMES = ("light", "dark")
DOC_IMAGES = REPO / "docs" / "images"
UPDATE_SCREENSHOTS = os.environ.get("NANOGPT_UPDATE_SCREENSHOTS") == "1"
DOC_VIEWPORT = (1280, 800)


@dataclass
class UiWorld:
    deployment: Deployment
    browser: Any
    canary: str
    runs: dict[str, str]  # name -> DAG run id
    seen_html: list[str] = field(default_factory=list)
    # (user, theme) -> the page's background and text colour, to compare light with dark.
    colours: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    requested_hosts: set[str] = field(default_factory=set)

    @property
    def url(self) -> str:
        return self.deployment.api_url

    def rest(self) -> Rest:
        return self.deployment.rest()

    def sign_in(
        self, user: str, theme: str | None = None, viewport: tuple[int, int] = (1400, 1200)
    ) -> Any:
        """A fresh browser context, signed in through Airflow's login form.

        ``theme`` ("light"/"dark") is set as a person's choice is: the browser's colour scheme,
        and Airflow's own stored theme (its user menu keeps it in localStorage "theme").
        """
        width, height = viewport
        scheme = {} if theme is None else {"color_scheme": theme}
        context = self.browser.new_context(
            viewport={"width": width, "height": height}, accept_downloads=True, **scheme
        )
        if theme is not None:
            context.add_init_script(f"localStorage.setItem('theme', {json.dumps(theme)})")
        page = context.new_page()
        page.on("request", self._note_request)
        log_in(page, self.url, user)
        return page

    def _note_request(self, request: Any) -> None:
        if request.url.startswith(("http:", "https:")):
            self.requested_hosts.add(urlsplit(request.url).netloc)

    def plugin_frame(self, page: Any, path_part: str) -> Any:
        """The plugin's iframe in the Airflow page, once its document has loaded."""
        iframe = page.wait_for_selector(f"iframe[src*='{path_part}']", timeout=60_000)
        frame = iframe.content_frame()
        frame.wait_for_load_state("load")
        assert path_part in frame.url
        return frame

    def keep(self, page: Any, name: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
        self.seen_html.extend(frame.content() for frame in page.frames)

    def keep_for_docs(self, page: Any, name: str) -> None:
        """The screenshot docs/ui.md shows, rewritten only when asked (it is a tracked file)."""
        if UPDATE_SCREENSHOTS:
            page.screenshot(path=str(DOC_IMAGES / f"{name}.png"))

    def ti_page(self, name: str, dag_id: str = DAG) -> str:
        run = quote(self.runs[name], safe="")
        return f"{self.url}/dags/{dag_id}/runs/{run}/tasks/{TASK}/plugin/nanogpt-video"


@pytest.fixture(scope="module")
def ui() -> Iterator[UiWorld]:
    try:
        chromium = ensure_chromium()
        cluster = PostgresCluster(ensure_installed())
    except (ChromiumUnavailable, PostgresUnavailable) as exc:
        unavailable("UI suite", "Chromium or PostgreSQL", exc)
    from playwright.sync_api import sync_playwright

    canary = f"sk-nano-ui-canary-{uuid.uuid4()}"
    root = Path(tempfile.mkdtemp(prefix="nanogpt-ui-"))
    settings: dict[str, str | None] = {
        **signed_in_users(root),
        **approval_settings(root),
        SECRET_DAG_ENV: SECRET_DAG,
    }
    deployment: Deployment | None = None
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(chromium), args=LAUNCH_ARGS)
            cluster.start()
            deployment = Deployment(
                root,
                cluster.sqlalchemy_url,
                E2E_DAGS,
                canary,
                extra_env=settings,
                login=("admin", USERS["admin"][1]),
                nanogpt_connections=APPROVAL_CONNECTIONS,
            )
            deployment.start()
            deployment.wait_for_dags([DAG, SECRET_DAG, *APPROVAL_DAGS], timeout=120)
            world = UiWorld(deployment, browser, canary, _run_jobs(deployment, root))
            yield world
            browser.close()
    finally:
        if deployment is not None:
            deployment.stop()
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


def _run_jobs(deployment: Deployment, root: Path) -> dict[str, str]:
    rest = deployment.rest()
    runs = {
        name: rest.trigger(
            SECRET_DAG if name == "secret" else DAG,
            {"prompt": prompt, "output_path": str(root / "videos" / f"{name}.mp4")},
        )
        for name, prompt in PROMPTS.items()
    }
    for name, run_id in runs.items():
        dag_id = SECRET_DAG if name == "secret" else DAG

        def settled(dag_id: str = dag_id, run_id: str = run_id, want: str = SETTLED[name]) -> bool:
            ti = rest.task_instance(dag_id, run_id, TASK)
            return ti is not None and ti["state"] == want

        wait_for(settled, 180, f"{name} job's task to be {SETTLED[name]}", 1.0)
    return runs


def _wait_for_balances(frame: Any) -> None:
    frame.wait_for_function("!document.querySelector('#balances').textContent.includes('loading')")


# --- the NanoGPT page ---------------------------------------------------------------------------


def test_the_nanogpt_page_shows_every_job_with_its_state_and_cost(ui: UiWorld) -> None:
    page = ui.sign_in("viewer")
    page.goto(f"{ui.url}/plugin/nanogpt")
    frame = ui.plugin_frame(page, "/nanogpt/ui/jobs")
    _wait_for_balances(frame)
    rows = {
        row.get_attribute("data-run-id"): row
        for row in frame.query_selector_all("#jobs tbody tr[data-run-id]")
    }
    jobs = {job["runId"]: job for job in ui.deployment.simulator.state()["jobs"]}
    assert set(rows) == set(jobs) and len(rows) == 4
    states = {}
    for run_id, row in rows.items():
        text = row.inner_text()
        name = next(n for n, p in PROMPTS.items() if p.split(" [")[0] in text)
        states[name] = row.get_attribute("data-state")
        cost = f"{jobs[run_id]['cost']:.4f} USD"
        if name == "failed":  # refunded: charged nothing, and the page says what came back
            assert "0.0000 USD" in text and f"refunded ({cost.split()[0]} given back)" in text
        else:
            assert cost in text
    assert states == {
        "completed": "completed",
        "failed": "failed",
        "rendering": "rendering",
        "secret": "completed",
    }
    failed = next(r for r in rows.values() if r.get_attribute("data-state") == "failed")
    assert "refunded" in failed.inner_text()
    rendering = next(r for r in rows.values() if r.get_attribute("data-state") == "rendering")
    assert rendering.query_selector("progress") is not None
    charged = sum(job["cost"] for job in jobs.values() if not job["refunded"])
    assert frame.inner_text("[data-spend-total=USD]").startswith(f"{charged:.4f} USD")
    ui.keep(page, "nanogpt-page-viewer")
    page.context.close()


def test_a_user_sees_only_jobs_of_dags_they_may_read(ui: UiWorld) -> None:
    page = ui.sign_in("limited")
    page.goto(f"{ui.url}/plugin/nanogpt")
    frame = ui.plugin_frame(page, "/nanogpt/ui/jobs")
    text = frame.inner_text("#jobs")
    assert "the secret product launch" not in text and SECRET_DAG not in text
    assert "a calm sea at dawn" in text
    ui.keep(page, "nanogpt-page-limited")
    secret = (
        f"{ui.url}/nanogpt/ui/video?dag_id={SECRET_DAG}&task_id={TASK}"
        f"&run_id={quote(ui.runs['secret'], safe='')}"
    )
    assert page.goto(secret).status == 403
    page.context.close()


# --- the Video tab ------------------------------------------------------------------------------


def test_the_video_tab_plays_the_rendered_video(ui: UiWorld) -> None:
    page = ui.sign_in("viewer")
    page.goto(ui.ti_page("completed"))
    frame = ui.plugin_frame(page, "/nanogpt/ui/video")
    frame.wait_for_selector("#player")
    # The browser fetched the simulator's default video (its shipped H.264 clip, as `make demo`
    # saves it) through Airflow and decoded its first frame.
    frame.wait_for_function(
        "(p => p.error !== null || p.readyState >= 2)(document.querySelector('#player'))",
        timeout=30_000,
    )
    player = frame.eval_on_selector(
        "#player",
        """video => ({error: video.error && video.error.code, ready: video.readyState,
                     duration: video.duration, size: [video.videoWidth, video.videoHeight]})""",
    )
    assert player["error"] is None, player
    assert player["ready"] >= 2 and player["duration"] > 0, player
    assert player["size"] == [320, 180]
    assert "/nanogpt/video?" in frame.evaluate("document.querySelector('#player').currentSrc")
    assert frame.inner_text("#state") == "completed"
    ui.keep(page, "video-tab-completed")
    page.context.close()


def test_the_video_tab_explains_a_failed_and_a_rendering_job(ui: UiWorld) -> None:
    page = ui.sign_in("viewer")
    page.goto(ui.ti_page("failed"))
    frame = ui.plugin_frame(page, "/nanogpt/ui/video")
    assert frame.inner_text("#state") == "failed"
    assert frame.query_selector("#player") is None
    assert "Error" in frame.inner_text("#job")
    ui.keep(page, "video-tab-failed")

    page.goto(ui.ti_page("rendering"))
    frame = ui.plugin_frame(page, "/nanogpt/ui/video")
    assert frame.inner_text("#state") == "rendering"
    frame.wait_for_function("document.querySelector('#progress').textContent.includes('% done')")
    ui.keep(page, "video-tab-rendering")
    page.context.close()


# --- as a person sees it: admin and viewer, light and dark ----------------------------------------

# The colours Airflow's own theme gives a page (its Chakra tokens bg and fg), resolved by the
# Airflow page itself in its current mode.
AIRFLOW_COLOURS_JS = """() => {
  const probe = document.createElement("div");
  probe.style.cssText = "background-color: var(--chakra-colors-bg); color: var(--chakra-colors-fg)";
  document.body.append(probe);
  const style = getComputedStyle(probe);
  const colours = {background: style.backgroundColor, text: style.color};
  probe.remove();
  return colours;
}"""
SHOWN_COLOURS_JS = """() => {
  const style = getComputedStyle(document.body);
  return {background: style.backgroundColor, text: style.color};
}"""
TABLE_JS = """rows => rows.map(row => ({
  run: row.dataset.runId, state: row.dataset.state,
  charged: row.cells[4].innerText, submitted: row.cells[5].innerText}))"""


def _table(frame: Any) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = frame.eval_on_selector_all("#jobs tbody tr[data-run-id]", TABLE_JS)
    return rows


def _check_colours(ui: UiWorld, page: Any, frame: Any, user: str, theme: str) -> None:
    """The frame shows Airflow's colours of the mode the person chose in Airflow."""
    assert page.evaluate("t => document.documentElement.classList.contains(t)", theme)
    assert frame.evaluate("document.documentElement.dataset.theme") == theme
    shown = frame.evaluate(SHOWN_COLOURS_JS)
    assert shown == page.evaluate(AIRFLOW_COLOURS_JS), (user, theme)
    ui.colours.setdefault((user, theme), shown)
    assert shown == ui.colours[(user, theme)]  # every page of the plugin alike
    other = ui.colours.get((user, "dark" if theme == "light" else "light"))
    assert other is None or (
        other["background"] != shown["background"] and other["text"] != shown["text"]
    )


@pytest.mark.parametrize("theme", THEMES)
@pytest.mark.parametrize("user", ["admin", "viewer"])
def test_the_page_as_a_person_uses_it_in_light_and_dark(ui: UiWorld, user: str, theme: str) -> None:
    page = ui.sign_in(user, theme, viewport=DOC_VIEWPORT)
    page.goto(f"{ui.url}/plugin/nanogpt")
    frame = ui.plugin_frame(page, "/nanogpt/ui/jobs")
    _wait_for_balances(frame)
    _check_colours(ui, page, frame, user, theme)
    # admin and viewer may both read every DAG (the simple auth manager's roles are global).
    assert len(_table(frame)) == len(PROMPTS)
    ui.keep(page, f"nanogpt-page-{user}-{theme}")
    if user == "admin":
        ui.keep_for_docs(page, "ui-nanogpt-page" + ("-dark" if theme == "dark" else ""))

    # The spend chart: one bar per day from the first to the last day with a charge.
    charged_days = sorted(
        {
            date.fromisoformat(row["submitted"][:10])
            for row in _table(frame)
            if not row["charged"].startswith("0.0000")
        }
    )
    span = (charged_days[-1] - charged_days[0]).days + 1
    every_day = [str(charged_days[0] + timedelta(days=n)) for n in range(span)]
    bars = frame.eval_on_selector_all(
        "figure.spend-chart svg rect.bar", "bars => bars.map(bar => bar.dataset.day)"
    )
    assert bars == every_day

    # Sorting: a header click sorts by its column, a second click the other way.
    frame.click("th[data-sort=state] a")
    frame.wait_for_url(re.compile(r"order_by=state"))
    ascending = [row["state"] for row in _table(frame)]
    assert ascending == sorted(ascending) and len(set(ascending)) > 1
    assert frame.get_attribute("th[data-sort=state]", "aria-sort") == "ascending"
    frame.click("th[data-sort=state] a")
    frame.wait_for_url(re.compile(r"order_by=-state"))
    shown = _table(frame)
    assert [row["state"] for row in shown] == sorted(ascending, reverse=True)

    # The CSV link downloads the jobs of the table, in its order.
    with page.expect_download() as download:
        frame.click("#jobs-csv")
    assert download.value.suggested_filename.endswith(".csv")
    with open(download.value.path(), encoding="utf-8", newline="") as saved:
        exported = list(csv.DictReader(saved))
    assert [(r["nanogpt_run_id"], r["state"]) for r in exported] == [
        (row["run"], row["state"]) for row in shown
    ]

    # Prompt search narrows the rows (case-insensitively); Watch, and back to the same list.
    frame.fill("input[name=q]", "CALM SEA")
    frame.press("input[name=q]", "Enter")
    frame.wait_for_url(re.compile(r"[?&]q=CALM"))
    found = frame.query_selector_all("#jobs tbody tr[data-run-id]")
    assert len(found) == 1 and PROMPTS["completed"].split(" [")[0] in found[0].inner_text()
    listed = frame.url
    found[0].query_selector("a:text-is('Watch')").click()
    frame.wait_for_url(re.compile(r"/nanogpt/ui/video\?"))
    assert frame.inner_text("#prompt") == PROMPTS["completed"]
    assert frame.query_selector("#player") is not None
    frame.click("#back")
    frame.wait_for_url(re.compile(r"/nanogpt/ui/jobs\?"))
    assert parse_qs(urlsplit(frame.url).query, keep_blank_values=True) == parse_qs(
        urlsplit(listed).query, keep_blank_values=True
    )
    assert len(_table(frame)) == 1 and frame.input_value("input[name=q]") == "CALM SEA"

    # A bad parameter: a readable message inside the page, in the same colours.
    answer = frame.goto(f"{ui.url}/nanogpt/ui/jobs?page=0")
    assert answer is not None and answer.status == 400
    assert frame.inner_text("#error") == "page must be a whole number from 1"
    assert "/plugin/nanogpt" in page.url
    _check_colours(ui, page, frame, user, theme)

    # The Video tab, in the same mode.
    page.goto(ui.ti_page("completed"))
    frame = ui.plugin_frame(page, "/nanogpt/ui/video")
    frame.wait_for_function(
        "(p => p.error !== null || p.readyState >= 2)(document.querySelector('#player'))",
        timeout=30_000,
    )
    _check_colours(ui, page, frame, user, theme)
    ui.keep(page, f"video-tab-{user}-{theme}")
    if user == "admin":
        ui.keep_for_docs(page, "ui-video-tab" + ("-dark" if theme == "dark" else ""))
    page.context.close()


# --- the approval path: Airflow's Required Actions page ----------------------------------------


def test_a_person_approves_rejects_or_lets_a_request_time_out(ui: UiWorld) -> None:
    """Airflow 3.3's awaiting_input path (tests/ui/test_approval_browser.py runs it on 3.1)."""
    approve_reject_and_time_out(ui.deployment, lambda: ui.sign_in("admin"), ui.keep)


def test_the_budget_shows_what_the_approved_video_spent(ui: UiWorld) -> None:
    """The approval connection's shared budget on the NanoGPT page, as a person sees it after
    the approval scenario above: the one approved video spent, nothing reserved, its DAG named,
    and a bar filled to the share spent."""
    from airflow_provider_nanogpt.ledger import usd

    approved = [
        job
        for job in ui.deployment.simulator.state()["jobs"]
        if job["payload"].get("prompt", "").startswith("a paper boat on a *approved*")
    ]
    assert len(approved) == 1, (
        "runs after test_a_person_approves_rejects_or_lets_a_request_time_out"
    )
    spent = round(approved[0]["cost"] * 1_000_000)
    page = ui.sign_in("admin")
    page.goto(f"{ui.url}/plugin/nanogpt")
    frame = ui.plugin_frame(page, "/nanogpt/ui/jobs")
    card = frame.wait_for_selector(f'[data-budget="connection {APPROVAL_CONN_ID}|day"]')

    def figure(name: str) -> str:
        return str(card.query_selector(f'[data-figure="{name}"]').inner_text()).strip()

    assert figure("limit") == "$5.00"
    assert figure("spent") == usd(spent)
    assert figure("reserved") == "$0.00"
    assert figure("left") == f"{usd(5_000_000 - spent)} left"
    spent_by = {
        row.get_attribute("data-dag"): row for row in card.query_selector_all("tr[data-dag]")
    }
    assert set(spent_by) == {APPROVAL_DAG}
    assert usd(spent) in spent_by[APPROVAL_DAG].inner_text()
    bar = card.query_selector(".budget-bar").bounding_box()
    filled = card.query_selector(".budget-bar .spent").bounding_box()
    assert abs(filled["width"] / bar["width"] - spent / 5_000_000) < 0.02, (filled, bar)
    ui.keep(page, "nanogpt-page-budget")
    page.context.close()


ENDPOINTS = [
    "/nanogpt/ui/jobs",
    "/nanogpt/api/jobs",
    "/nanogpt/api/spend",
    "/nanogpt/api/balances",
    "/nanogpt/ui/video",
    "/nanogpt/api/job",
    "/nanogpt/video",
]


def test_every_endpoint_needs_a_login_and_no_answer_carries_the_key(ui: UiWorld) -> None:
    import requests

    ti = {"dag_id": DAG, "run_id": ui.runs["completed"], "task_id": TASK}
    admin = {"Authorization": f"Bearer {ui.rest().token('admin', USERS['admin'][1])}"}
    for path in ENDPOINTS:
        anonymous = requests.get(f"{ui.url}{path}", params=ti, timeout=30, allow_redirects=False)
        if path.startswith("/nanogpt/ui/"):  # a page sends the browser to Airflow's login
            assert anonymous.status_code == 303, path
            assert "/auth/login" in anonymous.headers["Location"], path
        else:
            assert anonymous.status_code == 401, path
        answer = requests.get(f"{ui.url}{path}", params=ti, headers=admin, timeout=60)
        assert answer.status_code == 200, (path, answer.text[:300])
        body = answer.content if path == "/nanogpt/video" else answer.text.encode()
        assert ui.canary.encode() not in body, path
        assert b"x-api-key" not in body.lower(), path


def test_no_page_shows_the_key_and_the_browser_only_talks_to_airflow(ui: UiWorld) -> None:
    page = ui.sign_in("admin")
    page.goto(f"{ui.url}/plugin/nanogpt")
    frame = ui.plugin_frame(page, "/nanogpt/ui/jobs")
    _wait_for_balances(frame)
    assert frame.query_selector("#balances [data-balance=nanogpt_default]") is not None
    ui.keep(page, "nanogpt-page-admin")
    page.context.close()
    assert ui.seen_html, "the other tests kept no pages"
    for html in ui.seen_html:
        assert ui.canary not in html
        assert "x-api-key" not in html.lower()
    # Videos and figures come through Airflow: the browser never calls NanoGPT itself.
    assert ui.requested_hosts == {urlsplit(ui.url).netloc}
