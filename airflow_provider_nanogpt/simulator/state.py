"""The simulator's mutable world: configuration, clock, balance, jobs, counters, faults."""

from __future__ import annotations

import math
import random
import threading
from collections import Counter, deque
from dataclasses import asdict, dataclass, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

from .clock import SimClock, iso_utc
from .faults import Fault, FaultQueue
from .jobs import Job
from .markers import SHAPES
from .ratelimit import SlidingWindowLimiter

REQUEST_LOG_LIMIT = 1000
MONEY = Decimal("0.00000001")


class ConfigError(ValueError):
    """An invalid configuration value (answered with HTTP 400 by ``/_sim/config``)."""


@dataclass
class SimConfig:
    """Run-time configuration; every field can be changed through ``POST /_sim/config``."""

    api_key: str | None = None
    time_scale: float = 1.0
    balance_usd: float = 100.0
    rate_limit_per_minute: int = 50
    recover_limit_per_minute: int = 20
    status_shape: str = "nested"
    queue_seconds: float = 2.0
    render_seconds: float = 8.0
    max_body_bytes: int = 6 * 1024 * 1024
    max_data_url_bytes: int = 4 * 1024 * 1024
    # Fraction of API requests answered with a random transient fault (503 or a reset), for soak
    # tests; seeded, so a run is reproducible.
    transient_fault_rate: float = 0.0
    # Real (unscaled) seconds added before every API response: a stand-in for the network round
    # trip to the real API, which loopback hides.
    latency_seconds: float = 0.0
    # Simulated seconds before a new job shows up in ``recover``: NanoGPT creates jobs
    # asynchronously, so a brand-new run may not be listed yet. Submit and status are unaffected.
    recover_lag_seconds: float = 0.0
    # A video file served for every completed job instead of the shipped H.264 clip (and of the
    # fake bytes of ``[sim:size=BYTES]`` jobs); None = the clip.
    sample_video: str | None = None

    def public(self) -> dict[str, Any]:
        """Config as JSON, with ``api_key`` replaced by whether one is set."""
        data = asdict(self)
        data.pop("api_key")
        data["api_key_required"] = self.api_key is not None
        return data


def _non_negative(name: str, value: Any, integer: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name} must be a number")
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name} must be a finite number >= 0")
    if integer and value != int(value):
        raise ConfigError(f"{name} must be an integer")
    return float(value)


SAMPLE_VIDEO_TYPES = {".mp4": "video/mp4", ".webm": "video/webm", ".mov": "video/quicktime"}
MAX_SAMPLE_VIDEO_BYTES = 64 * 1024 * 1024


