"""POST /api/generate-video: success, auth, validation, limits and balance."""

from __future__ import annotations

import base64

import pytest

from airflow_provider_nanogpt.simulator import NanoGPTSimulator

from ._helpers import KEY, PNG_1PX, call, submit, submit_ok


def test_submit_success_fields(sim: NanoGPTSimulator) -> None:
    resp = submit(sim, duration="5", aspect_ratio="16:9")
    assert resp.status == 202
    body = resp.json()
    assert body["runId"].startswith("vid_")
    assert len(body["runId"]) > 8
    assert body["id"] == body["runId"]
    assert body["status"] == "pending"
    assert body["model"] == "kling-video-v2"
    assert body["cost"] == 0.35
    assert body["paymentSource"] == "USD"
    assert body["remainingBalance"] == pytest.approx(99.65)
    assert isinstance(body["prechargeLabel"], str)
    assert body["prechargeLabel"]
    assert resp.headers["X-Request-ID"]
    assert resp.headers["Content-Type"].startswith("application/json")


def test_run_ids_are_unique(sim: NanoGPTSimulator) -> None:
    assert len({submit_ok(sim) for _ in range(5)}) == 5


@pytest.mark.parametrize("auth", ["x-api-key", "bearer"])
def test_both_auth_headers_accepted(sim: NanoGPTSimulator, auth: str) -> None:
    resp = call(
        sim, "POST", "/api/generate-video", {"model": "veo3-video", "prompt": "x"}, auth=auth
    )
    assert resp.status == 202
    (job,) = sim.state()["jobs"]
    assert job["api_key_header"] == auth


def test_bearer_scheme_is_case_insensitive(sim: NanoGPTSimulator) -> None:
    resp = call(
        sim, "POST", "/api/check-balance", key=None, headers={"Authorization": f"bearer {KEY}"}
    )
    assert resp.status == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/generate-video"),
        ("GET", "/api/video/status?requestId=vid_x"),
        ("GET", "/api/generate-video/status?runId=vid_x"),
        ("POST", "/api/check-balance"),
        ("GET", "/api/generate-video/recover"),
    ],
)
@pytest.mark.parametrize("key", [None, "sk-nano-wrong", ""])
def test_missing_or_wrong_key_is_401(
    sim: NanoGPTSimulator, method: str, path: str, key: str | None
) -> None:
    body = {"model": "kling-video-v2", "prompt": "x"} if method == "POST" else None
    resp = call(sim, method, path, body, key=key)
    assert resp.status == 401
    assert resp.json() == {"error": "Invalid session", "status": 401}
    assert resp.headers["X-Request-ID"]
    assert sim.state()["submits_accepted"] == 0


def test_basic_auth_scheme_is_rejected(sim: NanoGPTSimulator) -> None:
    resp = call(
        sim, "POST", "/api/check-balance", key=None, headers={"Authorization": f"Basic {KEY}"}
    )
    assert resp.status == 401


def test_any_non_empty_key_when_api_key_is_none(open_sim: NanoGPTSimulator) -> None:
    assert call(open_sim, "POST", "/api/check-balance", key="whatever").status == 200
    assert call(open_sim, "POST", "/api/check-balance", key="  ").status == 401
    assert call(open_sim, "POST", "/api/check-balance", key=None).status == 401


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{not json", "Invalid JSON body"),
        (b"[1, 2]", "Request body must be a JSON object"),
        (b"", "Invalid JSON body"),
        (b'{"prompt": "x"}', "Model is required"),
    ],
)
def test_bad_bodies_are_400(sim: NanoGPTSimulator, raw: bytes, message: str) -> None:
    resp = call(sim, "POST", "/api/generate-video", raw)
    assert resp.status == 400
    assert resp.json() == {"error": message, "status": 400}


def test_unknown_model_is_400(sim: NanoGPTSimulator) -> None:
    resp = submit(sim, model="no-such-model")
    assert resp.status == 400
    assert "no-such-model" in resp.json()["error"]


def test_prompt_required_for_text_to_video(sim: NanoGPTSimulator) -> None:
    resp = call(sim, "POST", "/api/generate-video", {"model": "kling-video-v2"})
    assert resp.status == 400
    assert "Prompt is required" in resp.json()["error"]
    blank = submit(sim, prompt="   ")
    assert blank.status == 400
    # a model that also takes images does not need a prompt once an image is given
    resp = call(
        sim,
        "POST",
        "/api/generate-video",
        {"model": "kling-v21-pro", "imageUrl": "https://example.com/a.png"},
    )
    assert resp.status == 202


@pytest.mark.parametrize(
    ("model", "name"),
    [
        ("kling-v21-standard", "Kling 2.1 Standard"),
        ("wan-video-image-to-video", "Wan 2.1 Image to Video"),
        ("hunyuan-video-image-to-video", "Hunyuan Video Image to Video"),
    ],
)
def test_image_only_models_require_an_image(sim: NanoGPTSimulator, model: str, name: str) -> None:
    resp = submit(sim, model=model)
    assert resp.status == 400
    assert resp.json() == {
        "error": f"{name} requires an input image. Please select an image to generate a video.",
        "status": 400,
    }
    ok = call(sim, "POST", "/api/generate-video", {"model": model, "imageDataUrl": PNG_1PX})
    assert ok.status == 202


def test_kling_standard_message_is_verbatim(sim: NanoGPTSimulator) -> None:
    resp = submit(sim, model="kling-v21-standard")
    assert resp.json() == {
        "error": "Kling 2.1 Standard requires an input image. Please select an image to "
        "generate a video.",
        "status": 400,
    }


