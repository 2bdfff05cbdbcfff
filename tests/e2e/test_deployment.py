"""End to end: GenerateVideoOperator under a real Airflow 3 deployment on PostgreSQL.

A scheduler (LocalExecutor), triggerer, dag-processor and api-server run as separate processes
against a NanoGPT simulator process. Everything is observed the way an operator would: through the
REST API, the simulator's ``/_sim/state``, the log files and the metadata database.
"""

from __future__ import annotations

import json
import re
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import EXAMPLE_DAGS
from tests.e2e.conftest import BUDGET_WINDOW_SECONDS, E2E
from tests.e2e.dags.nanogpt_e2e_budget_dags import (
    BUDGET_WAIT_CONN_ID,
    BUDGET_WAIT_DAG_ID,
    BUDGET_WAIT_TAG,
    BUDGET_WAIT_VIDEOS,
)
from tests.e2e.deployment import DeploymentError, wait_for

pytestmark = pytest.mark.e2e

TASK = "generate"
SETTLED_RUN_STATES = {"success", "failed"}
IN_FLIGHT = {"queued", "processing"}


def _tag(name: str) -> str:
    """A token in the prompt that picks this test's jobs out of the shared simulator."""
    return f"e2e-{name}-{uuid.uuid4().hex[:8]}"


def _trigger(e2e: E2E, dag_id: str, tag: str, render_seconds: float, video: Path) -> str:
    prompt = f"a paper boat on a rainy street {tag} [sim:queue=1][sim:render={render_seconds}]"
    run_id = e2e.rest.trigger(dag_id, {"prompt": prompt, "output_path": str(video)})
    e2e.runs.append((dag_id, run_id))
    return run_id


def _snapshot_triggers(e2e: E2E) -> list[dict[str, Any]]:
    """Read the trigger table now (raw and decrypted kwargs); keep each row for the hygiene test."""
    from cryptography.fernet import Fernet

    fernet = Fernet(e2e.deployment.fernet_key.encode())
    conn = e2e.cluster.connect()
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT id, classpath, kwargs, triggerer_id FROM trigger")
            rows = cursor.fetchall()
    finally:
        conn.close()
    snapshot = []
    for trigger_id, classpath, raw, triggerer_id in rows:
        decrypted = raw if raw.startswith("{") else fernet.decrypt(raw.encode()).decode()
        snapshot.append(
            {
                "id": trigger_id,
                "classpath": classpath,
                "raw": raw,
                "kwargs": decrypted,
                "triggerer_id": triggerer_id,
            }
        )
    e2e.trigger_rows.extend(snapshot)
    return snapshot


