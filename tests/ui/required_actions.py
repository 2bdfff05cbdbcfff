"""A person answering NanoGPT's approval requests in Airflow's own UI, in headless Chromium.

Shared by the browser tests on Airflow 3.3 (tests/e2e/test_ui_browser.py, in its deployment) and
on 3.1 (tests/ui/test_approval_browser.py, a deployment of its own). ``RequiredActions`` holds the
browser steps: sign in through the login form, open the Required Actions page, find a DAG run's
request, read what it shows, click an option. Its selectors are what the pages of Airflow 3.1.8
and 3.3.2 have in common (their React UIs differ: 3.3 lists more columns and shows the request
without 3.1's accordion):

* the list is a table; a request's row links its subject to
  ``/dags/<dag>/runs/<run>/tasks/<task>/required_actions``, and its first cell is the request's
  state ("Approval Required", "No Response Received", ...);
* that page renders the request's Markdown body (the list of what is bought, then a paragraph)
  above one button per option, disabled once the request is answered or timed out.

``approve_reject_and_time_out`` is the scenario both modules run with it: three approval DAG
runs at once, one approved, one rejected, one left unanswered; the outcome of each is read on
the simulator (what reached NanoGPT) and on Airflow's task states.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from airflow_provider_nanogpt.approval import APPROVE, REJECT
from airflow_provider_nanogpt.plugin.budgets import REQUIRED_ACTIONS_PATH
from tests.e2e.dags.nanogpt_e2e_approval_dags import (
    APPROVAL_CONN_EXTRAS,
    APPROVAL_CONN_ID,
    LEDGER_CONN_ID,
    UNANSWERED_TIMEOUT_SECONDS,
)
from tests.e2e.deployment import Deployment, wait_for
from tests.e2e.lifecycle import described_on_failure
from tests.ui.apiserver import USERS

TASK = "generate"
APPROVAL_DAG = "nanogpt_e2e_approval"
UNANSWERED_DAG = "nanogpt_e2e_approval_unanswered"
APPROVAL_DAGS = [APPROVAL_DAG, UNANSWERED_DAG]
# The whole list; REQUIRED_ACTIONS_PATH (the NanoGPT page's link) lists open requests only.
ALL_REQUESTS_PATH = "/required_actions"
# A task starting on a loaded 2-core machine, a browser page settling: generous, as they only
# bound a failure's wait.
ASKED_WITHIN_SECONDS = 180.0
SETTLED_WITHIN_SECONDS = 240.0
PAGE_TIMEOUT_MS = 60_000
# What the list page says once it has loaded.
LOADED = re.compile(r"^(\d+ Required Actions?|No Required Actions? found)$")
# What a request's page says once it is answered (Airflow 3.1 and 3.3 alike).
ANSWERED = re.compile(r"^Response received at .+ from (.+)$")  # (Playwright runs it in JS)
# The request's list names each line; every request's body has this one.
FIRST_FIELD = "Model"
# The NanoGPT connections a deployment needs besides nanogpt_default (its nanogpt_connections).
APPROVAL_CONNECTIONS = {APPROVAL_CONN_ID: APPROVAL_CONN_EXTRAS}


def approval_settings(root: Path) -> dict[str, str]:
    """What a deployment running the approval DAGs needs besides its users: the budget ledger
    their connection names (a SQLite file under ``root``), and Airflow 3.3's scheduler looking
    for timed-out awaiting-input tasks every 5 s (every 15 s by default)."""
    ledger = {"conn_type": "sqlite", "host": str(root / "budget-ledger.db")}
    return {
        f"AIRFLOW_CONN_{LEDGER_CONN_ID.upper()}": json.dumps(ledger),
        "AIRFLOW__SCHEDULER__TRIGGER_TIMEOUT_CHECK_INTERVAL": "5",
    }


def log_in(page: Any, base_url: str, user: str) -> None:
    """Sign ``user`` in through Airflow's login form (the simple auth manager's, with the test
    users' passwords), as a person does."""
    page.goto(f"{base_url}/")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", USERS[user][1])
    page.click("button[type=submit]")
    page.wait_for_url(lambda url: "/auth/login" not in url, timeout=PAGE_TIMEOUT_MS)


def signed_in_page(browser: Any, base_url: str, user: str) -> Any:
    """A page in a browser context of its own, ``user`` signed in."""
    page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    log_in(page, base_url, user)
    return page


@dataclass(frozen=True)
class ShownRequest:
    """A request's page as the browser renders it."""

    fields: dict[str, str]  # each line of the body's list: "Model" -> "kling-video-v2"
    note: str  # the paragraph below the list
    options: dict[str, bool]  # each option's button -> whether it can be clicked
    html: str


