"""The hook and the trigger against servers that misbehave: redirects, echoed keys, drips, floods.

Each test scripts a small hostile HTTP server on loopback (``tests/hostile.py``) standing in for
NanoGPT or for a video host, and asserts what leaves the process, what it accepts, and that every
wait ends by its deadline.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import ssl
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_nanogpt.api.endpoints import submit_request
from airflow_provider_nanogpt.api.retry import RetryPolicy, proves_nothing_created
from airflow_provider_nanogpt.exceptions import (
    NanoGPTConnectionError,
    NanoGPTContentPolicyError,
    NanoGPTDownloadError,
    NanoGPTInvalidRequestError,
    NanoGPTRedirectError,
    NanoGPTResponseError,
    NanoGPTServerError,
    NanoGPTTLSError,
    NanoGPTValidationError,
    NanoGPTVideoRefusedError,
)
from airflow_provider_nanogpt.hooks.nanogpt import NanoGPTHook
from airflow_provider_nanogpt.triggers.video import VideoStatusTrigger
from tests.conftest import CANARY_KEY, FAST_RETRIES, connection_json
from tests.hostile import HostileServer, Reply, Seen

STATUS = "/api/video/status"
RUNNING = {"requestId": "vid_1", "status": "processing", "progress": 10}


@pytest.fixture
def server() -> Iterator[HostileServer]:
    with HostileServer() as server:
        yield server


@pytest.fixture
def elsewhere() -> Iterator[HostileServer]:
    """Another host, which must never see the key."""
    with HostileServer() as server:
        server.route("GET", "/steal", Reply(200, RUNNING))
        server.route("POST", "/steal", Reply(200, {"usd_balance": "1"}))
        yield server


def use(server: HostileServer, monkeypatch: pytest.MonkeyPatch, **extra: Any) -> NanoGPTHook:
    monkeypatch.setenv("AIRFLOW_CONN_NANOGPT_DEFAULT", connection_json(server.url, **extra))
    return NanoGPTHook(retry_policy=FAST_RETRIES)


async def first_event(trigger: VideoStatusTrigger) -> dict[str, Any]:
    events = [event.payload async for event in trigger.run()]
    assert len(events) == 1
    return events[0]


# 1. The key follows no redirect ----------------------------------------------------------------


@pytest.mark.parametrize("code", [301, 302, 307, 308])
def test_api_redirects_are_errors_and_the_key_stays_home(
    server: HostileServer,
    elsewhere: HostileServer,
    monkeypatch: pytest.MonkeyPatch,
    code: int,
) -> None:
    target = f"{elsewhere.url}/steal?token=abc"
    server.route("GET", STATUS, Reply(code, b"", {"Location": target}))
    server.route("POST", "/api/check-balance", Reply(code, b"", {"Location": target}))
    hook = use(server, monkeypatch)
    with pytest.raises(NanoGPTRedirectError) as status_error:
        hook.get_video_status("vid_1")
    with pytest.raises(NanoGPTRedirectError):
        hook.get_balance()
    message = str(status_error.value)
    assert f"{elsewhere.url}/steal" in message and "token=abc" not in message
    assert elsewhere.seen == []  # neither the key nor a request body went there
    assert len(server.requests_to(STATUS)) == 1  # permanent: not retried


async def test_the_trigger_follows_no_redirect_either(
    server: HostileServer, elsewhere: HostileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.route("GET", STATUS, Reply(302, b"", {"Location": f"{elsewhere.url}/steal"}))
    use(server, monkeypatch)
    event = await first_event(VideoStatusTrigger("vid_1", end_time=time.time() + 10))
    assert event["status"] == "error" and "redirect" in event["message"]
    assert elsewhere.seen == []


# 2. Answers that echo the key ------------------------------------------------------------------


def test_an_echoed_key_never_reaches_a_message(
    server: HostileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    echo = {"error": {"message": f"key {CANARY_KEY} is not valid here", "type": CANARY_KEY}}
    server.route("POST", "/api/generate-video", Reply(400, echo, {"X-Request-ID": CANARY_KEY}))
    server.route("GET", STATUS, Reply(200, {**RUNNING, "details": f"hello {CANARY_KEY}"}))
    hook = use(server, monkeypatch)
    with pytest.raises(NanoGPTInvalidRequestError) as info:
        hook.submit_video({"model": "m", "prompt": "p"})
    assert "is not valid here" in str(info.value)
    status = hook.get_video_status("vid_1")
    texts = [str(info.value), repr(info.value), info.value.request_id, repr(status)]
    assert all(CANARY_KEY not in str(text) for text in texts)


# 3. Where videos come from ---------------------------------------------------------------------


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://host/v.mp4", "gopher://x/1"])
def test_non_http_video_urls_are_refused_at_once(
    server: HostileServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, url: str
) -> None:
    with pytest.raises(NanoGPTVideoRefusedError, match="only http"):
        use(server, monkeypatch).download_video(url, tmp_path / "v.mp4")
    assert list(tmp_path.iterdir()) == []


def test_a_redirect_to_another_scheme_or_a_foreign_host_is_refused(
    server: HostileServer, elsewhere: HostileServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    server.route("GET", "/v/file", Reply(302, b"", {"Location": "file:///etc/passwd"}))
    server.route("GET", "/v/away", Reply(302, b"", {"Location": f"{elsewhere.url}/steal"}))
    hook = use(server, monkeypatch, allowed_video_hosts=["127.0.0.1"])
    with pytest.raises(NanoGPTVideoRefusedError):
        hook.download_video(f"{server.url}/v/file", tmp_path / "a.mp4")
    hook = use(server, monkeypatch, allowed_video_hosts="cdn.nano-gpt.com, *.example.com")
    with pytest.raises(NanoGPTVideoRefusedError, match="allowed_video_hosts"):
        hook.download_video(f"{server.url}/v/away", tmp_path / "b.mp4")
    assert len(server.requests_to("/v/file")) == 1 and server.requests_to("/v/away") == []
    assert list(tmp_path.iterdir()) == []


def test_allowed_hosts_let_listed_hosts_and_their_redirects_through(
    server: HostileServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    server.route("GET", "/v/start", Reply(302, b"", {"Location": "/v/final.mp4"}))
    server.route("GET", "/v/final.mp4", Reply(200, b"\x00" * 1000, {"Content-Type": "video/mp4"}))
    hook = use(server, monkeypatch, allowed_video_hosts=["127.0.0.1"])
    assert hook.download_video(f"{server.url}/v/start", tmp_path / "v.mp4").size_bytes == 1000
    assert all("x-api-key" not in seen.headers for seen in server.seen)


# 5 and 6. Every wait ends by its deadline ------------------------------------------------------


@pytest.mark.parametrize("eta", ["NaN", "Infinity", -5, "-inf"])
async def test_a_nonsense_eta_never_stops_the_deadline(
    server: HostileServer, monkeypatch: pytest.MonkeyPatch, eta: object
) -> None:
    server.route("GET", STATUS, Reply(200, {**RUNNING, "estimatedTimeRemaining": eta}))
    use(server, monkeypatch)
    started = time.time()
    trigger = VideoStatusTrigger("vid_1", poll_interval=0.1, end_time=started + 1.0)
    event = await asyncio.wait_for(first_event(trigger), timeout=10)
    assert event["status"] == "timeout"
    assert time.time() - started < 3


def _drip(seen: Seen) -> Reply:
    # A byte every 0.3 s: each read is quick, so only a limit on the whole exchange ends it.
    return Reply(200, chunks=[json.dumps(RUNNING).encode()], drip=0.3)


def test_a_drip_fed_answer_ends_at_the_request_timeout(
    server: HostileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.route("GET", STATUS, _drip)
    monkeypatch.setenv("AIRFLOW_CONN_NANOGPT_DEFAULT", connection_json(server.url))
    hook = NanoGPTHook(request_timeout=1.0, max_retries=0)
    started = time.monotonic()
    with pytest.raises(NanoGPTConnectionError, match="no complete answer within 1 s"):
        hook.get_video_status("vid_1")
    assert time.monotonic() - started < 3


async def test_a_drip_fed_answer_ends_the_trigger_at_its_end_time(
    server: HostileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.route("GET", STATUS, _drip)
    use(server, monkeypatch)
    started = time.time()
    trigger = VideoStatusTrigger("vid_1", poll_interval=0.1, end_time=started + 2.0)
    event = await asyncio.wait_for(first_event(trigger), timeout=15)
    assert event["status"] == "timeout"
    assert time.time() - started < 4


async def test_retry_after_sleeps_never_run_past_the_triggers_end_time(
    server: HostileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.route("GET", STATUS, Reply(503, {"error": "busy"}, {"Retry-After": "20"}))
    use(server, monkeypatch)
    started = time.time()
    trigger = VideoStatusTrigger("vid_1", poll_interval=0.1, end_time=started + 3.0)
    event = await asyncio.wait_for(first_event(trigger), timeout=30)
    assert event["status"] in ("timeout", "error")
    assert time.time() - started < 5  # not 20 s: no sleep crosses the deadline


def test_a_drip_fed_video_ends_at_the_download_timeout(
    server: HostileServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    server.route("GET", "/v.mp4", Reply(200, chunks=[b"\x00" * 100], drip=0.5))
    hook = use(server, monkeypatch, download_timeout=1, max_retries=0)
    started = time.monotonic()
    with pytest.raises(NanoGPTDownloadError, match="download_timeout"):
        hook.download_video(f"{server.url}/v.mp4", tmp_path / "v.mp4")
    assert time.monotonic() - started < 4
    assert list(tmp_path.iterdir()) == []


# 7. Answers that are not a status --------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ([1, 2, 3], "a list of 3 items"),
        (None, "null"),
        (42, "int 42"),
        ({"requestId": "vid_1", "status": "teleporting"}, "teleporting"),
        (
            {"requestId": "vid_other", "status": "completed", "videoUrl": "http://x/v.mp4"},
            "vid_other",
        ),
    ],
)
async def test_unreadable_answers_end_the_wait_with_what_was_received(
    server: HostileServer, monkeypatch: pytest.MonkeyPatch, body: object, named: str
) -> None:
    server.route("GET", STATUS, Reply(200, json.dumps(body)))
    use(server, monkeypatch)
    trigger = VideoStatusTrigger("vid_1", poll_interval=0.01, end_time=time.time() + 60)
    event = await asyncio.wait_for(first_event(trigger), timeout=30)
    assert (event["status"], event["reason"]) == ("error", "unreadable")
    assert named in event["message"]
    assert len(server.requests_to(STATUS)) <= 12  # bounded, long before the deadline


# 8. Floods -------------------------------------------------------------------------------------


def _flood(size: int) -> Iterator[bytes]:
    chunk = b" " * (1024 * 1024)
    yield b'{"status": "processing", "details": "'
    for _ in range(size // len(chunk)):
        yield chunk
    yield b'"}'


@pytest.mark.parametrize("announce", [True, False])
def test_a_huge_answer_is_refused_without_buffering_it(
    server: HostileServer, monkeypatch: pytest.MonkeyPatch, announce: bool
) -> None:
    size = 200 * 1024 * 1024
    server.route(
        "GET", STATUS, Reply(200, chunks=_flood(size), content_length=size if announce else None)
    )
    use(server, monkeypatch)
    hook = NanoGPTHook(max_retries=0)
    # The peak of what Python allocated during this call alone (not the process's lifetime peak).
    tracemalloc.start()
    try:
        with pytest.raises(NanoGPTResponseError, match="larger than 4 MiB"):
            hook.get_video_status("vid_1")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024 * 1024, f"{peak:,} bytes held at once for a 200 MiB answer"


async def test_a_huge_answer_is_refused_in_the_triggerer_too(
    server: HostileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.route("GET", STATUS, Reply(200, chunks=_flood(50 * 1024 * 1024)))
    use(server, monkeypatch)
    hook = NanoGPTHook(max_retries=0)
    try:
        with pytest.raises(NanoGPTResponseError, match="larger than 4 MiB"):
            await hook.aget_video_status("vid_1")
    finally:
        await hook.aclose()


# 9. Videos too large, and leftovers ------------------------------------------------------------


def test_a_video_announcing_more_than_the_limit_is_refused_unread(
    server: HostileServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    server.route("GET", "/v.mp4", Reply(200, chunks=[b""], content_length=10 * 1024**3))
    hook = use(server, monkeypatch)
    with pytest.raises(NanoGPTVideoRefusedError, match="max_video_bytes"):
        hook.download_video(f"{server.url}/v.mp4", tmp_path / "v.mp4")
    assert len(server.requests_to("/v.mp4")) == 1 and list(tmp_path.iterdir()) == []


def test_a_video_streaming_past_the_limit_is_cut_off(
    server: HostileServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    endless = itertools.repeat(b"\x00" * 65536, 10_000)  # 640 MiB, no Content-Length
    server.route("GET", "/v.mp4", Reply(200, chunks=endless))
    hook = use(server, monkeypatch, max_video_bytes=1024 * 1024)
    with pytest.raises(NanoGPTVideoRefusedError, match="more than 1,048,576 bytes"):
        hook.download_video(f"{server.url}/v.mp4", tmp_path / "v.mp4")
    assert list(tmp_path.iterdir()) == []


def test_a_killed_downloads_leftover_is_removed(
    server: HostileServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    leftover = tmp_path / ".v.mp4.0123abcd.part"
    leftover.write_bytes(b"half a video")
    server.route("GET", "/v.mp4", Reply(200, b"\x00" * 2048))
    use(server, monkeypatch).download_video(f"{server.url}/v.mp4", tmp_path / "v.mp4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.mp4"]


# 4. Destinations checked before paying ---------------------------------------------------------


@pytest.mark.usefixtures("memory_storage")
def test_destinations_that_cannot_take_a_video(tmp_path: Path) -> None:
    from airflow_provider_nanogpt.storage import check_destination

    (tmp_path / "a-file").write_text("x")
    (tmp_path / "a-dir").mkdir()
    with pytest.raises(NanoGPTValidationError, match="is a directory"):
        check_destination(tmp_path / "a-dir")
    with pytest.raises(NanoGPTValidationError, match="cannot be written"):
        check_destination(tmp_path / "a-file" / "v.mp4")
    with pytest.raises(NanoGPTValidationError, match="does not exist"):
        check_destination("memory://no-such-bucket/videos/v.mp4")
    base = tmp_path / "base"
    with pytest.raises(NanoGPTValidationError, match="outside the connection's output_base_dir"):
        check_destination(str(base / "videos" / ".." / ".." / "x.mp4"), str(base))
    assert check_destination(str(base / "videos" / "x.mp4"), str(base)) == base / "videos" / "x.mp4"


# 12. Retry-After on any retryable answer -------------------------------------------------------


def test_retry_after_on_a_503_is_honoured(
    server: HostileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = iter([Reply(503, {"error": "busy"}, {"Retry-After": "1"}), Reply(200, RUNNING)])
    server.route("GET", STATUS, lambda seen: next(answers))
    hook = use(server, monkeypatch)
    started = time.monotonic()
    assert hook.get_video_status("vid_1").progress == 10
    assert time.monotonic() - started >= 0.95  # not the 0.01 s backoff: NanoGPT asked for 1 s


def test_a_long_retry_after_on_a_503_is_not_slept(
    server: HostileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.route("GET", STATUS, Reply(503, {"error": "maintenance"}, {"Retry-After": "86400"}))
    with pytest.raises(NanoGPTServerError, match="retry after 86400 s"):
        use(server, monkeypatch).get_video_status("vid_1")
    assert len(server.requests_to(STATUS)) == 1


# 13. Content-policy refusals in plain words ----------------------------------------------------


def test_a_plain_string_content_policy_refusal_at_submit(
    server: HostileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = {"error": "Your prompt was blocked due to safety concerns", "status": 400}
    server.route("POST", "/api/generate-video", Reply(400, body))
    with pytest.raises(NanoGPTContentPolicyError):
        use(server, monkeypatch).submit_video({"model": "m", "prompt": "p"})


# 14. A 5xx typed as a rate limit is still a 5xx -------------------------------------------------

SUBMIT = "/api/generate-video"
ACCEPTED = {"runId": "vid_1", "status": "pending", "model": "m", "cost": 0.1}
RATE_LIMIT_TYPES = [
    "rate_limited",
    "rate_limit_error",
    "daily_rpd_limit_exceeded",
    "daily_usd_limit_exceeded",
]
# The typed object of the video guide, and the OpenAI shape with the reason in ``code``.
RATE_LIMIT_BODIES = [
    pytest.param({"error": {"message": "slow down", "type": kind}}, id=f"typed-{kind}")
    for kind in RATE_LIMIT_TYPES
] + [
    pytest.param(
        {"error": {"message": "slow down", "type": "requests", "code": kind, "param": None}},
        id=f"openai-{kind}",
    )
    for kind in RATE_LIMIT_TYPES
]


def _first_then_accept(status: int, body: object, retry_after: str) -> Any:
    """The first POST gets ``status``/``body``; any re-send would be accepted (and paid for)."""
    answers = itertools.chain(
        [Reply(status, body, {"Retry-After": retry_after})], itertools.repeat(Reply(202, ACCEPTED))
    )
    return lambda seen: next(answers)


@pytest.mark.parametrize("status", [500, 502, 503])
@pytest.mark.parametrize("body", RATE_LIMIT_BODIES)
@pytest.mark.parametrize("max_rate_limit_sleep", [None, 5.0], ids=["sync", "deferrable"])
def test_a_5xx_typed_as_a_rate_limit_is_never_resent(
    server: HostileServer,
    monkeypatch: pytest.MonkeyPatch,
    status: int,
    body: dict[str, Any],
    max_rate_limit_sleep: float | None,
) -> None:
    # Retry-After under a second: even the deferrable operator would re-send a real 429 in-call.
    server.route("POST", SUBMIT, _first_then_accept(status, body, "0.1"))
    hook = use(server, monkeypatch)
    with pytest.raises(NanoGPTServerError) as info:
        hook.submit_video({"model": "m", "prompt": "p"}, max_rate_limit_sleep=max_rate_limit_sleep)
    assert len(server.requests_to(SUBMIT)) == 1
    assert info.value.http_status == status
    assert not proves_nothing_created(info.value)


@pytest.mark.parametrize("status", [500, 502, 503])
@pytest.mark.parametrize("body", RATE_LIMIT_BODIES)
async def test_a_5xx_typed_as_a_rate_limit_reads_as_a_server_error_in_the_triggerer(
    server: HostileServer, monkeypatch: pytest.MonkeyPatch, status: int, body: dict[str, Any]
) -> None:
    # The triggerer never submits; its (httpx) transport shares the mapping and must agree.
    server.route("POST", SUBMIT, _first_then_accept(status, body, "0"))
    hook = use(server, monkeypatch)
    try:
        with pytest.raises(NanoGPTServerError) as info:
            await hook._asend(submit_request({"model": "m", "prompt": "p"}))
    finally:
        await hook.aclose()
    assert not proves_nothing_created(info.value)
    assert len(server.requests_to(SUBMIT)) == 1


@pytest.mark.parametrize("body", [*RATE_LIMIT_BODIES, pytest.param({}, id="empty")])
def test_a_429_status_is_still_resent(
    server: HostileServer, monkeypatch: pytest.MonkeyPatch, body: dict[str, Any]
) -> None:
    server.route("POST", SUBMIT, _first_then_accept(429, body, "0.1"))
    hook = use(server, monkeypatch)
    assert hook.submit_video({"model": "m", "prompt": "p"}, max_rate_limit_sleep=5.0).run_id == (
        "vid_1"
    )
    assert len(server.requests_to(SUBMIT)) == 2


@pytest.mark.parametrize("kind", ["insufficient_balance", "content_policy_violation"])
@pytest.mark.parametrize("status", [500, 503])
def test_a_5xx_typed_as_a_refusal_is_a_server_error(
    server: HostileServer, monkeypatch: pytest.MonkeyPatch, kind: str, status: int
) -> None:
    server.route("POST", SUBMIT, Reply(status, {"error": {"message": "no", "type": kind}}))
    with pytest.raises(NanoGPTServerError):
        use(server, monkeypatch).submit_video({"model": "m", "prompt": "p"})
    assert len(server.requests_to(SUBMIT)) == 1


# 15. TLS failures are permanent: one connection, a clear message, no retries -------------------

# Real retries: a TLS failure the hook retried would connect again before the call raised.
SLOW_RETRIES = RetryPolicy(max_retries=3, base_delay=1.0, max_delay=2.0)
# "At once" is counted, not timed: one accepted connection proves no retry (a time bound failed
# on a loaded machine).


def _certificate(tmp_path: Path, names: list[str]) -> tuple[Path, ssl.SSLContext]:
    """A self-signed certificate for ``names`` (DNS names or IPs) and a server context using it."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def general_name(name: str) -> x509.GeneralName:
        try:
            return x509.IPAddress(ipaddress.ip_address(name))
        except ValueError:
            return x509.DNSName(name)

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([general_name(n) for n in names]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    return cert_path, context


@pytest.fixture(params=["plain-http", "self-signed", "wrong-host"])
def tls_trap(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[HostileServer, str, str]]:
    """(server, its https:// URL, what the error must say) for each kind of TLS failure."""
    if request.param == "plain-http":
        with HostileServer() as plain:
            url = f"https://127.0.0.1:{plain.port}"
            yield plain, url, f"speaks plain HTTP: use http://127.0.0.1:{plain.port}"
        return
    if request.param == "self-signed":
        _, context = _certificate(tmp_path, ["127.0.0.1"])
        expected = "certificate of 127.0.0.1 is not trusted"
    else:
        # Trusted (both transports read these), but issued for another name.
        cert_path, context = _certificate(tmp_path, ["video.nano-gpt.invalid"])
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert_path))
        monkeypatch.setenv("SSL_CERT_FILE", str(cert_path))
        expected = "certificate of 127.0.0.1 is issued for another host"
    with HostileServer(tls=context) as secure:
        secure.route("POST", "/api/check-balance", Reply(200, {"usd_balance": "1"}))
        yield secure, secure.url, expected


