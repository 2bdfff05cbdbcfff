"""Benchmark 7: the NanoGPT page with 10,000 jobs in the metadata DB.

A metadata DB of its own (SQLite, under the run's AIRFLOW_HOME) is migrated, four DAGs of the
shape of ``example_nanogpt_batch`` (a ``prompts`` task, then ``GenerateVideoOperator`` mapped over
its list) are serialized by ``airflow dags reserialize``, and DAG runs are written straight into
the DB through Airflow's ORM tables, in bulk: per run one ``prompts`` task instance with its list
and task map, and per prompt a mapped task instance with the XComs and task-state-store rows the
operator writes (job card, ``run_id``, ``submission``, ``video_url``, return value, run record,
charge), built with the provider's own ``new_card``/``ended``/``charge_record``. Most jobs
completed, some failed, were blocked, timed out or were cancelled; in the newest run a few are
still rendering (task deferred), submitted for real to the local simulator so that the page's
live progress calls have something to ask.

A real ``airflow api-server`` (one worker, loopback) serves that DB with one user; requests carry
its token over a kept-alive session. Measured at two sizes in the same run, with the same server
(rows are added in between): the NanoGPT page (first page, a filtered page, a deep page), the
JSON listing and the spend endpoint, against Airflow's own REST listings of task instances and
XComs (50 a page), asked in the same rounds. Every request's wall time is measured at the
client; endpoints take turns, so drift in the machine's load touches all of them alike.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from benchmarks._common import (
    CONN_ID,
    DEFAULT_MODEL,
    REPO,
    JobSubmitter,
    Row,
    RunContext,
    SimulatorProcess,
    median,
    percentile,
    report,
)

NAME = "ui_page"
FULL = {"sizes": (100, 10_000), "per_run": 100, "samples": 30, "rendering": 5}
QUICK = {"sizes": (20, 200), "per_run": 20, "samples": 3, "rendering": 2}
WARMUP_ROUNDS = 2
GOAL_SECONDS = 1.0
PAGE_SIZE = 50  # the NanoGPT page's and the REST baselines' page size
DAG_IDS = ("video_daily_ads", "video_social_clips", "video_product_demos", "video_news_recap")
USER, ROLE = "bench", "admin"

DAG_FILE = '''\
"""ui_page benchmark DAGs: the shape of example_nanogpt_batch, one per team."""
import pendulum
from airflow.sdk import dag, task

from airflow_provider_nanogpt.operators.video import GenerateVideoOperator

for dag_id in DAG_IDS:

    @dag(
        dag_id=dag_id,
        schedule="@daily",
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        max_active_tasks=16,
        tags=["nanogpt"],
    )
    def pipeline():
        @task
        def prompts():
            return []

        GenerateVideoOperator.partial(
            task_id="generate",
            nanogpt_conn_id=CONN_ID,
            model="kling-video-v2",
            duration="5",
            output_path="/data/videos/{{ dag.dag_id }}/{{ ds }}/{{ ti.map_index }}.mp4",
        ).expand(prompt=prompts())

    pipeline()
'''.replace("DAG_IDS", repr(DAG_IDS)).replace("CONN_ID", repr(CONN_ID))

SUBJECTS = (
    "a hummingbird over a red flower",
    "a neon-lit alley in the rain",
    "clouds over a mountain lake",
    "a paper plane across a classroom",
    "coffee poured in morning light",
    "a fox crossing a snowy field",
    "a city skyline at dusk",
    "waves breaking on black sand",
    "a robot watering a garden",
    "sneakers on a rotating pedestal",
)
STYLES = (
    "slow motion",
    "camera tracking forward",
    "time-lapse",
    "macro lens, shallow depth of field",
    "drone shot, golden hour",
    "handheld, documentary style",
)
# NanoGPT's answer when a job ends badly, as the operator words it (see events.py).
ERRORS = {
    "failed": "NanoGPT video {run} failed: Generation failed at the provider. NanoGPT refunds "
    "failed jobs, so a retry submits (and pays for) a new one.",
    "blocked": "NanoGPT video {run} was blocked by the content policy: prompt flagged. Change "
    "the prompt or image; NanoGPT refunds blocked jobs.",
    "timed_out": "NanoGPT video {run} did not finish within 3600 s. NanoGPT has no cancel "
    "endpoint: the job may still finish and be charged.",
    "cancelled": "NanoGPT video {run} was cancelled: cancelled in the NanoGPT dashboard",
}
# How the jobs of a run ended: (final card state, share); the rest were cancelled.
OUTCOMES = (("completed", 0.88), ("failed", 0.07), ("blocked", 0.02), ("timed_out", 0.02))


# Mapped tasks run in waves of ``max_active_tasks`` (deferred ones count too).
WAVE_SIZE = 16
WAVE_SECONDS = 270


# --- the metadata DB ------------------------------------------------------------------------------


@dataclass
class Expected:
    """What the endpoints must answer for the rows written so far: proves what was measured."""

    jobs: int = 0
    task_instances: int = 0
    charged: int = 0  # jobs that count in spend: not refunded (all have a cost)
    totals: dict[str, float] = field(default_factory=dict)
    failed_in: dict[str, int] = field(default_factory=dict)  # dag id -> failed jobs


@dataclass
class RunRows:
    """One DAG run's rows; ``dag_run_id`` is filled in once the run has its primary key."""

    dag_run: dict[str, Any]
    task_instance: list[dict[str, Any]] = field(default_factory=list)
    task_map: list[dict[str, Any]] = field(default_factory=list)
    xcom: list[dict[str, Any]] = field(default_factory=list)
    task_state_store: list[dict[str, Any]] = field(default_factory=list)