@pytest.mark.parametrize("field", ["imageUrl", "image"])
def test_image_by_url(sim: NanoGPTSimulator, field: str) -> None:
    ok = call(
        sim,
        "POST",
        "/api/generate-video",
        {"model": "kling-v21-standard", field: "https://example.com/cat.jpg"},
    )
    assert ok.status == 202
    bad = call(
        sim,
        "POST",
        "/api/generate-video",
        {"model": "kling-v21-standard", field: "ftp://example.com/cat.jpg"},
    )
    assert bad.status == 400


@pytest.mark.parametrize(
    "value",
    [
        "data:text/plain;base64,aGVsbG8=",
        "data:image/png,notbase64",
        "data:image/png;base64,@@@notbase64@@@",
        "https://example.com/not-a-data-url.png",
        12345,
    ],
)
def test_invalid_image_data_url_is_400(sim: NanoGPTSimulator, value: object) -> None:
    resp = submit(sim, model="kling-v21-pro", imageDataUrl=value)
    assert resp.status == 400
    assert sim.state()["submits_accepted"] == 0


def test_image_data_url_alias_is_accepted(sim: NanoGPTSimulator) -> None:
    resp = call(
        sim,
        "POST",
        "/api/generate-video",
        {"model": "wan-video-image-to-video", "image_data_url": PNG_1PX},
    )
    assert resp.status == 202


def test_image_over_4mb_is_413(sim: NanoGPTSimulator) -> None:
    big = "data:image/png;base64," + base64.b64encode(b"\0" * (4 * 1024 * 1024 + 1)).decode()
    resp = submit(sim, model="kling-v21-pro", imageDataUrl=big)
    assert resp.status == 413
    assert "4 MB" in resp.json()["error"]
    exact = "data:image/png;base64," + base64.b64encode(b"\0" * (4 * 1024 * 1024)).decode()
    assert submit(sim, model="kling-v21-pro", imageDataUrl=exact).status == 202


def test_body_over_limit_is_413_and_creates_nothing(sim: NanoGPTSimulator) -> None:
    payload = b'{"model": "kling-video-v2", "prompt": "' + b"x" * (6 * 1024 * 1024) + b'"}'
    resp = call(sim, "POST", "/api/generate-video", payload)
    assert resp.status == 413
    state = sim.state()
    assert state["submits_accepted"] == 0
    assert state["submit_requests"] == 1
    assert state["balance_usd"] == 100.0


def test_insufficient_balance_is_402(sim: NanoGPTSimulator) -> None:
    sim.configure(balance_usd=0.3)
    resp = submit(sim)
    assert resp.status == 402
    assert resp.json() == {"error": "Insufficient balance", "status": 402, "requiredBalance": 0.35}
    state = sim.state()
    assert state["jobs"] == []
    assert state["submits_accepted"] == 0
    assert state["balance_usd"] == 0.3


def test_balance_is_decremented_by_the_precharge(sim: NanoGPTSimulator) -> None:
    first = submit(sim).json()
    second = submit(sim, model="veo3-video").json()
    assert first["remainingBalance"] == pytest.approx(99.65)
    assert second["remainingBalance"] == pytest.approx(99.65 - 3.2)
    assert sim.state()["balance_usd"] == pytest.approx(96.45)


def test_rejected_requests_create_nothing_and_cost_nothing(sim: NanoGPTSimulator) -> None:
    submit(sim, model="nope")
    submit(sim, model="kling-v21-standard")
    submit(sim, prompt="[sim:blocked]")
    call(sim, "POST", "/api/generate-video", b"{")
    call(sim, "POST", "/api/generate-video", {"model": "kling-video-v2", "prompt": "x"}, key="bad")
    state = sim.state()
    assert state["submit_requests"] == 5
    assert state["submits_accepted"] == 0
    assert state["jobs"] == []
    assert state["balance_usd"] == 100.0


def test_conversation_uuid_and_truncated_payload_are_stored(sim: NanoGPTSimulator) -> None:
    long_prompt = "a" * 500
    submit_ok(
        sim,
        prompt=long_prompt,
        conversationUUID="conv-1",
        imageDataUrl=PNG_1PX,
        model="kling-v21-pro",
    )
    (job,) = sim.state()["jobs"]
    assert job["conversationUUID"] == "conv-1"
    assert job["model"] == "kling-v21-pro"
    assert job["payload"]["prompt"].startswith("a" * 200)
    assert "truncated 300 chars" in job["payload"]["prompt"]
    assert len(job["payload"]["prompt"]) < 260
    assert job["payload"]["conversationUUID"] == "conv-1"


def test_veo_duration_with_s_suffix(sim: NanoGPTSimulator) -> None:
    body = submit(sim, model="veo2-video", duration="8s").json()
    assert body["cost"] == 4.0  # 0.5 USD per second


def test_unparseable_duration_is_400(sim: NanoGPTSimulator) -> None:
    assert submit(sim, duration="five").status == 400


def test_sora_uses_seconds_field(sim: NanoGPTSimulator) -> None:
    assert submit(sim, model="sora-2", seconds="12").json()["cost"] == pytest.approx(1.2)
    assert submit(sim, model="sora-2").json()["cost"] == pytest.approx(0.5)


def test_check_order_auth_before_size_and_rate_limit(sim: NanoGPTSimulator) -> None:
    payload = b'{"model": "kling-video-v2", "prompt": "' + b"x" * (6 * 1024 * 1024) + b'"}'
    assert call(sim, "POST", "/api/generate-video", payload, key="wrong").status == 401
    sim.configure(rate_limit_per_minute=1)
    assert call(sim, "POST", "/api/generate-video", payload).status == 413
    assert submit(sim).status == 429  # the 413 took the only slot
