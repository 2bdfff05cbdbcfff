"""Check a video request against what NanoGPT documents for its model, before anything is sent.

Rules cover the model families whose values the docs list (Veo, Kling, Hunyuan, Wan
image-to-video, Seedance). Unknown models pass through unchecked: the catalog changes faster than
this provider. Each message names the field, the value given and what is allowed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_nanogpt.exceptions import NanoGPTValidationError

IMAGE_ONLY_MODELS = frozenset(
    {
        "kling-v21-standard",
        "kling-v25-turbo-std",
        "wan-video-image-to-video",
        "hunyuan-video-image-to-video",
        "veo2-video-image-to-video",
    }
)
PROMPT_ALWAYS_REQUIRED = frozenset({"kling-v21-master"})
IMAGE_FIELDS = ("imageUrl", "imageDataUrl", "image", "imageAttachmentId", "image_data_url")

Check = Callable[[Mapping[str, Any]], str | None]


@dataclass(frozen=True)
class ModelRules:
    family: str
    checks: tuple[Check, ...] = field(default_factory=tuple)


def _one_of(name: str, allowed: Iterable[Any], *, coerce: Callable[[Any], Any] = str) -> Check:
    allowed_values = tuple(allowed)

    def check(payload: Mapping[str, Any]) -> str | None:
        if name not in payload:
            return None
        value = payload[name]
        try:
            ok = coerce(value) in allowed_values
        except (TypeError, ValueError):
            ok = False
        if ok:
            return None
        shown = ", ".join(repr(v) for v in allowed_values)
        return f"{name}={value!r} is not allowed; use one of {shown}"

    return check


def _between(name: str, low: float, high: float, *, integer: bool = False) -> Check:
    def check(payload: Mapping[str, Any]) -> str | None:
        if name not in payload:
            return None
        value = payload[name]
        try:
            number = float(value)
            ok = low <= number <= high and (not integer or number.is_integer())
        except (TypeError, ValueError):
            ok = False
        if isinstance(value, bool):
            ok = False
        if ok:
            return None
        kind = "a whole number" if integer else "a number"
        return f"{name}={value!r} is not allowed; use {kind} from {low:g} to {high:g}"

    return check


def _seconds_with_suffix(name: str, low: int, high: int) -> Check:
    pattern = re.compile(r"^(\d+)s$")

    def check(payload: Mapping[str, Any]) -> str | None:
        if name not in payload:
            return None
        value = payload[name]
        match = pattern.match(value) if isinstance(value, str) else None
        if match and low <= int(match.group(1)) <= high:
            return None
        return (
            f"{name}={value!r} is not allowed; Veo models take seconds with an 's' suffix, "
            f'from "{low}s" to "{high}s" (for example "5s")'
        )

    return check


_VEO_ASPECTS = _one_of("aspect_ratio", ["16:9", "9:16", "1:1", "4:3", "3:4"])
_KLING = ModelRules(
    "Kling",
    (
        _one_of("duration", ["5", "10"]),
        _between("cfg_scale", 0, 1),
    ),
)
_HUNYUAN = ModelRules(
    "Hunyuan",
    (
        _one_of("resolution", ["480p", "720p", "1080p"]),
        _one_of("num_frames", [65, 97, 129], coerce=int),
        _between("num_inference_steps", 10, 50, integer=True),
    ),
)

MODEL_RULES: dict[str, ModelRules] = {
    "veo2-video": ModelRules("Veo", (_seconds_with_suffix("duration", 5, 30), _VEO_ASPECTS)),
    "veo2-video-image-to-video": ModelRules(
        "Veo", (_seconds_with_suffix("duration", 5, 8), _VEO_ASPECTS)
    ),
    "veo3-video": ModelRules("Veo", (_seconds_with_suffix("duration", 5, 8), _VEO_ASPECTS)),
    "kling-video": _KLING,
    "kling-video-v2": _KLING,
    "kling-v21-standard": _KLING,
    "kling-v21-pro": _KLING,
    "kling-v21-master": _KLING,
    "kling-v25-turbo-pro": _KLING,
    "kling-v25-turbo-std": _KLING,
    "kling-v26-pro": _KLING,
    "hunyuan-video": _HUNYUAN,
    "hunyuan-video-image-to-video": _HUNYUAN,
    "wan-video-image-to-video": ModelRules(
        "Wan image-to-video",
        (
            _between("num_frames", 81, 100, integer=True),
            _between("frames_per_second", 5, 24, integer=True),
            _one_of("resolution", ["480p", "720p"]),
            _between("num_inference_steps", 1, 40, integer=True),
        ),
    ),
    "seedance-video": ModelRules(
        "Seedance",
        (_one_of("resolution", ["480p", "1080p"]), _one_of("duration", ["5", "10"])),
    ),
    "seedance-lite-video": ModelRules(
        "Seedance lite",
        (_one_of("resolution", ["480p", "720p"]), _one_of("duration", ["5", "10"])),
    ),
}


def has_image(payload: Mapping[str, Any]) -> bool:
    return any(payload.get(name) for name in IMAGE_FIELDS)


def validate_payload(payload: Mapping[str, Any]) -> None:
    """Raise NanoGPTValidationError listing every problem with this request."""
    problems = [p for p in _problems(payload) if p]
    if problems:
        model = payload.get("model")
        raise NanoGPTValidationError(
            f"Invalid NanoGPT video request for model {model!r}: "
            + "; ".join(problems)
            + ". Nothing was sent. (validate=False skips these checks.)"
        )


def _problems(payload: Mapping[str, Any]) -> Iterable[str | None]:
    model = payload.get("model")
    if not isinstance(model, str) or not model.strip():
        yield "model is required (for example 'kling-video-v2')"
        return
    prompt = payload.get("prompt")
    has_prompt = isinstance(prompt, str) and bool(prompt.strip())
    if model in IMAGE_ONLY_MODELS and not has_image(payload):
        yield f"{model} is an image-to-video model and needs image_url or image_path"
    rules = MODEL_RULES.get(model)
    if rules is None:
        return
    if not has_prompt and (model in PROMPT_ALWAYS_REQUIRED or not has_image(payload)):
        yield "prompt is required for text-to-video"
    for check in rules.checks:
        yield check(payload)