def _models() -> dict[str, Any]:
    """Airflow's ORM models by table name; the task state store only on Airflow 3.3+."""
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.taskmap import TaskMap
    from airflow.models.xcom import XComModel

    models: dict[str, Any] = {
        "dag_run": DagRun,
        "task_instance": TaskInstance,
        "task_map": TaskMap,
        "xcom": XComModel,
    }
    try:
        from airflow.models.task_state_store import TaskStateStoreModel
    except ImportError:  # Airflow < 3.3
        return models
    models["task_state_store"] = TaskStateStoreModel
    return models


def _fit(model: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Only the columns this Airflow's table has (the 3.1 floor lacks a few)."""
    names = set(model.__table__.c.keys())
    return [{k: v for k, v in row.items() if k in names} for row in rows]


class Filler:
    """Writes DAG runs of mapped NanoGPT tasks into the DB through Airflow's ORM tables, in bulk.

    Its own engine on the benchmark's SQLite file (foreign keys on, as Airflow sets them), so
    nothing here depends on which DB this process's Airflow settings point at.
    """

    def __init__(self, db: Path, per_run: int, now: datetime) -> None:
        from airflow.models.dag_version import DagVersion
        from airflow.models.tasklog import LogTemplate
        from sqlalchemy import create_engine, event, select

        self.engine = create_engine(f"sqlite:///{db}")
        event.listen(self.engine, "connect", _sqlite_foreign_keys)
        self.models = _models()
        self.per_run = per_run
        self.now = now
        # Mapped tasks carry the label the operator's default map_index_template renders.
        from jinja2 import Environment

        from airflow_provider_nanogpt.operators.video import DEFAULT_MAP_INDEX_TEMPLATE

        self._label_template = Environment().from_string(DEFAULT_MAP_INDEX_TEMPLATE)
        self.expected = Expected()
        with self.engine.connect() as conn:
            self.versions: dict[str, Any] = {
                dag_id: version
                for dag_id, version in conn.execute(select(DagVersion.dag_id, DagVersion.id))
            }
            self.log_template = conn.scalar(select(LogTemplate.id).order_by(LogTemplate.id.desc()))
        missing = set(DAG_IDS) - set(self.versions)
        if missing:
            raise RuntimeError(f"airflow dags reserialize did not write {sorted(missing)}")

    def add_runs(self, first: int, count: int, rendering: Sequence[str] = ()) -> float:
        """Runs ``first .. first + count - 1`` (run 0 is the newest); the seconds it took.

        ``rendering``: simulator run ids of run 0's last mapped tasks, still deferred.
        """
        from sqlalchemy import insert, select

        started = time.perf_counter()
        runs = [self._run(k, rendering if k == 0 else ()) for k in range(first, first + count)]
        dag_run = self.models["dag_run"]
        with self.engine.begin() as conn:
            conn.execute(insert(dag_run.__table__), _fit(dag_run, [r.dag_run for r in runs]))
            table = dag_run.__table__
            wanted = {r.dag_run["run_id"] for r in runs}
            pks = {
                (dag_id, run_id): pk
                for pk, dag_id, run_id in conn.execute(
                    select(table.c.id, table.c.dag_id, table.c.run_id).where(
                        table.c.run_id.in_(wanted)
                    )
                )
            }
            for run in runs:
                pk = pks[(run.dag_run["dag_id"], run.dag_run["run_id"])]
                for row in (*run.xcom, *run.task_state_store):
                    row["dag_run_id"] = pk
            for name in ("task_instance", "task_map", "xcom", "task_state_store"):
                model = self.models.get(name)
                if model is not None:  # no task state store before Airflow 3.3
                    rows = [row for run in runs for row in getattr(run, name)]
                    conn.execute(insert(model.__table__), _fit(model, rows))
        return time.perf_counter() - started

    def counts(self) -> dict[str, int]:
        from sqlalchemy import func, select

        with self.engine.connect() as conn:
            return {
                name: int(conn.scalar(select(func.count()).select_from(model.__table__)) or 0)
                for name, model in self.models.items()
            }

    def close(self) -> None:
        self.engine.dispose()

    # --- one run ------------------------------------------------------------------------------

    def _run(self, k: int, rendering: Sequence[str]) -> RunRows:
        dag_id = DAG_IDS[k % len(DAG_IDS)]
        # Run 0 began 40 minutes ago; each DAG runs once a day, at its own hour.
        start = self.now - timedelta(
            minutes=40, days=k // len(DAG_IDS), hours=3 * (k % len(DAG_IDS))
        )
        logical = datetime(start.year, start.month, start.day, tzinfo=UTC) - timedelta(days=1)
        run = RunRows(
            dag_run={
                "dag_id": dag_id,
                "run_id": f"scheduled__{logical.isoformat()}",
                "logical_date": logical,
                "run_after": logical + timedelta(days=1),
                "data_interval_start": logical,
                "data_interval_end": logical + timedelta(days=1),
                "queued_at": start - timedelta(seconds=2),
                "start_date": start,
                "end_date": None,
                "state": "running",
                "run_type": "scheduled",
                "triggered_by": _triggered_by(),
                "conf": {},
                "log_template_id": self.log_template,
                "created_dag_version_id": self.versions[dag_id],
                "last_scheduling_decision": self.now,
                "created_at": start - timedelta(seconds=2),
                "updated_at": self.now,
                "clear_number": 0,
            }
        )
        self._fill(k, run, rendering)
        ends = [ti["end_date"] for ti in run.task_instance]
        if not rendering:
            failed = any(ti["state"] == "failed" for ti in run.task_instance)
            end = max(ends) + timedelta(seconds=3)
            run.dag_run |= {
                "state": "failed" if failed else "success",
                "end_date": end,
                "last_scheduling_decision": end,
                "updated_at": end,
            }
        return run

    def _fill(self, k: int, run: RunRows, rendering: Sequence[str]) -> None:
        from airflow_provider_nanogpt.api.responses import Submission
        from airflow_provider_nanogpt.job_card import (
            CHARGE_KEY_PREFIX,
            JOB_KEY,
            REFUNDED,
            JobState,
            charge_record,
            ended,
            new_card,
        )
        from airflow_provider_nanogpt.submission import (
            STATE_KEY,
            RunRecord,
            fingerprint,
            submission_tag,
        )

        rng = random.Random(k)
        dag_id, run_id = run.dag_run["dag_id"], run.dag_run["run_id"]
        day = f"{run.dag_run['logical_date']:%Y-%m-%d}"
        start: datetime = run.dag_run["start_date"]
        prompts = [
            f"{rng.choice(SUBJECTS)}, {rng.choice(STYLES)}, shot {i + 1} of {self.per_run}"
            for i in range(self.per_run)
        ]
        prompts_end = start + timedelta(seconds=3)
        run.task_instance.append(
            self._ti(dag_id, run_id, "prompts", -1, "success", start, prompts_end)
            | {"operator": "_PythonDecoratedOperator", "custom_operator_name": "@task"}
        )
        run.task_map.append(
            {
                "dag_id": dag_id,
                "task_id": "prompts",
                "run_id": run_id,
                "map_index": -1,
                "length": self.per_run,
                "keys": None,
            }
        )
        run.xcom.append(_xcom(dag_id, run_id, "prompts", -1, "return_value", prompts, prompts_end))
        first_rendering = self.per_run - len(rendering)
        for index, prompt in enumerate(prompts):
            wave, slot = divmod(index, WAVE_SIZE)
            ti_start = prompts_end + timedelta(
                seconds=2 + wave * WAVE_SECONDS + slot * 0.4 + rng.random()
            )
            submitted = ti_start + timedelta(seconds=0.3 + rng.random() * 0.2)
            live = index >= first_rendering
            nano_run = (
                rendering[index - first_rendering]
                if live
                else "vid_" + rng.getrandbits(96).to_bytes(12, "big").hex()
            )
            duration = rng.choice(("5", "5", "5", "10"))
            currency = "XNO" if rng.random() < 0.04 else "USD"
            cost = round((0.35 if duration == "5" else 0.7) * (1.12 if currency == "XNO" else 1), 4)
            card = new_card(
                run_id=nano_run,
                conn_id=CONN_ID,
                model=DEFAULT_MODEL,
                prompt=prompt,
                cost=cost,
                currency=currency,
                submitted_at=submitted.timestamp(),
            )
            submission = Submission(
                run_id=nano_run,
                model=DEFAULT_MODEL,
                status="pending",
                cost=cost,
                payment_source=currency,
                remaining_balance=round(2500 - k * 35 - index * 0.35, 2),
            )
            request_print = fingerprint(
                {"model": DEFAULT_MODEL, "prompt": prompt, "duration": duration}
            )
            record = RunRecord(
                fingerprint=request_print,
                tag=submission_tag(f"{dag_id}/{run_id}/generate/{index}", request_print, 1),
                tag_is_users=False,
                sent_at=submitted.timestamp() - 0.2,
                try_number=1,
                run_id=nano_run,
                model=DEFAULT_MODEL,
                cost=cost,
                payment_source=currency,
            )
            xcoms: list[tuple[str, Any, datetime]] = [
                ("run_id", nano_run, submitted),
                ("submission", submission.to_xcom(), submitted),
            ]
            finished: datetime | None = None
            charged = card  # the charge record as the task leaves it
            if live:
                state, ti_state = "submitted", "deferred"
                xcoms += [(JOB_KEY, card, submitted), ("video_url", "", submitted)]
            else:
                state = _outcome(rng.random())
                render = (40 if duration == "5" else 60) + rng.random() * 200
                finished = submitted + timedelta(seconds=render)
                if state == "completed":
                    ti_state = "success"
                    video_url = (
                        f"https://storage.nano-gpt.com/video/{nano_run}.mp4?X-Amz-Expires=86400"
                        f"&X-Amz-Signature={rng.getrandbits(128):032x}"
                    )
                    output_path = f"/data/videos/{dag_id}/{day}/{index}.mp4"
                    final = ended(
                        card,
                        JobState.COMPLETED,
                        cost=cost,
                        currency=currency,
                        video_url=video_url,
                        output_path=output_path,
                        model=DEFAULT_MODEL,
                    )
                    result = {
                        "run_id": nano_run,
                        "model": DEFAULT_MODEL,
                        "status": "success",
                        "video_url": video_url,
                        "cost": cost,
                        "currency": currency,
                        "output_path": output_path,
                    }
                    xcoms.append(("video_url", video_url, finished))
                    xcoms.append(("return_value", result, finished + timedelta(seconds=2)))
                    record = replace(record, regenerate_after_clear=True)
                else:
                    ti_state = "failed"
                    error = ERRORS[state].format(run=nano_run)[:500]
                    final = ended(card, JobState(state), error=error)
                    xcoms.append(("video_url", "", submitted))
                    if JobState(state) in REFUNDED:  # the operator marks its record refunded
                        charged = final
                # ``ended`` stamps the moment it is called: this job ended at ``finished``.
                final["finished_at"] = finished.timestamp()
                xcoms.append((JOB_KEY, final, finished + timedelta(seconds=1)))
            ti_end = None if finished is None else finished + timedelta(seconds=3)
            ti = self._ti(dag_id, run_id, "generate", index, ti_state, ti_start, ti_end)
            ti["rendered_map_index"] = self._label(prompt, index)
            if live:
                ti |= {"next_method": "execute_complete", "next_kwargs": {}}
            run.task_instance.append(ti)
            for key, value, when in xcoms:
                run.xcom.append(_xcom(dag_id, run_id, "generate", index, key, value, when))
            for key, value in (
                (STATE_KEY, asdict(record)),
                (CHARGE_KEY_PREFIX + nano_run, charge_record(charged)),
            ):
                run.task_state_store.append(
                    {
                        "dag_run_id": None,
                        "dag_id": dag_id,
                        "run_id": run_id,
                        "task_id": "generate",
                        "map_index": index,
                        "key": key,
                        "value": json.dumps(value),
                        "updated_at": submitted,
                        "expires_at": None,
                    }
                )
            self._count(dag_id, state, cost, currency)
        self.expected.task_instances += 1 + self.per_run

    def _label(self, prompt: str, map_index: int) -> str | None:
        ti, task = SimpleNamespace(map_index=map_index), SimpleNamespace(prompt=prompt, model=None)
        return self._label_template.render(ti=ti, task=task) or None

    def _count(self, dag_id: str, state: str, cost: float, currency: str) -> None:
        expected = self.expected
        expected.jobs += 1
        if state == "failed":
            expected.failed_in[dag_id] = expected.failed_in.get(dag_id, 0) + 1
        if state not in ("failed", "blocked", "cancelled"):  # NanoGPT refunds those
            expected.charged += 1
            expected.totals[currency] = expected.totals.get(currency, 0.0) + cost

    def _ti(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        map_index: int,
        state: str,
        start: datetime,
        end: datetime | None,
    ) -> dict[str, Any]:
        return {
            "task_id": task_id,
            "dag_id": dag_id,
            "run_id": run_id,
            "map_index": map_index,
            "start_date": start,
            "end_date": end,
            "duration": None if end is None else (end - start).total_seconds(),
            "state": state,
            "try_number": 1,
            "max_tries": 0,
            "hostname": "worker-1",
            "unixname": "airflow",
            "pool": "default_pool",
            "pool_slots": 1,
            "queue": "default",
            "priority_weight": 1,
            "operator": "GenerateVideoOperator",
            "custom_operator_name": None,
            "queued_dttm": start - timedelta(seconds=1),
            "scheduled_dttm": start - timedelta(seconds=1.5),
            "queued_by_job_id": None,
            "pid": None,
            "executor": None,
            "external_executor_id": None,
            "trigger_id": None,
            "trigger_timeout": None,
            "next_method": None,
            "next_kwargs": None,
            "updated_at": end or self.now,
            "rendered_map_index": None,
            "task_display_name": task_id,
            "dag_version_id": self.versions[dag_id],
        }


def _outcome(draw: float) -> str:
    for outcome, share in OUTCOMES:
        if draw < share:
            return outcome
        draw -= share
    return "cancelled"


def _xcom(
    dag_id: str, run_id: str, task_id: str, map_index: int, key: str, value: Any, when: datetime
) -> dict[str, Any]:
    return {
        "dag_run_id": None,
        "task_id": task_id,
        "map_index": map_index,
        "key": key,
        "dag_id": dag_id,
        "run_id": run_id,
        "value": value,  # JSON, as the Task SDK stores a pushed value
        "timestamp": when,
        "dag_result": False,
    }


def _sqlite_foreign_keys(connection: Any, _record: Any) -> None:
    connection.execute("PRAGMA foreign_keys=ON")


def _triggered_by() -> Any:
    try:
        from airflow.utils.types import DagRunTriggeredByType
    except ImportError:
        return None
    return DagRunTriggeredByType.TIMETABLE


# --- the api-server -------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _airflow(args: Sequence[str], env: Mapping[str, str], log_path: Path) -> None:
    """``python -m airflow ARGS``, output to ``log_path``; raises with its tail on failure."""
    with log_path.open("a") as log:
        log.write(f"$ airflow {' '.join(args)}\n")
        log.flush()
        completed = subprocess.run(
            [sys.executable, "-m", "airflow", *args],
            env=dict(env),
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if completed.returncode != 0:
        tail = log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(
            f"airflow {' '.join(args)} failed (exit {completed.returncode}):\n{tail}"
        )


@contextmanager
def api_server(env: Mapping[str, str], log_path: Path) -> Iterator[str]:
    """A real ``airflow api-server`` (one worker, loopback) on a free port: yields its URL.

    It runs in a session of its own, so stopping it also stops any worker it started.
    """
    import requests

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "airflow", "api-server", "-p", str(port), "-H", "127.0.0.1"],
            env={**env, "AIRFLOW__API__BASE_URL": url, "AIRFLOW__API__WORKERS": "1"},
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                tail = log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"api-server exited ({proc.returncode}):\n{tail}")
            with suppress(requests.RequestException):
                if requests.get(f"{url}/api/v2/monitor/health", timeout=2).ok:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"api-server not healthy after 120 s; see {log_path}")
            time.sleep(0.25)
        yield url
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    # Its own process group: anything it left behind goes too (only the group we started).
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


