"""NanoGPTHook against the simulator over real loopback sockets."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_provider_nanogpt.api.retry import RetryPolicy, proves_nothing_created
from airflow_provider_nanogpt.api.status import VideoState
from airflow_provider_nanogpt.exceptions import (
    NanoGPTAuthError,
    NanoGPTConfigurationError,
    NanoGPTConnectionError,
    NanoGPTContentPolicyError,
    NanoGPTDailyCapError,
    NanoGPTDownloadError,
    NanoGPTError,
    NanoGPTInsufficientBalanceError,
    NanoGPTInvalidRequestError,
    NanoGPTNotFoundError,
    NanoGPTPayloadTooLargeError,
    NanoGPTRateLimitError,
    NanoGPTServerError,
)
from airflow_provider_nanogpt.hooks.nanogpt import NanoGPTHook
from airflow_provider_nanogpt.simulator import NanoGPTSimulator
from tests.conftest import CANARY_KEY, FAST_RETRIES, connection_json

KLING = {"model": "kling-video-v2", "prompt": "a lighthouse in a storm", "duration": "5"}


@pytest.fixture
def hook(nanogpt_connection: NanoGPTSimulator) -> Iterator[NanoGPTHook]:
    hook = NanoGPTHook(retry_policy=FAST_RETRIES)
    yield hook
    hook.close()


def wait_until_done(hook: NanoGPTHook, run_id: str, timeout: float = 10.0) -> VideoState:
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = hook.get_video_status(run_id)
        if status.is_terminal:
            return status.state
        time.sleep(0.05)
    raise AssertionError(f"{run_id} did not finish")


# --- happy paths ------------------------------------------------------------------------------


def test_submit_returns_run_cost_and_balance(
    hook: NanoGPTHook, simulator: NanoGPTSimulator
) -> None:
    submission = hook.submit_video(KLING)
    assert submission.run_id.startswith("vid_")
    assert submission.cost is not None and submission.cost > 0
    assert submission.payment_source == "USD"
    assert submission.remaining_balance == pytest.approx(100.0 - submission.cost)
    state = simulator.state()
    assert state["submits_accepted"] == 1
    (job,) = state["jobs"]
    assert job["payload"]["prompt"] == KLING["prompt"]
    assert job["api_key_header"] == "x-api-key"


@pytest.mark.parametrize("shape", ["nested", "flat", "alternate"])
def test_status_shapes_reach_completed_with_url(
    hook: NanoGPTHook, simulator: NanoGPTSimulator, shape: str
) -> None:
    # Two seconds in progress: a poll every 20 ms sees it even on a loaded machine (the
    # default 0.16 s render was missed once in CI).
    prompt = f"{KLING['prompt']} [sim:shape={shape}] [sim:render=100]"
    run_id = hook.submit_video({**KLING, "prompt": prompt}).run_id
    seen = set()
    deadline = time.time() + 10
    while time.time() < deadline:
        status = hook.get_video_status(run_id)
        seen.add(status.state)
        if status.is_terminal:
            break
        time.sleep(0.02)
    assert status.state is VideoState.COMPLETED
    assert status.video_url and run_id in status.video_url
    assert seen >= {VideoState.RUNNING, VideoState.COMPLETED}


async def test_async_status_matches_sync(hook: NanoGPTHook) -> None:
    run_id = hook.submit_video({**KLING, "prompt": "x [sim:shape=flat]"}).run_id
    wait_until_done(hook, run_id)
    async_hook = NanoGPTHook(retry_policy=FAST_RETRIES)
    try:
        assert await async_hook.aget_video_status(run_id) == hook.get_video_status(run_id)
    finally:
        await async_hook.aclose()


@pytest.mark.parametrize(
    ("marker", "state"),
    [
        ("fail", VideoState.FAILED),
        ("nsfw", VideoState.FAILED),
        ("cancel", VideoState.CANCELLED),
    ],
)
def test_terminal_failures(hook: NanoGPTHook, marker: str, state: VideoState) -> None:
    run_id = hook.submit_video({**KLING, "prompt": f"x [sim:{marker}]"}).run_id
    assert wait_until_done(hook, run_id) is state
    status = hook.get_video_status(run_id)
    assert status.error
    assert status.is_nsfw == (marker == "nsfw")


def test_completed_without_url_reads_as_completed_not_failed(hook: NanoGPTHook) -> None:
    run_id = hook.submit_video({**KLING, "prompt": "x [sim:no_url]"}).run_id
    assert wait_until_done(hook, run_id) is VideoState.COMPLETED
    status = hook.get_video_status(run_id)
    assert not status.is_deliverable and status.error is None


def test_balance_models_recover_and_test_connection(hook: NanoGPTHook) -> None:
    assert hook.get_balance().usd == pytest.approx(100.0)
    models = {m.id: m for m in hook.list_video_models()}
    assert "kling-video-v2" in models and models["kling-video-v2"].pricing["currency"] == "USD"
    run = hook.submit_video({**KLING, "conversationUUID": "tag-1"})
    recovered = hook.recover_runs(conversation_uuid="tag-1")
    assert [r.run_id for r in recovered] == [run.run_id]
    ok, message = hook.test_connection()
    assert ok and "balance" in message


def test_test_connection_never_submits(hook: NanoGPTHook, simulator: NanoGPTSimulator) -> None:
    hook.test_connection()
    assert simulator.state()["submit_requests"] == 0


# --- the error table --------------------------------------------------------------------------


def test_wrong_key_is_auth_error(
    simulator: NanoGPTSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_NANOGPT_DEFAULT", connection_json(simulator.url, "sk-nano-wrong")
    )
    with pytest.raises(NanoGPTAuthError, match="password field"):
        NanoGPTHook(retry_policy=FAST_RETRIES).get_balance()
    ok, message = NanoGPTHook(retry_policy=FAST_RETRIES).test_connection()
    assert not ok and "401" in message


def test_job_of_another_key_is_403(monkeypatch: pytest.MonkeyPatch) -> None:
    with NanoGPTSimulator(api_key=None, time_scale=0.02, quiet=True) as sim:
        monkeypatch.setenv("AIRFLOW_CONN_NANOGPT_DEFAULT", connection_json(sim.url, "sk-nano-a"))
        run_id = NanoGPTHook(retry_policy=FAST_RETRIES).submit_video(KLING).run_id
        monkeypatch.setenv("AIRFLOW_CONN_NANOGPT_DEFAULT", connection_json(sim.url, "sk-nano-b"))
        with pytest.raises(NanoGPTAuthError):
            NanoGPTHook(retry_policy=FAST_RETRIES).get_video_status(run_id)


def test_insufficient_balance_creates_nothing(
    hook: NanoGPTHook, simulator: NanoGPTSimulator
) -> None:
    simulator.configure(balance_usd=0.01)
    with pytest.raises(NanoGPTInsufficientBalanceError) as info:
        hook.submit_video(KLING)
    assert info.value.required_balance and info.value.required_balance > 0.01
    assert simulator.state()["submits_accepted"] == 0


def test_content_policy_at_submit(hook: NanoGPTHook, simulator: NanoGPTSimulator) -> None:
    with pytest.raises(NanoGPTContentPolicyError):
        hook.submit_video({**KLING, "prompt": "x [sim:blocked]"})
    assert simulator.state()["submits_accepted"] == 0


def test_model_specific_400(hook: NanoGPTHook) -> None:
    with pytest.raises(NanoGPTInvalidRequestError, match="requires an input image"):
        hook.submit_video({"model": "kling-v21-standard", "prompt": "x"})


def test_payload_too_large(hook: NanoGPTHook) -> None:
    huge = "data:image/png;base64," + "A" * (7 * 1024 * 1024)
    with pytest.raises((NanoGPTPayloadTooLargeError, NanoGPTInvalidRequestError)):
        hook.submit_video({**KLING, "imageDataUrl": huge})


def test_unknown_run_is_not_found(hook: NanoGPTHook) -> None:
    with pytest.raises(NanoGPTNotFoundError):
        hook.get_video_status("vid_doesnotexist")


@pytest.mark.parametrize("body_shape", ["string", "typed", "openai", "openapi"])
def test_every_error_body_shape_yields_its_message(
    hook: NanoGPTHook, simulator: NanoGPTSimulator, body_shape: str
) -> None:
    simulator.add_fault(endpoint="balance", kind="500", count=10, body_shape=body_shape)
    with pytest.raises(NanoGPTServerError) as info:
        hook.get_balance()
    assert "HTTP 500" in str(info.value)
    assert "could not check the balance: HTTP 500 |" not in str(info.value), "message lost"


# --- retry policy -----------------------------------------------------------------------------


def test_status_retries_5xx_and_malformed_then_succeeds(
    hook: NanoGPTHook, simulator: NanoGPTSimulator
) -> None:
    run_id = hook.submit_video(KLING).run_id
    simulator.add_fault(endpoint="status", kind="503", count=1)
    simulator.add_fault(endpoint="status", kind="malformed", count=1)
    simulator.add_fault(endpoint="status", kind="reset", count=1)
    assert hook.get_video_status(run_id).run_id == run_id
    assert simulator.state()["requests"].get("GET /api/video/status") == 4


def test_status_gives_up_after_max_retries(hook: NanoGPTHook, simulator: NanoGPTSimulator) -> None:
    simulator.add_fault(endpoint="status", kind="500", count=50)
    with pytest.raises(NanoGPTServerError):
        hook.get_video_status("vid_x")
    assert (
        simulator.state()["requests"].get("GET /api/video/status") == FAST_RETRIES.max_retries + 1
    )


def test_submit_429_waits_retry_after_then_submits_once(
    hook: NanoGPTHook, simulator: NanoGPTSimulator
) -> None:
    simulator.add_fault(endpoint="submit", kind="429", count=2, retry_after=10)  # 0.2 s real
    started = time.monotonic()
    hook.submit_video(KLING)
    elapsed = time.monotonic() - started
    state = simulator.state()
    assert (state["submit_requests"], state["submits_accepted"]) == (3, 1)
    assert elapsed >= 2 * 10 * 0.02 * 0.9  # both Retry-After waits were honoured


@pytest.mark.timing
def test_a_short_retry_after_is_waited_as_given_not_the_longer_backoff(
    simulator: NanoGPTSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Backoff would sleep 2-4 s here; Retry-After says a slot frees in 0.1 s.
    monkeypatch.setenv("AIRFLOW_CONN_NANOGPT_DEFAULT", connection_json(simulator.url))
    hook = NanoGPTHook(retry_policy=RetryPolicy(max_retries=2, base_delay=4.0, max_delay=8.0))
    simulator.add_fault(endpoint="submit", kind="429", count=1, retry_after=5)  # 0.1 s real
    started = time.monotonic()
    hook.submit_video(KLING)
    assert time.monotonic() - started < 1.5
    assert simulator.state()["submits_accepted"] == 1


def test_real_rate_limit_is_waited_out(
    simulator: NanoGPTSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    simulator.configure(rate_limit_per_minute=3)
    monkeypatch.setenv("AIRFLOW_CONN_NANOGPT_DEFAULT", connection_json(simulator.url))
    hook = NanoGPTHook(retry_policy=RetryPolicy(max_retries=5, base_delay=0.01, max_delay=0.05))
    runs = {hook.submit_video(KLING).run_id for _ in range(5)}
    state = simulator.state()
    assert len(runs) == 5 and state["submits_accepted"] == 5
    assert state["submit_requests"] > 5  # some were rate limited and retried


def test_long_retry_after_is_not_slept_on_a_worker(
    hook: NanoGPTHook, simulator: NanoGPTSimulator
) -> None:
    simulator.add_fault(endpoint="submit", kind="daily_cap", count=1, retry_after=3600 * 50)
    started = time.monotonic()
    with pytest.raises(NanoGPTRateLimitError, match=r"resets at \d\d:\d\d UTC \(in 1 h"):
        hook.submit_video(KLING)
    assert time.monotonic() - started < 5
    assert simulator.state()["submits_accepted"] == 0


# Where a daily cap's code may sit: error.code (documented), error.type, a top-level code.
DAILY_CAP_SHAPES = ["openai", "typed", "openapi"]
DAILY_CAPS = [
    ("daily_usd_cap", "usd", "daily USD cap"),
    ("daily_cap", "requests", "daily request cap"),
]


@pytest.mark.parametrize("shape", DAILY_CAP_SHAPES)
@pytest.mark.parametrize(("kind", "cap", "named"), DAILY_CAPS)
def test_a_daily_cap_on_submit_is_typed_with_its_cap_and_reset(
    hook: NanoGPTHook, simulator: NanoGPTSimulator, shape: str, kind: str, cap: str, named: str
) -> None:
    simulator.add_fault(endpoint="submit", kind=kind, body_shape=shape, retry_after=3600 * 50)
    before = time.time()
    with pytest.raises(NanoGPTDailyCapError) as info:
        hook.submit_video(KLING)
    error = info.value
    assert isinstance(error, NanoGPTRateLimitError)  # every `except` of a 429 still catches it
    assert error.cap == cap
    # 3600 * 50 simulated seconds at 50x: one hour.
    assert before + 3590 <= error.resets_at <= time.time() + 3610
    assert f"NanoGPT's {named} for this API key is reached" in str(error)
    assert "(in 1 h)" in str(error) or "(in 1 h 1 min)" in str(error)
    assert simulator.state()["submits_accepted"] == 0


@pytest.mark.parametrize("shape", DAILY_CAP_SHAPES)
@pytest.mark.parametrize(("kind", "cap", "named"), DAILY_CAPS)
async def test_a_daily_cap_on_an_async_status_poll_is_typed_the_same(
    hook: NanoGPTHook, simulator: NanoGPTSimulator, shape: str, kind: str, cap: str, named: str
) -> None:
    # The request cap counts every endpoint, status polls in the triggerer included.
    run_id = hook.submit_video(KLING).run_id
    simulator.add_fault(
        endpoint="status", kind=kind, body_shape=shape, count=10, retry_after=3600 * 50
    )
    before = time.time()
    async_hook = NanoGPTHook(retry_policy=FAST_RETRIES)
    try:
        with pytest.raises(NanoGPTDailyCapError) as info:
            await async_hook.aget_video_status(run_id)
    finally:
        await async_hook.aclose()
    error = info.value
    assert isinstance(error, NanoGPTRateLimitError)
    assert error.cap == cap and f"NanoGPT's {named} for this API key is reached" in str(error)
    assert before + 3590 <= error.resets_at <= time.time() + 3610


@pytest.mark.parametrize(
    ("fault", "marker", "created"),
    [
        ({"kind": "500"}, "", 0),  # a 5xx that created nothing: the client cannot know that
        ({}, " [sim:submit500]", 1),  # a 5xx after the job was created and charged
        ({"kind": "reset"}, "", 0),  # reset after the request was sent
        ({"kind": "malformed"}, "", 0),  # an unreadable success answer
    ],
)
def test_a_submission_that_may_have_created_a_job_is_never_resent(
    hook: NanoGPTHook, simulator: NanoGPTSimulator, fault: dict, marker: str, created: int
) -> None:
    if fault:
        simulator.add_fault(endpoint="submit", count=1, **fault)
    with pytest.raises(NanoGPTError) as info:
        hook.submit_video({**KLING, "prompt": KLING["prompt"] + marker})
    assert not proves_nothing_created(info.value)
    state = simulator.state()
    assert (state["submit_requests"], state["submits_accepted"]) == (1, created)
    assert "GET /api/generate-video/recover" not in state["requests"]  # the hook only sends


def test_a_read_timeout_on_submit_is_never_resent(
    simulator: NanoGPTSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("airflow_provider_nanogpt.hooks.nanogpt.SUBMIT_TIMEOUT_FLOOR", 0.3)
    monkeypatch.setenv(
        "AIRFLOW_CONN_NANOGPT_DEFAULT", connection_json(simulator.url, request_timeout=0.3)
    )
    hook = NanoGPTHook(retry_policy=FAST_RETRIES)
    # The server creates the job 1 s (50 simulated s) after the client gave up on its answer.
    simulator.add_fault(endpoint="submit", kind="timeout", delay=50)
    with pytest.raises(NanoGPTConnectionError) as info:
        hook.submit_video(KLING)
    assert info.value.request_sent
    time.sleep(1.5)
    assert simulator.state()["submit_requests"] == 1
    assert simulator.state()["submits_accepted"] == 1


def test_connection_refused_is_retried_as_never_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("AIRFLOW_CONN_NANOGPT_DEFAULT", connection_json(f"http://127.0.0.1:{port}"))
    hook = NanoGPTHook(retry_policy=FAST_RETRIES)
    with pytest.raises(Exception) as info:
        hook.submit_video(KLING)
    assert getattr(info.value, "request_sent", None) is False


# --- download ---------------------------------------------------------------------------------


def test_download_streams_to_local_and_file_uri(hook: NanoGPTHook, tmp_path: Path) -> None:
    run_id = hook.submit_video({**KLING, "prompt": "x [sim:size=3000000]"}).run_id
    wait_until_done(hook, run_id)
    url = hook.get_video_status(run_id).video_url
    assert url
    local = hook.download_video(url, tmp_path / "a" / "v.mp4")
    assert local.size_bytes == 3_000_000 == (tmp_path / "a" / "v.mp4").stat().st_size
    uri = hook.download_video(url, f"file://{tmp_path}/b/v.mp4")
    assert uri.size_bytes == 3_000_000
    assert (tmp_path / "b" / "v.mp4").read_bytes() == (tmp_path / "a" / "v.mp4").read_bytes()
    assert not [p for p in tmp_path.rglob("*.part")]


def test_download_to_object_storage_path(hook: NanoGPTHook, tmp_path: Path) -> None:
    from airflow.sdk import ObjectStoragePath

    run_id = hook.submit_video(KLING).run_id
    wait_until_done(hook, run_id)
    url = hook.get_video_status(run_id).video_url or ""
    result = hook.download_video(url, ObjectStoragePath(f"file://{tmp_path}/osp/v.mp4"))
    assert (tmp_path / "osp" / "v.mp4").stat().st_size == result.size_bytes > 0


def test_truncated_download_leaves_no_partial_file(
    hook: NanoGPTHook, simulator: NanoGPTSimulator, tmp_path: Path
) -> None:
    run_id = hook.submit_video({**KLING, "prompt": "x [sim:truncate]"}).run_id
    wait_until_done(hook, run_id)
    url = hook.get_video_status(run_id).video_url or ""
    with pytest.raises(NanoGPTDownloadError):
        hook.download_video(url, tmp_path / "v.mp4")
    assert list(tmp_path.iterdir()) == []


def test_download_never_sends_the_api_key(
    hook: NanoGPTHook, simulator: NanoGPTSimulator, tmp_path: Path
) -> None:
    run_id = hook.submit_video(KLING).run_id
    wait_until_done(hook, run_id)
    hook.download_video(hook.get_video_status(run_id).video_url or "", tmp_path / "v.mp4")
    log = simulator.state()["request_log"]
    downloads = [r for r in log if r["path"].startswith("/files/")]
    assert downloads
    assert all(r["credential_headers"] == [] for r in downloads)
    assert all(
        r["credential_headers"] == ["x-api-key"] for r in log if r["path"].startswith("/api")
    )


# --- configuration and secrets ------------------------------------------------------------------


def test_missing_connection_and_missing_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_NANOGPT_DEFAULT", raising=False)
    with pytest.raises(NanoGPTConfigurationError, match="AIRFLOW_CONN_NANOGPT_DEFAULT"):
        NanoGPTHook().settings()
    monkeypatch.setenv(
        "AIRFLOW_CONN_NANOGPT_DEFAULT", '{"conn_type": "nanogpt", "host": "http://x"}'
    )
    with pytest.raises(NanoGPTConfigurationError, match="password field"):
        NanoGPTHook().settings()


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        (None, "https://nano-gpt.com"),
        ("https://nano-gpt.com/api", "https://nano-gpt.com"),
        ("api.nano-gpt.com", "https://api.nano-gpt.com"),
        ("http://127.0.0.1:8787/", "http://127.0.0.1:8787"),
    ],
)
def test_base_url_forms(monkeypatch: pytest.MonkeyPatch, host: str | None, expected: str) -> None:
    conn = {"conn_type": "nanogpt", "password": CANARY_KEY}
    if host:
        conn["host"] = host
    import json

    monkeypatch.setenv("AIRFLOW_CONN_NANOGPT_DEFAULT", json.dumps(conn))
    assert NanoGPTHook().settings().base_url == expected


def test_connection_extras_set_timeout_and_retries(
    simulator: NanoGPTSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_NANOGPT_DEFAULT",
        connection_json(simulator.url, request_timeout=12, max_retries=1),
    )
    settings = NanoGPTHook().settings()
    assert (settings.request_timeout, settings.max_retries) == (12.0, 1)


def test_the_key_never_leaks(
    hook: NanoGPTHook,
    simulator: NanoGPTSimulator,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    caplog.set_level(logging.DEBUG)
    texts: list[str] = [repr(hook), repr(hook.settings()), str(hook.settings())]
    run_id = hook.submit_video(KLING).run_id
    simulator.add_fault(endpoint="status", kind="429", count=2, retry_after=1)
    hook.get_video_status(run_id)
    for action in (
        lambda: hook.get_video_status("vid_missing"),
        lambda: hook.submit_video({"model": "kling-v21-standard", "prompt": "x"}),
        lambda: hook.submit_video({**KLING, "prompt": "x [sim:blocked]"}),
        lambda: hook.download_video("http://127.0.0.1:1/nothing.mp4", tmp_path / "x.mp4"),
    ):
        with pytest.raises(Exception) as info:
            action()
        texts += [str(info.value), repr(info.value)]
    texts.append(str(simulator.state()))
    logged = capfd.readouterr()
    texts += [caplog.text, logged.out, logged.err]
    assert "Retrying in" in logged.out  # the retry warnings were captured: this is not vacuous
    assert all(CANARY_KEY not in text for text in texts)
    assert all("x-api-key" not in text.lower() for text in (caplog.text, *logged))


def test_user_agent_names_the_provider_and_its_version(hook: NanoGPTHook) -> None:
    from airflow_provider_nanogpt import __version__

    headers = hook.settings().headers()
    assert headers["User-Agent"].startswith(f"airflow-provider-nanogpt/{__version__} ")
    assert headers["x-api-key"] == CANARY_KEY
    assert "Authorization" not in headers


async def test_hooks_on_one_event_loop_share_one_async_client(
    nanogpt_connection: NanoGPTSimulator,
) -> None:
    first, second = NanoGPTHook(), NanoGPTHook()
    run_id = first.submit_video(KLING).run_id
    await first.aget_video_status(run_id)
    await second.aget_video_status(run_id)
    shared = first._async_client
    assert shared is not None
    assert second._async_client is shared  # one SSL context and pool for every trigger
    await first.aclose()
    assert not shared.is_closed  # still in use by the second hook
    await second.aclose()
    assert shared.is_closed
    first.close()


async def test_more_concurrent_polls_than_connections_are_each_sent_once(
    nanogpt_connection: NanoGPTSimulator,
) -> None:
    import asyncio

    from airflow_provider_nanogpt.hooks import async_clients

    hook = NanoGPTHook()
    run_id = hook.submit_video(KLING).run_id
    # Answers take 0.2 s, so three times as many polls as connections are in flight together.
    nanogpt_connection.configure(latency_seconds=0.2)
    polls = 3 * async_clients.MAX_CONNECTIONS
    try:
        statuses = await asyncio.gather(*(hook.aget_video_status(run_id) for _ in range(polls)))
    finally:
        await hook.aclose()
        hook.close()
    assert {status.run_id for status in statuses} == {run_id}
    # Each poll reached NanoGPT exactly once: none timed out waiting for a connection and retried.
    requests = nanogpt_connection.state()["requests"]
    assert sum(n for key, n in requests.items() if "status" in key) == polls


def test_lock_down_extras_are_read_and_checked(
    simulator: NanoGPTSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_NANOGPT_DEFAULT",
        connection_json(
            simulator.url,
            allowed_video_hosts="Storage.Example.com, *.cdn.example.com",
            max_video_bytes=1000,
            download_timeout=5,
            output_base_dir="/data/videos",
        ),
    )
    settings = NanoGPTHook().settings()
    assert settings.allowed_video_hosts == ("storage.example.com", "*.cdn.example.com")
    assert (settings.max_video_bytes, settings.download_timeout) == (1000, 5.0)
    assert settings.output_base_dir == "/data/videos"
    for bad in ({"max_video_bytes": "NaN"}, {"download_timeout": -1}, {"allowed_video_hosts": 7}):
        monkeypatch.setenv("AIRFLOW_CONN_NANOGPT_DEFAULT", connection_json(simulator.url, **bad))
        with pytest.raises(NanoGPTConfigurationError, match=next(iter(bad))):
            NanoGPTHook().settings()
