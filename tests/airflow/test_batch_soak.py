"""A 200-video mapped batch at NanoGPT's real rate limit, run by Airflow (a soak: minutes).

A file of its own, named to be collected early: `make test` spreads test files over workers, and
this one, started first, runs beside the rest instead of after it.
"""

from __future__ import annotations

import contextlib
import threading
import time

import pytest

from airflow_provider_nanogpt.simulator import NanoGPTSimulator
from tests.airflow.harness import run_dag

pytestmark = pytest.mark.usefixtures("airflow_db")


# Another DAG's submissions on the same key: with the batch's first, they fill NanoGPT's 50 a
# minute.
OTHER_DAG_SUBMITS = 49


def _other_dag_fills_the_window_once_the_batch_starts(sim: NanoGPTSimulator) -> threading.Thread:
    """Another DAG uses up the rate-limit window just after the batch's first video is accepted,
    so the batch meets the limit however long dag.test() takes to start (a window filled before
    it started could expire first on a busy machine). One request each: a 429 is not re-sent."""
    from airflow_provider_nanogpt.exceptions import NanoGPTError
    from airflow_provider_nanogpt.hooks.nanogpt import NanoGPTHook

    def fill() -> None:
        deadline = time.monotonic() + 600
        while sim.state()["submits_accepted"] == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        other_dag = NanoGPTHook()
        for i in range(OTHER_DAG_SUBMITS):
            # A refusal: the batch took that place in the window first.
            with contextlib.suppress(NanoGPTError):
                other_dag.submit_video(
                    {"model": "kling-video-v2", "prompt": f"other DAG {i}"}, max_rate_limit_sleep=0
                )
        other_dag.close()

    thread = threading.Thread(target=fill, daemon=True)
    thread.start()
    return thread


@pytest.mark.slow
def test_200_item_batch_at_the_real_rate_limit(nanogpt_connection: NanoGPTSimulator) -> None:
    # 50 submissions per (time-scaled: 30 s) minute, as NanoGPT allows. Another DAG uses up the
    # window as the batch starts, so the batch hits the limit and waits out about four windows.
    sim = nanogpt_connection
    sim.configure(time_scale=0.5, rate_limit_per_minute=50, queue_seconds=0.1, render_seconds=0.1)
    other_dag = _other_dag_fills_the_window_once_the_batch_starts(sim)
    outcome = run_dag("nanogpt_batch_200", {})
    other_dag.join(timeout=60)
    assert outcome.state == "success"
    assert outcome.task_states == {f"generate[{i}]": "success" for i in range(200)}
    results = [v for k, v in outcome.xcoms.items() if k[:2] == ("generate", "return_value")]
    assert len(results) == 200
    assert len({r["run_id"] for r in results}) == 200
    state = sim.state()
    others = [job for job in state["jobs"] if job["payload"]["prompt"].startswith("other DAG")]
    assert others, "the other DAG's submissions never ran"
    assert state["submits_accepted"] == len(others) + 200
    # The batch's own requests: more than its videos, so the limit was really hit, and waited out.
    assert state["submit_requests"] - OTHER_DAG_SUBMITS > 200
