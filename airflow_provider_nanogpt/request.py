"""Build the JSON body of a NanoGPT video submission and fingerprint it."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_nanogpt.exceptions import NanoGPTValidationError

# Fields that tag or route a request but do not change which video is generated.
_NOT_FINGERPRINTED = frozenset({"conversationUUID"})
_CORRELATION_NAMESPACE = uuid.UUID("5b0c0a57-6d8e-4a43-9a57-0b5f3c1f7a10")


def build_payload(
    *,
    model: str,
    prompt: str | None = None,
    duration: str | int | None = None,
    aspect_ratio: str | None = None,
    resolution: str | None = None,
    negative_prompt: str | None = None,
    seed: int | str | None = None,
    image_url: str | None = None,
    image_data_url: str | None = None,
    extra_params: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The request body with NanoGPT's field names; unset fields are left out.

    ``extra_params`` passes model-specific fields through as given (cfg_scale, num_frames, …).
    """
    if image_url is not None:
        check_image_url(image_url)
    fields: dict[str, Any] = {
        "model": model,
        "prompt": prompt,
        "duration": duration,
        "aspect_ratio": aspect_ratio,
        "resolution": resolution,
        "negative_prompt": negative_prompt,
        "seed": seed,
        "imageUrl": image_url,
        "imageDataUrl": image_data_url,
    }
    payload = {k: v for k, v in fields.items() if v is not None and v != ""}
    for key, value in (extra_params or {}).items():
        if value is not None:
            payload[key] = value
    return payload


def check_image_url(image_url: str) -> None:
    parts = urlsplit(image_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise NanoGPTValidationError(
            f"image_url={image_url!r} is not allowed; NanoGPT fetches images over http(s) only "
            "(use image_path for local or object-storage files)"
        )


def fingerprint(payload: Mapping[str, Any]) -> str:
    """A stable hash of what would be generated, used to tell a retry from a changed request."""
    relevant = {k: v for k, v in payload.items() if k not in _NOT_FINGERPRINTED}
    canonical = json.dumps(relevant, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def correlation_id(task_identity: str, request_fingerprint: str) -> str:
    """A UUID tying a submission to one task instance and request, sent as conversationUUID."""
    return str(uuid.uuid5(_CORRELATION_NAMESPACE, f"{task_identity}|{request_fingerprint}"))
