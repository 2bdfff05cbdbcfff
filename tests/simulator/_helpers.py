"""A tiny http.client helper for the simulator tests (real loopback sockets only)."""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_nanogpt.simulator import NanoGPTSimulator

KEY = "sk-nano-test-0000-secret"
PNG_1PX = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
    "YPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)


@dataclass
class Resp:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def call(
    target: NanoGPTSimulator | str,
    method: str,
    path: str,
    body: Any = None,
    *,
    key: str | None = KEY,
    auth: str = "x-api-key",
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> Resp:
    """One request on a fresh connection; ``body`` may be JSON-able or raw bytes."""
    base = target if isinstance(target, str) else target.url
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    send_headers = dict(headers or {})
    if key is not None:
        if auth == "bearer":
            send_headers["Authorization"] = f"Bearer {key}"
        else:
            send_headers["x-api-key"] = key
    data: bytes | None = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        send_headers.setdefault("Content-Type", "application/json")
    try:
        conn.request(method, path, body=data, headers=send_headers)
        response = conn.getresponse()
        return Resp(response.status, response.headers, response.read())
    finally:
        conn.close()


def submit(
    sim: NanoGPTSimulator,
    prompt: str = "a red fox in the snow",
    model: str = "kling-video-v2",
    *,
    key: str = KEY,
    **fields: Any,
) -> Resp:
    body = {"model": model, "prompt": prompt, **fields}
    return call(sim, "POST", "/api/generate-video", body, key=key)


def submit_ok(sim: NanoGPTSimulator, prompt: str = "a red fox in the snow", **fields: Any) -> str:
    resp = submit(sim, prompt, **fields)
    assert resp.status == 202, resp.body
    run_id: str = resp.json()["runId"]
    return run_id


def poll(sim: NanoGPTSimulator, run_id: str, key: str = KEY) -> Resp:
    return call(sim, "GET", f"/api/video/status?requestId={run_id}", key=key)


def legacy(sim: NanoGPTSimulator, run_id: str, extra: str = "") -> Resp:
    return call(sim, "GET", f"/api/generate-video/status?runId={run_id}{extra}")
