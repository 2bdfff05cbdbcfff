"""Build NanoGPT HTTP requests: base URL, paths, query parameters and headers, in one place."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

DEFAULT_BASE_URL = "https://nano-gpt.com"

SUBMIT_PATH = "/api/generate-video"
STATUS_PATH = "/api/video/status"
LEGACY_STATUS_PATH = "/api/generate-video/status"
RECOVER_PATH = "/api/generate-video/recover"
BALANCE_PATH = "/api/check-balance"
VIDEO_MODELS_PATH = "/api/v1/video-models"
USAGE_PATH = "/api/v1/usage"


@dataclass(frozen=True)
class ApiRequest:
    method: str
    path: str
    action: str
    params: Mapping[str, str] = field(default_factory=dict)
    json: Mapping[str, Any] | None = None


def normalize_base_url(host: str | None) -> str:
    """The connection host is the origin; a missing scheme and a trailing ``/api`` are tolerated."""
    value = (host or "").strip().rstrip("/")
    if not value:
        return DEFAULT_BASE_URL
    if "://" not in value:
        value = f"https://{value}"
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"NanoGPT base URL must be an http(s) origin, got {host!r}")
    path = parts.path.rstrip("/")
    if path.endswith("/api"):
        path = path[: -len("/api")]
    return f"{parts.scheme}://{parts.netloc}{path}"


def build_headers(api_key: str, user_agent: str) -> dict[str, str]:
    return {
        "x-api-key": api_key,
        "Accept": "application/json",
        "User-Agent": user_agent,
    }


def submit_request(payload: Mapping[str, Any]) -> ApiRequest:
    model = payload.get("model", "?")
    return ApiRequest("POST", SUBMIT_PATH, f"submit a {model} video", json=dict(payload))


def status_request(run_id: str) -> ApiRequest:
    return ApiRequest("GET", STATUS_PATH, f"get the status of {run_id}", {"requestId": run_id})


def balance_request() -> ApiRequest:
    return ApiRequest("POST", BALANCE_PATH, "check the balance")


def video_models_request(detailed: bool = True) -> ApiRequest:
    return ApiRequest(
        "GET", VIDEO_MODELS_PATH, "list video models", {"detailed": str(detailed).lower()}
    )


def recover_request(
    model: str | None = None, limit: int = 10, conversation_uuid: str | None = None
) -> ApiRequest:
    params = {"limit": str(max(1, min(50, limit)))}
    if model:
        params["model"] = model
    if conversation_uuid:
        params["conversationUUID"] = conversation_uuid
    return ApiRequest("GET", RECOVER_PATH, "list recent video runs", params)


def usage_request(from_day: str, to_day: str) -> ApiRequest:
    """The key's spend per UTC day from ``from_day`` to ``to_day`` (``YYYY-MM-DD``, inclusive)."""
    return ApiRequest(
        "GET",
        USAGE_PATH,
        f"read the key's usage from {from_day} to {to_day}",
        {"from": from_day, "to": to_day, "group_by": "day"},
    )
