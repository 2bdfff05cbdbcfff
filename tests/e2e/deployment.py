"""Start and stop a real Airflow deployment plus the NanoGPT simulator.

By default: LocalExecutor and four components (api-server, scheduler, dag-processor, triggerer).
With ``celery=CeleryWorkers(...)``: CeleryExecutor, ``airflow celery worker`` processes with their
own hostnames, and as many triggerers as asked for, each a component with its own name
(``triggerer-1``, ``celery-worker-2``, ...).

Every process is started in its own session, so it and the children it forks (workers, log
servers, the trigger runner) form one process group. Task runners put themselves in process groups
of their own, so a "crash" kills the component's whole process tree (found through psutil), not
just its group. Each component's stdout/stderr goes to a file under ``$AIRFLOW_HOME/components``,
and teardown always runs (SIGTERM by pid, SIGKILL after a grace period), even when start-up or a
test fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import requests

from tests.conftest import REPO
from tests.e2e.ports import free_port

COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
CELERY_EXECUTOR = "CeleryExecutor"
STOP_GRACE_SECONDS = 20.0
T = TypeVar("T")


class DeploymentError(RuntimeError):
    """A component did not start, died, or a wait timed out (the message has log tails)."""


def wait_for(
    probe: Callable[[], T | None],
    timeout: float,
    what: str,
    interval: float = 0.25,
    check: Callable[[], None] | None = None,
) -> T:
    """Call ``probe`` until it returns something other than None/False, or fail after timeout."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        if check is not None:
            check()
        try:
            value = probe()
        except (requests.RequestException, ValueError, KeyError) as exc:
            value, last_error = None, exc
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise DeploymentError(f"timed out after {timeout:.0f} s waiting for {what}{detail}")
        time.sleep(interval)


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "<no output>"


@dataclass
class Process:
    """One started process, its output file and how many times it was started."""

    name: str
    argv: list[str]
    output_dir: Path
    popen: subprocess.Popen[bytes] | None = None
    starts: int = 0
    output: Path = field(init=False)

    def __post_init__(self) -> None:
        self.output = self.output_dir / f"{self.name}.out"

    def start(self, env: Mapping[str, str], cwd: Path) -> None:
        self.starts += 1
        # A restart gets a fresh file, so each incarnation's output can be read on its own.
        self.output = self.output_dir / f"{self.name}.{self.starts}.out"
        with self.output.open("wb") as out:
            self.popen = subprocess.Popen(
                self.argv,
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal_group(self, signum: int) -> None:
        """Signal the whole process group this process leads (it and its children)."""
        if self.popen is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signum)

    def descendants(self) -> list[Any]:
        """Everything this process forked, at any depth, still alive (``psutil.Process``es)."""
        if self.popen is None:
            return []
        import psutil

        try:
            return list(psutil.Process(self.popen.pid).children(recursive=True))
        except psutil.Error:
            return []

    def kill(self) -> None:
        """SIGKILL it and everything it forked, like a machine losing the process.

        Task runners live in process groups of their own, so the group signal alone would leave
        them running: every descendant is killed by pid too.
        """
        tree = self.descendants()
        self.signal_group(signal.SIGKILL)
        _kill_all(tree)
        if self.popen is not None:
            self.popen.wait(timeout=30)


def _kill_all(processes: list[Any]) -> None:
    """SIGKILL each one; psutil refuses a pid that was reused by another process meanwhile."""
    import psutil

    for proc in processes:
        with contextlib.suppress(psutil.Error):
            proc.kill()


def stop_processes(processes: list[Process], grace: float = STOP_GRACE_SECONDS) -> None:
    """SIGTERM each by pid, wait up to ``grace`` in total, then SIGKILL what is left."""
    running = [p for p in processes if p.popen is not None]
    # Task runners and their children sit in process groups of their own: remember them now,
    # while their parents still lead to them.
    trees = [child for proc in running for child in proc.descendants()]
    for proc in running:
        if proc.alive():
            with contextlib.suppress(ProcessLookupError):
                assert proc.popen is not None
                proc.popen.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in running:
        assert proc.popen is not None
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
    for proc in running:
        # Also reaps children a component left behind (workers, log servers) after it exited.
        proc.signal_group(signal.SIGKILL)
        assert proc.popen is not None
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.popen.wait(timeout=10)
    _kill_all(trees)


