"""A video request as the operator takes it, and the JSON body NanoGPT receives.

``VideoRequest`` is the one list of request parameters: the operator's templated fields and
keyword arguments are its fields, and only ``payload`` knows NanoGPT's names for them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_nanogpt.exceptions import NanoGPTValidationError

# Operator parameter -> NanoGPT field, for the parameters sent as they are.
_WIRE_NAMES = {
    "model": "model",
    "prompt": "prompt",
    "duration": "duration",
    "aspect_ratio": "aspect_ratio",
    "resolution": "resolution",
    "negative_prompt": "negative_prompt",
    "seed": "seed",
    "image_url": "imageUrl",
}


@dataclass(frozen=True)
class VideoRequest:
    """What to generate, in the operator's terms (all templated)."""

    model: str
    prompt: str | None = None
    duration: str | int | None = None
    aspect_ratio: str | None = None
    resolution: str | None = None
    negative_prompt: str | None = None
    seed: int | str | None = None
    image_url: str | None = None
    image_path: Any = None
    extra_params: Mapping[str, Any] | None = None

    def payload(self, *, validate: bool = True) -> dict[str, Any]:
        """The request body with NanoGPT's field names; unset fields are left out.

        Reads ``image_path`` (after every check that needs no file read, so a bad request fails
        fast); makes no call to NanoGPT. ``validate`` applies the documented model rules.
        """
        from airflow_provider_nanogpt.validation import validate_payload

        if self.image_url and self.image_path:
            raise NanoGPTValidationError(
                "Pass either image_url or image_path, not both. Nothing was sent."
            )
        if self.image_url:
            check_image_url(self.image_url)
        if validate:
            validate_payload(self._body("data:" if self.image_path else None))
        if not self.image_path:
            return self._body(None)
        from airflow_provider_nanogpt.images import image_data_url

        return self._body(image_data_url(self.image_path))

    def _body(self, image_data: str | None) -> dict[str, Any]:
        body = {
            wire: value
            for name, wire in _WIRE_NAMES.items()
            if (value := getattr(self, name)) is not None and value != ""
        }
        if image_data:
            body["imageDataUrl"] = image_data
        # Model-specific fields (cfg_scale, num_frames, …) pass through as given.
        for key, value in (self.extra_params or {}).items():
            if value is not None:
                body[key] = value
        return body


REQUEST_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(VideoRequest))


def check_image_url(image_url: str) -> None:
    parts = urlsplit(image_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise NanoGPTValidationError(
            f"image_url={image_url!r} is not allowed; NanoGPT fetches images over http(s) only "
            "(use image_path for local or object-storage files)"
        )
