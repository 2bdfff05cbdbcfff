"""Video model catalog and pricing: the single source of every price the simulator uses.

The real ``GET /api/v1/video-models`` documents only ``pricing.currency``; the shape of the
rest "varies by model". The simulator assumes these five shapes (see docs/simulator.md)::

    {"currency": "USD", "per_generation": 0.5}
    {"currency": "USD", "per_second": 0.1}
    {"currency": "USD", "per_resolution": {"480p": 0.2, "720p": 0.4, "1080p": 0.8}}
    {"currency": "USD", "per_duration": {"5": 0.35, "10": 0.7}}
    {"currency": "USD", "per_resolution_per_second": {"480p": 0.02, "1080p": 0.06}}

The submit pre-charge (and the final cost) is computed from the same pricing with
:func:`compute_cost`: default duration 5 s, default resolution 720p when the model lists it,
otherwise the cheapest listed resolution.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

DEFAULT_DURATION_SECONDS = Decimal(5)
DEFAULT_RESOLUTION = "720p"
_CENT_FRACTION = Decimal("0.000001")


class PricingError(ValueError):
    """A request field needed for pricing is unusable (answered with HTTP 400)."""


@dataclass(frozen=True)
class ModelSpec:
    """One entry of the simulated video-model catalog."""

    id: str
    name: str
    description: str
    owned_by: str
    created: int
    pricing: dict[str, Any]
    text_to_video: bool = True
    image_to_video: bool = False
    # Extends a source video (videoUrl / videoDataUrl) as a prompt says. A submit without them
    # is not refused: the simulator is lenient here, as with unknown resolutions.
    video_input: bool = False
    audio_generation: bool = False
    durations: tuple[str, ...] = ("5", "10")
    duration_field: str = "duration"
    resolutions: tuple[str, ...] = ()
    aspect_ratios: tuple[str, ...] = ("16:9", "9:16", "1:1")
    extra_parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def image_only(self) -> bool:
        """True when the model cannot run without an input image."""
        return self.image_to_video and not self.text_to_video

    def supported_parameters(self) -> dict[str, Any]:
        """The ``supported_parameters`` object of the detailed catalog entry."""
        params: dict[str, Any] = {
            "prompt": {"type": "string", "required": self.text_to_video or self.video_input},
        }
        if self.durations:
            params[self.duration_field] = {
                "type": "string",
                "values": list(self.durations),
                "default": self.durations[0],
            }
        if self.aspect_ratios:
            params["aspect_ratio"] = {
                "type": "string",
                "values": list(self.aspect_ratios),
                "default": self.aspect_ratios[0],
            }
        if self.resolutions:
            params["resolution"] = {
                "type": "string",
                "values": list(self.resolutions),
                "default": default_resolution(self) or self.resolutions[0],
            }
        if self.image_to_video:
            params["imageDataUrl"] = {
                "type": "string",
                "required": self.image_only,
                "max_bytes": 4 * 1024 * 1024,
            }
            params["imageUrl"] = {"type": "string", "required": self.image_only}
        if self.video_input:
            params["videoDataUrl"] = {"type": "string", "max_bytes": 4 * 1024 * 1024}
            params["videoUrl"] = {"type": "string"}
        params["negative_prompt"] = {"type": "string"}
        params["seed"] = {"type": "integer"}
        params.update(self.extra_parameters)
        return params

    def pricing_json(self) -> dict[str, Any]:
        """The ``pricing`` object: ``currency`` plus exactly one price structure."""
        return {"currency": "USD", **self.pricing}


_MODELS: tuple[ModelSpec, ...] = (
    ModelSpec(
        id="veo2-video",
        name="Veo 2",
        owned_by="google",
        created=1733000000,
        description="Google Veo 2 text-to-video and image-to-video.",
        pricing={"per_second": 0.5},
        image_to_video=True,
        durations=("5s", "6s", "7s", "8s"),
        aspect_ratios=("16:9", "9:16", "1:1", "4:3", "3:4"),
    ),
    ModelSpec(
        id="veo3-video",
        name="Veo 3",
        owned_by="google",
        created=1747000000,
        description="Google Veo 3 with optional generated audio.",
        pricing={"per_generation": 3.2},
        audio_generation=True,
        durations=("8s",),
        resolutions=("720p", "1080p"),
        aspect_ratios=("16:9",),
        extra_parameters={
            "generateAudio": {"type": "boolean", "default": False},
            "enhancePrompt": {"type": "boolean", "default": False},
        },
    ),
    ModelSpec(
        id="kling-video-v2",
        name="Kling 2.0",
        owned_by="kuaishou",
        created=1744000000,
        description="Kling 2.0 text-to-video with optional input image.",
        pricing={"per_duration": {"5": 0.35, "10": 0.7}},
        image_to_video=True,
        extra_parameters={"cfg_scale": {"type": "number", "min": 0, "max": 1, "default": 0.5}},
    ),
    ModelSpec(
        id="kling-v21-standard",
        name="Kling 2.1 Standard",
        owned_by="kuaishou",
        created=1748000000,
        description="Kling 2.1 Standard image-to-video (image required).",
        pricing={"per_duration": {"5": 0.25, "10": 0.5}},
        text_to_video=False,
        image_to_video=True,
    ),
    ModelSpec(
        id="kling-v21-pro",
        name="Kling 2.1 Pro",
        owned_by="kuaishou",
        created=1748000000,
        description="Kling 2.1 Pro text-to-video and image-to-video.",
        pricing={"per_duration": {"5": 0.45, "10": 0.9}},
        image_to_video=True,
    ),
    ModelSpec(
        id="hunyuan-video",
        name="Hunyuan Video",
        owned_by="tencent",
        created=1733500000,
        description="Tencent Hunyuan text-to-video.",
        pricing={"per_resolution": {"480p": 0.2, "720p": 0.4, "1080p": 0.8}},
        durations=("5",),
        resolutions=("480p", "720p", "1080p"),
        extra_parameters={
            "pro_mode": {"type": "boolean", "default": False},
            "num_frames": {"type": "integer", "values": [65, 97, 129]},
            "num_inference_steps": {"type": "integer", "min": 10, "max": 50},
        },
    ),
    ModelSpec(
        id="hunyuan-video-image-to-video",
        name="Hunyuan Video Image to Video",
        owned_by="tencent",
        created=1741000000,
        description="Tencent Hunyuan image-to-video (image required).",
        pricing={"per_resolution": {"480p": 0.2, "720p": 0.4, "1080p": 0.8}},
        text_to_video=False,
        image_to_video=True,
        durations=("5",),
        resolutions=("480p", "720p", "1080p"),
        extra_parameters={"pro": {"type": "boolean", "default": False}},
    ),
    ModelSpec(
        id="wan-video-image-to-video",
        name="Wan 2.1 Image to Video",
        owned_by="alibaba",
        created=1740500000,
        description="Wan 2.1 image-to-video (image required).",
        pricing={"per_resolution": {"480p": 0.2, "720p": 0.4}},
        text_to_video=False,
        image_to_video=True,
        durations=("5",),
        resolutions=("480p", "720p"),
        extra_parameters={
            "num_frames": {"type": "integer", "min": 81, "max": 100},
            "frames_per_second": {"type": "integer", "min": 5, "max": 24},
            "num_inference_steps": {"type": "integer", "min": 1, "max": 40},
        },
    ),
    ModelSpec(
        id="seedance-video",
        name="Seedance 1.0 Pro",
        owned_by="bytedance",
        created=1749000000,
        description="ByteDance Seedance, priced by resolution and duration.",
        pricing={"per_resolution_per_second": {"480p": 0.02, "1080p": 0.06}},
        image_to_video=True,
        resolutions=("480p", "1080p"),
        aspect_ratios=("16:9", "9:16", "1:1", "4:3", "3:4", "21:9", "9:21"),
        extra_parameters={"camera_fixed": {"type": "boolean", "default": False}},
    ),
    ModelSpec(
        id="seedance-lite-video",
        name="Seedance 1.0 Lite",
        owned_by="bytedance",
        created=1749000000,
        description="ByteDance Seedance Lite.",
        pricing={"per_resolution_per_second": {"480p": 0.018, "720p": 0.036}},
        image_to_video=True,
        resolutions=("480p", "720p"),
        extra_parameters={"camera_fixed": {"type": "boolean", "default": False}},
    ),
    ModelSpec(
        id="sora-2",
        name="Sora 2",
        owned_by="openai",
        created=1759000000,
        description="OpenAI Sora 2 (duration in the `seconds` field).",
        pricing={"per_second": 0.1},
        image_to_video=True,
        durations=("4", "8", "12"),
        duration_field="seconds",
        resolutions=("720p", "1792x1024"),
        aspect_ratios=(),
        extra_parameters={
            "orientation": {"type": "string", "values": ["landscape", "portrait"]},
            "pro": {"type": "boolean", "default": False},
        },
    ),
    ModelSpec(
        id="minimax-hailuo-02",
        name="MiniMax Hailuo 02",
        owned_by="minimax",
        created=1750000000,
        description="MiniMax Hailuo 02, priced per second.",
        pricing={"per_second": 0.045},
        image_to_video=True,
        durations=("6", "10"),
        extra_parameters={"prompt_optimizer": {"type": "boolean", "default": True}},
    ),
    ModelSpec(
        id="wan-wavespeed-25-extend",
        name="Wan 2.5 Extend",
        owned_by="alibaba",
        created=1758000000,
        description="Wan 2.5: extends a source video (at most 120 s) guided by a prompt.",
        pricing={"per_duration": {"5": 0.25, "8": 0.4}},
        text_to_video=False,
        video_input=True,
        durations=("5", "8"),
        resolutions=("480p", "720p"),
        aspect_ratios=(),
        extra_parameters={"video": {"type": "string"}},
    ),
    ModelSpec(
        id="midjourney-video",
        name="Midjourney Video",
        owned_by="midjourney",
        created=1750500000,
        description="Midjourney video (returns 4 videos upstream).",
        pricing={"per_generation": 0.5},
        image_to_video=True,
        durations=(),
        aspect_ratios=(),
        extra_parameters={"motion": {"type": "string", "values": ["low", "high"]}},
    ),
)

MODELS: dict[str, ModelSpec] = {spec.id: spec for spec in _MODELS}


def get_model(model_id: str) -> ModelSpec | None:
    """Look a model up by id (exact match)."""
    return MODELS.get(model_id)


def _price(value: Any) -> Decimal:
    return Decimal(str(value))


def default_resolution(spec: ModelSpec) -> str | None:
    """720p when the model's pricing lists it, else the cheapest listed resolution."""
    table = spec.pricing.get("per_resolution") or spec.pricing.get("per_resolution_per_second")
    if not isinstance(table, dict) or not table:
        return None
    if DEFAULT_RESOLUTION in table:
        return DEFAULT_RESOLUTION
    return str(min(table, key=lambda res: _price(table[res])))


