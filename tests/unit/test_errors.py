"""Error-body parsing and mapping for every documented shape and status code."""

from __future__ import annotations

import email.utils
import json
import time

import pytest

from airflow_provider_nanogpt.api.errors import (
    error_from_response,
    parse_error_body,
    parse_retry_after,
)
from airflow_provider_nanogpt.api.retry import (
    RetryPolicy,
    is_retryable_submit,
    proves_nothing_created,
)
from airflow_provider_nanogpt.exceptions import (
    NanoGPTAuthError,
    NanoGPTContentPolicyError,
    NanoGPTDailyCapError,
    NanoGPTInsufficientBalanceError,
    NanoGPTInvalidRequestError,
    NanoGPTNotFoundError,
    NanoGPTPayloadTooLargeError,
    NanoGPTPermanentError,
    NanoGPTRateLimitError,
    NanoGPTServerError,
    describe_duration,
)


@pytest.mark.parametrize(
    ("body", "message", "error_type"),
    [
        (
            {"error": {"message": "blocked", "type": "CONTENT_POLICY_VIOLATION"}},
            "blocked",
            "CONTENT_POLICY_VIOLATION",
        ),
        ({"error": "Insufficient balance", "status": 402}, "Insufficient balance", None),
        (
            {
                "error": {
                    "message": "cap",
                    "type": "rate_limit_error",
                    "code": "daily_rpd_limit_exceeded",
                    "param": None,
                }
            },
            "cap",
            "daily_rpd_limit_exceeded",
        ),
        ({"error": 500, "message": "Video generation failed"}, "Video generation failed", None),
        ("plain text body", "plain text body", None),
    ],
)
def test_every_documented_error_body_shape(body: object, message: str, error_type: str) -> None:
    parsed = parse_error_body(body)
    assert (parsed.message, parsed.error_type) == (message, error_type)


def _error(status: int, body: object, headers: dict[str, str] | None = None) -> Exception:
    return error_from_response(status, json.dumps(body), headers or {}, action="submit a video")


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (401, {"error": "Invalid session", "status": 401}, NanoGPTAuthError),
        (403, {"error": {"message": "no", "code": "api_key_origin_not_allowed"}}, NanoGPTAuthError),
        (
            402,
            {"error": "Insufficient balance", "status": 402, "requiredBalance": 1.5},
            NanoGPTInsufficientBalanceError,
        ),
        (
            400,
            {"error": {"message": "blocked", "type": "CONTENT_POLICY_VIOLATION"}},
            NanoGPTContentPolicyError,
        ),
        (
            400,
            {
                "error": {
                    "message": "blocked by moderation",
                    "type": "invalid_request_error",
                    "code": "content_policy_violation",
                }
            },
            NanoGPTContentPolicyError,
        ),
        (
            400,
            {"error": "Kling 2.1 Standard requires an input image.", "status": 400},
            NanoGPTInvalidRequestError,
        ),
        (
            403,
            {"error": {"message": "pro needed", "type": "PRO_REQUIRED"}},
            NanoGPTInvalidRequestError,
        ),
        (413, {"error": "Payload too large"}, NanoGPTPayloadTooLargeError),
        (404, {"error": "Not found"}, NanoGPTNotFoundError),
        (500, {"error": 500, "message": "Video generation failed"}, NanoGPTServerError),
        (503, {}, NanoGPTServerError),
        (408, {}, NanoGPTServerError),
        (429, {"error": "Rate limit exceeded.", "status": 429}, NanoGPTRateLimitError),
    ],
)
def test_status_codes_map_to_typed_errors(status: int, body: object, expected: type) -> None:
    error = _error(status, body)
    assert type(error) is expected


def test_permanent_errors_are_not_retried_by_airflow() -> None:
    from airflow.providers.common.compat.sdk import AirflowFailException

    for status, body in [(401, {}), (402, {}), (413, {}), (400, {"error": "bad"})]:
        error = _error(status, body)
        assert isinstance(error, NanoGPTPermanentError)
        assert isinstance(error, AirflowFailException)
    for status in (404, 429, 500):
        assert not isinstance(_error(status, {}), AirflowFailException)


def test_balance_error_reports_required_amount() -> None:
    error = _error(402, {"error": "Insufficient balance", "requiredBalance": 2.25})
    assert isinstance(error, NanoGPTInsufficientBalanceError)
    assert error.required_balance == 2.25
    assert "$2.25" in str(error)


def test_rate_limit_reads_retry_after_and_request_id() -> None:
    error = _error(429, {"error": "slow down"}, {"Retry-After": "7", "X-Request-ID": "req-1"})
    assert isinstance(error, NanoGPTRateLimitError)
    assert error.retry_after == 7.0
    assert "req-1" in str(error)


def test_retry_after_forms() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("0.25") == 0.25
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    now = 1_800_000_000.0
    http_date = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after(http_date, now=now) == pytest.approx(30, abs=1)
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0.0


