"""Delivering a run whose wait ended in success: the status read to deliver it decides."""

from __future__ import annotations

import re

import pytest

from airflow_provider_nanogpt.exceptions import NanoGPTCompletedWithoutVideoError
from airflow_provider_nanogpt.hooks.nanogpt import NanoGPTHook
from airflow_provider_nanogpt.operators.video import GenerateVideoOperator
from airflow_provider_nanogpt.simulator import NanoGPTSimulator
from benchmarks._airflow import task_context

# (simulator markers, what the message must say about the run as the delivery read found it)
UNDELIVERABLE = {
    "completed without a URL": ("[sim:queue=0] [sim:render=0] [sim:no_url]", "completed"),
    "still rendering": ("[sim:queue=0] [sim:render=600]", "says running"),
}


@pytest.mark.parametrize(("markers", "state"), UNDELIVERABLE.values(), ids=UNDELIVERABLE)
def test_a_run_with_no_video_to_fetch_fails_saying_what_nanogpt_answered(
    nanogpt_connection: NanoGPTSimulator, markers: str, state: str
) -> None:
    hook = NanoGPTHook("nanogpt_default")
    run_id = hook.submit_video(
        {"model": "kling-video-v2", "prompt": f"a quiet harbour {markers}", "duration": "5"}
    ).run_id
    task = GenerateVideoOperator(task_id="generate", model="kling-video-v2", prompt="x")
    context = task_context("generate")
    with pytest.raises(NanoGPTCompletedWithoutVideoError) as raised:
        task.execute_complete(context, event={"status": "success", "run_id": run_id})
    message = str(raised.value)
    assert run_id in message and state in message
    # One status read was made to deliver it: no count of answers that were never given.
    assert not re.search(r"\d+ status answers", message), message
    assert raised.value.run_id == run_id
