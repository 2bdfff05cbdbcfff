"""A 200-video mapped batch at NanoGPT's real rate limit, run by Airflow (a soak: minutes).

A file of its own, named to be collected early: `make test` spreads test files over workers, and
this one, started first, runs beside the rest instead of after it.
"""

from __future__ import annotations

import pytest

from airflow_provider_nanogpt.simulator import NanoGPTSimulator
from tests.airflow.harness import run_dag

pytestmark = pytest.mark.usefixtures("airflow_db")


@pytest.mark.slow
def test_200_item_batch_at_the_real_rate_limit(nanogpt_connection: NanoGPTSimulator) -> None:
    from airflow_provider_nanogpt.hooks.nanogpt import NanoGPTHook

    # 50 submissions per (time-scaled: 30 s) minute, as NanoGPT allows. Another DAG has just used
    # 45 of them, so the batch hits the limit on its sixth submission however fast dag.test()
    # runs the mapped tasks, and then waits out about four windows.
    sim = nanogpt_connection
    sim.configure(time_scale=0.5, rate_limit_per_minute=50, queue_seconds=0.1, render_seconds=0.1)
    other_dag = NanoGPTHook()
    for i in range(45):
        other_dag.submit_video({"model": "kling-video-v2", "prompt": f"other DAG {i}"})
    other_dag.close()
    outcome = run_dag("nanogpt_batch_200", {})
    assert outcome.state == "success"
    assert outcome.task_states == {f"generate[{i}]": "success" for i in range(200)}
    results = [v for k, v in outcome.xcoms.items() if k[:2] == ("generate", "return_value")]
    assert len(results) == 200
    assert len({r["run_id"] for r in results}) == 200
    state = sim.state()
    assert state["submits_accepted"] == 45 + 200
    assert state["submit_requests"] > 45 + 200  # the limit was really hit, and waited out
