"""Benchmark 1: triggerer scale.

N ``VideoStatusTrigger`` objects run in ONE asyncio event loop, as the triggerer runs them: each
``trigger.run()`` async generator is driven until its first event. The simulator runs in its own
process. The parent process submits the jobs and streams the run ids to a child process as they
are created (in chunks of 64), so triggers arrive as deferred tasks would; the child measures
only the trigger loop: its CPU time, its peak RSS and the oversleep of a 10 ms ticker coroutine
(event-loop lag). Polls are counted by the simulator.

Baselines, same jobs and the same poll schedule, only the transport differs:

* ``blocking``: ``requests.get`` called directly inside the coroutine (blocks the loop);
* ``sync_to_async``: ``asgiref.sync.sync_to_async(requests.get)`` with its default
  ``thread_sensitive=True`` (every call runs on one shared thread).

Loopback answers in about a millisecond, which flatters the blocking baselines. The same three
modes therefore also run at N=1000 against a simulator that waits ``WAN_LATENCY_SECONDS`` before
every answer, as the real API over the internet does; there the figures that matter are how many
triggers were served by the deadline and the loop lag.

A separate figure times what each trigger spends on its HTTP client, against building a fresh
``httpx.AsyncClient`` per trigger.

Run alone: ``python -m benchmarks --only triggerer [--trigger-sizes 100,1000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from benchmarks._common import (
    CONN_ID,
    REPO,
    JobSubmitter,
    Row,
    RunContext,
    SimulatorProcess,
    peak_rss_bytes,
    percentile,
    report,
    reset_peak_rss,
    use_connection,
    write_json,
)

NAME = "triggerer"
TICK_SECONDS = 0.010
# Safety net only: a trigger that is still waiting after this long reports a timeout event.
TRIGGER_DEADLINE_SECONDS = 600.0
# A case stops this long (plus two render times) after its last trigger arrived, finished or
# not, so an overloaded loop cannot stretch the run; the unfinished triggers are reported.
CASE_BUDGET_SECONDS = 30.0
KILL_GRACE = 30.0
SUBMIT_CHUNK = 64
END_OF_CASE = "END"


@dataclass(frozen=True)
class Plan:
    sizes: dict[str, tuple[int, ...]]
    poll_interval: float  # real seconds; also the ETA ceiling, so polling is fixed-interval
    poll_seconds: float  # every job keeps running this long after the last trigger arrived
    latency: float = 0.0  # real seconds the simulator waits before every answer


FULL = Plan(
    sizes={
        "provider": (100, 1000, 5000),
        "blocking": (100, 1000, 5000),
        "sync_to_async": (100, 1000, 5000),
    },
    poll_interval=3.0,
    poll_seconds=9.0,
)
QUICK = Plan(
    sizes={"provider": (5,), "blocking": (5,), "sync_to_async": (5,)},
    poll_interval=0.1,
    poll_seconds=0.3,
)
WAN_LATENCY_SECONDS = 0.1
WAN = Plan(
    sizes={"provider": (1000,), "blocking": (1000,), "sync_to_async": (1000,)},
    poll_interval=FULL.poll_interval,
    poll_seconds=FULL.poll_seconds,
    latency=WAN_LATENCY_SECONDS,
)
QUICK_WAN = Plan(
    sizes={mode: (5,) for mode in WAN.sizes},
    poll_interval=QUICK.poll_interval,
    poll_seconds=QUICK.poll_seconds,
    latency=0.02,
)
BASELINES = {
    "blocking": "blocking requests.get",
    "sync_to_async": "sync_to_async(requests.get)",
}


# --- parent side ----------------------------------------------------------------------------


def _feed_jobs(url: str, n: int, plan: Plan, send: Callable[[str], None]) -> None:
    """Submit ``n`` jobs in chunks and hand each run id to ``send`` as soon as it exists.

    Each job renders for ``poll_seconds`` plus the (estimated) time until the last submission,
    so all N triggers are alive together at the end and each polls several times.
    """
    rate = 300.0  # jobs/s; re-estimated after every chunk
    started = time.perf_counter()
    done = 0
    with JobSubmitter(url) as submitter:
        while done < n:
            size = min(SUBMIT_CHUNK, n - done)
            remaining = (n - done) / rate
            render = plan.poll_seconds + remaining
            prompts = [f"benchmark [sim:queue=0][sim:render={render:.2f}]"] * size
            for run_id, _ in submitter.submit(prompts):
                send(run_id)
            done += size
            rate = max(done / max(time.perf_counter() - started, 1e-3), 1.0)


def _wait_for(path: Path, proc: subprocess.Popen[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise RuntimeError(f"trigger child exited early (code {proc.returncode})")
        if time.monotonic() > deadline:
            raise RuntimeError(f"trigger child did not write {path.name} in time")
        time.sleep(0.01)


def run_cases(
    ctx: RunContext, plan: Plan, cases: Sequence[tuple[str, int]]
) -> list[dict[str, Any]]:
    """Run ``cases`` one after another in ONE child process and ONE simulator.

    The full run gives every case its own child and simulator (clean RSS and CPU figures);
    ``--quick`` runs all cases in one child to save interpreter start-ups.
    """
    stem = ctx.log_dir / f"triggerer-{cases[0][0]}-{cases[0][1]}-{plan.latency:g}"
    log_path = stem.with_suffix(".log")
    budget = CASE_BUDGET_SECONDS + 2 * plan.poll_seconds
    spec = {
        "modes": [mode for mode, _ in cases],
        "poll_interval": plan.poll_interval,
        "budget": budget,
        "files": str(stem),
    }
    results = []
    with SimulatorProcess(log_dir=ctx.log_dir, latency=plan.latency) as sim:
        with log_path.open("w") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", __name__, "--child", json.dumps(spec)],
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
                cwd=REPO,
                # The triggerer logs every poll at INFO; that cost belongs in the figures.
                env={**os.environ, "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO"},
            )
        assert proc.stdin is not None
        stdin = proc.stdin

        def send(line: str) -> None:
            stdin.write(line + "\n")
            stdin.flush()

        try:
            for index, (mode, n) in enumerate(cases):
                if index:
                    sim.reset()
                _wait_for(Path(f"{stem}.{index}.ready"), proc, timeout=120)
                polls_before, sim_cpu_before = sim.status_requests(), sim.cpu_seconds()
                child = _ChildUsage(proc.pid)
                started = time.perf_counter()
                _feed_jobs(sim.url, n, plan, send)
                send(END_OF_CASE)
                arrived = time.perf_counter()
                out = Path(f"{stem}.{index}.json")
                # The child stops itself at its budget, but only when its loop gets a turn: a
                # starved loop may never get one, so the parent enforces the budget too.
                while not out.exists() and time.perf_counter() < arrived + budget + KILL_GRACE:
                    if proc.poll() is not None:
                        raise RuntimeError(f"trigger child exited early ({proc.returncode})")
                    time.sleep(0.05)
                wall = time.perf_counter() - started
                polls = sim.status_requests() - polls_before
                sim_cpu = sim.cpu_seconds() - sim_cpu_before
                if out.exists():
                    result = json.loads(out.read_text())
                else:
                    result = child.killed_result(wall, n)
                    proc.kill()
                results.append(_summarise(result, mode, n, polls, sim_cpu / wall, plan.latency))
                if proc.poll() is not None:
                    break  # killed: later cases (only with --quick) cannot run
            with contextlib.suppress(BrokenPipeError):
                stdin.close()
            # The results are in: a slow clean-up is not a failure (it is killed below).
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=60)
        except BaseException:
            tail = log_path.read_text(errors="replace")[-2000:]
            print(f"trigger child log tail:\n{tail}", file=sys.stderr)
            raise
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return results


class _ChildUsage:
    """CPU and RSS of the child as seen from outside, for a child that must be killed."""

    def __init__(self, pid: int) -> None:
        import psutil

        self.process = psutil.Process(pid)
        self.cpu = self._cpu()
        self.rss = self.process.memory_info().rss

    def _cpu(self) -> float:
        times = self.process.cpu_times()
        return float(times.user + times.system)

    def killed_result(self, wall: float, n: int) -> dict[str, Any]:
        nan = float("nan")
        return {
            "cpu_s": self._cpu() - self.cpu,
            "wall_s": wall,
            "rss_start_mb": self.rss / 2**20,
            "rss_peak_mb": self.process.memory_info().rss / 2**20,  # current, not peak
            "lag_p50_ms": nan,
            "lag_p99_ms": nan,
            "lag_max_ms": nan,
            "lag_steady_p50_ms": nan,
            "lag_steady_p99_ms": nan,
            "ticks": 0,
            "steady_ticks": 0,
            "steady_seconds": 0.0,
            # Its loop never got round to reporting: lag is unknown, and at least this long.
            "events": {f"killed after {wall:.0f} s (loop unresponsive)": n},
        }


def _summarise(
    result: dict[str, Any], mode: str, n: int, polls: int, sim_cpu_util: float, latency: float
) -> dict[str, Any]:
    result.update(
        mode=mode,
        n=n,
        latency=latency,
        polls=polls,
        finished_share=result["events"].get("success", 0) / n,
        cpu_per_1000_polls=1000 * result["cpu_s"] / polls if polls else None,
        rss_per_trigger_kb=(result["rss_peak_mb"] - result["rss_start_mb"]) * 1024 / n,
        sim_cpu_util=sim_cpu_util,
    )
    report(
        f"triggerer {mode:<19} N={n:<5} latency={1000 * latency:.0f}ms "
        f"polls={polls:<6} ({polls / n:.1f}/trigger) "
        f"wall={result['wall_s']:.1f}s loop-CPU={result['cpu_s']:.1f}s "
        f"({100 * result['cpu_s'] / result['wall_s']:.0f}% of a core) "
        f"sim-CPU={100 * sim_cpu_util:.0f}% "
        f"CPU/1000 polls={result['cpu_per_1000_polls'] or 0:.2f}s "
        f"RSS/trigger={result['rss_per_trigger_kb']:.0f}KB "
        f"lag p50/p99/max={result['lag_p50_ms']:.1f}/{result['lag_p99_ms']:.0f}/"
        f"{result['lag_max_ms']:.0f}ms, steady state ({result['steady_seconds']:.1f}s, "
        f"{result['steady_ticks']} ticks) p50/p99={result['lag_steady_p50_ms']:.1f}/"
        f"{result['lag_steady_p99_ms']:.0f}ms events={result['events']}"
    )
    return result


def client_setup_cost(count: int) -> dict[str, float]:
    """CPU ms and RSS KB a trigger spends on its HTTP client, inside the event loop.

    Provider: each trigger's own hook asks ``hook._aclient()`` for its client. Baseline: the
    obvious way, a fresh ``httpx.AsyncClient`` per trigger, which builds an SSL context each.
    Figures are averages over ``count`` triggers alive at the same time.
    """
    import httpx
    import psutil

    from airflow_provider_nanogpt.hooks.nanogpt import NanoGPTHook

    use_connection("http://127.0.0.1:9")  # never contacted: clients are only built
    process = psutil.Process()

    async def measure(
        acquire: Callable[[], Any], release: Callable[[Any], Any]
    ) -> tuple[float, float]:
        handles = []
        gc.collect()
        rss, cpu = process.memory_info().rss, time.process_time()
        for _ in range(count):
            handles.append(await acquire())
        cpu_ms = (time.process_time() - cpu) * 1000 / count
        rss_kb = (process.memory_info().rss - rss) / 1024 / count
        for handle in handles:
            await release(handle)
        return cpu_ms, rss_kb

    async def provider_acquire() -> Any:
        hook = NanoGPTHook(CONN_ID)
        await hook.asettings()  # connection lookup is not part of the client cost
        await hook._aclient()
        return hook

    async def provider_release(hook: Any) -> None:
        await hook.aclose()

    async def own_acquire() -> Any:
        return httpx.AsyncClient(base_url="http://127.0.0.1:9", timeout=30)

    async def own_release(client: Any) -> None:
        await client.aclose()

    async def both() -> dict[str, float]:
        await provider_release(await provider_acquire())  # warm imports
        provider_cpu, provider_rss = await measure(provider_acquire, provider_release)
        own_cpu, own_rss = await measure(own_acquire, own_release)
        return {
            "provider_cpu_ms": provider_cpu,
            "provider_rss_kb": provider_rss,
            "own_cpu_ms": own_cpu,
            "own_rss_kb": own_rss,
        }

    result = asyncio.run(both())
    report(
        f"triggerer client set-up ({count} triggers): hook._aclient() "
        f"{result['provider_cpu_ms']:.2f} ms CPU, {result['provider_rss_kb']:.1f} KB each; "
        f"own httpx.AsyncClient per trigger {result['own_cpu_ms']:.1f} ms, "
        f"{result['own_rss_kb']:.0f} KB"
    )
    return result


def run(ctx: RunContext) -> list[Row]:
    plan, wan_plan = (QUICK, QUICK_WAN) if ctx.quick else (FULL, WAN)
    if ctx.trigger_sizes:
        sizes = {mode: ctx.trigger_sizes for mode in plan.sizes}
        plan, wan_plan = replace(plan, sizes=sizes), replace(wan_plan, sizes=sizes)
    setup = client_setup_cost(5 if ctx.quick else 200)
    loopback = _run_plan(ctx, plan)
    wan = _run_plan(ctx, wan_plan)

    rows = [
        Row(
            NAME,
            "HTTP client set-up per trigger, CPU",
            "ms",
            setup["provider_cpu_ms"],
            [("own httpx.AsyncClient per trigger", setup["own_cpu_ms"])],
            note="blocks the event loop",
        ),
        Row(
            NAME,
            "HTTP client set-up per trigger, RSS",
            "KB",
            setup["provider_rss_kb"],
            [("own httpx.AsyncClient per trigger", setup["own_rss_kb"])],
        ),
    ]
    figures = [
        ("CPU per 1000 polls", "cpu_per_1000_polls", "s"),
        ("peak RSS per trigger", "rss_per_trigger_kb", "KB"),
        ("event-loop lag p50, steady state", "lag_steady_p50_ms", "ms"),
        ("event-loop lag p99, steady state", "lag_steady_p99_ms", "ms"),
        ("event-loop lag p99, whole run (arrivals too)", "lag_p99_ms", "ms"),
    ]
    for n in plan.sizes["provider"]:
        rows += _rows(loopback, n, figures, f"N={n}")
    wan_figures = [
        ("triggers finished by the deadline", "finished_share", "%"),
        ("CPU per 1000 polls", "cpu_per_1000_polls", "s"),
        ("event-loop lag p99, steady state", "lag_steady_p99_ms", "ms"),
    ]
    latency_ms = f"{1000 * wan_plan.latency:.0f} ms"
    for n in wan_plan.sizes["provider"]:
        rows += _rows(wan, n, wan_figures, f"N={n}, {latency_ms} per answer")
    return rows


def _run_plan(ctx: RunContext, plan: Plan) -> dict[tuple[str, int], dict[str, Any]]:
    cases = [(mode, n) for mode, sizes in plan.sizes.items() for n in sizes]
    groups = [cases] if ctx.quick else [[case] for case in cases]
    return {(r["mode"], r["n"]): r for group in groups for r in run_cases(ctx, plan, group)}


def _rows(
    results: dict[tuple[str, int], dict[str, Any]],
    n: int,
    figures: Sequence[tuple[str, str, str]],
    case: str,
) -> list[Row]:
    provider = results["provider", n]
    killed = [event for event in provider["events"] if event.startswith("killed")]
    note = f"{killed[0]}; {provider['polls']} polls" if killed else ""
    rows = []
    for label, key, unit in figures:
        scale = 100 if unit == "%" else 1
        baselines = [
            (BASELINES[mode], results[mode, n][key] * scale)
            for mode in BASELINES
            if (mode, n) in results
        ]
        goal, met = "", None
        if key == "lag_steady_p99_ms" and n == 1000 and not provider["latency"]:
            goal, met = "< 50 ms at N=1000", provider[key] < 50
        rows.append(
            Row(NAME, f"{label}, {case}", unit, provider[key] * scale, baselines, goal, met, note)
        )
    return rows


# --- child side: the measured trigger loop --------------------------------------------------


def _weak_trigger_class() -> type:
    """The same polling as VideoStatusTrigger through a blocking client (the baselines)."""
    import requests
    from airflow.triggers.base import BaseTrigger, TriggerEvent
    from asgiref.sync import sync_to_async

    from airflow_provider_nanogpt.api.status import normalize_status
    from airflow_provider_nanogpt.events import VideoEvent
    from airflow_provider_nanogpt.polling import PollTracker, next_poll_delay

    class WeakStatusTrigger(BaseTrigger):  # type: ignore[misc]
        def __init__(
            self,
            run_id: str,
            base_url: str,
            headers: dict[str, str],
            poll_interval: float,
            end_time: float,
            offload: bool,
        ) -> None:
            super().__init__()  # type: ignore[no-untyped-call]
            self.run_id = run_id
            self.base_url = base_url
            self.headers = headers
            self.poll_interval = poll_interval
            self.end_time = end_time
            self.offload = offload
            self.started_at = time.time()

        def serialize(self) -> tuple[str, dict[str, Any]]:
            # Never serialised here; the headers (with the key) are left out on purpose.
            return (f"{__name__}.WeakStatusTrigger", {"run_id": self.run_id})

        def fetch(self) -> Any:
            response = requests.get(
                self.base_url + "/api/video/status",
                params={"requestId": self.run_id},
                headers=self.headers,
                timeout=30,
            )
            return response.json()

        async def run(self) -> Any:
            fetch = sync_to_async(self.fetch) if self.offload else None
            tracker = PollTracker(self.run_id)
            while True:
                if time.time() >= self.end_time:
                    waited = time.time() - self.started_at
                    event = VideoEvent.timeout(self.run_id, waited)
                    yield TriggerEvent(event.to_payload())  # type: ignore[no-untyped-call]
                    return
                body = await fetch() if fetch is not None else self.fetch()
                status = normalize_status(body, self.run_id)
                # The same reading (and log line) as the real trigger: only the transport differs.
                if (ended := tracker.read(status, self.log)) is not None:
                    yield TriggerEvent(ended.to_payload())  # type: ignore[no-untyped-call]
                    return
                interval = self.poll_interval
                await asyncio.sleep(next_poll_delay(status, interval, interval))

    return WeakStatusTrigger


def _trigger_factory(mode: str, poll_interval: float) -> Callable[[str], Any]:
    # What the triggers import lazily is loaded up front, as in a triggerer that has already
    # run one trigger: a one-off import must not be charged to the polls.
    import httpx  # noqa: F401
    import tenacity  # noqa: F401

    import airflow_provider_nanogpt.polling  # noqa: F401
    from airflow_provider_nanogpt.hooks.nanogpt import NanoGPTHook
    from airflow_provider_nanogpt.triggers.video import VideoStatusTrigger

    if mode == "provider":

        def provider(run_id: str) -> Any:
            return VideoStatusTrigger(
                run_id=run_id,
                nanogpt_conn_id=CONN_ID,
                poll_interval=poll_interval,
                max_poll_interval=poll_interval,
                end_time=time.time() + TRIGGER_DEADLINE_SECONDS,
            )

        return provider

    settings = NanoGPTHook(CONN_ID).settings()
    weak = _weak_trigger_class()
    headers = settings.headers()

    def baseline(run_id: str) -> Any:
        return weak(
            run_id=run_id,
            base_url=settings.base_url,
            headers=headers,
            poll_interval=poll_interval,
            end_time=time.time() + TRIGGER_DEADLINE_SECONDS,
            offload=mode == "sync_to_async",
        )

    return baseline


async def _ticker(stop: asyncio.Event, lags: list[tuple[float, float]], rss: list[int]) -> None:
    """Sleep 10 ms again and again; record (when, oversleep) and sample RSS every 10 ticks."""
    import psutil

    process = psutil.Process()
    ticks = 0
    while not stop.is_set():
        before = time.perf_counter()
        await asyncio.sleep(TICK_SECONDS)
        lags.append((before, time.perf_counter() - before - TICK_SECONDS))
        ticks += 1
        if ticks % 10 == 0:
            rss.append(process.memory_info().rss)


async def _drive(trigger: Any, events: Counter[str]) -> None:
    generator = trigger.run()
    try:
        async for event in generator:
            events[str(event.payload.get("status"))] += 1
            break  # the triggerer also stops a trigger after its first event
    except Exception as exc:
        events[f"exception {type(exc).__name__}"] += 1
    finally:
        await generator.aclose()


async def _run_case(
    make: Callable[[str], Any],
    arrivals: asyncio.Queue[str | None],
    arrivals_ended: list[float],
    poll_interval: float,
    budget: float,
    ready: Path,
) -> tuple[dict[str, Any], set[asyncio.Task[None]]]:
    """Drive the arriving triggers; returns the figures and the triggers still running when the
    case ran out of time (``budget`` seconds after the last arrival)."""
    import psutil

    stop, lags, rss = asyncio.Event(), [], []  # type: ignore[var-annotated]
    events: Counter[str] = Counter()
    process = psutil.Process()
    gc.collect()
    reset_peak_rss()
    rss_start = process.memory_info().rss
    ticker = asyncio.create_task(_ticker(stop, lags, rss))
    ready.touch()  # noqa: ASYNC240 - before the measured window; tells the parent to start
    cpu, started = time.process_time(), time.perf_counter()
    tasks = []
    while (run_id := await arrivals.get()) is not None:
        tasks.append(asyncio.create_task(_drive(make(run_id), events)))
    pending: set[asyncio.Task[None]] = set()
    if tasks:
        remaining = max(0.0, arrivals_ended[-1] + budget - time.perf_counter())
        _, pending = await asyncio.wait(tasks, timeout=remaining)
    if pending:
        events["unfinished at the case deadline"] = len(pending)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - started
    stop.set()
    await ticker
    peak = max([*rss, process.memory_info().rss, peak_rss_bytes()])
    ms = [lag * 1000 for _, lag in lags]
    # Steady state: every trigger has arrived and had one poll interval to make its first poll.
    # A tick belongs to it when it *ended* there: a stall that began earlier still counts.
    steady_from = arrivals_ended[-1] + poll_interval
    steady = [lag * 1000 for when, lag in lags if when + TICK_SECONDS + lag >= steady_from]
    return {
        "cpu_s": cpu,
        "wall_s": wall,
        "rss_start_mb": rss_start / 2**20,
        "rss_peak_mb": peak / 2**20,
        "lag_p50_ms": percentile(ms, 50),
        "lag_p99_ms": percentile(ms, 99),
        "lag_max_ms": max(ms, default=0.0),
        "lag_steady_p50_ms": percentile(steady, 50),
        "lag_steady_p99_ms": percentile(steady, 99),
        "ticks": len(ms),
        "steady_ticks": len(steady),
        "steady_seconds": max(0.0, started + wall - steady_from),
        "events": dict(events),
    }, pending


async def _child(spec: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    arrivals: asyncio.Queue[str | None] = asyncio.Queue()

    arrivals_ended: list[float] = []

    def read_stdin() -> None:
        for line in sys.stdin:
            text = line.strip()
            if text == END_OF_CASE:
                # Timed here, not when the loop gets round to it: a starved loop is late.
                arrivals_ended.append(time.perf_counter())
                loop.call_soon_threadsafe(arrivals.put_nowait, None)
            elif text:
                loop.call_soon_threadsafe(arrivals.put_nowait, text)

    threading.Thread(target=read_stdin, daemon=True).start()
    for index, mode in enumerate(spec["modes"]):
        make = _trigger_factory(mode, spec["poll_interval"])
        result, pending = await _run_case(
            make,
            arrivals,
            arrivals_ended,
            spec["poll_interval"],
            spec["budget"],
            Path(f"{spec['files']}.{index}.ready"),
        )
        write_json(f"{spec['files']}.{index}.json", result)
        for task in pending:
            task.cancel()  # after the figures are written: cancelling has its own cost
        if pending:
            await asyncio.wait(pending, timeout=60)


def child_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", required=True)
    args = parser.parse_args(argv)
    asyncio.run(_child(json.loads(args.child)))
    return 0


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
