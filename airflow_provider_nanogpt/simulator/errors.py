"""Error bodies in every shape the fact sheet documents (its section 4.1).

* ``string``  - ``{"error": "<message>", "status": N}`` (2025 guide, "legacy" format)
* ``typed``   - ``{"error": {"message": ..., "type": ...}}`` (current guide)
* ``openai``  - ``{"error": {"message", "type", "code", "param"}}`` (``/api/v1/*``)
* ``openapi`` - ``{"error": N, "message": ...}`` (the OpenAPI ``Error`` schema)
"""

from __future__ import annotations

from typing import Any

BODY_SHAPES = ("string", "typed", "openai", "openapi")

# HTTP status -> (typed "type", openai "type", openai "code")
_KINDS: dict[int, tuple[str, str, str]] = {
    400: ("INVALID_REQUEST", "invalid_request_error", "invalid_request"),
    401: ("UNAUTHORIZED", "authentication_error", "invalid_api_key"),
    402: ("INSUFFICIENT_BALANCE", "insufficient_quota", "insufficient_balance"),
    403: ("FORBIDDEN", "permission_error", "forbidden"),
    404: ("NOT_FOUND", "invalid_request_error", "not_found"),
    413: ("PAYLOAD_TOO_LARGE", "invalid_request_error", "payload_too_large"),
    429: ("RATE_LIMITED", "rate_limit_error", "rate_limit_exceeded"),
    500: ("INTERNAL_ERROR", "server_error", "internal_error"),
    502: ("BAD_GATEWAY", "server_error", "bad_gateway"),
    503: ("SERVICE_UNAVAILABLE", "server_error", "service_unavailable"),
}


class ApiError(Exception):
    """Raised by endpoint code; turned into a JSON error response by the server."""

    def __init__(
        self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.body = body
        self.headers = dict(headers or {})


def error_body(status: int, message: str, shape: str = "string") -> dict[str, Any]:
    """Build an error body of ``shape`` (one of :data:`BODY_SHAPES`)."""
    typed_type, openai_type, openai_code = _KINDS.get(
        status, ("ERROR", "api_error", f"http_{status}")
    )
    if shape == "typed":
        return {"error": {"message": message, "type": typed_type}}
    if shape == "openai":
        return {
            "error": {"message": message, "type": openai_type, "code": openai_code, "param": None}
        }
    if shape == "openapi":
        return {"error": status, "message": message}
    return {"error": message, "status": status}


def simple_error(status: int, message: str, **extra: Any) -> ApiError:
    """The common ``{"error": "...", "status": N}`` error, with optional extra fields."""
    body = error_body(status, message)
    body.update(extra)
    return ApiError(status, body)


DAILY_CAP_CODES = {"requests": "daily_rpd_limit_exceeded", "usd": "daily_usd_limit_exceeded"}
_DAILY_CAP_MESSAGES = {
    "requests": "Daily request limit exceeded (simulated cap). The limit resets at 00:00 UTC.",
    "usd": "Daily USD limit exceeded (simulated cap). The limit resets at 00:00 UTC.",
}


def daily_cap_body(cap: str = "requests", shape: str = "openai") -> dict[str, Any]:
    """A per-key daily cap body: ``cap`` is ``requests`` (``daily_rpd_limit_exceeded``) or
    ``usd`` (``daily_usd_limit_exceeded``).

    ``openai`` (and ``string``, the faults' default) is the documented body, the code in
    ``error.code`` beside the broad ``type`` ``rate_limit_error``; ``typed`` puts the code in
    ``error.type``; ``openapi`` puts it only in a top-level ``code``.
    """
    code, message = DAILY_CAP_CODES[cap], _DAILY_CAP_MESSAGES[cap]
    if shape == "typed":
        return {"error": {"message": message, "type": code}}
    if shape == "openapi":
        return {"error": 429, "message": message, "code": code}
    return {"error": {"message": message, "type": "rate_limit_error", "code": code, "param": None}}


RATE_LIMIT_MESSAGE = "Rate limit exceeded. Please wait before generating another video."
INVALID_SESSION = "Invalid session"
