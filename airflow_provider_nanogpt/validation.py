"""Check a video request against what NanoGPT documents for its model, before anything is sent.

Rules cover the model families whose values or inputs the docs list (Veo, Kling, Hunyuan, Wan
image-to-video, Seedance, the extend, edit, upscale, lipsync and avatar models). Unknown models
get only the generic checks (the flags NanoGPT documents as booleans, a length above zero): the
catalog changes faster than this provider. Each message names the field, the value given and
what is allowed.

``check_supported_parameters`` compares ``extra_params`` with the model's entry in NanoGPT's
catalog; the operator fetches that at execute time (``check_catalog_parameters``), never at
DAG parse.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

from airflow_provider_nanogpt.exceptions import NanoGPTValidationError

if TYPE_CHECKING:
    from airflow_provider_nanogpt.api.responses import VideoModel
    from airflow_provider_nanogpt.hooks.nanogpt import NanoGPTHook

IMAGE_FIELDS = ("imageUrl", "imageDataUrl", "image", "imageAttachmentId", "image_data_url")
VIDEO_FIELDS = ("videoUrl", "videoDataUrl", "videoAttachmentId", "video")
AUDIO_FIELDS = ("audioUrl", "audioDataUrl", "audio")
# The fields NanoGPT's models take a video's length in.
LENGTH_FIELDS = ("duration", "seconds")

# Fields NanoGPT documents as booleans. The text "false" is not false to a JSON API.
BOOLEAN_FIELDS = (
    "generateAudio",
    "enhancePrompt",
    "pro",
    "pro_mode",
    "enable_prompt_expansion",
    "enable_safety_checker",
    "showExplicitContent",
    "camera_fixed",
    "camera_fix",
    "cameraFixed",
    "prompt_optimizer",
    "acceleration",
    "adjust_fps_for_interpolation",
)
# Fields of the request itself rather than of a model (media inputs, the run's tag): a model's
# catalog entry need not list them.
REQUEST_LEVEL_FIELDS = frozenset(
    {"model", "prompt", "conversationUUID", *IMAGE_FIELDS, *VIDEO_FIELDS, *AUDIO_FIELDS}
)
# Spellings NanoGPT documents for one field; the catalog may list only one of them.
ALTERNATIVE_SPELLINGS = frozenset(
    {"camera_fixed", "camera_fix", "cameraFixed", "voice_id", "voiceId"}
    | {"imageDataUrl", "image_data_url"}
)

_TEXT_HINT = (
    " (a Jinja template renders text unless the DAG sets render_template_as_native_obj=True)"
)

Check = Callable[[Mapping[str, Any]], str | None]


@dataclass(frozen=True)
class ModelRules:
    family: str
    checks: tuple[Check, ...] = field(default_factory=tuple)


def _whole_number(value: Any) -> int:
    """An integer, or its digits as a string (the OpenAPI allows both); anything else raises."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value):
        return int(value)
    raise ValueError(value)


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
            number = _whole_number(value) if integer else float(value)
            ok = low <= number <= high and not isinstance(value, bool)
        except (TypeError, ValueError):
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


def _needs(what: str, sources: tuple[str, ...], parameters: str) -> Check:
    """The model cannot run without one of ``sources`` (say ``what`` it is, and what to pass)."""

    def check(payload: Mapping[str, Any]) -> str | None:
        if any(payload.get(name) for name in sources):
            return None
        return f"{payload['model']} is {what} and needs {parameters}"

    return check


def _required(name: str, where: str = "") -> Check:
    def check(payload: Mapping[str, Any]) -> str | None:
        if payload.get(name) not in (None, ""):
            return None
        return f"{name} is required for {payload['model']}{where}"

    return check


def _prompt(reason: str | None = None) -> Check:
    """A prompt is required: always with a ``reason``, else unless an image is given."""

    def check(payload: Mapping[str, Any]) -> str | None:
        prompt = payload.get("prompt")
        if isinstance(prompt, str) and prompt.strip():
            return None
        if reason is not None:
            return f"prompt is required: {reason}"
        return None if has_image(payload) else "prompt is required for text-to-video"

    return check


def _text_to_video_only(name: str, family: str) -> Check:
    def check(payload: Mapping[str, Any]) -> str | None:
        if name not in payload or not has_image(payload):
            return None
        return (
            f"{name}={payload[name]!r} is not allowed with an input image; {family} takes "
            f"{name} for text-to-video only, so leave it out or drop the image"
        )

    return check


_PROMPT_UNLESS_IMAGE = _prompt()
_NEEDS_IMAGE = _needs("an image-to-video model", IMAGE_FIELDS, "image_url or image_path")


def _text_or_image(family: str, *checks: Check) -> ModelRules:
    return ModelRules(family, (_PROMPT_UNLESS_IMAGE, *checks))


def _image_only(family: str, *checks: Check) -> ModelRules:
    return ModelRules(family, (_NEEDS_IMAGE, _PROMPT_UNLESS_IMAGE, *checks))


def _source_video(what: str, *, fields: tuple[str, ...] = VIDEO_FIELDS) -> Check:
    return _needs(what, fields, "a source video: video_url or video_path")