class Simulator:
    """The NanoGPT simulator as a separate process, and a client for its control API."""

    def __init__(self, output_dir: Path, api_key: str, time_scale: float) -> None:
        self.api_key = api_key
        self.time_scale = time_scale
        self.output_dir = output_dir
        self.process: Process | None = None
        self.url = ""

    def start(self, cwd: Path) -> None:
        for _ in range(3):  # the free port can be taken before the simulator binds it
            port = free_port()
            self.process = Process(
                name="simulator",
                argv=[
                    sys.executable,
                    "-m",
                    "airflow_provider_nanogpt.simulator",
                    "--port",
                    str(port),
                    "--time-scale",
                    str(self.time_scale),
                    "--status-shape",
                    "flat",
                    "--quiet",
                ],
                output_dir=self.output_dir,
            )
            # The key goes through the environment, not argv, so `ps` never shows it. The
            # checkout's simulator runs, whatever copy of the package the virtualenv installed.
            pythonpath = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
            env = {**os.environ, "PYTHONPATH": pythonpath, "NANOGPT_SIM_API_KEY": self.api_key}
            self.process.start(env, cwd)
            self.url = f"http://127.0.0.1:{port}"
            try:
                wait_for(self._ready, 20, "the simulator", check=self._check_alive)
                return
            except DeploymentError:
                stop_processes([self.process], grace=5)
        raise DeploymentError(f"the simulator did not start:\n{_tail(self.process.output)}")

    def _check_alive(self) -> None:
        if self.process is None or not self.process.alive():
            raise DeploymentError("the simulator exited")

    def _ready(self) -> bool:
        return requests.get(f"{self.url}/_sim/state", timeout=5).status_code == 200

    def state(self) -> dict[str, Any]:
        response = requests.get(f"{self.url}/_sim/state", timeout=10)
        response.raise_for_status()
        return dict(response.json())

    def configure(self, **settings: Any) -> None:
        requests.post(f"{self.url}/_sim/config", json=settings, timeout=10).raise_for_status()

    def jobs_tagged(self, tag: str) -> list[dict[str, Any]]:
        """The simulator's jobs whose prompt carries ``tag`` (one test's submissions)."""
        return [
            job
            for job in self.state()["jobs"]
            if tag in str((job.get("payload") or {}).get("prompt", ""))
        ]