class RequiredActions:
    """Airflow's Required Actions page and a request's page, in one signed-in browser page."""

    def __init__(self, page: Any, base_url: str) -> None:
        self.page = page
        self.base_url = base_url
        page.set_default_timeout(PAGE_TIMEOUT_MS)

    def open(self, *, open_only: bool = False) -> None:
        """The list (every request, or the open ones only), once the page has counted them."""
        path = REQUIRED_ACTIONS_PATH if open_only else ALL_REQUESTS_PATH
        self.page.goto(f"{self.base_url}{path}")
        # "3 Required Actions" above the table, or "No Required Actions found": shown once the
        # list has loaded.
        self.page.get_by_text(LOADED).first.wait_for()

    def _link(self, dag_id: str, run_id: str) -> Any:
        # The link's run id as 3.1 and 3.3 write it, or URL-encoded should a version encode it.
        return self.page.locator(
            ", ".join(
                f'a[href$="/dags/{dag_id}/runs/{run}/tasks/{TASK}/required_actions"]'
                for run in (run_id, quote(run_id, safe=""))
            )
        )

    def row(self, dag_id: str, run_id: str) -> Any:
        return self.page.locator("tbody tr").filter(has=self._link(dag_id, run_id))

    def states(self, runs: dict[str, str]) -> dict[str, str | None]:
        """The state each listed request shows (``runs``: run id -> DAG id), None if unlisted."""
        shown: dict[str, str | None] = {}
        for run_id, dag_id in runs.items():
            row = self.row(dag_id, run_id)
            shown[run_id] = row.locator("td").first.inner_text().strip() if row.count() else None
        return shown

    def wait_listed(self, runs: dict[str, str], timeout: float) -> dict[str, str | None]:
        """Reload the list until every run's request is on it; the state each one shows."""

        def listed() -> dict[str, str | None] | None:
            self.open()
            shown = self.states(runs)
            return shown if None not in shown.values() else None

        return wait_for(listed, timeout, f"the Required Actions page to list {runs}", 2.0)

    def subject(self, dag_id: str, run_id: str) -> str:
        return str(self.row(dag_id, run_id).locator("a").first.inner_text()).strip()

    def open_request(self, dag_id: str, run_id: str) -> ShownRequest:
        """Click the request's subject in the list, as a person does; what its page shows."""
        self.row(dag_id, run_id).locator("a").first.click()
        self.page.wait_for_url(re.compile(r"/required_actions$"))
        return self.shown()

    def shown(self) -> ShownRequest:
        body = (
            self.page.locator("ul[role=list]")
            .filter(has=self.page.locator("li", has_text=f"{FIRST_FIELD}:"))
            .first
        )
        body.wait_for()
        fields = dict(
            line.split(": ", 1) if ": " in line else (line, "")
            for line in (text.strip() for text in body.locator("li").all_inner_texts())
        )
        note = str(body.locator("xpath=following-sibling::p[1]").inner_text()).strip()
        buttons = self.page.locator("footer button")
        options = {
            str(buttons.nth(i).inner_text()).strip(): bool(buttons.nth(i).is_enabled())
            for i in range(buttons.count())
        }
        return ShownRequest(fields, note, options, str(self.page.content()))

    def answer(self, option: str) -> str:
        """Click ``option`` on the open request's page; once the page shows the answer taken,
        who it says gave it."""
        self.page.get_by_role("button", name=option, exact=True).click()
        taken = self.page.get_by_text(ANSWERED)
        taken.wait_for()
        found = ANSWERED.match(str(taken.inner_text()).strip())
        assert found is not None
        return found.group(1)


# --- the scenario both browser tests run -------------------------------------------------------


@dataclass
class ApprovalRun:
    name: str
    dag_id: str
    option: str | None  # what the person clicks; None: nobody answers
    settles_as: str  # the task's final state
    prompt: str = ""
    run_id: str = ""


def _prompt(name: str, tag: str) -> str:
    # Markdown's emphasis must show literally (the request escapes it). A render of a few
    # seconds: a trigger firing about a second after its task deferred meets Airflow 3.3.2's
    # scheduler race (apache/airflow#72716).
    return f"a paper boat on a *{name}* street {tag} [sim:queue=0][sim:render=5]"


def _budget_left_line() -> re.Pattern[str]:
    # Nothing is spent or reserved on the connection's budget before the answers: every request
    # is listed before the first answer, so each was made (and its body written) before it.
    return re.compile(
        rf"\$5\.00 of budget 'connection {APPROVAL_CONN_ID}' \(\$5\.00 per day, UTC\) in the "
        r"\d{4}-\d{2}-\d{2} \(day\) window \(\$0\.00 spent, \$0\.00 reserved\)"
    )


def approve_reject_and_time_out(
    deployment: Deployment,
    new_page: Callable[[], Any],
    keep: Callable[[Any, str], None],
) -> None:
    """Three approval DAG runs at once; a person approves one and rejects one in the browser,
    and answers the third too late. Approved: one submission reaches NanoGPT and the task
    succeeds. Rejected: skipped, nothing sent. Unanswered: it fails by its response timeout,
    nothing sent, and the page shows it is no longer awaiting an answer.

    ``new_page`` gives a fresh browser page signed in as an admin; ``keep`` screenshots one.
    """
    with described_on_failure(deployment):
        _run(deployment, new_page, keep)