_NEEDS_AUDIO = _needs("an audio-driven model", AUDIO_FIELDS, "audio: audio_url or audio_path")
_NEEDS_AVATAR_IMAGE = _needs("an avatar model", IMAGE_FIELDS, "an image: image_url or image_path")


def _extend(*, fields: tuple[str, ...] = VIDEO_FIELDS) -> ModelRules:
    return ModelRules(
        "extend",
        (
            _source_video("an extend model", fields=fields),
            _prompt("extend models take one to describe how the video continues"),
        ),
    )


_VEO_ASPECTS = _one_of("aspect_ratio", ["16:9", "9:16", "1:1", "4:3", "3:4"])
_KLING_CHECKS = (
    _one_of("duration", ["5", "10"]),
    _between("cfg_scale", 0, 1),
    _one_of("aspect_ratio", ["16:9", "9:16", "1:1"]),
)
_HUNYUAN_CHECKS = (
    _one_of("resolution", ["480p", "720p", "1080p"]),
    _one_of("num_frames", [65, 97, 129], coerce=_whole_number),
    _between("num_inference_steps", 10, 50, integer=True),
)
_SEEDANCE_CHECKS = (
    _one_of("duration", ["5", "10"]),
    _one_of("aspect_ratio", ["16:9", "9:16", "1:1", "4:3", "3:4", "21:9", "9:21"]),
    _text_to_video_only("aspect_ratio", "Seedance"),
)
_UPSCALER = ModelRules("upscaler", (_source_video("an upscaler"),))
_AUDIO_AND_IMAGE = ModelRules("avatar", (_NEEDS_AUDIO, _NEEDS_AVATAR_IMAGE))
_AUDIO_AND_VIDEO = ModelRules("lipsync", (_NEEDS_AUDIO, _source_video("a lipsync model")))

MODEL_RULES: dict[str, ModelRules] = {
    "veo2-video": _text_or_image("Veo", _seconds_with_suffix("duration", 5, 30), _VEO_ASPECTS),
    "veo2-video-image-to-video": _image_only(
        "Veo", _seconds_with_suffix("duration", 5, 8), _VEO_ASPECTS
    ),
    "veo3-video": _text_or_image("Veo", _seconds_with_suffix("duration", 5, 8), _VEO_ASPECTS),
    "kling-video": _text_or_image("Kling", *_KLING_CHECKS),
    "kling-video-v2": _text_or_image("Kling", *_KLING_CHECKS),
    "kling-v21-standard": _image_only("Kling", *_KLING_CHECKS),
    "kling-v21-pro": _text_or_image("Kling", *_KLING_CHECKS),
    "kling-v21-master": ModelRules(
        "Kling", (_prompt("kling-v21-master always needs one, even with an image"), *_KLING_CHECKS)
    ),
    "kling-v25-turbo-pro": _text_or_image("Kling", *_KLING_CHECKS),
    "kling-v25-turbo-std": _image_only("Kling", *_KLING_CHECKS),
    "kling-v26-pro": _text_or_image("Kling", *_KLING_CHECKS),
    "hunyuan-video": _text_or_image("Hunyuan", *_HUNYUAN_CHECKS),
    "hunyuan-video-image-to-video": _image_only("Hunyuan", *_HUNYUAN_CHECKS),
    "wan-video-image-to-video": _image_only(
        "Wan image-to-video",
        _between("num_frames", 81, 100, integer=True),
        _between("frames_per_second", 5, 24, integer=True),
        _one_of("resolution", ["480p", "720p"]),
        _between("num_inference_steps", 1, 40, integer=True),
    ),
    "seedance-video": _text_or_image(
        "Seedance", _one_of("resolution", ["480p", "1080p"]), *_SEEDANCE_CHECKS
    ),
    "seedance-lite-video": _text_or_image(
        "Seedance lite", _one_of("resolution", ["480p", "720p"]), *_SEEDANCE_CHECKS
    ),
    # Source-video models (fact sheet §2.2, §6.6, §7.3, §7.4).
    "wan-wavespeed-25-extend": _extend(),
    # Documented to take its source only as videoUrl, videoDataUrl or videoAttachmentId.
    "wan-wavespeed-22-spicy-extend": _extend(fields=VIDEO_FIELDS[:3]),
    "veo3-1-extend": _extend(),
    "veo3-1-fast-extend": _extend(),
    "bytedance-seedance-v1.5-pro-extend": _extend(),
    "wan-wavespeed-video-edit": ModelRules(
        "video edit",
        (
            _source_video("a video-edit model"),
            _prompt("video-edit models take one to describe the edit"),
        ),
    ),
    "video-upscaler": _UPSCALER,
    "bytedance-seedance-upscaler": _UPSCALER,
    "seedvr2-video-upscaler": _UPSCALER,
    "wan-wavespeed-22-animate": ModelRules(
        "Wan animate", (_one_of("mode", ["animate", "replace"]),)
    ),
    "kling-lipsync-t2v": ModelRules(
        "lipsync",
        (
            _source_video("a lipsync model"),
            _required("voice_id", " (in extra_params)"),
            _one_of("voice_language", ["en", "zh"]),
            _between("voice_speed", 0.8, 2.0),
        ),
    ),
    "kling-lipsync-a2v": _AUDIO_AND_VIDEO,
    "latentsync": _AUDIO_AND_VIDEO,
    "kling-v2-avatar-standard": _AUDIO_AND_IMAGE,
    "kling-v2-avatar-pro": _AUDIO_AND_IMAGE,
    "bytedance-avatar-omni-human-1.5": _AUDIO_AND_IMAGE,
    "bytedance-waver-1.0": _AUDIO_AND_IMAGE,
    "wan-wavespeed-s2v": _AUDIO_AND_IMAGE,
    "magicapi-video-face-swap": ModelRules(
        "face swap",
        (
            _required("swapImage", " (in extra_params)"),
            _required("targetVideo", " (in extra_params)"),
        ),
    ),
}