def _sample_video(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError("sample_video must be a file path or null")
    path = Path(value)
    if path.suffix.lower() not in SAMPLE_VIDEO_TYPES:
        raise ConfigError(f"sample_video must end in {', '.join(SAMPLE_VIDEO_TYPES)}")
    if not path.is_file() or path.stat().st_size > MAX_SAMPLE_VIDEO_BYTES:
        raise ConfigError("sample_video must be an existing file of at most 64 MiB")
    return str(path.resolve())


def validate_config(updates: dict[str, Any]) -> dict[str, Any]:
    """Check and normalise a partial configuration (constructor, CLI and ``/_sim/config``)."""
    clean: dict[str, Any] = {}
    for name, value in updates.items():
        if name == "api_key":
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ConfigError("api_key must be a non-empty string or null")
            clean[name] = value.strip() if isinstance(value, str) else None
        elif name == "time_scale":
            if _non_negative(name, value) <= 0:
                raise ConfigError("time_scale must be > 0")
            clean[name] = float(value)
        elif name in (
            "balance_usd",
            "queue_seconds",
            "render_seconds",
            "latency_seconds",
            "recover_lag_seconds",
        ):
            clean[name] = _non_negative(name, value)
        elif name in (
            "rate_limit_per_minute",
            "recover_limit_per_minute",
            "max_body_bytes",
            "max_data_url_bytes",
        ):
            clean[name] = int(_non_negative(name, value, integer=True))
        elif name == "transient_fault_rate":
            rate = _non_negative(name, value)
            if rate > 1:
                raise ConfigError("transient_fault_rate must be between 0 and 1")
            clean[name] = rate
        elif name == "sample_video":
            clean[name] = _sample_video(value)
        elif name == "status_shape":
            if value not in SHAPES:
                raise ConfigError(f"status_shape must be one of {', '.join(SHAPES)}")
            clean[name] = value
        else:
            raise ConfigError(f"unknown config field: {name}")
    return clean


def money(value: Decimal) -> float:
    """A Decimal amount as a JSON number."""
    return float(value.quantize(MONEY))


class SimState:
    """Everything the endpoints read and change, guarded by one re-entrant lock."""

    def __init__(self, config: SimConfig) -> None:
        self.initial = replace(config)
        self.config = replace(config)
        self.clock = SimClock(config.time_scale)
        self.lock = threading.RLock()
        self.faults = FaultQueue()
        self.fault_rng = random.Random(7)
        self.submit_limiter = SlidingWindowLimiter(config.rate_limit_per_minute)
        self.recover_limiter = SlidingWindowLimiter(config.recover_limit_per_minute)
        self.stopping = threading.Event()
        self.jobs: dict[str, Job] = {}
        self.balance = Decimal(0)
        self.submits_accepted = 0
        self.submit_requests = 0
        self.transient_faults_served = 0
        self.requests: Counter[str] = Counter()
        self.request_log: deque[dict[str, Any]] = deque(maxlen=REQUEST_LOG_LIMIT)
        self._clear_data()

    def _clear_data(self) -> None:
        self.jobs = {}
        self.balance = Decimal(str(self.config.balance_usd))
        self.submits_accepted = 0
        self.submit_requests = 0
        self.transient_faults_served = 0
        self.requests = Counter()
        self.request_log = deque(maxlen=REQUEST_LOG_LIMIT)

    # -- control -----------------------------------------------------------------------------

    def reset(self) -> None:
        """Clear jobs, counters, faults and rate-limit windows; restore the initial config."""
        with self.lock:
            self.config = replace(self.initial)
            self.clock.set_scale(self.config.time_scale)
            self.submit_limiter.limit = self.config.rate_limit_per_minute
            self.recover_limiter.limit = self.config.recover_limit_per_minute
            self.submit_limiter.clear()
            self.recover_limiter.clear()
            self.faults.clear()
            self._clear_data()

    def configure(self, updates: dict[str, Any]) -> dict[str, Any]:
        """Apply a partial config; ``balance_usd`` sets the current balance."""
        clean = validate_config(updates)
        with self.lock:
            self.settle()
            self.config = replace(self.config, **clean)
            if "time_scale" in clean:
                self.clock.set_scale(clean["time_scale"])
            if "balance_usd" in clean:
                self.balance = Decimal(str(clean["balance_usd"]))
            self.submit_limiter.limit = self.config.rate_limit_per_minute
            self.recover_limiter.limit = self.config.recover_limit_per_minute
            return self.config.public()

    def sleep_sim(self, sim_seconds: float) -> None:
        """Sleep ``sim_seconds`` of simulated time (cut short when the server stops)."""
        if sim_seconds > 0:
            self.stopping.wait(self.clock.to_real(sim_seconds))

    # -- bookkeeping -------------------------------------------------------------------------

    def settle(self) -> float:
        """Record due terminal transitions and refund failed/cancelled jobs.

        Returns the instant it settled at: callers read phases at that same instant, so a job
        can never look completed before its completion (and its video) is recorded.
        """
        with self.lock:
            now = self.clock.now()
            for job in self.jobs.values():
                if job.finish_if_due(now):
                    self.balance += job.cost
            return now

    def random_transient_fault(self, endpoint: str) -> Fault | None:
        """A 503 or a connection reset for ``transient_fault_rate`` of requests, else None."""
        rate = self.config.transient_fault_rate
        with self.lock:
            if rate <= 0 or self.fault_rng.random() >= rate:
                return None
            kind = self.fault_rng.choice(("503", "reset"))
            self.transient_faults_served += 1
        return Fault(endpoint=endpoint, kind=kind)

    def count_request(self, method: str, path: str) -> None:
        """Count one API request (control endpoints are not counted)."""
        with self.lock:
            self.requests[f"{method} {path}"] += 1

    def log_request(
        self, method: str, path: str, status: int, credential_headers: list[str] | None = None
    ) -> None:
        """Append to the bounded request log (status 0 = connection reset, no answer)."""
        with self.lock:
            self.request_log.append(
                {
                    "method": method,
                    "path": path,
                    "status": status,
                    "credential_headers": credential_headers or [],
                }
            )

    def iso_of(self, sim_instant: float) -> str:
        """ISO timestamp of a simulated instant."""
        return iso_utc(self.clock.wall_time_of(sim_instant))

    def job_json(self, job: Job) -> dict[str, Any]:
        """A job as listed by ``/_sim/state`` (no key, only which header carried it)."""
        phase = job.phase(self.clock.now())
        return {
            "runId": job.run_id,
            "model": job.model,
            "status": phase.state,
            "progress": phase.progress,
            "payload": job.payload,
            "conversationUUID": job.conversation_uuid,
            "created_at": iso_utc(job.created_wall),
            "api_key_header": job.api_key_header,
            "polls": job.polls,
            "cost": float(job.cost),
            "refunded": job.refunded,
            "markers": job.markers.active(),
        }

    def ledger(self) -> dict[str, list[str]]:
        """What stands charged per submission tag (``conversationUUID``): the run ids of its
        jobs that were not refunded. Two under one tag is one task paying twice for a video."""
        charged: dict[str, list[str]] = {}
        for job in self.jobs.values():
            if job.conversation_uuid and not job.refunded:
                charged.setdefault(job.conversation_uuid, []).append(job.run_id)
        return charged

    def snapshot(self) -> dict[str, Any]:
        """The JSON document of ``GET /_sim/state``."""
        with self.lock:
            self.settle()
            return {
                "submits_accepted": self.submits_accepted,
                "submit_requests": self.submit_requests,
                "transient_faults_served": self.transient_faults_served,
                "requests": dict(self.requests),
                "jobs": [self.job_json(job) for job in self.jobs.values()],
                "ledger": self.ledger(),
                "balance_usd": money(self.balance),
                "time_scale": self.clock.time_scale,
                "sim_time": round(self.clock.now(), 3),
                "config": self.config.public(),
                "faults": self.faults.snapshot(),
                "request_log": list(self.request_log),
            }