class Rest:
    """The Airflow public REST API: anonymous (simple auth manager, all admins) or as a user."""

    def __init__(self, base_url: str, login: tuple[str, str] | None = None) -> None:
        self.base = base_url.rstrip("/")
        self.session = requests.Session()
        if login is not None:
            self.session.headers["Authorization"] = f"Bearer {self.token(*login)}"

    def token(self, username: str, password: str) -> str:
        response = requests.post(
            f"{self.base}/auth/token",
            json={"username": username, "password": password},
            timeout=30,
        )
        response.raise_for_status()
        return str(response.json()["access_token"])

    def get(self, path: str, **params: Any) -> Any:
        response = self.session.get(f"{self.base}{path}", params=params, timeout=30)
        response.raise_for_status()
        return response.json()

    def try_get(self, path: str, **params: Any) -> Any | None:
        """GET, or None on 404 (the object does not exist yet)."""
        response = self.session.get(f"{self.base}{path}", params=params, timeout=30)
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: Mapping[str, Any]) -> Any:
        response = self.session.post(f"{self.base}{path}", json=dict(body), timeout=30)
        if response.status_code >= 400:
            raise DeploymentError(f"POST {path} failed: {response.status_code} {response.text}")
        return response.json()

    def trigger(self, dag_id: str, conf: Mapping[str, Any]) -> str:
        response = self.session.post(
            f"{self.base}/api/v2/dags/{dag_id}/dagRuns",
            json={"logical_date": None, "conf": dict(conf)},
            timeout=30,
        )
        if response.status_code >= 400:
            raise DeploymentError(f"triggering {dag_id} failed: {response.text}")
        return str(response.json()["dag_run_id"])

    @staticmethod
    def ti_path(dag_id: str, run_id: str, task_id: str) -> str:
        return f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}"

    def task_instance(self, dag_id: str, run_id: str, task_id: str) -> dict[str, Any] | None:
        return self.try_get(self.ti_path(dag_id, run_id, task_id))

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return dict(self.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}"))

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str) -> Any | None:
        """The XCom value as JSON (not Airflow's str() rendering), or None if absent."""
        body = self.try_get(
            f"{self.ti_path(dag_id, run_id, task_id)}/xcomEntries/{key}",
            deserialize="true",
            stringify="false",
        )
        return None if body is None else body["value"]

    def log_text(self, dag_id: str, run_id: str, task_id: str, try_number: int) -> str:
        """The full task log of one try (worker and trigger parts) as one JSON string."""
        response = self.session.get(
            f"{self.base}{self.ti_path(dag_id, run_id, task_id)}/logs/{try_number}",
            params={"full_content": "true"},
            headers={"Accept": "application/json"},
            timeout=30,
        )
        response.raise_for_status()
        return json.dumps(response.json())


@dataclass(frozen=True)
class CeleryWorkers:
    """The CeleryExecutor part of a deployment: the broker and the ``airflow celery worker``s."""

    broker_url: str
    count: int = 2
    concurrency: int = 4  # slots per worker