def has_image(payload: Mapping[str, Any]) -> bool:
    return any(payload.get(name) for name in IMAGE_FIELDS)


def validate_payload(payload: Mapping[str, Any]) -> None:
    """Raise NanoGPTValidationError listing every problem with this request."""
    problems = [p for p in _problems(payload) if p]
    if problems:
        _invalid(payload.get("model"), problems)


def _invalid(model: object, problems: Iterable[str]) -> NoReturn:
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
    for name in BOOLEAN_FIELDS:
        value = payload.get(name)
        if name in payload and not isinstance(value, bool):
            yield f"{name}={value!r} is not allowed; pass a boolean, True or False" + (
                _TEXT_HINT if isinstance(value, str) else ""
            )
    # Whatever the model: a length of zero or less is a mistake NanoGPT may still charge for.
    for name in LENGTH_FIELDS:
        yield _positive_length(payload, name)
    rules = MODEL_RULES.get(model)
    if rules is None:
        return
    for check in rules.checks:
        yield check(payload)


def _positive_length(payload: Mapping[str, Any], name: str) -> str | None:
    value = payload.get(name)
    if value is None or isinstance(value, bool):
        return None
    text = str(value).strip().lower().removesuffix("s").strip()
    try:
        seconds = float(text)
    except ValueError:
        return None  # not a number: the model's own rules (if any) judge it
    if not math.isfinite(seconds) or seconds <= 0:
        return f"{name}={value!r} is not allowed; a video lasts more than 0 seconds"
    return None


# --- extra_params against NanoGPT's catalog ---------------------------------------------------


def _shape(name: str) -> str:
    return name.replace("_", "").lower()


def check_supported_parameters(
    params: Mapping[str, Any], model: VideoModel, allow_unlisted: bool | Collection[str] = ()
) -> None:
    """Compare ``extra_params`` keys with the catalog's ``supported_parameters`` (no I/O).

    NanoGPT ignores keys it does not know, so a typo (``cfg_scal`` for ``cfg_scale``) would be
    dropped without a word while the video is still charged: every key the catalog does not list
    raises NanoGPTValidationError, naming the closest supported name. ``allow_unlisted`` lets
    keys through that NanoGPT accepts but its catalog does not list yet (True: all of them).
    """
    supported = list(model.supported_parameters or ())
    if not supported:
        return
    by_shape = {_shape(name): name for name in supported}
    problems: list[str] = []
    for key in params:
        if key in supported or key in ALTERNATIVE_SPELLINGS or key in REQUEST_LEVEL_FIELDS:
            continue
        if allow_unlisted is True or (allow_unlisted is not False and key in allow_unlisted):
            continue
        closest = by_shape.get(_shape(key)) or next(
            iter(difflib.get_close_matches(key, supported, n=1, cutoff=0.6)), None
        )
        hint = f"did you mean {closest!r}? " if closest else ""
        problems.append(
            f"extra_params key {key!r} is not among the parameters NanoGPT's catalog lists for "
            f"{model.id} ({hint}NanoGPT ignores unknown keys, so the setting would be lost while "
            "the video is still charged; if NanoGPT added it after its catalog, pass "
            f"allow_unlisted_params=[{key!r}])"
        )
    if problems:
        _invalid(model.id, problems)


def check_catalog_parameters(
    hook: NanoGPTHook,
    model: str,
    params: Mapping[str, Any],
    log: Any,
    allow_unlisted: bool | Collection[str] = (),
) -> None:
    """Check ``params`` against the catalog entry of ``model`` (one GET; none without params).

    An unreachable catalog is a warning, not a failure: the check only adds to the local rules.
    """
    if not params:
        return
    from airflow_provider_nanogpt.exceptions import NanoGPTError

    try:
        catalog = hook.list_video_models()
    except NanoGPTError as exc:
        log.warning(
            "Could not read NanoGPT's model catalog to check the extra_params keys (%s); "
            "sending them unchecked.",
            exc,
        )
        return
    entry = next((candidate for candidate in catalog if candidate.id == model), None)
    if entry is None:
        return  # not in the catalog (yet): nothing to compare with
    check_supported_parameters(params, entry, allow_unlisted)
