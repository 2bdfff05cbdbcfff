"""Map NanoGPT's HTTP error responses to the provider's typed exceptions, in one place.

NanoGPT documents four error body shapes (a typed object ``{"error": {"message", "type"}}``, a
plain string ``{"error": "...", "status": N}``, OpenAI-style ``{"error": {"message", "type",
"code", "param"}}`` and the OpenAPI ``{"error": <int>, "message": "..."}``); all are read here.
"""

from __future__ import annotations

import email.utils
import json
import math
import re
import ssl
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_nanogpt.api.coerce import as_amount, as_str, scrub, scrub_decoded
from airflow_provider_nanogpt.exceptions import (
    NanoGPTAuthError,
    NanoGPTContentPolicyError,
    NanoGPTDailyCapError,
    NanoGPTError,
    NanoGPTInsufficientBalanceError,
    NanoGPTInvalidRequestError,
    NanoGPTNotFoundError,
    NanoGPTPayloadTooLargeError,
    NanoGPTRateLimitError,
    NanoGPTRedirectError,
    NanoGPTResponseError,
    NanoGPTServerError,
    NanoGPTTLSError,
    daily_cap_reached,
)

_CONTENT_POLICY_TYPES = frozenset({"content_policy_violation"})
_BALANCE_TYPES = frozenset({"insufficient_balance", "insufficient_funds"})
# The per-key daily caps (fact sheet 4.2): which cap each code names.
_DAILY_CAP_CODES = {"daily_usd_limit_exceeded": "usd", "daily_rpd_limit_exceeded": "requests"}
_RATE_LIMIT_TYPES = frozenset({"rate_limited", "rate_limit_error", *_DAILY_CAP_CODES})
# A 429 that words a daily cap without any code ("Daily request limit exceeded").
_DAILY_CAP_TEXT = re.compile(
    r"daily\s+(?:(?P<usd>usd|spend(?:ing)?|budget|cost)|request|rpd)\S*\s+(?:limit|cap)",
    re.IGNORECASE,
)
_MAX_MESSAGE_CHARS = 500
# How NanoGPT words a content-policy refusal where it gives no type or flag (plain-string error
# bodies, the flat status shape): "Content policy violation", "blocked due to safety concerns",
# "flagged by the content safety filter", "blocked by content moderation".
_CONTENT_POLICY_TEXT = re.compile(
    r"content[\s_-]*policy|nsfw|safety (?:concerns|filter|checker|system)|content moderation"
    r"|flagged by",
    re.IGNORECASE,
)


def is_content_policy_text(text: str | None) -> bool:
    return bool(text) and _CONTENT_POLICY_TEXT.search(text or "") is not None


@dataclass(frozen=True)
class ErrorBody:
    message: str | None
    error_type: str | None
    required_balance: float | None = None
    refund_message: str | None = None
    # Every code and type the body carries (error.code, error.type, code, type): a daily cap's
    # code may sit beside a broad type that ``error_type`` reports instead.
    codes: tuple[str, ...] = ()


def daily_cap_of(parsed: ErrorBody, status_code: int) -> str | None:
    """Which per-key daily cap (``"usd"``, ``"requests"``) a refusal names, or None."""
    for code in parsed.codes:
        if (cap := _DAILY_CAP_CODES.get(code.lower())) is not None:
            return cap
    if status_code == 429 and (match := _DAILY_CAP_TEXT.search(parsed.message or "")):
        return "usd" if match.group("usd") else "requests"
    return None


def parse_error_body(body: object) -> ErrorBody:
    """Extract message and type from any documented error body shape."""
    if not isinstance(body, Mapping):
        text = body.strip() if isinstance(body, str) else ""
        return ErrorBody(message=text[:_MAX_MESSAGE_CHARS] or None, error_type=None)
    error = body.get("error")
    message: str | None = None
    error_type: str | None = None
    nested = error if isinstance(error, Mapping) else {}
    found = (as_str(place.get(name)) for place in (nested, body) for name in ("code", "type"))
    codes = tuple(code for code in found if code)
    if isinstance(error, Mapping):
        message = as_str(error.get("message"))
        # OpenAI-style bodies carry the precise reason in ``code`` and a broad class in ``type``.
        error_type = as_str(error.get("code")) or as_str(error.get("type"))
    elif isinstance(error, str):
        message = error
    message = message or as_str(body.get("message"))
    error_type = error_type or as_str(body.get("code")) or as_str(body.get("type"))
    return ErrorBody(
        message=message[:_MAX_MESSAGE_CHARS] if message else None,
        error_type=error_type,
        required_balance=as_amount(body.get("requiredBalance")),
        refund_message=as_str(body.get("refundMessage")),
        codes=codes,
    )