class Deployment:
    """Airflow 3 on PostgreSQL, each component a separate process, and the simulator.

    LocalExecutor with one triggerer by default; ``celery`` switches to CeleryExecutor with
    ``celery.count`` workers, and ``triggerers`` runs that many triggerers side by side.
    """

    def __init__(
        self,
        root: Path,
        database_url: str,
        dags_folder: Path,
        api_key: str,
        sim_time_scale: float = 1.0,
        extra_env: Mapping[str, str | None] | None = None,
        login: tuple[str, str] | None = None,
        *,
        triggerers: int = 1,
        celery: CeleryWorkers | None = None,
        api_workers: int = 1,
        nanogpt_connections: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        """``extra_env`` overrides the Airflow settings (None removes one); ``login`` is the
        user the REST client signs in as when anonymous access is off. ``api_workers`` is the
        api-server's process count: every task's XCom and state-store writes go through it.
        ``nanogpt_connections``: more NanoGPT connections (conn id -> extras) on the simulator
        with the same key, given to every component by environment."""
        if triggerers < 1:
            raise ValueError("a deployment needs at least one triggerer")
        self.root = root
        self.extra_env = dict(extra_env or {})
        self.login = login
        self.triggerers = triggerers
        self.celery = celery
        self.api_workers = api_workers
        self.nanogpt_connections = dict(nanogpt_connections or {})
        # Components killed on purpose and left down: check_alive() does not count them.
        self.down: set[str] = set()
        self.home = root / "airflow-home"
        self.components_dir = self.home / "components"
        self.components_dir.mkdir(parents=True)
        self.dags_folder = dags_folder
        self.database_url = database_url
        self.api_key = api_key
        self.fernet_key = _fernet_key()
        self.simulator = Simulator(self.components_dir, api_key, sim_time_scale)
        self.processes: dict[str, Process] = {}
        self.api_port = 0
        self.env: dict[str, str] = {}
        self.component_env: dict[str, dict[str, str]] = {}

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def triggerer_names(self) -> list[str]:
        # One triggerer keeps the plain name the LocalExecutor tests use.
        if self.triggerers == 1:
            return ["triggerer"]
        return [f"triggerer-{i}" for i in range(1, self.triggerers + 1)]

    @property
    def worker_names(self) -> list[str]:
        if self.celery is None:
            return []
        return [f"celery-worker-{i}" for i in range(1, self.celery.count + 1)]

    def component_names(self) -> list[str]:
        return [*COMPONENTS[:3], *self.triggerer_names, *self.worker_names]

    def _airflow_env(self) -> dict[str, str]:
        # Start from a clean slate: the pytest process has its own (SQLite) Airflow settings.
        base = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        connection = {
            "conn_type": "nanogpt",
            "password": self.api_key,
            "host": self.simulator.url,
        }
        settings = {
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.database_url,
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            # A known key, so the hygiene test can decrypt any Fernet-encrypted trigger kwargs.
            "AIRFLOW__CORE__FERNET_KEY": self.fernet_key,
            # Every component must sign and verify the same tokens.
            "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.api_port),
            "AIRFLOW__API__WORKERS": str(self.api_workers),
            "AIRFLOW__API__BASE_URL": self.api_url,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
            # Log servers on free ports: other engineers' deployments may hold the defaults.
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            # Airflow 3.3 fast-resume race (apache/airflow#72716): heartbeat every second.
            "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "120",
            # A restarted triggerer takes over a dead one's triggers once its heartbeat is this
            # old; 30 s by default, which would dominate the triggerer-restart test.
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
            "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "6",
            "AIRFLOW_CONN_NANOGPT_DEFAULT": json.dumps(connection),
        }
        for conn_id, extra in self.nanogpt_connections.items():
            settings[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(
                {**connection, "extra": dict(extra)}
            )
        if self.celery is not None:
            settings.update(
                {
                    "AIRFLOW__CORE__EXECUTOR": CELERY_EXECUTOR,
                    "AIRFLOW__CELERY__BROKER_URL": self.celery.broker_url,
                    # Results in the metadata database ("db+" + sql_alchemy_conn), as the
                    # provider does by default; said explicitly so no one wonders.
                    "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{self.database_url}",
                    # Publishing to the broker times out after 1 s by default; on a busy 2-core
                    # machine that leaves tasks queued for another scheduler loop.
                    "AIRFLOW__CELERY__OPERATION_TIMEOUT": "10",
                    # Said explicitly (the provider warns otherwise). A worker's unacknowledged
                    # message comes back only after this long, so a killed worker's tasks are
                    # recovered by Airflow's heartbeat check, never by the broker re-delivering.
                    "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "86400",
                }
            )
        merged = {**base, **settings, **self.extra_env}
        return {name: value for name, value in merged.items() if value is not None}

    def _env_for(self, name: str) -> dict[str, str]:
        """Settings one component needs for itself: several triggerers or workers on one machine
        must each serve logs on a port of their own."""
        own = {"NANOGPT_E2E_COMPONENT": name}
        if name.startswith("triggerer") and self.triggerers > 1:
            own["AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT"] = str(free_port())
        if name.startswith("celery-worker"):
            own["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"] = str(free_port())
        return own

    def rest(self) -> Rest:
        return Rest(self.api_url, self.login)

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        compile_provider_bytecode()
        self.simulator.start(cwd=self.root)
        self.api_port = free_port()
        self.env = self._airflow_env()
        self._migrate()
        for name in self.component_names():
            self.component_env[name] = {**self.env, **self._env_for(name)}
            self.processes[name] = Process(
                name=name, argv=self._argv(name), output_dir=self.components_dir
            )
            self.processes[name].start(self.component_env[name], self.root)
        self.wait_healthy(timeout=180)
        if self.celery is not None:
            self.wait_workers_ready(self.worker_names, timeout=120)

    def _argv(self, name: str) -> list[str]:
        airflow = [sys.executable, "-m", "airflow"]
        if name.startswith("triggerer"):
            return [*airflow, "triggerer"]
        if name.startswith("celery-worker"):
            assert self.celery is not None
            return [
                *airflow,
                "celery",
                "worker",
                # A Celery node name of its own per worker, as on separate machines.
                "--celery-hostname",
                f"{name}@%h",
                "--concurrency",
                str(self.celery.concurrency),
            ]
        argv = [*airflow, name]
        if name == "api-server":
            argv += ["--host", "127.0.0.1", "--port", str(self.api_port)]
            argv += ["--workers", str(self.api_workers)]
        return argv

    def wait_workers_ready(self, names: list[str], timeout: float) -> None:
        """Wait until each Celery worker says it is ready (it consumes from the broker then)."""

        def ready() -> bool:
            return all(
                f"{name}@" in (text := _tail(self.processes[name].output, 200_000))
                and " ready." in text
                for name in names
            )

        wait_for(ready, timeout, f"Celery workers {names}", 0.5, self.check_alive)

    def _migrate(self) -> None:
        output = self.components_dir / "db-migrate.out"
        with output.open("wb") as out:
            done = subprocess.run(
                [sys.executable, "-m", "airflow", "db", "migrate"],
                env=self.env,
                cwd=self.root,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=300,
                check=False,
            )
        if done.returncode != 0:
            raise DeploymentError(f"airflow db migrate failed:\n{_tail(output)}")

    def check_alive(self) -> None:
        """Fail at once, with its output, if a component died instead of waiting for a timeout."""
        for proc in self.processes.values():
            if proc.name in self.down:
                continue
            if proc.popen is not None and not proc.alive():
                raise DeploymentError(
                    f"{proc.name} exited with {proc.popen.returncode}:\n{_tail(proc.output)}"
                )

    def health(self) -> dict[str, Any]:
        response = requests.get(f"{self.api_url}/api/v2/monitor/health", timeout=10)
        response.raise_for_status()
        return dict(response.json())

    def wait_healthy(self, timeout: float) -> dict[str, Any]:
        def healthy() -> dict[str, Any] | None:
            body = self.health()
            parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
            ok = all((body.get(p) or {}).get("status") == "healthy" for p in parts)
            return body if ok else None

        return wait_for(healthy, timeout, "a healthy deployment", 0.5, self.check_alive)

    def wait_for_dags(self, dag_ids: list[str], timeout: float) -> None:
        """Wait until the dag-processor has stored every DAG; fail fast on an import error."""
        rest = self.rest()

        def parsed() -> bool:
            errors = rest.get("/api/v2/importErrors")["import_errors"]
            if errors:
                raise DeploymentError(f"DAG import errors: {errors}")
            return all(rest.try_get(f"/api/v2/dags/{dag_id}") for dag_id in dag_ids)

        wait_for(parsed, timeout, f"DAGs {dag_ids}", 0.5, self.check_alive)

    def kill(self, name: str) -> None:
        """SIGKILL a component's whole process tree and leave it down (until ``restart``)."""
        self.down.add(name)
        self.processes[name].kill()

    def restart(self, name: str) -> None:
        self.down.discard(name)
        self.processes[name].start(self.component_env.get(name, self.env), self.root)

    def stop(self) -> None:
        procs = list(self.processes.values())
        if self.simulator.process is not None:
            procs.append(self.simulator.process)
        stop_processes(procs)

    def component_outputs(self) -> list[Path]:
        return sorted(self.components_dir.glob("*.out"))

    def describe(self) -> str:
        """Each component's pid and output tail, for failure messages."""
        parts = []
        for proc in [*self.processes.values(), self.simulator.process]:
            if proc is not None:
                state = "alive" if proc.alive() else f"exited {proc.popen and proc.popen.poll()}"
                parts.append(f"--- {proc.name} (pid {proc.pid}, {state})\n{_tail(proc.output)}")
        return "\n".join(parts)


def _fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


def compile_provider_bytecode() -> None:
    """Write the provider's bytecode next to its sources, as ``pip install`` of the wheel does.

    The deployment runs the editable checkout. Under ``PYTHONDONTWRITEBYTECODE`` (set on this
    machine and on CI) every task process would otherwise compile every provider module from
    source again, which no wheel install does: in the scale-out test that was a quarter of the
    operator's worker time.
    """
    import compileall

    import airflow_provider_nanogpt

    compileall.compile_dir(Path(airflow_provider_nanogpt.__file__).parent, quiet=1)