def _tls_hook(url: str, monkeypatch: pytest.MonkeyPatch) -> NanoGPTHook:
    monkeypatch.setenv("AIRFLOW_CONN_NANOGPT_DEFAULT", connection_json(url))
    return NanoGPTHook(retry_policy=SLOW_RETRIES)


@pytest.mark.parametrize("call", ["read", "submit"])
def test_a_tls_failure_fails_at_once_on_the_worker(
    tls_trap: tuple[HostileServer, str, str], monkeypatch: pytest.MonkeyPatch, call: str
) -> None:
    server, url, expected = tls_trap
    hook = _tls_hook(url, monkeypatch)
    send = hook.get_balance if call == "read" else lambda: hook.submit_video({"model": "m"})
    with pytest.raises(NanoGPTTLSError) as info:
        send()
    assert server.accepted == 1
    assert expected in str(info.value)
    assert info.value.request_sent is False and server.seen == []
    assert CANARY_KEY not in str(info.value)


async def test_a_tls_failure_fails_at_once_in_the_triggerer(
    tls_trap: tuple[HostileServer, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, url, expected = tls_trap
    hook = _tls_hook(url, monkeypatch)
    try:
        with pytest.raises(NanoGPTTLSError, match=re.escape(expected)):
            await hook.aget_balance()
    finally:
        await hook.aclose()
    assert server.accepted == 1


def test_a_tls_failure_fails_a_download_at_once(
    tls_trap: tuple[HostileServer, str, str],
    server: HostileServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    video_host, url, expected = tls_trap
    hook = _tls_hook(server.url, monkeypatch)  # the API is fine; the video's host is not
    with pytest.raises(NanoGPTTLSError, match=re.escape(expected)) as info:
        hook.download_video(f"{url}/v.mp4?signature=secret", tmp_path / "v.mp4")
    assert video_host.accepted == 1
    assert "secret" not in str(info.value)
    assert not (tmp_path / "v.mp4").exists()


# 16. The key is scrubbed after JSON decoding, whatever escapes spelled it ----------------------


def _escaped(text: str, every: int) -> str:
    """``text`` as a JSON string body with every ``every``-th character written as ``\\uXXXX``."""
    return "".join(
        f"\\u{ord(char):04x}" if index % every == 0 else char for index, char in enumerate(text)
    )


KEY_SPELLINGS = [
    pytest.param(CANARY_KEY, id="plain"),
    pytest.param(_escaped(CANARY_KEY, 1), id="fully-escaped"),
    pytest.param(_escaped(CANARY_KEY, 3), id="partly-escaped"),
    pytest.param("sk-nano-\\u0063" + CANARY_KEY[len("sk-nano-c") :], id="one-escape"),
    pytest.param(CANARY_KEY.replace("-", "\\u002D"), id="upper-hex"),
]


@pytest.mark.parametrize("spelled", KEY_SPELLINGS)
async def test_an_escaped_echo_of_the_key_reaches_no_message_value_or_log(
    server: HostileServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    spelled: str,
) -> None:
    assert json.loads(f'"{spelled}"') == CANARY_KEY  # the server really spells the key
    error_body = (
        f'{{"error": {{"message": "key {spelled} is not valid here", "type": "{spelled}", '
        f'"code": "invalid_request"}}, "{spelled}": ["{spelled}"]}}'
    )
    server.route("POST", SUBMIT, Reply(400, error_body))
    failed = (
        f'{{"data": {{"status": "FAILED", "error": "bad key {spelled}", '
        f'"userFriendlyError": "no such key {spelled}"}}, "requestId": "vid_1"}}'
    )
    server.route("GET", STATUS, Reply(200, failed))
    server.route("POST", "/api/check-balance", Reply(503, f'{{"error": "{spelled} down"}}'))
    server.route("GET", "/api/v1/video-models", Reply(500, f'{{"message": "{spelled}"}}'))
    hook = use(server, monkeypatch)
    caplog.set_level("DEBUG")
    raised: list[BaseException] = []
    with pytest.raises(NanoGPTInvalidRequestError) as info:
        hook.submit_video({"model": "m", "prompt": "p"})
    raised.append(info.value)
    with pytest.raises(NanoGPTServerError) as info_balance:
        hook.get_balance()
    raised.append(info_balance.value)
    with pytest.raises(NanoGPTServerError) as info_models:
        hook.list_video_models()
    raised.append(info_models.value)
    status = hook.get_video_status("vid_1")
    async_status = await hook.aget_video_status("vid_1")
    with pytest.raises(NanoGPTServerError) as info_async:
        await hook.aget_balance()
    raised.append(info_async.value)
    await hook.aclose()
    ok, message = hook.test_connection()
    assert not ok and "down" in message
    assert "is not valid here" in str(raised[0])  # the message itself still gets through
    assert status.error and "no such key" in status.error
    texts = [message, repr(status), repr(async_status), str(status.error)]
    for error in raised:
        texts += [str(error), repr(error), repr(vars(error))]
    texts += [record.getMessage() for record in caplog.records]
    leaks = [text for text in texts if CANARY_KEY in text]
    assert leaks == []
