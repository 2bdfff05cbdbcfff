"""Benchmark 2: worker-slot cost of waiting for a video.

Every video renders for 60 simulated seconds (time-scaled). A "slot-second" is a second during
which a worker slot is busy with the task:

* deferrable (the default): time inside ``execute()`` (validate, submit, XCom, one status
  read, then ``TaskDeferred``) plus time inside ``execute_complete()``. The trigger runs in
  between, outside any slot, exactly as in the triggerer. Both calls get a fake context;
* ``deferrable=False``: the whole ``execute()``, which waits on the worker;
* a naive PythonOperator-style loop: ``submit_video`` then ``get_video_status`` +
  ``time.sleep(poll_interval)`` until done.

All three run in a pool of worker threads (one per slot) in this process. Nothing is downloaded
(``output_path`` unset); download cost is benchmark 5.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from benchmarks._airflow import (
    call_as_task,
    provider_waits_scaled,
    task_context,
    task_deferred,
)
from benchmarks._common import (
    CONN_ID,
    DEFAULT_MODEL,
    Row,
    RunContext,
    SimulatorProcess,
    report,
)

NAME = "worker_slots"
POLL_SECONDS = 5.0  # the operator's default poll_interval, in simulated seconds


@dataclass(frozen=True)
class Plan:
    videos: int
    video_seconds: float  # simulated render time of every video
    time_scale: float
    slots: int


FULL = Plan(videos=50, video_seconds=60.0, time_scale=0.025, slots=8)
QUICK = Plan(videos=3, video_seconds=10.0, time_scale=0.01, slots=3)


def _prompt(plan: Plan, index: int) -> str:
    return f"benchmark video {index} [sim:queue=0][sim:render={plan.video_seconds:g}]"


def _operator(plan: Plan, index: int, deferrable: bool) -> Any:
    from airflow_provider_nanogpt.operators.video import GenerateVideoOperator

    return GenerateVideoOperator(
        task_id=f"video_{index}",
        model=DEFAULT_MODEL,
        prompt=_prompt(plan, index),
        duration="5",
        nanogpt_conn_id=CONN_ID,
        deferrable=deferrable,
        poll_interval=POLL_SECONDS * plan.time_scale,
        timeout=600,
    )


def _timed(call: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = call()
    return time.perf_counter() - started, result


def _deferrable(plan: Plan, pool: ThreadPoolExecutor) -> list[float]:
    TaskDeferred = task_deferred()
    ops = [_operator(plan, i, deferrable=True) for i in range(plan.videos)]
    contexts = [task_context(f"video_{i}") for i in range(plan.videos)]

    def execute(i: int) -> tuple[float, Any]:
        started = time.perf_counter()
        try:
            call_as_task(ops[i], ops[i].execute, contexts[i])
        except TaskDeferred as deferred:
            return time.perf_counter() - started, deferred.trigger
        raise RuntimeError("the operator finished without deferring")

    first = list(pool.map(execute, range(plan.videos)))

    async def triggers() -> list[dict[str, Any]]:
        async def one(trigger: Any) -> dict[str, Any]:
            async for event in trigger.run():
                return dict(event.payload)
            raise RuntimeError("trigger ended without an event")

        return await asyncio.gather(*(one(trigger) for _, trigger in first))

    events = asyncio.run(triggers())  # the triggerer's time: no worker slot

    def complete(i: int) -> tuple[float, Any]:
        return _timed(
            lambda: call_as_task(ops[i], ops[i].execute_complete, contexts[i], event=events[i])
        )

    second = list(pool.map(complete, range(plan.videos)))
    _check([result for _, result in second])
    return [a + b for (a, _), (b, _) in zip(first, second, strict=True)]


def _sync(plan: Plan, pool: ThreadPoolExecutor) -> list[float]:
    ops = [_operator(plan, i, deferrable=False) for i in range(plan.videos)]

    def task(i: int) -> tuple[float, Any]:
        return _timed(lambda: call_as_task(ops[i], ops[i].execute, task_context(f"video_{i}")))

    timed = list(pool.map(task, range(plan.videos)))
    _check([result for _, result in timed])
    return [seconds for seconds, _ in timed]


def _naive(plan: Plan, pool: ThreadPoolExecutor) -> list[float]:
    from airflow_provider_nanogpt.hooks.nanogpt import NanoGPTHook

    def task(i: int) -> dict[str, Any]:
        hook = NanoGPTHook(CONN_ID)
        payload = {"model": DEFAULT_MODEL, "prompt": _prompt(plan, i), "duration": "5"}
        run_id = hook.submit_video(payload).run_id
        while not (status := hook.get_video_status(run_id)).is_terminal:
            time.sleep(POLL_SECONDS * plan.time_scale)
        return {"status": "success" if status.video_url else str(status.state)}

    timed = list(pool.map(lambda i: _timed(lambda: task(i)), range(plan.videos)))
    _check([result for _, result in timed])
    return [seconds for seconds, _ in timed]


def _check(results: list[Any]) -> None:
    bad = [r for r in results if not isinstance(r, dict) or r.get("status") != "success"]
    if bad:
        raise RuntimeError(f"{len(bad)} videos did not succeed: {bad[:3]}")


def run(ctx: RunContext) -> list[Row]:
    plan = QUICK if ctx.quick else FULL
    measured: dict[str, list[float]] = {}
    for mode, method in (("deferrable", _deferrable), ("sync", _sync), ("naive", _naive)):
        with (
            SimulatorProcess(
                log_dir=ctx.log_dir,
                time_scale=plan.time_scale,
            ) as sim,
            ThreadPoolExecutor(max_workers=plan.slots) as pool,
            provider_waits_scaled(plan.time_scale) as scaled,
        ):
            started = time.perf_counter()
            measured[mode] = method(plan, pool)
            wall = time.perf_counter() - started
            submitted = sim.state()["submits_accepted"]
        values = measured[mode]
        report(
            f"worker_slots {mode:<10} {plan.videos} videos, {plan.slots} slots: slot-seconds "
            f"per video mean {sum(values) / len(values):.3f} max {max(values):.3f} "
            f"(measured at time_scale {plan.time_scale}); wall {wall:.1f}s; "
            f"submits {submitted}; scaled to the clock: {', '.join(scaled) or 'nothing'}"
        )
    deferrable = sum(measured["deferrable"]) / plan.videos
    # Sync and naive spend their slot time waiting on the simulated clock: scale back to real
    # speed. Deferrable never waits on that clock, so its time is already real-speed.
    sync = sum(measured["sync"]) / plan.videos / plan.time_scale
    naive = sum(measured["naive"]) / plan.videos / plan.time_scale
    return [
        Row(
            NAME,
            f"worker slot-seconds per {plan.video_seconds:g} s video, deferrable",
            "s",
            deferrable,
            [("deferrable=False", sync), ("naive polling loop", naive)],
            "< 2 s",
            deferrable < 2.0,
            note="baselines scaled to real speed",
        ),
        Row(
            NAME,
            "deferrable slot-seconds, worst video",
            "s",
            max(measured["deferrable"]),
            [("deferrable=False, worst", max(measured["sync"]) / plan.time_scale)],
        ),
    ]
