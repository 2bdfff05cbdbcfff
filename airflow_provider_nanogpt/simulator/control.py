"""Control endpoints under ``/_sim`` (no auth; for tests): state, reset, config, faults, clock."""

from __future__ import annotations

import json
import math
from typing import Any

from .errors import ApiError, simple_error
from .faults import Fault, FaultError, parse_fault
from .messages import JsonResponse, Request, Response
from .state import ConfigError, SimState

CONTROL_PREFIX = "/_sim/"


def _json_body(request: Request, default: Any) -> Any:
    if request.body is None:
        raise simple_error(413, "Request entity too large")
    if not request.body.strip():
        return default
    try:
        return json.loads(request.body.decode("utf-8"))
    except ValueError:
        raise simple_error(400, "Invalid JSON body") from None


def add_faults(state: SimState, spec: Any) -> list[Fault]:
    """Validate and queue one fault (a JSON object) or several (a list of objects)."""
    specs = spec if isinstance(spec, list) else [spec]
    try:
        faults = [parse_fault(item) for item in specs]
    except FaultError as exc:
        raise simple_error(400, str(exc)) from None
    for fault in faults:
        state.faults.add(fault)
    return faults


def advance(state: SimState, seconds: Any) -> float:
    """Jump the simulated clock forward; returns the new simulated time."""
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not math.isfinite(seconds)
        or seconds < 0
    ):
        raise simple_error(400, "seconds must be a number >= 0")
    state.clock.advance(float(seconds))
    state.settle()
    return state.clock.now()


def handle_control(state: SimState, request: Request) -> Response:
    """Dispatch one ``/_sim/...`` request."""
    key = (request.method, request.path)
    if key == ("GET", "/_sim/state"):
        return JsonResponse(200, state.snapshot())
    if key == ("POST", "/_sim/reset"):
        state.reset()
        return JsonResponse(200, {"ok": True})
    if key == ("GET", "/_sim/config"):
        return JsonResponse(200, state.config.public())
    if key == ("POST", "/_sim/config"):
        updates = _json_body(request, {})
        if not isinstance(updates, dict):
            raise simple_error(400, "config must be a JSON object")
        try:
            return JsonResponse(200, state.configure(updates))
        except ConfigError as exc:
            raise simple_error(400, str(exc)) from None
    if key == ("GET", "/_sim/faults"):
        return JsonResponse(200, {"faults": state.faults.snapshot()})
    if key == ("POST", "/_sim/faults"):
        added = add_faults(state, _json_body(request, None))
        return JsonResponse(
            200, {"added": [fault.to_json() for fault in added], "faults": state.faults.snapshot()}
        )
    if key == ("DELETE", "/_sim/faults"):
        state.faults.clear()
        return JsonResponse(200, {"faults": []})
    if key == ("POST", "/_sim/advance"):
        body = _json_body(request, {})
        seconds = body.get("seconds") if isinstance(body, dict) else None
        return JsonResponse(200, {"sim_time": round(advance(state, seconds), 3)})
    raise ApiError(
        404, {"error": f"Unknown control endpoint {request.method} {request.path}", "status": 404}
    )
