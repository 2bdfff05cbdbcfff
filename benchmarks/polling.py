"""Benchmark 3: polling efficiency, ETA-guided vs fixed-interval.

The same ``VideoStatusTrigger`` runs twice per video length:

* ETA-guided (as shipped): ``poll_interval`` 5 s, ``max_poll_interval`` 60 s. The simulator's
  flat status shape reports ``estimatedTimeRemaining`` while a job is queued or rendering, and the
  trigger sleeps until then (capped at 60 s);
* fixed: the same trigger with ``max_poll_interval == poll_interval`` (5 s), so it ignores the
  estimate. Same shape, same jobs, same code: only ETA guidance differs.

Each trigger starts the moment its job is submitted (the operator defers right after
submitting). Figures: status calls per video (counted by the simulator) and the detection delay,
from the simulated completion instant to the trigger's event, in simulated seconds.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from benchmarks._airflow import provider_waits_scaled
from benchmarks._common import (
    CONN_ID,
    JobSubmitter,
    Row,
    RunContext,
    SimulatorProcess,
    percentile,
    report,
)

NAME = "polling"
POLL_SECONDS = 5.0
MAX_POLL_SECONDS = 60.0


@dataclass(frozen=True)
class Plan:
    lengths: tuple[float, ...]  # simulated seconds from submission to completion, one per video
    time_scale: float
    # Real seconds between video starts. Each trigger builds an HTTP client that blocks the loop
    # for ~25 ms (see the triggerer benchmark); started all at once, 80 of them would delay
    # every first poll by ~2 s real (40 simulated s) and swamp the difference being measured.
    stagger: float


def _spread(low: float, high: float, count: int) -> tuple[float, ...]:
    step = (high - low) / max(count - 1, 1)
    return tuple(round(low + i * step, 1) for i in range(count))


FULL = Plan(lengths=_spread(20, 240, 80), time_scale=0.05, stagger=0.05)
QUICK = Plan(lengths=(10.0, 25.0, 40.0), time_scale=0.01, stagger=0.01)
MODES = {"eta": MAX_POLL_SECONDS, "fixed": POLL_SECONDS}


def _prompt(length: float) -> str:
    queue = min(5.0, length / 4)
    return f"benchmark [sim:queue={queue:g}][sim:render={length - queue:g}]"


async def _follow(
    submitter: JobSubmitter, plan: Plan, mode: str, length: float, start: float
) -> dict[str, Any]:
    from airflow_provider_nanogpt.triggers.video import VideoStatusTrigger

    await asyncio.sleep(start)
    loop = asyncio.get_running_loop()
    run_id, created = await loop.run_in_executor(None, submitter.submit_one, _prompt(length))
    scale = plan.time_scale
    trigger = VideoStatusTrigger(
        run_id=run_id,
        nanogpt_conn_id=CONN_ID,
        poll_interval=POLL_SECONDS * scale,
        max_poll_interval=MODES[mode] * scale,
        end_time=time.time() + 10 * length * scale + 30,
    )
    async for event in trigger.run():
        detected = time.time()
        status = event.payload["status"]
        break
    return {
        "mode": mode,
        "run_id": run_id,
        "status": status,
        "delay_sim_s": (detected - (created + length * scale)) / scale,
    }


def run(ctx: RunContext) -> list[Row]:
    plan = QUICK if ctx.quick else FULL
    with (
        SimulatorProcess(
            log_dir=ctx.log_dir,
            time_scale=plan.time_scale,
            status_shape="flat",
        ) as sim,
        JobSubmitter(sim.url, workers=8) as submitter,
        provider_waits_scaled(plan.time_scale) as scaled,
    ):

        async def everything() -> list[dict[str, Any]]:
            # Interleave the modes so both see the same load at the same moments.
            pairs = [(length, mode) for length in plan.lengths for mode in MODES]
            return await asyncio.gather(
                *(
                    _follow(submitter, plan, mode, length, index * plan.stagger)
                    for index, (length, mode) in enumerate(pairs)
                )
            )

        results = asyncio.run(everything())
        polls = {job["runId"]: job["polls"] for job in sim.state()["jobs"]}

    rows_by_mode: dict[str, dict[str, float]] = {}
    for mode in MODES:
        mine = [r for r in results if r["mode"] == mode]
        failed = [r for r in mine if r["status"] != "success"]
        if failed:
            raise RuntimeError(f"{len(failed)} {mode} triggers did not succeed: {failed[:3]}")
        calls = [polls[r["run_id"]] for r in mine]
        delays = [r["delay_sim_s"] for r in mine]
        stats = {
            "calls": sum(calls) / len(calls),
            "delay_mean": sum(delays) / len(delays),
            "delay_p95": percentile(delays, 95),
            "delay_max": max(delays),
        }
        rows_by_mode[mode] = stats
        report(
            f"polling {mode:<5} {len(mine)} videos of {min(plan.lengths):g}-"
            f"{max(plan.lengths):g} simulated s at time_scale {plan.time_scale}: "
            f"calls/video {stats['calls']:.1f} (min {min(calls)}, max {max(calls)}); "
            f"detection delay mean {stats['delay_mean']:.2f} p95 {stats['delay_p95']:.2f} "
            f"max {stats['delay_max']:.2f} simulated s; scaled to the clock: "
            f"{', '.join(scaled) or 'nothing'}"
        )
    eta, fixed = rows_by_mode["eta"], rows_by_mode["fixed"]
    baseline = "fixed 5 s polling"
    return [
        Row(
            NAME,
            "status calls per video, ETA-guided",
            "",
            eta["calls"],
            [(baseline, fixed["calls"])],
            "fewer calls",
            eta["calls"] < fixed["calls"],
        ),
        Row(
            NAME,
            "detection delay, mean",
            "s",
            eta["delay_mean"],
            [(baseline, fixed["delay_mean"])],
            "no worse",
            # Slack of 10% of the poll interval: the standard error of each mean is ~0.15 s.
            eta["delay_mean"] <= fixed["delay_mean"] + 0.1 * POLL_SECONDS,
            note="simulated seconds",
        ),
        Row(
            NAME,
            "detection delay, p95",
            "s",
            eta["delay_p95"],
            [(baseline, fixed["delay_p95"])],
            note="simulated seconds",
        ),
    ]
