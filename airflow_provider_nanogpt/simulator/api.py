"""The NanoGPT video API endpoints (everything under ``/api`` plus the video files)."""

from __future__ import annotations

import binascii
import hashlib
import hmac
import json
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from airflow_provider_nanogpt.byte_ranges import byte_range

from . import catalog
from .clock import format_retry_after, iso_utc, seconds_until_utc_midnight
from .errors import (
    INVALID_SESSION,
    RATE_LIMIT_MESSAGE,
    ApiError,
    daily_cap_body,
    error_body,
    simple_error,
)
from .faults import DEFAULT_RETRY_AFTER, DEFAULT_TIMEOUT_DELAY, Fault
from .jobs import COMPLETED, Job, Phase, new_run_id, truncate_strings
from .markers import MarkerError, Markers, parse_markers
from .messages import JsonResponse, RawResponse, Request, ResetResponse, Response, StreamResponse
from .shapes import flat_status, legacy_status, nested_status, status_word
from .state import SAMPLE_VIDEO_TYPES, SimState, money
from .video import default_video, video_chunks

VIDEO_PATH_RE = re.compile(r"^/files/videos/([A-Za-z0-9_-]{1,100})\.mp4$")
DATA_URL_RE = re.compile(r"^data:([a-z]+)/([A-Za-z0-9.+-]+);base64,(.*)$", re.DOTALL)
RECOVER_DEFAULT_LIMIT = 10
RECOVER_MAX_LIMIT = 50
NANO_DEPOSIT_ADDRESS = "nano_1simu1ator" + "1" * 46
STATUS429_RETRY_AFTER = 1.0  # simulated seconds, for the status429 marker

Handler = Callable[[SimState, Request], Response]


# -- auth --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Auth:
    """Who is calling: a fingerprint of the key and which header carried it."""

    owner: str
    header: str  # "x-api-key" | "bearer"


