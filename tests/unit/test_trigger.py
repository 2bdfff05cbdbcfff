"""VideoStatusTrigger driven directly under asyncio against the simulator."""

from __future__ import annotations

import asyncio
import importlib
import json
import time
from typing import Any

import pytest

from airflow_provider_nanogpt.api.status import VideoState, VideoStatus
from airflow_provider_nanogpt.hooks.nanogpt import NanoGPTHook
from airflow_provider_nanogpt.simulator import NanoGPTSimulator
from airflow_provider_nanogpt.triggers.video import VideoStatusTrigger, next_poll_delay
from tests.conftest import CANARY_KEY, FAST_RETRIES, connection_json

KLING = {"model": "kling-video-v2", "prompt": "a glass of water on a table"}


def submit(prompt_suffix: str = "") -> str:
    hook = NanoGPTHook(retry_policy=FAST_RETRIES)
    try:
        return hook.submit_video({**KLING, "prompt": KLING["prompt"] + prompt_suffix}).run_id
    finally:
        hook.close()


async def first_event(trigger: VideoStatusTrigger) -> dict[str, Any]:
    events = [event.payload async for event in trigger.run()]
    assert len(events) == 1, events  # exactly one event, ever
    return events[0]


def trigger_for(run_id: str, **kwargs: Any) -> VideoStatusTrigger:
    kwargs.setdefault("poll_interval", 0.05)
    kwargs.setdefault("end_time", time.time() + 30)
    return VideoStatusTrigger(run_id=run_id, **kwargs)


def test_serialize_round_trip_through_the_class_path() -> None:
    try:
        from airflow.sdk.serde import deserialize, serialize
    except ImportError:  # Airflow < 3.2
        from airflow.serialization.serde import deserialize, serialize  # type: ignore[no-redef]

    trigger = VideoStatusTrigger(
        "vid_1",
        "my_conn",
        7.5,
        end_time=1_900_000_000.0,
        started_at=1.0,
        execution_deadline=1_800_000_000.0,
        execution_timeout=3600.0,
        model="kling-video-v2",
    )
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_nanogpt.triggers.video.VideoStatusTrigger"
    assert all(isinstance(v, str | int | float) for v in kwargs.values())
    module, _, name = classpath.rpartition(".")
    rebuilt = getattr(importlib.import_module(module), name)(**deserialize(serialize(kwargs)))
    assert rebuilt.serialize() == (classpath, kwargs)
    assert CANARY_KEY not in json.dumps(kwargs)


@pytest.mark.parametrize(
    ("marker", "status", "reason"),
    [
        ("", "success", None),
        (" [sim:fail]", "failed", None),
        (" [sim:nsfw]", "failed", None),
        (" [sim:cancel]", "cancelled", None),
        # Charged but never given a URL: not "failed" (that would mean refunded).
        (" [sim:no_url]", "error", "completed_without_url"),
        # The URL shows up after a few "completed" answers without one.
        (" [sim:no_url_polls=3]", "success", None),
    ],
)
async def test_terminal_states_become_one_event(
    nanogpt_connection: NanoGPTSimulator, marker: str, status: str, reason: str | None
) -> None:
    run_id = submit(marker)
    event = await first_event(trigger_for(run_id))
    assert event["status"] == status
    assert event.get("reason") == reason
    assert event["run_id"] == run_id
    assert "video_url" not in event  # events are logged by the triggerer: no URLs in them
    assert event.get("is_nsfw", False) == ("nsfw" in marker)
    assert CANARY_KEY not in json.dumps(event)


@pytest.mark.parametrize(
    "marker",
    [" [sim:status404=3]", " [sim:status429=3]", " [sim:status500=3]", " [sim:shape=alternate]"],
)
async def test_transient_status_faults_are_tolerated(
    nanogpt_connection: NanoGPTSimulator, marker: str
) -> None:
    run_id = submit(marker)
    event = await first_event(trigger_for(run_id))
    assert event["status"] == "success"
    assert nanogpt_connection.state()["submits_accepted"] == 1