# --- measuring ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    key: str
    label: str
    path: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class Timings:
    seconds: dict[str, list[float]] = field(default_factory=dict)
    size: dict[str, int] = field(default_factory=dict)  # response bytes

    def median_ms(self, key: str) -> float:
        return median(self.seconds[key]) * 1000

    def p95_ms(self, key: str) -> float:
        return percentile(self.seconds[key], 95) * 1000


def _endpoints(deep_page: int) -> list[Endpoint]:
    return [
        Endpoint("page", "NanoGPT page, first page", "/nanogpt/ui/jobs"),
        Endpoint(
            "filtered",
            "NanoGPT page, state=failed and one DAG",
            "/nanogpt/ui/jobs",
            {"state": "failed", "dag_id": DAG_IDS[0]},
        ),
        Endpoint(
            "deep", f"NanoGPT page, page {deep_page}", "/nanogpt/ui/jobs", {"page": deep_page}
        ),
        Endpoint("jobs_json", "/nanogpt/api/jobs (JSON listing)", "/nanogpt/api/jobs"),
        Endpoint("spend", "/nanogpt/api/spend", "/nanogpt/api/spend"),
        Endpoint(
            "ti_list",
            "Airflow REST task instances, limit 50",
            "/api/v2/dags/~/dagRuns/~/taskInstances",
            {"limit": PAGE_SIZE},
        ),
        Endpoint(
            "xcom_list",
            "Airflow REST XComs (key nanogpt_job), limit 50",
            "/api/v2/dags/~/dagRuns/~/taskInstances/~/xcomEntries",
            {"xcom_key": "nanogpt_job", "limit": PAGE_SIZE},
        ),
    ]