_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*s?\s*$", re.IGNORECASE)


def parse_duration(value: Any) -> Decimal | None:
    """Parse ``5``, ``5.0``, ``"5"`` or ``"5s"`` to seconds; ``None`` when absent."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise PricingError("Invalid duration")
    if isinstance(value, int | float):
        seconds = _price(value)
    elif isinstance(value, str):
        match = _DURATION_RE.match(value)
        if not match:
            raise PricingError(f"Invalid duration: {value!r}")
        seconds = Decimal(match.group(1))
    else:
        raise PricingError("Invalid duration")
    if seconds <= 0:
        raise PricingError("Duration must be positive")
    return seconds


def requested_duration(spec: ModelSpec, payload: dict[str, Any]) -> Decimal:
    """The duration in seconds a request asks for (default 5 s)."""
    raw = payload.get(spec.duration_field)
    if raw is None and spec.duration_field != "duration":
        raw = payload.get("duration")
    parsed = parse_duration(raw)
    return DEFAULT_DURATION_SECONDS if parsed is None else parsed


def requested_resolution(spec: ModelSpec, table: dict[str, Any], payload: dict[str, Any]) -> str:
    """The priced resolution: the requested one when listed, else the default one."""
    raw = payload.get("resolution")
    if isinstance(raw, str) and raw in table:
        return raw
    return default_resolution(spec) or next(iter(table))


def compute_cost(spec: ModelSpec, payload: dict[str, Any]) -> Decimal:
    """Price of one generation of ``spec`` for ``payload`` (raises :class:`PricingError`)."""
    pricing = spec.pricing
    duration = requested_duration(spec, payload)
    if "per_generation" in pricing:
        cost = _price(pricing["per_generation"])
    elif "per_second" in pricing:
        cost = _price(pricing["per_second"]) * duration
    elif "per_resolution" in pricing:
        table = pricing["per_resolution"]
        cost = _price(table[requested_resolution(spec, table, payload)])
    elif "per_duration" in pricing:
        table = pricing["per_duration"]
        steps = sorted(table, key=lambda key: _price(key))
        chosen = next((step for step in steps if _price(step) >= duration), steps[-1])
        cost = _price(table[chosen])
    elif "per_resolution_per_second" in pricing:
        table = pricing["per_resolution_per_second"]
        cost = _price(table[requested_resolution(spec, table, payload)]) * duration
    else:  # pragma: no cover - catalog invariant
        raise PricingError(f"Model {spec.id} has no pricing")
    return cost.quantize(_CENT_FRACTION, rounding=ROUND_HALF_UP).normalize()


def model_entry(spec: ModelSpec, detailed: bool) -> dict[str, Any]:
    """One ``data[]`` entry of ``GET /api/v1/video-models``."""
    if not detailed:
        return {
            "id": spec.id,
            "object": "model",
            "created": spec.created,
            "owned_by": spec.owned_by,
        }
    input_modalities = ["text"] if spec.text_to_video or spec.video_input else []
    if spec.image_to_video:
        input_modalities.append("image")
    if spec.video_input:
        input_modalities.append("video")
    output_modalities = ["video", "audio"] if spec.audio_generation else ["video"]
    return {
        "id": spec.id,
        "object": "model",
        "created": spec.created,
        "owned_by": spec.owned_by,
        "name": spec.name,
        "description": spec.description,
        "category": "video",
        "architecture": {
            "modality": "+".join(input_modalities) + "->" + "+".join(output_modalities),
            "input_modalities": input_modalities,
            "output_modalities": output_modalities,
        },
        "pricing": spec.pricing_json(),
        "capabilities": {
            "video_generation": True,
            "text_to_video": spec.text_to_video,
            "image_to_video": spec.image_to_video,
            "audio_generation": spec.audio_generation,
            "video_to_video": spec.video_input,
        },
        "supported_parameters": spec.supported_parameters(),
    }


def catalog_entries(detailed: bool) -> list[dict[str, Any]]:
    """Every catalog entry, in catalog order."""
    return [model_entry(spec, detailed) for spec in _MODELS]
