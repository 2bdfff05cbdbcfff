"""A video request as the operator takes it, and the JSON body NanoGPT receives.

``VideoRequest`` is the one list of request parameters: the operator's templated fields and
keyword arguments are its fields, and only ``payload`` knows NanoGPT's names for them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from airflow_provider_nanogpt.exceptions import NanoGPTValidationError
from airflow_provider_nanogpt.media import (
    MEDIA_KINDS,
    check_inline_sizes,
    check_media_url,
    data_url,
)

# Operator parameter -> NanoGPT field, for the parameters sent as they are.
_WIRE_NAMES = {
    "model": "model",
    "prompt": "prompt",
    "duration": "duration",
    "aspect_ratio": "aspect_ratio",
    "resolution": "resolution",
    "negative_prompt": "negative_prompt",
    "seed": "seed",
    **{kind.url_parameter: kind.url_field for kind in MEDIA_KINDS},
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
    video_url: str | None = None
    video_path: Any = None
    audio_url: str | None = None
    audio_path: Any = None
    extra_params: Mapping[str, Any] | None = None

    def payload(self, *, validate: bool = True) -> dict[str, Any]:
        """The request body with NanoGPT's field names; unset fields are left out.

        Reads the ``*_path`` files (after every check that needs no file read, so a bad request
        fails fast); makes no call to NanoGPT. ``validate`` applies the documented model rules.
        The URL, exclusivity, file-type and size checks apply either way.
        """
        from airflow_provider_nanogpt.validation import validate_payload

        extra = self.extra_fields()
        for kind in MEDIA_KINDS:
            url, path = getattr(self, kind.url_parameter), getattr(self, kind.path_parameter)
            if url and path:
                raise NanoGPTValidationError(
                    f"Pass either {kind.url_parameter} or {kind.path_parameter}, not both. "
                    "Nothing was sent."
                )
            if url:
                check_media_url(kind, url)
        inline = [kind for kind in MEDIA_KINDS if getattr(self, kind.path_parameter)]
        if validate:
            # Placeholders stand in for the files, so the rules see every input before any read.
            validate_payload(self._body({kind.data_field: "data:" for kind in inline}, extra))
        body = self._body(
            {
                kind.data_field: data_url(getattr(self, kind.path_parameter), kind)
                for kind in inline
            },
            extra,
        )
        check_inline_sizes(body)
        return body

    def extra_fields(self) -> dict[str, Any]:
        """The ``extra_params`` that are sent (``None`` values are dropped)."""
        extra = self.extra_params
        if extra is None:
            return {}
        if not isinstance(extra, Mapping):
            raise NanoGPTValidationError(
                f"extra_params must be a dict of NanoGPT fields, not {type(extra).__name__} "
                f"({str(extra)[:80]!r}). A Jinja template renders text unless the DAG sets "
                "render_template_as_native_obj=True. Nothing was sent."
            )
        return {str(key): value for key, value in extra.items() if value is not None}

    def _body(self, inline: Mapping[str, str], extra: Mapping[str, Any]) -> dict[str, Any]:
        body = {
            wire: value
            for name, wire in _WIRE_NAMES.items()
            if (value := getattr(self, name)) is not None and value != ""
        }
        body.update(inline)
        # Model-specific fields (cfg_scale, num_frames, …) pass through as given.
        body.update(extra)
        return body


REQUEST_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(VideoRequest))