def _measure(session: Any, url: str, endpoints: Sequence[Endpoint], rounds: int) -> Timings:
    """Every endpoint once per round, in turn (rotating who goes first); warm-up rounds first."""
    timings = Timings(seconds={e.key: [] for e in endpoints})
    for round_no in range(WARMUP_ROUNDS + rounds):
        shift = round_no % len(endpoints)
        for endpoint in [*endpoints[shift:], *endpoints[:shift]]:
            began = time.perf_counter()
            answer = session.get(url + endpoint.path, params=endpoint.params, timeout=120)
            body = answer.content
            elapsed = time.perf_counter() - began
            if answer.status_code != 200:
                raise RuntimeError(
                    f"GET {endpoint.path}: HTTP {answer.status_code}: {body[:300]!r}"
                )
            if round_no >= WARMUP_ROUNDS:
                timings.seconds[endpoint.key].append(elapsed)
                timings.size[endpoint.key] = len(body)
    return timings


def _check(session: Any, url: str, expected: Expected) -> str:
    """The server sees every row written: totals match what the filler wrote."""
    jobs = session.get(url + "/nanogpt/api/jobs", timeout=120).json()
    failed = session.get(
        url + "/nanogpt/api/jobs", params={"state": "failed", "dag_id": DAG_IDS[0]}, timeout=120
    ).json()
    spend = session.get(url + "/nanogpt/api/spend", timeout=120).json()
    tis = session.get(
        url + "/api/v2/dags/~/dagRuns/~/taskInstances", params={"limit": 1}, timeout=120
    ).json()
    page = session.get(url + "/nanogpt/ui/jobs", timeout=120).text
    problems = []
    if jobs["total"] != expected.jobs:
        problems.append(f"jobs listed {jobs['total']} != {expected.jobs}")
    if failed["total"] != expected.failed_in.get(DAG_IDS[0], 0):
        problems.append(f"failed in {DAG_IDS[0]} {failed['total']} != {expected.failed_in}")
    if spend["jobs"] != expected.charged:
        problems.append(f"charges {spend['jobs']} != {expected.charged}")
    for currency, total in expected.totals.items():
        if abs(spend["totals"].get(currency, 0.0) - total) > 1e-6 * max(1.0, total):
            problems.append(f"{currency} spend {spend['totals'].get(currency)} != {total}")
    if tis["total_entries"] != expected.task_instances:
        problems.append(f"task instances {tis['total_entries']} != {expected.task_instances}")
    if "NanoGPT video jobs" not in page:
        problems.append("the page does not render")
    if problems:
        raise RuntimeError("the server does not show what was written: " + "; ".join(problems))
    rendering = sum(1 for row in jobs["jobs"] if row["state"] == "rendering")
    with_progress = sum(1 for row in jobs["jobs"] if row["progress"] is not None)
    return (
        f"{jobs['total']:,} jobs listed, {spend['jobs']:,} charges, spend "
        + ", ".join(f"{v:,.2f} {k}" for k, v in sorted(spend["totals"].items()))
        + f"; first page: {rendering} rendering ({with_progress} with live progress)"
    )