@pytest.mark.parametrize("status", [408, 500, 502, 503, 504])
@pytest.mark.parametrize(
    "body",
    [
        {"error": {"message": "slow", "type": "rate_limit_error"}},
        {"error": {"message": "cap", "type": "x", "code": "daily_usd_limit_exceeded"}},
        {"error": {"message": "no", "type": "insufficient_balance"}},
        {"error": {"message": "no", "type": "content_policy_violation"}},
    ],
)
def test_the_status_decides_a_server_error_whatever_the_body_type(
    status: int, body: object
) -> None:
    error = _error(status, body)
    assert type(error) is NanoGPTServerError
    assert not proves_nothing_created(error)


@pytest.mark.parametrize("status", [None, 408, 500, 503])
def test_a_rate_limit_error_without_proof_is_never_resent(status: int | None) -> None:
    # Defence in depth: whatever built it, a rate-limit error that does not prove nothing was
    # created (no 4xx status) is not re-sent by the submit's retry loop.
    error = NanoGPTRateLimitError("slow down", status_code=status, retry_after=0.1)
    assert not is_retryable_submit(error, RetryPolicy())
    assert is_retryable_submit(
        NanoGPTRateLimitError("slow down", status_code=429, retry_after=0.1), RetryPolicy()
    )


def test_error_from_response_scrubs_after_decoding() -> None:
    # The download path calls it directly, without read_response's raw scrub.
    key = "sk-nano-0123-4567"
    escaped = "".join(f"\\u{ord(char):04x}" for char in key)
    text = f'{{"error": {{"message": "bad {escaped}", "type": "{escaped}"}}}}'
    error = error_from_response(
        400, text, {"X-Request-ID": key}, action="download the video", secrets=(key,)
    )
    assert "bad ***" in str(error)
    assert key not in str(error) + repr(vars(error))


DAILY_CAP_BODIES = [
    # The documented body: the code in error.code, a broad type beside it.
    {"error": {"message": "Daily limit", "code": "{code}", "type": "rate_limit_error"}},
    {"error": {"message": "Daily limit", "type": "{code}"}},  # the code as error.type
    {"error": {"message": "Daily limit", "type": "rate_limit_error"}, "code": "{code}"},
    {"error": "Daily limit", "status": 429, "code": "{code}"},  # only a top-level code
    {"error": 429, "message": "Daily limit", "type": "{code}"},
]


@pytest.mark.parametrize("template", DAILY_CAP_BODIES)
@pytest.mark.parametrize(
    ("code", "cap"), [("daily_usd_limit_exceeded", "usd"), ("DAILY_RPD_LIMIT_EXCEEDED", "requests")]
)
def test_a_daily_cap_is_typed_wherever_its_code_sits(
    template: dict[str, object], code: str, cap: str
) -> None:
    body = json.loads(json.dumps(template).replace("{code}", code))
    error = _error(429, body, {"Retry-After": "5400"})
    assert isinstance(error, NanoGPTDailyCapError) and error.cap == cap
    assert error.retry_after == 5400
    assert "for this API key is reached" in str(error) and "(in 1 h 30 min)" in str(error)
    assert is_retryable_submit(error, RetryPolicy(max_retry_after=6000))  # a 4xx: nothing made


@pytest.mark.parametrize(
    ("message", "cap"),
    [
        ("Daily request limit exceeded (500/500). Resets at 00:00 UTC.", "requests"),
        ("Daily USD limit exceeded ($5.00).", "usd"),
        ("Daily spending cap reached", "usd"),
    ],
)
def test_a_429_that_only_words_a_daily_cap_is_one(message: str, cap: str) -> None:
    error = _error(429, {"error": message, "status": 429})
    assert isinstance(error, NanoGPTDailyCapError) and error.cap == cap


def test_a_daily_cap_without_retry_after_resets_at_the_next_midnight_utc() -> None:
    before = time.time()
    body = {"error": {"message": "cap", "code": "daily_usd_limit_exceeded"}}
    error = _error(429, body)
    assert isinstance(error, NanoGPTDailyCapError)
    midnight = (before // 86400 + 1) * 86400
    assert error.resets_at == pytest.approx(midnight, abs=2)
    assert error.retry_after == pytest.approx(midnight - before, abs=2)
    assert "it resets at 00:00 UTC (in " in str(error)
    assert "NanoGPT's daily USD cap for this API key is reached" in str(error)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.2, "1 s"),
        (59, "59 s"),
        (60, "1 min"),
        (61, "2 min"),
        (3600, "1 h"),
        (11520, "3 h 12 min"),
    ],
)
def test_time_to_a_reset_is_never_undersold(seconds: float, text: str) -> None:
    assert describe_duration(seconds) == text


def test_a_plain_rate_limit_is_not_a_daily_cap() -> None:
    error = _error(429, {"error": "Rate limit exceeded. Please wait.", "status": 429})
    assert type(error) is NanoGPTRateLimitError
