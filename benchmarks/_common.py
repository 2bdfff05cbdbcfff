"""Shared plumbing: the simulator process, result rows, machine facts, small statistics."""

from __future__ import annotations

import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# A made-up key that only the local simulator accepts; it is never printed or logged.
BENCH_KEY = "sk-nano-bench-7c9e6679-7425-40de-944b-e07fc1f90ae7"
CONN_ID = "nanogpt_bench"
DEFAULT_MODEL = "kling-video-v2"
REPO = Path(__file__).resolve().parent.parent


# --- environment ----------------------------------------------------------------------------


def prepare_environment(log_level: str = "ERROR") -> Path:
    """An isolated AIRFLOW_HOME and quiet logs; must run before anything imports Airflow.

    Child processes inherit this environment, so they share the same throw-away home.
    """
    home = os.environ.get("NANOGPT_BENCH_AIRFLOW_HOME")
    if not home:
        home = tempfile.mkdtemp(prefix="nanogpt-bench-airflow-home-")
        os.environ["NANOGPT_BENCH_AIRFLOW_HOME"] = home
    os.environ["AIRFLOW_HOME"] = home
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = log_level
    # Keep the repo importable from children started with ``-m benchmarks.xxx``.
    paths = [str(REPO), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return Path(home)


def use_connection(url: str, conn_id: str = CONN_ID) -> None:
    """Point ``conn_id`` at ``url`` through the documented ``AIRFLOW_CONN_*`` variable."""
    conn = {"conn_type": "nanogpt", "password": BENCH_KEY, "host": url}
    os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(conn)


# --- the simulator, in its own process ------------------------------------------------------


class SimulatorProcess:
    """The NanoGPT simulator in a separate process (it must not share our GIL).

    The key goes through the environment, not argv, so ``ps`` never shows it.
    """

    def __init__(
        self,
        *,
        log_dir: Path,
        time_scale: float = 1.0,
        rate_limit: int = 0,
        status_shape: str = "flat",
        queue_seconds: float = 2.0,
        render_seconds: float = 8.0,
        latency: float = 0.0,
    ) -> None:
        self.args = [
            "--port",
            "0",
            "--quiet",
            "--time-scale",
            str(time_scale),
            "--rate-limit",
            str(rate_limit),
            "--recover-rate-limit",
            "0",
            "--balance",
            "100000000",
            "--status-shape",
            status_shape,
            "--queue-seconds",
            str(queue_seconds),
            "--render-seconds",
            str(render_seconds),
            "--latency",
            str(latency),
        ]
        self.time_scale = time_scale
        self.log_path = log_dir / f"simulator-{time.monotonic_ns()}.log"
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    def start(self) -> SimulatorProcess:
        env = {**os.environ, "NANOGPT_SIM_API_KEY": BENCH_KEY}
        with self.log_path.open("w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "airflow_provider_nanogpt.simulator", *self.args],
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env=env,
                cwd=REPO,
            )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "listening on" not in line:
            self.stop()
            raise RuntimeError(f"simulator did not start: {line!r}; see {self.log_path}")
        self.url = line.rsplit(" ", 1)[-1].strip()
        use_connection(self.url)
        return self

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> SimulatorProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def cpu_seconds(self) -> float:
        """User + system CPU the simulator process has used so far."""
        import psutil

        times = psutil.Process(self.pid).cpu_times()
        return float(times.user + times.system)

    def state(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + "/_sim/state", timeout=60) as response:
            return json.load(response)  # type: ignore[no-any-return]

    def reset(self) -> None:
        """Forget every job and counter (``POST /_sim/reset``)."""
        request = urllib.request.Request(self.url + "/_sim/reset", data=b"", method="POST")
        with urllib.request.urlopen(request, timeout=60):
            pass

    def status_requests(self) -> int:
        return int(self.state()["requests"].get("GET /api/video/status", 0))


class JobSubmitter:
    """Submits set-up jobs straight over HTTP from a pool of kept-alive sessions (not measured)."""

    def __init__(self, url: str, workers: int = 16) -> None:
        self.url = url
        self._pool = ThreadPoolExecutor(max_workers=workers)
        self._local = threading.local()

    def submit_one(self, prompt: str) -> tuple[str, float]:
        import requests

        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        before = time.time()
        response = session.post(
            self.url + "/api/generate-video",
            json={"model": DEFAULT_MODEL, "prompt": prompt, "duration": "5"},
            headers={"x-api-key": BENCH_KEY},
            timeout=60,
        )
        after = time.time()
        if response.status_code != 202:
            raise RuntimeError(f"set-up submit failed: HTTP {response.status_code}")
        return str(response.json()["runId"]), (before + after) / 2

    def submit(self, prompts: Sequence[str]) -> list[tuple[str, float]]:
        """``(run_id, created_at)`` per prompt, in order; ``created_at`` is the midpoint of the
        request on ``time.time()``, within a millisecond of when the simulator made the job."""
        return list(self._pool.map(self.submit_one, prompts))

    def close(self) -> None:
        self._pool.shutdown()

    def __enter__(self) -> JobSubmitter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- child processes ------------------------------------------------------------------------


def run_child(module: str, args: Sequence[str], log_path: Path, **env: str) -> dict[str, Any]:
    """Run ``python -m module args --out FILE`` and return the JSON it wrote to FILE."""
    out = log_path.with_suffix(".json")
    with log_path.open("a") as log:
        completed = subprocess.run(
            [sys.executable, "-m", module, *args, "--out", str(out)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
            cwd=REPO,
            check=False,
        )
    if completed.returncode != 0 or not out.exists():
        tail = log_path.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{module} failed (exit {completed.returncode}):\n{tail}")
    return json.loads(out.read_text())  # type: ignore[no-any-return]


def write_json(path: str, data: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(data))


@dataclass
class RunContext:
    """What every benchmark's ``run()`` gets from the command line."""

    quick: bool
    log_dir: Path
    trigger_sizes: tuple[int, ...] | None = None


# --- results --------------------------------------------------------------------------------


@dataclass
class Row:
    """One figure of the results table, with the baselines it is compared to."""

    benchmark: str
    figure: str
    unit: str
    value: float | None
    baselines: list[tuple[str, float | None]] = field(default_factory=list)
    goal: str = ""
    met: bool | None = None
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


DETAILS: list[str] = []


def report(line: str) -> None:
    """Print a progress/detail line now and keep it for the JSON output."""
    DETAILS.append(line)
    print(f"  {line}", flush=True)


def fmt(value: float | None, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    magnitude = abs(value)
    if magnitude >= 100 or value == int(value):
        text = f"{value:,.0f}"
    elif magnitude >= 10:
        text = f"{value:.1f}"
    elif magnitude >= 0.1:
        text = f"{value:.2f}"
    else:
        text = f"{value:.3f}"
    return f"{text} {unit}".strip()


def ratio(value: float | None, baseline: float | None) -> str:
    if value is None or baseline is None or baseline == 0 or math.isnan(value / baseline):
        return "n/a"
    return f"{value / baseline:.2f}x"


def markdown_table(rows: Sequence[Row]) -> str:
    lines = [
        "| Benchmark | Figure | Provider | Baseline (same run) | Ratio | Goal | Met |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        baselines = "<br>".join(f"{label}: {fmt(v, row.unit)}" for label, v in row.baselines)
        ratios = "<br>".join(ratio(row.value, v) for _, v in row.baselines)
        met = {True: "yes", False: "**no**", None: ""}[row.met]
        figure = row.figure + (f" ({row.note})" if row.note else "")
        lines.append(
            f"| {row.benchmark} | {figure} | {fmt(row.value, row.unit)} | {baselines or '-'} "
            f"| {ratios or '-'} | {row.goal} | {met} |"
        )
    return "\n".join(lines)


# --- statistics and machine facts -----------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (``q`` in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ram_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return math.nan


def machine_info() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    def package(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    return {
        "nproc": os.cpu_count(),
        "cpu": _cpu_model(),
        "ram_gib": round(_ram_gib(), 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "airflow": package("apache-airflow"),
        "httpx": package("httpx"),
        "requests": package("requests"),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }


def reset_peak_rss() -> None:
    """Make the kernel's peak-RSS mark equal the current RSS (Linux >= 4.0; else a no-op)."""
    with suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_rss_bytes() -> int:
    """Peak RSS of this process image since start or :func:`reset_peak_rss`.

    ``VmHWM`` rather than ``getrusage``: a child's ``ru_maxrss`` also counts the parent's pages
    it shared between ``fork`` and ``exec``, which made a 20 MB download look like 100+ MB.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