def decode_json(status_code: int, text: str, request_id: str | None) -> Any:
    """Parse a 2xx body; a body that is not JSON is a (transient) response error."""
    try:
        return json.loads(text) if text.strip() else {}
    except ValueError:
        raise NanoGPTResponseError(
            "NanoGPT returned a response that is not valid JSON",
            status_code=status_code,
            request_id=request_id,
        ) from None


def read_response(
    status_code: int,
    headers: Mapping[str, str],
    body: bytes | str,
    action: str,
    secrets: Iterable[str] = (),
) -> Any:
    """The parsed body of a 2xx response, or the typed error for anything else.

    ``secrets`` (the API key, header values) are scrubbed from the body and headers before
    anything is read from them, and again from every string of the decoded JSON (where escapes
    such as ``\\u0061`` have become plain text), so no message, field or log line built from an
    answer carries them, even when a server echoes them back.
    """
    secrets = tuple(secrets)
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    text = scrub(text, secrets)
    headers = {name: scrub(value, secrets) for name, value in headers.items()}
    if 200 <= status_code < 300:
        decoded = decode_json(status_code, text, _header(headers, "x-request-id"))
        return scrub_decoded(decoded, secrets)
    raise error_from_response(status_code, text, headers, action=action, secrets=secrets)


def error_from_response(
    status_code: int,
    text: str,
    headers: Mapping[str, str],
    *,
    action: str,
    secrets: Iterable[str] = (),
) -> NanoGPTError:
    """Build the typed exception for a non-2xx response.

    ``action`` names what was attempted ("submit video", "get status of vid_…") for the message.
    ``secrets`` are scrubbed from the body after it is decoded (and from the text if it is not
    JSON), so an escaped echo of the key cannot reach the message either.
    """
    secrets = tuple(secrets)
    try:
        body: object = json.loads(text) if text.strip() else {}
    except ValueError:
        body = text
    body = scrub_decoded(body, secrets)
    headers = {name: scrub(value, secrets) for name, value in headers.items()}
    parsed = parse_error_body(body)
    request_id = _header(headers, "x-request-id")
    kind = (parsed.error_type or "").lower()
    detail = parsed.message or f"HTTP {status_code}"
    message = f"NanoGPT could not {action}: {detail}"
    retry_after = parse_retry_after(_header(headers, "retry-after"))
    common: dict[str, Any] = {
        "status_code": status_code,
        "error_type": parsed.error_type,
        "request_id": request_id,
        "retry_after": retry_after,
    }
    if retry_after is not None:
        message += f" (retry after {retry_after:g} s)"

    if 300 <= status_code < 400:
        return NanoGPTRedirectError(
            f"NanoGPT could not {action}: the answer was a redirect (HTTP {status_code}) to "
            f"{describe_location(_header(headers, 'location'))}. API calls never follow redirects, "
            "so the API key goes nowhere else. If NanoGPT has moved, set the connection's host "
            "to its new origin.",
            **common,
        )
    if status_code == 408 or status_code >= 500:
        # The status decides, never the body's type: a 5xx typed as a rate limit (or a balance or
        # content-policy refusal) may still hide a created, charged job, so it must not be read
        # as one of the 4xx refusals that prove nothing was created.
        return NanoGPTServerError(message, **common)
    if status_code == 429 or kind in _RATE_LIMIT_TYPES:
        cap = daily_cap_of(parsed, status_code)
        if cap is not None:
            return _daily_cap_error(cap, action, detail, common)
        return NanoGPTRateLimitError(message, **common)
    if status_code == 402 or kind in _BALANCE_TYPES:
        if parsed.required_balance is not None:
            message += f" (required balance: ${parsed.required_balance:g})"
        message += ". Top up the NanoGPT account, then clear the task."
        return NanoGPTInsufficientBalanceError(
            message, required_balance=parsed.required_balance, **common
        )
    if kind in _CONTENT_POLICY_TYPES or (
        400 <= status_code < 500 and is_content_policy_text(parsed.message)
    ):
        return NanoGPTContentPolicyError(
            message + ". Change the prompt or image; retrying the same request will not help.",
            **common,
        )
    if kind == "pro_required":
        return NanoGPTInvalidRequestError(
            message + ". This model setting needs pro mode (pass pro or pro_mode in extra_params).",
            **common,
        )
    if status_code in (401, 403):
        hint = (
            " Check the API key in the NanoGPT connection's password field."
            if status_code == 401
            else " The key is not allowed to do this (origin restriction, or a job of another key)."
        )
        return NanoGPTAuthError(message + "." + hint, **common)
    if status_code == 413:
        return NanoGPTPayloadTooLargeError(
            message + ". Inline media is limited to 4 MB: host the file and pass its URL.",
            **common,
        )
    if status_code == 404:
        return NanoGPTNotFoundError(message, **common)
    if 400 <= status_code < 500:
        return NanoGPTInvalidRequestError(message, **common)
    return NanoGPTResponseError(message, **common)


