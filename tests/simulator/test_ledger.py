"""The simulator's ledger, and the suite-wide check built on it, see a task paying twice."""

from __future__ import annotations

import time

import pytest

from airflow_provider_nanogpt.hooks.nanogpt import NanoGPTHook
from airflow_provider_nanogpt.simulator import NanoGPTSimulator
from tests.conftest import FAST_RETRIES, newly_charged_twice

TAG = "7f1c2b8e-1111-4a4a-9b9b-000000000001"


def _submit(prompt: str, tag: str | None = TAG) -> str:
    payload = {"model": "kling-video-v2", "prompt": prompt, "duration": "5"}
    if tag:
        payload["conversationUUID"] = tag
    return NanoGPTHook(retry_policy=FAST_RETRIES).submit_video(payload).run_id


@pytest.mark.charges_twice("the detector's own test pays twice on purpose")
def test_two_charges_under_one_tag_are_caught_once(nanogpt_connection: NanoGPTSimulator) -> None:
    first, second = _submit("a"), _submit("a")
    assert nanogpt_connection.state()["ledger"] == {TAG: [first, second]}
    seen: set[tuple[int, str]] = set()
    assert newly_charged_twice([nanogpt_connection], seen) == {
        (id(nanogpt_connection), TAG): [first, second]
    }
    assert newly_charged_twice([nanogpt_connection], seen) == {}  # reported once


def test_a_refunded_job_and_untagged_jobs_are_not_charges(
    nanogpt_connection: NanoGPTSimulator,
) -> None:
    _submit("refunded [sim:fail]")
    kept = _submit("kept")
    _submit("no tag", tag=None)
    _submit("no tag", tag=None)
    deadline = time.monotonic() + 10  # the failed job ends (and is refunded) in about 0.2 s
    while len(nanogpt_connection.state()["ledger"][TAG]) > 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    ledger = nanogpt_connection.state()["ledger"]
    assert ledger == {TAG: [kept]}
    assert newly_charged_twice([nanogpt_connection], set()) == {}