# --- the benchmark --------------------------------------------------------------------------------


def run(ctx: RunContext) -> list[Row]:
    import requests

    shape: dict[str, Any] = QUICK if ctx.quick else FULL
    small, large = shape["sizes"]
    per_run: int = shape["per_run"]
    deep_page = max(1, large // PAGE_SIZE // 2)
    home = Path(os.environ["AIRFLOW_HOME"])
    work = Path(tempfile.mkdtemp(prefix="nanogpt-bench-ui-", dir=home))
    setup_log = ctx.log_dir / "ui_page-setup.log"
    password = secrets.token_urlsafe(16)
    (work / "passwords.json").write_text(json.dumps({USER: password}))
    (work / "dags").mkdir()
    (work / "dags" / "nanogpt_video_dags.py").write_text(DAG_FILE)
    db = work / "airflow.db"
    env = {
        **os.environ,
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{db}",
        "AIRFLOW__CORE__DAGS_FOLDER": str(work / "dags"),
        "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple."
        "simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:{ROLE}",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(work / "passwords.json"),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
    }
    env.pop("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", None)
    filler: Filler | None = None
    try:
        began = time.perf_counter()
        _airflow(["db", "migrate"], env, setup_log)
        _airflow(["dags", "reserialize"], env, setup_log)
        setup_seconds = time.perf_counter() - began
        with (
            SimulatorProcess(log_dir=ctx.log_dir, queue_seconds=1, render_seconds=3600) as sim,
            JobSubmitter(sim.url, workers=4) as submitter,
        ):
            rendering = [
                run_id
                for run_id, _ in submitter.submit(
                    [f"a slow one, shot {i}" for i in range(shape["rendering"])]
                )
            ]
            # The simulator's connection, set by SimulatorProcess for this process's children.
            env[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = os.environ[f"AIRFLOW_CONN_{CONN_ID.upper()}"]
            filler = Filler(db, per_run, datetime.now(UTC))
            fill_small = filler.add_runs(0, small // per_run, rendering)
            with (
                api_server(env, ctx.log_dir / "ui_page-api-server.log") as url,
                requests.Session() as session,
            ):
                answer = session.post(
                    f"{url}/auth/token", json={"username": USER, "password": password}, timeout=30
                )
                answer.raise_for_status()
                session.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"
                endpoints = _endpoints(deep_page)
                results: dict[int, Timings] = {}
                for size, fill in ((small, fill_small), (large, None)):
                    if fill is None:
                        fill = filler.add_runs(small // per_run, (size - small) // per_run)
                    counts = filler.counts()
                    report(
                        f"ui_page {size:,} jobs: wrote them in {fill:.1f} s; DB rows "
                        + ", ".join(f"{name} {n:,}" for name, n in counts.items())
                        + f"; {_check(session, url, filler.expected)}"
                    )
                    results[size] = _measure(session, url, endpoints, shape["samples"])
                    for e in endpoints:
                        t = results[size]
                        report(
                            f"ui_page {size:>6,} jobs {e.label:<46} median "
                            f"{t.median_ms(e.key):7.1f} ms, p95 {t.p95_ms(e.key):7.1f} ms, "
                            f"min {min(t.seconds[e.key]) * 1000:7.1f} ms "
                            f"({len(t.seconds[e.key])} requests, {t.size[e.key]:,} bytes)"
                        )
        report(
            f"ui_page set-up: db migrate + dags reserialize {setup_seconds:.1f} s; "
            f"{shape['samples']} measured rounds per size after {WARMUP_ROUNDS} warm-up rounds; "
            f"one api-server (1 worker) on SQLite; log {ctx.log_dir.name}/ui_page-api-server.log"
        )
        return _rows(results[small], results[large], small, large, deep_page)
    finally:
        if filler is not None:
            filler.close()
        shutil.rmtree(work, ignore_errors=True)


def _rows(small_t: Timings, large_t: Timings, small: int, large: int, deep_page: int) -> list[Row]:
    big, little = f"{large:,} jobs", f"{small:,} jobs"
    ti_label, xcom_label = "Airflow REST task-instance list", "Airflow REST XCom list"

    def vs(key: str, stat: str = "median") -> list[tuple[str, float | None]]:
        pick = Timings.median_ms if stat == "median" else Timings.p95_ms
        return [
            (f"{ti_label}, {big}", pick(large_t, "ti_list")),
            (f"{xcom_label}, {big}", pick(large_t, "xcom_list")),
            (f"same, {little}", pick(small_t, key)),
        ]

    p95 = large_t.p95_ms("page")
    rows = [
        Row(
            NAME,
            f"NanoGPT page, first page, median, {big}",
            "ms",
            large_t.median_ms("page"),
            vs("page"),
        ),
        Row(
            NAME,
            f"NanoGPT page, first page, p95, {big}",
            "ms",
            p95,
            vs("page", "p95"),
            f"page under 1 s with {large:,} jobs",
            p95 < GOAL_SECONDS * 1000,
        ),
        Row(
            NAME,
            f"NanoGPT page, state=failed and one DAG, median, {big}",
            "ms",
            large_t.median_ms("filtered"),
            vs("filtered"),
        ),
        Row(
            NAME,
            f"NanoGPT page, page {deep_page}, median, {big}",
            "ms",
            large_t.median_ms("deep"),
            vs("deep"),
        ),
        Row(
            NAME,
            f"/nanogpt/api/jobs, median, {big}",
            "ms",
            large_t.median_ms("jobs_json"),
            vs("jobs_json"),
        ),
        Row(
            NAME,
            f"/nanogpt/api/spend, median, {big}",
            "ms",
            large_t.median_ms("spend"),
            vs("spend"),
        ),
        Row(
            NAME,
            f"NanoGPT page, first page, median, {little}",
            "ms",
            small_t.median_ms("page"),
            [
                (f"{ti_label}, {little}", small_t.median_ms("ti_list")),
                (f"{xcom_label}, {little}", small_t.median_ms("xcom_list")),
            ],
        ),
        Row(
            NAME,
            f"{ti_label} itself, median, {big}",
            "ms",
            large_t.median_ms("ti_list"),
            [(f"same, {little}", small_t.median_ms("ti_list"))],
        ),
    ]
    return rows