def _run(
    deployment: Deployment, new_page: Callable[[], Any], keep: Callable[[Any, str], None]
) -> None:
    rest = deployment.rest()
    sim = deployment.simulator
    tag = f"approval-{uuid.uuid4().hex[:8]}"
    runs = [
        ApprovalRun("approved", APPROVAL_DAG, APPROVE, "success"),
        ApprovalRun("rejected", APPROVAL_DAG, REJECT, "skipped"),
        ApprovalRun("unanswered", UNANSWERED_DAG, None, "failed"),
    ]
    submitted_before = sim.state()["submit_requests"]
    for run in runs:
        run.prompt = _prompt(run.name, tag)
        run.run_id = rest.trigger(run.dag_id, {"prompt": run.prompt})
    listing = {run.run_id: run.dag_id for run in runs}

    page = new_page()
    actions = RequiredActions(page, deployment.api_url)
    seen_html: list[str] = []
    listed = actions.wait_listed(listing, ASKED_WITHIN_SECONDS)
    keep(page, "required-actions-listed")
    seen_html.append(page.content())
    for run in runs:
        # The task and the prompt's start tell the requests apart where the list (3.1) does not
        # show the task.
        subject = actions.subject(run.dag_id, run.run_id)
        assert subject.startswith(
            f"Approve NanoGPT video generate ($0.7000): “{run.prompt[:40]}"
        ), subject
    answered = [run for run in runs if run.option is not None]
    waiting = {run.run_id: run.dag_id for run in answered}
    # Nothing answered yet: they wait for a person, also in the list of open requests (where
    # the NanoGPT page's "waiting for approval" links).
    assert {listed[run_id] for run_id in waiting} == {"Approval Required"}, listed
    actions.open(open_only=True)
    assert set(actions.states(waiting).values()) == {"Approval Required"}

    for run in answered:
        actions.open()
        shown = actions.open_request(run.dag_id, run.run_id)
        keep(page, f"required-action-{run.name}")
        seen_html.append(shown.html)
        assert {k: v for k, v in shown.fields.items() if k != "Budget left"} == {
            "Model": "kling-video-v2",
            "Prompt": run.prompt,  # shown literally: the *emphasis* is not rendered
            "Duration": "10",
            "Resolution": "not set",
            "Estimated cost": "$0.7000 (above the approval threshold $0.5000)",
        }, shown.fields
        assert _budget_left_line().fullmatch(shown.fields.get("Budget left", "")), shown.fields
        assert shown.note.startswith("Approve to submit it. Reject skips the task."), shown.note
        assert shown.options == {APPROVE: True, REJECT: True}
        assert run.option is not None
        assert actions.answer(run.option) == "admin"
        answered_page = actions.shown()
        keep(page, f"required-action-{run.name}-answered")
        assert answered_page.options == {APPROVE: False, REJECT: False}

    for run in runs:
        _wait_settled(deployment, run)

    # The unanswered request is no longer awaiting an answer: marked so in the list, gone from
    # the open requests, and its options can no longer be clicked.
    actions.open()
    shown_states = actions.states(listing)
    keep(page, "required-actions-settled")
    assert shown_states == {
        runs[0].run_id: "Approval Received",
        runs[1].run_id: "Rejection Received",
        runs[2].run_id: "No Response Received",
    }
    actions.open(open_only=True)
    assert set(actions.states(listing).values()) == {None}
    keep(page, "required-actions-open-only")
    actions.open()
    timed_out = actions.open_request(UNANSWERED_DAG, runs[2].run_id)
    keep(page, "required-action-unanswered")
    assert timed_out.options == {APPROVE: False, REJECT: False}
    seen_html += [page.content(), timed_out.html]
    page.context.close()

    # What reached NanoGPT: the approved video, once; nothing for the other two.
    jobs = {run.name: sim.jobs_tagged(run.prompt) for run in runs}
    assert {name: len(found) for name, found in jobs.items()} == {
        "approved": 1,
        "rejected": 0,
        "unanswered": 0,
    }, jobs
    assert sim.state()["submit_requests"] - submitted_before == 1
    assert all(deployment.api_key not in html for html in seen_html)


def _wait_settled(deployment: Deployment, run: ApprovalRun) -> None:
    """Wait for the run's task to reach its final state; a wrong one fails with its log."""
    rest = deployment.rest()
    final = ("success", "failed", "skipped", "upstream_failed")

    def settled() -> dict[str, Any] | None:
        ti = rest.task_instance(run.dag_id, run.run_id, TASK)
        return ti if ti is not None and ti["state"] in final else None

    ti = wait_for(
        settled,
        SETTLED_WITHIN_SECONDS + (UNANSWERED_TIMEOUT_SECONDS if run.option is None else 0),
        f"the {run.name} request's task to settle",
        1.0,
        deployment.check_alive,
    )
    log = rest.log_text(run.dag_id, run.run_id, TASK, ti["try_number"])
    assert ti["state"] == run.settles_as, (run.name, ti["state"], log[-3000:])
    # What the task made of the answer (or of none: the response timeout, nothing else).
    reason = {
        APPROVE: "admin approved this NanoGPT video; submitting it.",
        REJECT: "admin rejected this NanoGPT video; nothing was submitted.",
        None: "NanoGPTApprovalTimeoutError",
    }[run.option]
    assert reason in log, log[-3000:]
    assert deployment.api_key not in log
