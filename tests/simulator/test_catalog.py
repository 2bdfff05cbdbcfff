"""GET /api/v1/video-models and the pricing rules shared with the submit pre-charge."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from airflow_provider_nanogpt.simulator import NanoGPTSimulator
from airflow_provider_nanogpt.simulator.catalog import MODELS, compute_cost, get_model

from ._helpers import PNG_1PX, call, submit

REQUIRED_IDS = {
    "veo2-video",
    "veo3-video",
    "kling-video-v2",
    "kling-v21-standard",
    "kling-v21-pro",
    "hunyuan-video",
    "hunyuan-video-image-to-video",
    "wan-video-image-to-video",
    "seedance-video",
    "seedance-lite-video",
    "sora-2",
    "minimax-hailuo-02",
    "midjourney-video",
}
PRICE_KEYS = {
    "per_generation",
    "per_second",
    "per_resolution",
    "per_duration",
    "per_resolution_per_second",
}


def test_detailed_catalog(sim: NanoGPTSimulator) -> None:
    resp = call(sim, "GET", "/api/v1/video-models?detailed=true")
    assert resp.status == 200
    body = resp.json()
    assert body["object"] == "list"
    assert body["meta"]["count"] == len(body["data"])
    assert body["meta"]["generated_at"].endswith("Z")
    ids = {entry["id"] for entry in body["data"]}
    assert ids >= REQUIRED_IDS
    shapes_seen = set()
    for entry in body["data"]:
        assert entry["object"] == "model"
        assert entry["name"]
        assert entry["description"]
        arch = entry["architecture"]
        assert {"modality", "input_modalities", "output_modalities"} <= set(arch)
        assert "video" in arch["output_modalities"]
        pricing = entry["pricing"]
        assert pricing["currency"] == "USD"
        (shape,) = set(pricing) - {"currency"}
        assert shape in PRICE_KEYS
        shapes_seen.add(shape)
        caps = entry["capabilities"]
        assert set(caps) >= {
            "video_generation",
            "text_to_video",
            "image_to_video",
            "audio_generation",
        }
        assert isinstance(entry["supported_parameters"], dict)
    assert shapes_seen == PRICE_KEYS


def test_detailed_is_the_default(sim: NanoGPTSimulator) -> None:
    body = call(sim, "GET", "/api/v1/video-models").json()
    assert "pricing" in body["data"][0]


def test_compact_catalog(sim: NanoGPTSimulator) -> None:
    body = call(sim, "GET", "/api/v1/video-models?detailed=false").json()
    for entry in body["data"]:
        assert set(entry) == {"id", "object", "created", "owned_by"}


@pytest.mark.parametrize("key", [None, "sk-nano-wrong"])
def test_auth_is_optional(sim: NanoGPTSimulator, key: str | None) -> None:
    assert call(sim, "GET", "/api/v1/video-models", key=key).status == 200


def test_image_only_capabilities(sim: NanoGPTSimulator) -> None:
    body = call(sim, "GET", "/api/v1/video-models").json()
    by_id = {entry["id"]: entry for entry in body["data"]}
    for model in ("kling-v21-standard", "wan-video-image-to-video", "hunyuan-video-image-to-video"):
        caps = by_id[model]["capabilities"]
        assert caps["image_to_video"] is True
        assert caps["text_to_video"] is False
    assert by_id["veo3-video"]["capabilities"]["audio_generation"] is True


def _expected(
    pricing: dict[str, Any], duration: float = 5, resolution: str | None = None
) -> Decimal:
    """The documented rule, re-derived independently of catalog.py."""

    def tier(table: dict[str, float]) -> Decimal:
        if resolution in table:
            return Decimal(str(table[resolution]))
        if "720p" in table:
            return Decimal(str(table["720p"]))
        return min(Decimal(str(v)) for v in table.values())

    d = Decimal(str(duration))
    if "per_generation" in pricing:
        return Decimal(str(pricing["per_generation"]))
    if "per_second" in pricing:
        return Decimal(str(pricing["per_second"])) * d
    if "per_resolution" in pricing:
        return tier(pricing["per_resolution"])
    if "per_duration" in pricing:
        steps = sorted(pricing["per_duration"], key=float)
        step = next((s for s in steps if float(s) >= duration), steps[-1])
        return Decimal(str(pricing["per_duration"][step]))
    return tier(pricing["per_resolution_per_second"]) * d


def test_submit_precharge_matches_catalog_pricing(sim: NanoGPTSimulator) -> None:
    entries = call(sim, "GET", "/api/v1/video-models").json()["data"]
    for entry in entries:
        body: dict[str, Any] = {"model": entry["id"], "prompt": "x", "imageDataUrl": PNG_1PX}
        resp = call(sim, "POST", "/api/generate-video", body)
        assert resp.status == 202, (entry["id"], resp.body)
        expected = _expected(entry["pricing"])
        assert Decimal(str(resp.json()["cost"])) == expected, entry["id"]


@pytest.mark.parametrize(
    ("model", "fields", "cost"),
    [
        ("veo3-video", {}, "3.2"),  # per generation
        ("veo2-video", {"duration": "6s"}, "3"),  # per second
        ("minimax-hailuo-02", {"duration": 10}, "0.45"),  # per second, int duration
        ("hunyuan-video", {}, "0.4"),  # per resolution, 720p
        ("hunyuan-video", {"resolution": "1080p"}, "0.8"),
        ("hunyuan-video", {"resolution": "4k"}, "0.4"),  # unknown tier -> default
        ("kling-video-v2", {"duration": "10"}, "0.7"),  # duration step
        ("kling-video-v2", {"duration": "7"}, "0.7"),  # rounds up to a step
        ("kling-video-v2", {"duration": "30"}, "0.7"),  # beyond the last step
        ("seedance-video", {}, "0.1"),  # 480p (cheapest) * 5 s
        ("seedance-video", {"resolution": "1080p", "duration": "10"}, "0.6"),
        ("seedance-lite-video", {}, "0.18"),  # 720p * 5 s
        ("sora-2", {"seconds": "8"}, "0.8"),
    ],
)
def test_compute_cost(model: str, fields: dict[str, Any], cost: str) -> None:
    spec = get_model(model)
    assert spec is not None
    assert compute_cost(spec, fields) == Decimal(cost)
    assert _expected(
        spec.pricing_json(),
        float(str(fields.get("seconds", fields.get("duration", 5))).rstrip("s")),
        fields.get("resolution"),
    ) == Decimal(cost)


def test_every_model_can_be_submitted(sim: NanoGPTSimulator) -> None:
    sim.configure(rate_limit_per_minute=0)
    for model in MODELS:
        resp = submit(sim, model=model, imageUrl="https://example.com/a.png")
        assert resp.status == 202, model