@pytest.mark.parametrize("kind", ["reset", "malformed", "503", "timeout"])
async def test_network_level_faults_are_tolerated(
    nanogpt_connection: NanoGPTSimulator, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    run_id = submit()
    monkeypatch.setenv(
        "AIRFLOW_CONN_NANOGPT_DEFAULT",
        connection_json(nanogpt_connection.url, request_timeout=0.5),
    )
    nanogpt_connection.add_fault(endpoint="status", kind=kind, count=4, delay=100)
    event = await first_event(trigger_for(run_id))
    assert event["status"] == "success"
    state = nanogpt_connection.state()
    assert state["submits_accepted"] == 1
    assert state["requests"]["GET /api/video/status"] >= 5  # the faults were really hit


async def test_deadline_yields_timeout_with_run_id(nanogpt_connection: NanoGPTSimulator) -> None:
    run_id = submit(" [sim:never]")
    started = time.time()
    event = await first_event(trigger_for(run_id, end_time=started + 0.5, started_at=started))
    assert event["status"] == "timeout"
    assert event["run_id"] == run_id
    assert event["waited_seconds"] >= 0.5
    assert time.time() - started < 5


@pytest.mark.timing
@pytest.mark.parametrize("first", ["execution_deadline", "end_time"])
async def test_the_earlier_of_execution_deadline_and_end_time_ends_the_wait(
    nanogpt_connection: NanoGPTSimulator, first: str
) -> None:
    run_id = submit(" [sim:never]")
    started = time.time()
    soon, late = started + 1.0, started + 120.0
    trigger = trigger_for(
        run_id,
        started_at=started,
        end_time=soon if first == "end_time" else late,
        execution_deadline=soon if first == "execution_deadline" else late,
        execution_timeout=1.0 if first == "execution_deadline" else 120.0,
    )
    # Rebuilt from its kwargs, as the triggerer does: the deadline survives serialization.
    _, kwargs = trigger.serialize()
    event = await first_event(VideoStatusTrigger(**kwargs))
    elapsed = time.time() - started
    assert 1.0 <= elapsed < 3.0
    assert (event["status"], event["run_id"]) == ("timeout", run_id)
    named = f"execution_timeout (1 s) reached while waiting for run {run_id}" in event["message"]
    assert named == (first == "execution_deadline")
    assert ("execution_timeout" in event) == (first == "execution_deadline")
    # The try's deadline travels in the event, for a resume that has no kwargs (dag.test()).
    assert event["execution_deadline"] == trigger.execution_deadline


async def test_deadline_already_passed(nanogpt_connection: NanoGPTSimulator) -> None:
    event = await first_event(trigger_for("vid_x", end_time=time.time() - 1))
    assert event["status"] == "timeout"
    assert nanogpt_connection.state()["requests"] == {}


async def test_unknown_run_ends_with_error_after_a_few_404s(
    nanogpt_connection: NanoGPTSimulator,
) -> None:
    event = await first_event(trigger_for("vid_unknown"))
    assert (event["status"], event["reason"]) == ("error", "not_found")
    assert "vid_unknown" in event["message"]
    assert nanogpt_connection.state()["requests"]["GET /api/video/status"] == 4


async def test_auth_error_ends_at_once(
    simulator: NanoGPTSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.conftest import connection_json

    monkeypatch.setenv("AIRFLOW_CONN_NANOGPT_DEFAULT", connection_json(simulator.url, "sk-bad-key"))
    event = await first_event(trigger_for("vid_x"))
    # The reason re-raises as NanoGPTAuthError on the worker, not as a generic error.
    assert (event["status"], event["reason"]) == ("error", "auth")
    assert simulator.state()["requests"].get("GET /api/video/status") == 1


async def test_persistent_errors_end_with_error_not_an_exception(
    nanogpt_connection: NanoGPTSimulator,
) -> None:
    nanogpt_connection.add_fault(endpoint="status", kind="500", count=1000)
    event = await first_event(trigger_for("vid_x", max_consecutive_errors=2))
    assert event["status"] == "error"
    assert "3 status checks in a row failed" in event["message"]


async def test_a_daily_cap_on_status_checks_is_waited_out_not_counted_as_failures(
    nanogpt_connection: NanoGPTSimulator, capfd: pytest.CaptureFixture[str]
) -> None:
    run_id = submit(" [sim:queue=0][sim:render=0]")
    # Three status calls' worth of answers (each call tries three times), resetting in 0.04 s:
    # counted as failures, they would end the wait after two calls.
    nanogpt_connection.add_fault(endpoint="status", kind="daily_cap", count=9, retry_after=2)
    event = await first_event(trigger_for(run_id, max_consecutive_errors=2))
    assert event["status"] == "success"
    out = capfd.readouterr()
    assert "NanoGPT's daily request cap for this API key is reached" in out.out + out.err


async def test_missing_connection_is_an_error_event(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_NANOGPT_DEFAULT", raising=False)
    event = await first_event(trigger_for("vid_x"))
    assert event["status"] == "error"
    assert "AIRFLOW_CONN_NANOGPT_DEFAULT" in event["message"]


@pytest.mark.timing
async def test_progress_is_logged_each_poll(
    nanogpt_connection: NanoGPTSimulator, capfd: pytest.CaptureFixture[str]
) -> None:
    run_id = submit(" [sim:shape=flat]")
    # A low ceiling makes the trigger poll during rendering instead of sleeping past it.
    await first_event(trigger_for(run_id, max_poll_interval=0.05))
    logged = capfd.readouterr().out
    assert f"NanoGPT video {run_id} is running:" in logged
    assert "% done, about" in logged
    assert CANARY_KEY not in logged


def _open_clients() -> int:
    from airflow_provider_nanogpt.hooks import async_clients

    return len(async_clients._clients.get(asyncio.get_running_loop(), {}))


async def test_the_wait_releases_its_client_and_on_kill_only_logs(
    nanogpt_connection: NanoGPTSimulator, capfd: pytest.CaptureFixture[str]
) -> None:
    trigger = trigger_for(submit())
    await first_event(trigger)
    assert _open_clients() == 0  # the wait closed what it opened
    await trigger.on_kill()
    assert "no cancel endpoint" in capfd.readouterr().out
    assert nanogpt_connection.state()["submits_accepted"] == 1


async def test_a_cancelled_wait_releases_its_client(nanogpt_connection: NanoGPTSimulator) -> None:
    # A triggerer restart or redistribution cancels run() mid-wait.
    run = asyncio.ensure_future(first_event(trigger_for(submit(" [sim:never]"))))
    for _ in range(500):
        if nanogpt_connection.state()["requests"].get("GET /api/video/status", 0) >= 2:
            break
        await asyncio.sleep(0.02)
    assert _open_clients() == 1
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert _open_clients() == 0
    assert nanogpt_connection.state()["submits_accepted"] == 1


def _status(eta: float | None) -> VideoStatus:
    return VideoStatus(run_id="r", state=VideoState.RUNNING, eta_seconds=eta)


def test_eta_guided_delay_never_polls_sooner_than_the_interval() -> None:
    assert 4.5 <= next_poll_delay(_status(None), 5, 60) <= 5
    assert 4.5 <= next_poll_delay(_status(1), 5, 60) <= 5
    # Just after the estimated finish, never before it.
    assert 30.5 <= next_poll_delay(_status(30), 5, 60) <= 32.1
    assert 54 <= next_poll_delay(_status(600), 5, 60) <= 60