def _fingerprint(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def authenticate(state: SimState, request: Request) -> Auth | None:
    """Accept ``x-api-key: KEY`` or ``Authorization: Bearer KEY`` (``None`` when neither works)."""
    candidates: list[tuple[str, str]] = []
    header_key = (request.headers.get("x-api-key") or "").strip()
    if header_key:
        candidates.append(("x-api-key", header_key))
    authorization = (request.headers.get("authorization") or "").strip()
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        candidates.append(("bearer", token.strip()))
    expected = state.config.api_key
    for header, key in candidates:
        if expected is None or hmac.compare_digest(key.encode(), expected.encode()):
            return Auth(owner=_fingerprint(key), header=header)
    return None


def require_auth(state: SimState, request: Request) -> Auth:
    """The caller's identity, or a 401 ``Invalid session`` error."""
    auth = authenticate(state, request)
    if auth is None:
        raise simple_error(401, INVALID_SESSION)
    return auth


def _retry_after(state: SimState, sim_seconds: float) -> dict[str, str]:
    return {"Retry-After": format_retry_after(state.clock.to_real(sim_seconds))}


# -- submit ------------------------------------------------------------------------------------


def _check_data_url(state: SimState, field: str, value: Any, media: str) -> None:
    if not isinstance(value, str):
        raise simple_error(400, f"{field} must be a string")
    match = DATA_URL_RE.match(value)
    if not match or match.group(1) != media:
        raise simple_error(
            400, f"Invalid {field}: expected a data URL like data:{media}/<type>;base64,<data>"
        )
    try:
        decoded = binascii.a2b_base64(match.group(3), strict_mode=True)
    except binascii.Error:
        raise simple_error(400, f"Invalid {field}: the base64 data is malformed") from None
    limit = state.config.max_data_url_bytes
    if len(decoded) > limit:
        raise simple_error(
            413,
            f"{field} is {len(decoded)} bytes; base64 uploads are limited to "
            f"{limit // (1024 * 1024)} MB. Host the file and send {media}Url instead.",
        )


def _check_url(field: str, value: Any) -> None:
    if not isinstance(value, str) or not re.match(r"^https?://\S+$", value):
        raise simple_error(400, f"{field} must be an http(s) URL")


def _validate_media(state: SimState, payload: dict[str, Any]) -> bool:
    """Validate the media fields; returns True when an input image was supplied."""
    has_image = False
    for field in ("imageDataUrl", "image_data_url"):
        if payload.get(field) is not None:
            _check_data_url(state, field, payload[field], "image")
            has_image = True
    if payload.get("image") is not None:
        image = payload["image"]
        if isinstance(image, str) and image.startswith("data:"):
            _check_data_url(state, "image", image, "image")
        else:
            _check_url("image", image)
        has_image = True
    if payload.get("imageUrl") is not None:
        _check_url("imageUrl", payload["imageUrl"])
        has_image = True
    attachment = payload.get("imageAttachmentId")
    if isinstance(attachment, str) and attachment:
        has_image = True
    # Source video and audio (extend, lipsync, avatar): the same data-URL and URL rules.
    for media in ("video", "audio"):
        data_field, url_field = f"{media}DataUrl", f"{media}Url"
        if payload.get(data_field) is not None:
            _check_data_url(state, data_field, payload[data_field], media)
        if payload.get(url_field) is not None:
            _check_url(url_field, payload[url_field])
    return has_image


def _parse_submit(state: SimState, request: Request) -> dict[str, Any]:
    if request.body is None:
        raise simple_error(413, "Request entity too large")
    try:
        payload = json.loads(request.body.decode("utf-8"))
    except ValueError:
        raise simple_error(400, "Invalid JSON body") from None
    if not isinstance(payload, dict):
        raise simple_error(400, "Request body must be a JSON object")
    return payload


def submit(state: SimState, request: Request) -> Response:
    """``POST /api/generate-video``."""
    auth = require_auth(state, request)
    wait = state.submit_limiter.acquire(request.client_ip, state.clock.now())
    if wait is not None:
        body = error_body(429, RATE_LIMIT_MESSAGE)
        raise ApiError(429, body, _retry_after(state, wait))
    payload = _parse_submit(state, request)

    model_id = payload.get("model")
    if model_id is None or model_id == "":
        raise simple_error(400, "Model is required")
    spec = catalog.get_model(model_id) if isinstance(model_id, str) else None
    if spec is None:
        raise simple_error(400, f"Invalid model: {model_id}. See GET /api/v1/video-models.")

    prompt = payload.get("prompt")
    try:
        markers = parse_markers(prompt)
    except MarkerError as exc:
        raise simple_error(400, str(exc)) from None
    if markers.blocked:
        raise ApiError(
            400,
            {
                "error": {
                    "message": "Your prompt was blocked due to safety concerns. Please modify "
                    "your prompt and try again. You have not been charged.",
                    "type": "CONTENT_POLICY_VIOLATION",
                },
                "status": 400,
            },
        )
    if prompt is not None and not isinstance(prompt, str):
        raise simple_error(400, "prompt must be a string")
    has_image = _validate_media(state, payload)
    if spec.image_only and not has_image:
        raise simple_error(
            400,
            f"{spec.name} requires an input image. Please select an image to generate a video.",
        )
    if spec.text_to_video and not has_image and not (prompt and prompt.strip()):
        raise simple_error(400, "Prompt is required for text-to-video generation")
    try:
        cost = catalog.compute_cost(spec, payload)
    except catalog.PricingError as exc:
        raise simple_error(400, str(exc)) from None
    conversation = payload.get("conversationUUID")

    with state.lock:
        state.settle()
        if state.balance < cost:
            raise simple_error(402, "Insufficient balance", requiredBalance=float(cost))
        now = state.clock.now()
        job = Job(
            run_id=new_run_id(),
            model=spec.id,
            payload=truncate_strings(payload),
            conversation_uuid=conversation if isinstance(conversation, str) else None,
            owner=auth.owner,
            api_key_header=auth.header,
            cost=cost,
            created_sim=now,
            created_wall=time.time(),
            queue_seconds=_phase_seconds(markers.queue, state.config.queue_seconds),
            render_seconds=_phase_seconds(markers.render, state.config.render_seconds),
            markers=markers,
        )
        state.balance -= cost
        state.jobs[job.run_id] = job
        state.submits_accepted += 1
        remaining = state.balance

    if markers.submit500:
        raise simple_error(500, "Video generation failed")
    if markers.submit_slow:
        state.sleep_sim(markers.submit_slow)
    duration = catalog.requested_duration(spec, payload)
    return JsonResponse(
        202,
        {
            "runId": job.run_id,
            "id": job.run_id,
            "status": "pending",
            "model": spec.id,
            "cost": float(cost),
            "paymentSource": "USD",
            "remainingBalance": money(remaining),
            "prechargeLabel": f"Video generation pre-charge: {spec.name}, "
            f"{_seconds_label(duration)}",
        },
    )


def _phase_seconds(override: float | None, default: float) -> float:
    return default if override is None else override


def _seconds_label(duration: Decimal) -> str:
    return f"{duration.normalize():f}s"


# -- status ------------------------------------------------------------------------------------


def video_url(request: Request, job: Job) -> str:
    """Absolute URL of a job's video, built from the request's Host header."""
    return f"{request.origin}/files/videos/{job.run_id}.mp4"


def _status_url(request: Request, job: Job, phase: Phase, unknown: bool) -> str | None:
    """The video URL a status poll reports, or None.

    Applies the ``no_url_polls`` marker: the first N polls that report the job COMPLETED carry
    no URL. Polls before completion, and ``unknown`` polls, do not count.
    """
    if phase.state != COMPLETED or not job.has_video:
        return None
    if job.url_less_polls < job.markers.no_url_polls:
        if not unknown:
            job.url_less_polls += 1
        return None
    return video_url(request, job)


def _not_found() -> ApiError:
    return simple_error(404, "Video not found")


def _poll_gate(state: SimState, job: Job) -> bool:
    """Count a poll and apply the ``statusNNN``/``unknown`` markers.

    Raises the 404/429/500 of the marker windows; returns True when this poll must report
    an unknown status.
    """
    job.polls += 1
    n = job.polls
    m: Markers = job.markers
    if n <= m.status404:
        raise _not_found()
    if n <= m.status404 + m.status429:
        raise ApiError(
            429,
            error_body(429, "Too many requests. Please slow down."),
            _retry_after(state, STATUS429_RETRY_AFTER),
        )
    if n <= m.status404 + m.status429 + m.status500:
        raise simple_error(500, "Failed to check video generation status")
    return n <= m.status404 + m.status429 + m.status500 + m.unknown


def unified_status(state: SimState, request: Request) -> Response:
    """``GET /api/video/status?requestId=`` (alias ``runId``)."""
    auth = require_auth(state, request)
    run_id = request.param("requestId", "runId")
    if not run_id:
        raise simple_error(400, "requestId is required (or its alias runId)")
    with state.lock:
        now = state.settle()
        job = state.jobs.get(run_id)
        if job is None:
            raise _not_found()
        if job.owner != auth.owner:
            raise simple_error(403, "Forbidden: this video belongs to another API key")
        unknown = _poll_gate(state, job)
        shape = job.markers.shape or state.config.status_shape
        if shape == "alternate":
            shape = "nested" if job.shaped_polls % 2 == 0 else "flat"
        job.shaped_polls += 1
        phase = job.phase(now)
        url = _status_url(request, job, phase, unknown)
        scale = state.clock.time_scale
        if shape == "flat":
            completed_at = None if job.finished_sim is None else state.iso_of(job.finished_sim)
            body = flat_status(
                job, phase, url, scale, iso_utc(job.created_wall), completed_at, unknown
            )
        else:
            body = nested_status(job, phase, url, scale, unknown)
    return JsonResponse(200, body)


def legacy_status_endpoint(state: SimState, request: Request) -> Response:
    """``GET /api/generate-video/status?runId=&model=`` (deprecated; ``modelSlug`` accepted)."""
    auth = require_auth(state, request)
    run_id = request.param("runId")
    if not run_id:
        raise simple_error(400, "runId is required")
    model = request.param("model", "modelSlug")
    with state.lock:
        now = state.settle()
        job = state.jobs.get(run_id)
        if job is None or job.owner != auth.owner or (model and model != job.model):
            raise _not_found()
        unknown = _poll_gate(state, job)
        phase = job.phase(now)
        url = _status_url(request, job, phase, unknown)
        body = legacy_status(job, phase, url)
        if unknown:
            body["data"]["status"] = "UNKNOWN"
    return JsonResponse(200, body)


# -- balance, models, recover ------------------------------------------------------------------


def check_balance(state: SimState, request: Request) -> Response:
    """``POST /api/check-balance``: every value is a string."""
    require_auth(state, request)
    with state.lock:
        state.settle()
        balance = state.balance
    return JsonResponse(
        200,
        {
            "usd_balance": f"{balance.quantize(Decimal('0.00000001')):f}",
            "nano_balance": "0",
            "nanoDepositAddress": NANO_DEPOSIT_ADDRESS,
        },
    )


def video_models(state: SimState, request: Request) -> Response:
    """``GET /api/v1/video-models?detailed=`` (auth optional)."""
    raw = (request.param("detailed") or "true").strip().lower()
    detailed = raw not in ("false", "0", "no", "off")
    entries = catalog.catalog_entries(detailed)
    return JsonResponse(
        200,
        {
            "object": "list",
            "data": entries,
            "meta": {"count": len(entries), "generated_at": iso_utc(time.time())},
        },
    )


def recover(state: SimState, request: Request) -> Response:
    """``GET /api/generate-video/recover?model=&limit=&conversationUUID=``."""
    auth = require_auth(state, request)
    wait = state.recover_limiter.acquire(request.client_ip, state.clock.now())
    if wait is not None:
        raise ApiError(
            429,
            error_body(429, "Rate limit exceeded. Please try again later."),
            _retry_after(state, wait),
        )
    raw_limit = request.param("limit")
    limit = RECOVER_DEFAULT_LIMIT
    if raw_limit:
        try:
            limit = int(raw_limit)
        except ValueError:
            raise simple_error(400, "limit must be an integer") from None
        if limit < 1:
            raise simple_error(400, "limit must be >= 1")
        limit = min(limit, RECOVER_MAX_LIMIT)
    model = request.param("model")
    conversation = request.param("conversationUUID")
    with state.lock:
        state.settle()
        now = state.clock.now()
        lag = state.config.recover_lag_seconds
        mine = [
            job
            for job in state.jobs.values()
            if job.owner == auth.owner
            and now - job.created_sim >= lag
            and (not model or job.model == model)
            and (not conversation or job.conversation_uuid == conversation)
        ]
        mine.reverse()  # insertion order is creation order: newest first
        items = [
            {
                "runId": job.run_id,
                "id": job.run_id,
                "model": job.model,
                "status": status_word(job, job.phase(now).state, "recover"),
                "createdAt": iso_utc(job.created_wall),
                "conversationUUID": job.conversation_uuid,
            }
            for job in mine[:limit]
        ]
    return JsonResponse(200, {"data": items})


def usage(state: SimState, request: Request) -> Response:
    """``GET /api/v1/usage?from=&to=&group_by=day|model|day,model``: the calling key's spend,
    refunds and request counts by UTC day (of the job's creation) and model. NanoGPT does not
    document the body; this one names its currency, as the provider requires."""
    auth = require_auth(state, request)
    first, last = request.param("from"), request.param("to")
    try:
        start = date.fromisoformat(first or "")
        end = date.fromisoformat(last or "")
    except ValueError:
        raise simple_error(400, "from and to must be dates (YYYY-MM-DD)") from None
    group_by = request.param("group_by") or "day"
    keys = group_by.split(",")
    if group_by not in ("day", "model", "day,model"):
        raise simple_error(400, "group_by must be day, model or day,model")
    groups: dict[tuple[str, ...], dict[str, Any]] = {}
    with state.lock:
        state.settle()
        for job in state.jobs.values():
            day = datetime.fromtimestamp(job.created_wall, UTC).date()
            if job.owner != auth.owner or not start <= day <= end:
                continue
            values = {"day": day.isoformat(), "model": job.model}
            key = tuple(values[k] for k in keys)
            group = groups.setdefault(
                key,
                {
                    **{k: values[k] for k in keys},
                    "requests": 0,
                    "spend": Decimal(0),
                    "refunds": Decimal(0),
                },
            )
            group["requests"] += 1
            group["spend"] += job.cost
            if job.refunded:
                group["refunds"] += job.cost
    data = [
        {**g, "spend": money(g["spend"]), "refunds": money(g["refunds"])}
        for _, g in sorted(groups.items())
    ]
    return JsonResponse(
        200,
        {"from": first, "to": last, "group_by": group_by, "currency": "USD", "data": data},
    )


# -- files -------------------------------------------------------------------------------------


def download(state: SimState, request: Request) -> Response:
    """``GET|HEAD /files/videos/<runId>.mp4``: no auth, like a storage URL; one ``Range`` is
    answered with ``206`` (or ``416``) so a player can seek."""
    match = VIDEO_PATH_RE.match(request.path)
    with state.lock:
        state.settle()
        job = state.jobs.get(match.group(1)) if match else None
        if job is None or not job.has_video:
            raise simple_error(404, "Not found")
        fake_size = job.markers.size
        truncate = job.markers.truncate
        run_id = job.run_id
        sample = state.config.sample_video
    content_type = "video/mp4"
    data: bytes | None = None  # None: fake bytes of fake_size, generated as they are sent
    if sample is not None:
        data = Path(sample).read_bytes()
        content_type = SAMPLE_VIDEO_TYPES[Path(sample).suffix.lower()]
    elif fake_size is None:
        data = default_video(run_id)
    size = len(data) if data is not None else fake_size or 0
    headers = {"Accept-Ranges": "bytes", "Cache-Control": "private"}
    try:
        span = byte_range(request.headers.get("Range"), size)
    except ValueError:
        headers["Content-Range"] = f"bytes */{size}"
        return StreamResponse(416, 0, [], content_type=content_type, headers=headers)
    first, last = span if span is not None else (0, size - 1)
    if span is not None:
        headers["Content-Range"] = f"bytes {first}-{last}/{size}"
    # [sim:truncate]: the connection drops halfway through the file.
    stop = min(last + 1, size // 2 if truncate else size)
    chunks: Iterable[bytes] = []
    if request.method != "HEAD" and stop > first:
        if data is not None:
            chunks = [data[first:stop]]
        else:
            chunks = video_chunks(run_id, size, limit=stop, start=first)
    return StreamResponse(
        206 if span is not None else 200,
        last - first + 1,
        chunks,
        content_type=content_type,
        headers=headers,
    )


# -- routing and faults ------------------------------------------------------------------------

ROUTES: dict[tuple[str, str], tuple[str, Handler]] = {
    ("POST", "/api/generate-video"): ("submit", submit),
    ("GET", "/api/video/status"): ("status", unified_status),
    ("GET", "/api/generate-video/status"): ("legacy_status", legacy_status_endpoint),
    ("POST", "/api/check-balance"): ("balance", check_balance),
    ("GET", "/api/v1/video-models"): ("models", video_models),
    ("GET", "/api/generate-video/recover"): ("recover", recover),
    ("GET", "/api/v1/usage"): ("usage", usage),
}


def route(method: str, path: str) -> tuple[str, Handler] | None:
    """The endpoint name and handler for a request, or None."""
    if VIDEO_PATH_RE.match(path) and method in ("GET", "HEAD"):
        return "download", download
    found = ROUTES.get(("GET" if method == "HEAD" else method, path))
    if found is None and method == "HEAD":
        return None
    return found


def known_path(path: str) -> bool:
    """True when some method is routed for ``path`` (405 instead of 404)."""
    return any(p == path for _, p in ROUTES) or bool(VIDEO_PATH_RE.match(path))


_FAULT_MESSAGES: dict[str, str] = {
    "502": "Bad gateway",
    "503": "Service temporarily unavailable",
}


def _fault_message(endpoint: str, kind: str) -> str:
    if kind == "429":
        return RATE_LIMIT_MESSAGE if endpoint == "submit" else "Too many requests."
    if kind == "500":
        if endpoint == "submit":
            return "Video generation failed"
        if endpoint in ("status", "legacy_status"):
            return "Failed to check video generation status"
        return "Internal server error"
    if kind == "404":
        return "Video not found" if endpoint in ("status", "legacy_status") else "Not found"
    return _FAULT_MESSAGES[kind]


def apply_fault(state: SimState, endpoint: str, fault: Fault) -> Response | None:
    """The response replacing a request hit by ``fault``; None = process normally."""
    kind = fault.kind
    if kind == "timeout":
        state.sleep_sim(DEFAULT_TIMEOUT_DELAY if fault.delay is None else fault.delay)
        return None
    if kind == "reset":
        return ResetResponse()
    if kind == "malformed":
        return RawResponse(200, b'{"runId": "vid_0123", "status": "pend')
    if kind in ("daily_cap", "daily_usd_cap"):
        wait = fault.retry_after
        if wait is None:
            wait = seconds_until_utc_midnight(time.time())
        cap = "usd" if kind == "daily_usd_cap" else "requests"
        return JsonResponse(429, daily_cap_body(cap, fault.body_shape), _retry_after(state, wait))
    if kind == "429_no_retry_after":  # the docs say a 429 *may* carry Retry-After
        return JsonResponse(429, error_body(429, _fault_message(endpoint, "429"), fault.body_shape))
    status = int(kind)
    headers: dict[str, str] = {}
    if status == 429:
        retry = DEFAULT_RETRY_AFTER if fault.retry_after is None else fault.retry_after
        headers = _retry_after(state, retry)
    elif fault.retry_after is not None:
        headers = _retry_after(state, fault.retry_after)
    body = error_body(status, _fault_message(endpoint, kind), fault.body_shape)
    return JsonResponse(status, body, headers)