def _wait_for_run(
    e2e: E2E,
    dag_id: str,
    run_id: str,
    timeout: float,
    on_sample: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Poll REST until the DAG run settles; returns the final task instance."""

    def settled() -> dict[str, Any] | None:
        ti = e2e.rest.task_instance(dag_id, run_id, TASK)
        if ti is not None and on_sample is not None:
            on_sample(ti)
        if e2e.rest.dag_run(dag_id, run_id)["state"] in SETTLED_RUN_STATES:
            return e2e.rest.task_instance(dag_id, run_id, TASK)
        return None

    try:
        return wait_for(settled, timeout, f"{dag_id} {run_id}", 0.25, e2e.deployment.check_alive)
    except DeploymentError as exc:
        raise AssertionError(f"{exc}\n{e2e.deployment.describe()}") from exc


def _only_job(e2e: E2E, tag: str) -> dict[str, Any]:
    jobs = e2e.sim.jobs_tagged(tag)
    assert len(jobs) == 1, f"expected exactly one submitted job for {tag}, got {jobs}"
    return jobs[0]


def _assert_success(e2e: E2E, dag_id: str, run_id: str, ti: dict[str, Any]) -> None:
    if ti["state"] != "success":
        log = e2e.rest.log_text(dag_id, run_id, TASK, ti["try_number"])
        raise AssertionError(f"task ended {ti['state']}:\n{log[-4000:]}")
    assert e2e.rest.dag_run(dag_id, run_id)["state"] == "success"


def test_deferred_generation_is_observable_and_delivers(e2e: E2E) -> None:
    dag_id, tag, video = "nanogpt_e2e_deferred", _tag("deferred"), e2e.videos / "deferred.mp4"
    submits_before = e2e.sim.state()["submits_accepted"]
    run_id = _trigger(e2e, dag_id, tag, render_seconds=12, video=video)

    seen: dict[str, Any] = {"deferred_while_rendering": False, "xcom_run_id": None}

    def sample(ti: dict[str, Any]) -> None:
        if ti["state"] != "deferred":
            return
        jobs = e2e.sim.jobs_tagged(tag)
        if jobs and jobs[0]["status"] in IN_FLIGHT:
            seen["deferred_while_rendering"] = True
        if seen["xcom_run_id"] is None:
            seen["xcom_run_id"] = e2e.rest.xcom(dag_id, run_id, TASK, "run_id")
            _snapshot_triggers(e2e)

    ti = _wait_for_run(e2e, dag_id, run_id, timeout=90, on_sample=sample)
    _assert_success(e2e, dag_id, run_id, ti)
    job = _only_job(e2e, tag)
    assert e2e.sim.state()["submits_accepted"] - submits_before == 1

    # It waited in the triggerer while NanoGPT rendered, and its run id was public meanwhile.
    assert seen["deferred_while_rendering"]
    assert seen["xcom_run_id"] == job["runId"]
    assert ti["try_number"] == 1

    result = e2e.rest.xcom(dag_id, run_id, TASK, "return_value")
    assert result == {
        "run_id": job["runId"],
        "model": "kling-video-v2",
        "status": "success",
        "video_url": result["video_url"],
        "cost": result["cost"],
        "currency": "USD",
        "output_path": str(video),
    }
    # The flat status shape carries no final cost; the submit's pre-charge is in the submission.
    assert result["cost"] in (None, job["cost"])
    assert e2e.rest.xcom(dag_id, run_id, TASK, "submission")["cost"] == job["cost"]
    assert result["video_url"].startswith(e2e.sim.url) and job["runId"] in result["video_url"]
    assert video.stat().st_size > 0

    # The trigger's progress lines reach the task log the UI shows.
    log = e2e.rest.log_text(dag_id, run_id, TASK, 1)
    assert re.search(r"\d+% done", log), log[-3000:]
    assert f"Submitted NanoGPT video {job['runId']}" in log

    links = e2e.rest.get(f"{e2e.rest.ti_path(dag_id, run_id, TASK)}/links")
    assert links["extra_links"]["NanoGPT Video"] == result["video_url"]
    assert not links["extra_links"].get("Saved video")  # a local path: no console to open


def test_triggerer_killed_while_deferred_resumes_without_resubmitting(e2e: E2E) -> None:
    dag_id, tag, video = "nanogpt_e2e_triggerer_restart", _tag("triggerer"), e2e.videos / "b.mp4"
    submits_before = e2e.sim.state()["submits_accepted"]
    run_id = _trigger(e2e, dag_id, tag, render_seconds=25, video=video)

    def trigger_running() -> dict[str, Any] | None:
        ti = e2e.rest.task_instance(dag_id, run_id, TASK)
        if ti is None or ti["state"] != "deferred":
            return None
        assigned = [row for row in _snapshot_triggers(e2e) if row["triggerer_id"] is not None]
        jobs = e2e.sim.jobs_tagged(tag)
        # A fresh submission defers without a status check: every poll came from the trigger.
        if assigned and jobs and jobs[0]["polls"] >= 1:
            return jobs[0]
        return None

    job = wait_for(trigger_running, 90, "the trigger to poll", 0.25, e2e.deployment.check_alive)
    triggerer = e2e.deployment.processes["triggerer"]
    triggerer.kill()
    status_at_kill = _only_job(e2e, tag)["status"]
    # Back before any assertion: a dead triggerer would fail every later test of the module.
    e2e.deployment.restart("triggerer")
    # The kill must land mid-render, or the test proves nothing about resuming.
    assert status_at_kill in IN_FLIGHT

    ti = _wait_for_run(e2e, dag_id, run_id, timeout=120)
    _assert_success(e2e, dag_id, run_id, ti)
    # Same try: the task was never re-run, the new triggerer simply resumed the wait.
    assert ti["try_number"] == 1
    final = _only_job(e2e, tag)
    assert final["runId"] == job["runId"]
    assert e2e.sim.state()["submits_accepted"] - submits_before == 1
    assert triggerer.starts == 2
    # Two triggerer incarnations ran this trigger: each leaves its own trigger log file.
    log_dir = e2e.deployment.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}"
    trigger_logs = sorted(log_dir.glob(f"task_id={TASK}/attempt=1.log.trigger.*.log"))
    assert len(trigger_logs) >= 2, trigger_logs
    assert e2e.rest.xcom(dag_id, run_id, TASK, "return_value")["run_id"] == job["runId"]
    assert video.stat().st_size > 0


def test_worker_lost_after_submit_reattaches_on_retry(e2e: E2E) -> None:
    dag_id, tag, video = "nanogpt_e2e_worker_crash", _tag("crash"), e2e.videos / "c.mp4"
    before = e2e.sim.state()
    run_id = _trigger(e2e, dag_id, tag, render_seconds=8, video=video)

    ti = _wait_for_run(e2e, dag_id, run_id, timeout=150)
    _assert_success(e2e, dag_id, run_id, ti)
    # Try 1 died after paying; try 2 finished the same job instead of paying again.
    assert ti["try_number"] == 2
    job = _only_job(e2e, tag)
    after = e2e.sim.state()
    assert after["submits_accepted"] - before["submits_accepted"] == 1
    assert after["submit_requests"] - before["submit_requests"] == 1

    ti_path = e2e.rest.ti_path(dag_id, run_id, TASK)
    first_try = e2e.rest.get(f"{ti_path}/tries/1")
    assert first_try["state"] in {"up_for_retry", "failed"}
    log_1 = e2e.rest.log_text(dag_id, run_id, TASK, 1)
    log_2 = e2e.rest.log_text(dag_id, run_id, TASK, 2)
    assert f"Submitted NanoGPT video {job['runId']}" in log_1
    assert f"Reattaching to NanoGPT run {job['runId']}" in log_2
    assert "Submitted NanoGPT video" not in log_2

    # The Airflow 3.3 task state store carried the paid run across the lost worker.
    store = e2e.rest.get(f"{ti_path}/state-store")
    records = {entry["key"]: entry["value"] for entry in store["task_state_store"]}
    assert records["nanogpt_video_run"]["run_id"] == job["runId"]
    assert records["nanogpt_video_run"]["regenerate_after_clear"] is True

    result = e2e.rest.xcom(dag_id, run_id, TASK, "return_value")
    assert result["run_id"] == job["runId"] and result["output_path"] == str(video)
    assert video.stat().st_size > 0


def test_100_mapped_tasks_with_transient_faults_all_succeed_and_pay_once(e2e: E2E) -> None:
    dag_id = "nanogpt_e2e_fault_soak"
    # Every tenth API call (submit, status, recover, download) is a 503 or a dropped connection.
    # The 50/min submit limit is lifted here so the soak measures fault handling, not waiting.
    e2e.sim.configure(transient_fault_rate=0.1, rate_limit_per_minute=10_000)
    try:
        run_id = e2e.rest.trigger(dag_id, {})  # not in e2e.runs: the leak scan reads files and DB

        def settled() -> str | None:
            state = e2e.rest.dag_run(dag_id, run_id)["state"]
            return state if state in SETTLED_RUN_STATES else None

        final = wait_for(settled, 420, f"{dag_id} {run_id}", 1.0, e2e.deployment.check_alive)
    finally:
        e2e.sim.configure(transient_fault_rate=0.0, rate_limit_per_minute=50)
    tis = e2e.rest.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances", limit=200)[
        "task_instances"
    ]
    states = {ti["map_index"]: ti["state"] for ti in tis}
    failed = {ti["map_index"]: ti["try_number"] for ti in tis if ti["state"] != "success"}
    assert final == "success", _failure_report(e2e, dag_id, run_id, failed)
    assert len(states) == 100
    assert set(states.values()) == {"success"}
    jobs = e2e.sim.jobs_tagged("e2e-soak")
    assert len(jobs) == 100  # submits == 100: no fault made anyone pay twice
    assert len({job["payload"]["prompt"] for job in jobs}) == 100
    # The soak really met faults: at 10 % of several hundred calls, dozens were 503s or resets.
    assert e2e.sim.state()["transient_faults_served"] >= 10


def test_a_templated_output_path_triggers_the_dag_scheduled_on_the_alias(e2e: E2E) -> None:
    tag = _tag("alias")
    video = e2e.videos / "by-date" / f"{tag}.mp4"
    before = {run["dag_run_id"] for run in _consumer_runs(e2e)}
    run_id = _trigger(e2e, "nanogpt_e2e_alias_producer", tag, render_seconds=2, video=video)
    e2e.runs.remove(("nanogpt_e2e_alias_producer", run_id))  # not one of the leak-scan runs
    _assert_success(
        e2e,
        "nanogpt_e2e_alias_producer",
        run_id,
        _wait_for_run(e2e, "nanogpt_e2e_alias_producer", run_id, 120),
    )

    def consumer_done() -> dict[str, Any] | None:
        new = [r for r in _consumer_runs(e2e) if r["dag_run_id"] not in before]
        return new[0] if new and new[0]["state"] in SETTLED_RUN_STATES else None

    consumer = wait_for(consumer_done, 120, "the consumer DAG run", 0.5, e2e.deployment.check_alive)
    assert consumer["state"] == "success" and consumer["run_type"] == "asset_triggered"
    published = e2e.rest.xcom(
        "nanogpt_e2e_alias_consumer", consumer["dag_run_id"], "publish", "return_value"
    )
    job = _only_job(e2e, tag)
    assert published["uris"] == [f"file://{video}"]
    assert published["extra"]["run_id"] == job["runId"]
    assert published["extra"]["output_path"] == str(video)


def _failure_report(e2e: E2E, dag_id: str, run_id: str, failed: dict[int, int]) -> str:
    """Why mapped tasks failed: the error lines of every try of (at most three of) them."""
    rest = e2e.rest
    lines = [f"failed map indexes (with their last try): {failed}"]
    for map_index, tries in sorted(failed.items())[:3]:
        for try_number in range(1, tries + 1):
            path = f"{rest.ti_path(dag_id, run_id, 'generate')}/{map_index}/logs/{try_number}"
            try:
                body = rest.get(path, full_content="true")
            except Exception as exc:  # a report must never hide the assertion it explains
                lines.append(f"[{map_index} try {try_number}] log unavailable: {exc}")
                continue
            events = [
                f"{item.get('event', '')} {_exception_summary(item.get('error_detail'))}".strip()
                for item in body.get("content", [])
                if isinstance(item, dict) and item.get("level") in ("error", "warning", "critical")
            ]
            lines.append(f"[{map_index} try {try_number}] " + " | ".join(events)[-3000:])
    return "\n".join(lines)


def _exception_summary(detail: Any) -> str:
    if not isinstance(detail, list):
        return ""
    return "; ".join(
        f"{error.get('exc_type')}: {error.get('exc_value')}"
        for error in detail
        if isinstance(error, dict)
    )


def _consumer_runs(e2e: E2E) -> list[dict[str, Any]]:
    return e2e.rest.get("/api/v2/dags/nanogpt_e2e_alias_consumer/dagRuns")["dag_runs"]


def _hits(text: str, needles: tuple[str, ...]) -> list[str]:
    return [needle for needle in needles if needle in text]


LEDGER_DATABASE = "nanogpt_ledger"
LEDGER_CONN_ID = "nanogpt_e2e_ledger"
VIDEO_MICRO = 350_000
BUDGET_WAIT_MICRO = 1_000_000  # $1.00 a window: two $0.35 videos, never three


def test_a_full_shared_budget_is_waited_for_in_the_triggerer_window_by_window(e2e: E2E) -> None:
    """``on_budget_exceeded="wait"`` under the real scheduler and triggerer, on a PostgreSQL ledger.

    Four $0.35 videos against $1.00 a window (windows of ``BUDGET_WINDOW_SECONDS``: the DAG file
    moves the ledger's clock). Each window pays for two; the others defer until its reset and
    reserve again. Every video is paid once (a retry after Airflow 3.3.2's fast-trigger race
    reattaches), no window pays for more than its budget, and nothing is left reserved.
    """
    dag_id = BUDGET_WAIT_DAG_ID
    e2e.cluster.create_database(LEDGER_DATABASE)
    rest = e2e.rest
    # Both connections as a user creates them: through the REST API, stored in the metadata DB.
    rest.post(
        "/api/v2/connections",
        {
            "connection_id": LEDGER_CONN_ID,
            "conn_type": "postgres",
            "host": "127.0.0.1",
            "port": e2e.cluster.port,
            "login": e2e.cluster.user,
            "schema": LEDGER_DATABASE,
        },
    )
    rest.post(
        "/api/v2/connections",
        {
            "connection_id": BUDGET_WAIT_CONN_ID,
            "conn_type": "nanogpt",
            "host": e2e.sim.url,
            "password": e2e.canary,
            "extra": json.dumps(
                {"budget_usd_per_day": "1.00", "budget_ledger_conn_id": LEDGER_CONN_ID}
            ),
        },
    )
    # Start just after a reset, so the first window is a whole one: two videos are paid in it
    # and the other two meet the full budget (not in e2e.runs: the leak scan reads its
    # files, database and jobs all the same).
    time.sleep(-time.time() % BUDGET_WINDOW_SECONDS + 1)
    run_id = rest.trigger(dag_id, {})

    def settled() -> str | None:
        state = rest.dag_run(dag_id, run_id)["state"]
        return state if state in SETTLED_RUN_STATES else None

    try:
        final = wait_for(settled, 420, f"{dag_id} {run_id}", 1.0, e2e.deployment.check_alive)
    except DeploymentError as exc:
        raise AssertionError(f"{exc}\n{e2e.deployment.describe()}") from exc
    tis = rest.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances", limit=50)[
        "task_instances"
    ]
    folder = e2e.deployment.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}"
    logs = {
        ti["map_index"]: "\n".join(
            path.read_text(errors="replace")
            for path in sorted(
                (folder / f"task_id={TASK}" / f"map_index={ti['map_index']}").glob("attempt=*.log")
            )
        )
        for ti in tis
    }
    states = {ti["map_index"]: ti["state"] for ti in tis}
    failed = {index: logs[index][-3000:] for index, state in states.items() if state != "success"}
    assert final == "success" and not failed, (states, failed)
    assert len(tis) == BUDGET_WAIT_VIDEOS, states

    # Every video paid once.
    jobs = e2e.sim.jobs_tagged(BUDGET_WAIT_TAG)
    assert len(jobs) == BUDGET_WAIT_VIDEOS, jobs
    assert len({job["payload"]["prompt"] for job in jobs}) == BUDGET_WAIT_VIDEOS
    assert all(job["cost"] == pytest.approx(0.35) for job in jobs), jobs

    # The ledger: one settled row per job, no window holding more than its $1.00, none open.
    conn = e2e.cluster.connect(LEDGER_DATABASE)
    try:
        with conn.cursor() as cursor:
            cursor.execute(
                "SELECT window_key, state, charged_micro, run_id FROM nanogpt_budget_reservations"
            )
            rows = cursor.fetchall()
    finally:
        conn.close()
    assert sorted(run for *_, run in rows) == sorted(job["runId"] for job in jobs), rows
    assert {state for _, state, _, _ in rows} == {"settled"}, rows
    per_window: dict[str, int] = {}
    for window, _, charged, _ in rows:
        per_window[window] = per_window.get(window, 0) + charged
    assert max(per_window.values()) <= BUDGET_WAIT_MICRO, per_window
    assert len(per_window) >= BUDGET_WAIT_VIDEOS * VIDEO_MICRO // BUDGET_WAIT_MICRO + 1, per_window

    # The videos that did not fit waited for a reset in the triggerer, holding no worker slot.
    waited = [
        index
        for index, log in logs.items()
        if re.search(r"Shared budget full until [^;]+; waiting [\d.]+ s in the triggerer", log)
    ]
    assert len(waited) >= BUDGET_WAIT_VIDEOS - 2, {i: log[-2000:] for i, log in logs.items()}


def test_the_api_key_never_leaks(e2e: E2E) -> None:
    """Search logs, component output, XComs, rendered fields, trigger kwargs and the whole DB."""
    assert len(e2e.runs) == 3, "runs after the three scenarios above"
    canary = e2e.canary
    # The full key, and its random part alone (catches a truncated or re-prefixed key).
    needles = (canary, canary.removeprefix("sk-nano-e2e-canary-"))
    run_ids = [job["runId"] for job in e2e.sim.state()["jobs"]]
    leaks: list[str] = []

    # 1. Every file in AIRFLOW_HOME: task and trigger logs, scheduler/dag-processor logs and the
    #    captured stdout/stderr of every component and the simulator.
    files = [p for p in e2e.deployment.home.rglob("*") if p.is_file()]
    seen_run_ids: set[str] = set()
    for path in files:
        text = path.read_bytes().decode("utf-8", errors="replace")
        leaks += [f"{path}: {hit}" for hit in _hits(text, needles)]
        seen_run_ids.update(r for r in run_ids if r in text)
    outputs = e2e.deployment.component_outputs()
    assert {p.name.split(".")[0] for p in outputs} >= {
        "api-server",
        "scheduler",
        "dag-processor",
        "triggerer",
        "simulator",
    }
    assert any(p.suffix == ".log" and "attempt=" in p.name for p in files)
    assert seen_run_ids == set(run_ids), "the scan must have read the task logs"

    # 2. Every XCom and rendered template field, as the REST API serves them.
    xcom_count = 0
    for dag_id, run_id in e2e.runs:
        ti_path = e2e.rest.ti_path(dag_id, run_id, TASK)
        entries = e2e.rest.get(f"{ti_path}/xcomEntries")["xcom_entries"]
        for entry in entries:
            value = e2e.rest.xcom(dag_id, run_id, TASK, entry["key"])
            leaks += [f"xcom {dag_id}/{entry['key']}" for _ in _hits(json.dumps(value), needles)]
            xcom_count += 1
        ti = e2e.rest.get(ti_path)
        rendered = json.dumps(ti["rendered_fields"])
        assert "paper boat" in rendered
        leaks += [f"rendered fields {dag_id}" for _ in _hits(rendered, needles)]
    assert xcom_count >= 3 * 4  # run_id, submission, video_url, return_value (+ link) per run

    # 3. Trigger kwargs as stored and decrypted, captured while the tasks were deferred. (Airflow
    #    3.3 stores a Task SDK deferral's kwargs as plain JSON, not Fernet-encrypted: one more
    #    reason they must never hold the key.)
    assert e2e.trigger_rows, "no trigger row was captured while deferred"
    for row in [*e2e.trigger_rows, *_snapshot_triggers(e2e)]:
        assert row["classpath"].startswith("airflow_provider_nanogpt.")
        assert any(r in row["kwargs"] for r in run_ids), "decryption must yield the kwargs"
        leaks += [f"trigger {row['id']}" for _ in _hits(row["raw"] + row["kwargs"], needles)]

    # 4. Every value stored in the metadata database.
    dump = e2e.cluster.dump()
    assert all(r in dump for r in run_ids)
    leaks += [f"database dump: {hit}" for hit in _hits(dump, needles)]

    assert not leaks, leaks


def test_every_example_dag_runs_without_a_logical_date(e2e: E2E) -> None:
    """Trigger each shipped example through the REST API with ``logical_date: null`` (no ``ds``
    in the template context): every run succeeds, so every video paid for was waited for and
    saved. The daily example's run feeds the asset consumer: a run by an asset event, which has
    no logical date either. Last in the module: its jobs stay out of the scenarios above."""
    examples = sorted(EXAMPLE_DAGS.glob("example_*.py"))
    dag_ids = [path.stem for path in examples]
    for path in examples:
        shutil.copy2(path, e2e.deployment.dags_folder / path.name)
    shutil.copytree(EXAMPLE_DAGS / "assets", e2e.deployment.dags_folder / "assets")
    # The examples' renders, in seconds: at least a few. A trigger that fires within about a
    # second of its task deferring races Airflow 3.3.2's scheduler, which can handle the
    # deferring process's "success" executor event after the resumed try was queued, and then
    # fails that try ("finished with state success, but the task instance's state attribute is
    # queued"; seen once at 0.05, a 1.4 s render). A real render takes minutes.
    e2e.sim.configure(time_scale=0.15)
    try:
        e2e.deployment.wait_for_dags(dag_ids, timeout=120)
        consumer = "example_nanogpt_asset_consumer"
        consumed_before = {r["dag_run_id"] for r in _runs_of(e2e, consumer, "asset_triggered")}
        triggered = {dag_id: e2e.rest.trigger(dag_id, {}) for dag_id in dag_ids}
        for dag_id, run_id in triggered.items():
            run = _wait_for_dag_run(e2e, dag_id, run_id, 600)
            assert run["logical_date"] is None
            assert run["state"] == "success", _task_states(e2e, dag_id, run_id)

        def asset_triggered() -> list[dict[str, Any]] | None:
            runs = _runs_of(e2e, consumer, "asset_triggered")
            new = [r for r in runs if r["dag_run_id"] not in consumed_before]
            return new if new and all(r["state"] in SETTLED_RUN_STATES for r in new) else None

        by_event = wait_for(asset_triggered, 120, "the asset-triggered run", 0.5)
        assert [r["state"] for r in by_event] == ["success"] * len(by_event), by_event
        assert all(r["logical_date"] is None for r in by_event)
        # The daily example is scheduled too: let its own run end before the deployment stops.
        for run in _runs_of(e2e, "example_nanogpt_daily", "scheduled"):
            _wait_for_dag_run(e2e, "example_nanogpt_daily", run["dag_run_id"], 600)
    finally:
        e2e.sim.configure(time_scale=1.0)


def _runs_of(e2e: E2E, dag_id: str, run_type: str) -> list[dict[str, Any]]:
    runs = e2e.rest.get(f"/api/v2/dags/{dag_id}/dagRuns")["dag_runs"]
    return [run for run in runs if run["run_type"] == run_type]


def _wait_for_dag_run(e2e: E2E, dag_id: str, run_id: str, timeout: float) -> dict[str, Any]:
    def settled() -> dict[str, Any] | None:
        run = e2e.rest.dag_run(dag_id, run_id)
        return run if run["state"] in SETTLED_RUN_STATES else None

    return wait_for(settled, timeout, f"{dag_id} {run_id}", 0.5, e2e.deployment.check_alive)


def _task_states(e2e: E2E, dag_id: str, run_id: str) -> dict[str, str]:
    path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances"
    return {
        f"{ti['task_id']}[{ti['map_index']}]": ti["state"]
        for ti in e2e.rest.get(path)["task_instances"]
    }