def _daily_cap_error(
    cap: str, action: str, detail: str, common: dict[str, Any]
) -> NanoGPTDailyCapError:
    """The daily cap, with when it resets: after Retry-After, else at the next 00:00 UTC."""
    now = time.time()
    retry_after = common["retry_after"]
    if retry_after is None:
        retry_after = 86400.0 - now % 86400.0
    resets_at = now + retry_after
    message = f"NanoGPT could not {action}: {daily_cap_reached(cap, resets_at, now)}. "
    return NanoGPTDailyCapError(
        message + f"NanoGPT said: {detail}",
        cap=cap,
        resets_at=resets_at,
        **{**common, "retry_after": retry_after},
    )


def describe_location(location: str | None) -> str:
    """Where a redirect points, without its query (signed URLs carry credentials there)."""
    if not location:
        return "an unnamed location"
    parts = urlsplit(location)
    if not parts.netloc:
        return f"{parts.path or '/'} on the same host"
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait per a Retry-After header: delta-seconds (decimals tolerated) or HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


# OpenSSL's reasons for a TLS handshake answered by a server that speaks plain HTTP.
_PLAIN_HTTP_REASONS = frozenset(
    {
        "WRONG_VERSION_NUMBER",
        "RECORD_LAYER_FAILURE",
        "HTTP_REQUEST",
        "PACKET_LENGTH_TOO_LONG",
        "UNKNOWN_PROTOCOL",
    }
)
# X509_V_ERR_* codes (ssl.SSLCertVerificationError.verify_code).
_WRONG_HOST_CODES = frozenset({62, 64})  # hostname mismatch, IP address mismatch
_EXPIRED_CODES = frozenset({9, 10})  # not yet valid, expired


def tls_failure(exc: BaseException, action: str, url: str, where: str) -> NanoGPTTLSError | None:
    """The permanent error for a failed TLS handshake behind ``exc``, or None when it is not one.

    One classifier for requests and httpx alike: both keep the ``ssl`` error in the exception
    chain. Only handshake failures count (a certificate refused, a plain-HTTP answer): they come
    before any byte of the request, and every retry would meet them again. A TLS error later in
    the exchange (an abrupt close) is left to the caller's transport handling. ``where`` names
    the setting that holds ``url`` ("the connection's host", "the video URL").
    """
    parts = urlsplit(url)
    host = parts.hostname or "the server"
    try:
        port = parts.port
    except ValueError:
        port = None
    # Host and port only: a URL's user info or query (signed storage URLs) stays out of messages.
    address = f"{host}:{port}" if port else host
    for cause in _exception_chain(exc):
        if isinstance(cause, ssl.SSLCertVerificationError):
            return NanoGPTTLSError(
                f"Could not {action}: {_certificate_problem(cause, host)}",
                request_sent=False,
            )
        if isinstance(cause, ssl.SSLError) and cause.reason in _PLAIN_HTTP_REASONS:
            return NanoGPTTLSError(
                f"Could not {action}: {where} uses https://{address} but the server there "
                f"speaks plain HTTP: use http://{address} if that server is meant to be "
                "reached without TLS, or the port where it serves https. Nothing was sent.",
                request_sent=False,
            )
    return None


def _certificate_problem(error: ssl.SSLCertVerificationError, host: str) -> str:
    detail = error.verify_message or error.reason or "verification failed"
    trust_hint = (
        "Nothing was sent. If the server is meant to use this certificate (a company proxy, "
        "a private gateway), add its CA to the trust store of the workers (REQUESTS_CA_BUNDLE) "
        "and the triggerer (SSL_CERT_FILE); otherwise something is intercepting the connection."
    )
    if error.verify_code in _WRONG_HOST_CODES:
        return (
            f"the TLS certificate of {host} is issued for another host ({detail}). Check the "
            f"host name in the URL: it must be one the certificate names. Nothing was sent."
        )
    if error.verify_code in _EXPIRED_CODES:
        return (
            f"the TLS certificate of {host} is not valid now ({detail}). Check the clock of "
            "this machine, or ask the server's owner to renew it. Nothing was sent."
        )
    return f"the TLS certificate of {host} is not trusted ({detail}). {trust_hint}"


def _exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it wraps: causes, contexts, and exceptions carried in args or reason."""
    pending: list[BaseException] = [exc]
    seen: set[int] = set()
    while pending and len(seen) < 32:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        wrapped = [current.__cause__, current.__context__, getattr(current, "reason", None)]
        wrapped += list(current.args)
        pending += [item for item in wrapped if isinstance(item, BaseException)]
