"""What the hook needs from a ``nanogpt`` connection, read and checked once.

Besides the key and the origin, a platform team can lock the provider down through the
connection's extras: which hosts videos may be fetched from, the largest video accepted, how long a
download may take, and a base directory every ``output_path`` must stay under.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_nanogpt import __version__
from airflow_provider_nanogpt.api.endpoints import build_headers, normalize_base_url
from airflow_provider_nanogpt.api.retry import DEFAULT_MAX_RETRIES
from airflow_provider_nanogpt.exceptions import NanoGPTConfigurationError
from airflow_provider_nanogpt.hooks.video_hosts import VideoHostPolicy

DEFAULT_REQUEST_TIMEOUT = 30.0
# Establishing a connection, to NanoGPT or to a video host.
CONNECT_TIMEOUT = 10.0
DEFAULT_DOWNLOAD_TIMEOUT = 1800.0
DEFAULT_MAX_VIDEO_BYTES = 2 * 1024**3


@dataclass(frozen=True)
class ClientSettings:
    """Everything needed to talk to NanoGPT, read from the connection once."""

    base_url: str
    api_key: str = field(repr=False)
    # The most one HTTP exchange with the API may take, all of it (not per read).
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    max_retries: int = DEFAULT_MAX_RETRIES
    # Defaults of the operator's approval_above_usd / approval_timeout (docs/cost-control.md).
    approval_above_usd: float | None = None
    approval_timeout: float | None = None
    # Empty: videos may come from any public http(s) host (NanoGPT's CDN may change).
    allowed_video_hosts: tuple[str, ...] = ()
    max_video_bytes: int = DEFAULT_MAX_VIDEO_BYTES
    download_timeout: float = DEFAULT_DOWNLOAD_TIMEOUT
    output_base_dir: str | None = None
    # The shared-budget extras as given (read by airflow_provider_nanogpt.shared_budget).
    budget_extras: Mapping[str, Any] = field(default_factory=dict)

    @property
    def user_agent(self) -> str:
        return f"airflow-provider-nanogpt/{__version__} (+apache-airflow/{_airflow_version()})"

    def headers(self) -> dict[str, str]:
        return build_headers(self.api_key, self.user_agent)

    @property
    def video_hosts(self) -> VideoHostPolicy:
        """Where videos may be fetched from: the allow-list, and the NanoGPT host itself."""
        return VideoHostPolicy(self.allowed_video_hosts, urlsplit(self.base_url).hostname)

    @property
    def secrets(self) -> tuple[str, ...]:
        """Values that must never appear in a message built from an answer."""
        return (self.api_key,)


def settings_from(
    conn_id: str,
    password: str | None,
    host: str | None,
    extras: Mapping[str, Any],
    *,
    request_timeout: float | None = None,
    max_retries: int | None = None,
) -> ClientSettings:
    api_key = (password or "").strip()
    if not api_key:
        raise NanoGPTConfigurationError(
            f"Connection {conn_id!r} has no API key: put the NanoGPT API key in the "
            "connection's password field."
        )
    _mask(api_key)
    reader = _Extras(conn_id, extras)
    try:
        base_url = normalize_base_url(host)
    except ValueError as exc:
        raise NanoGPTConfigurationError(f"Connection {conn_id!r}: {exc}") from None
    retries = max_retries if max_retries is not None else reader.number("max_retries")
    return ClientSettings(
        base_url=base_url,
        api_key=api_key,
        request_timeout=request_timeout
        or reader.number("request_timeout", positive=True)
        or DEFAULT_REQUEST_TIMEOUT,
        max_retries=int(retries) if retries is not None else DEFAULT_MAX_RETRIES,
        approval_above_usd=reader.number("approval_above_usd"),
        approval_timeout=reader.number("approval_timeout", positive=True),
        allowed_video_hosts=reader.hosts("allowed_video_hosts"),
        max_video_bytes=int(reader.number("max_video_bytes", positive=True) or 0)
        or DEFAULT_MAX_VIDEO_BYTES,
        download_timeout=reader.number("download_timeout", positive=True)
        or DEFAULT_DOWNLOAD_TIMEOUT,
        output_base_dir=reader.text("output_base_dir"),
        budget_extras={
            name: value for name in BUDGET_EXTRAS if (value := reader.raw(name)) is not None
        },
    )


# Read by airflow_provider_nanogpt.shared_budget (named here so the hook imports nothing of it).
BUDGET_EXTRAS = (
    "budget_usd_per_day",
    "budget_usd_per_month",
    "budget_timezone",
    "budget_ledger_conn_id",
    "budgets",
    "budget_count_outside_spend",
)


@dataclass(frozen=True)
class _Extras:
    """Typed reads of the connection's extras, accepting the legacy ``extra__nanogpt__`` names."""

    conn_id: str
    values: Mapping[str, Any]

    def raw(self, name: str) -> Any:
        value = self.values.get(name)
        if value in (None, ""):
            value = self.values.get(f"extra__nanogpt__{name}")
        return None if value in (None, "") else value

    def number(self, name: str, *, positive: bool = False) -> float | None:
        value = self.raw(name)
        if value is None:
            return None
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if isinstance(value, bool) or not math.isfinite(number) or number < 0:
            raise self.bad(name, value, "a finite number >= 0")
        if positive and number == 0:
            raise self.bad(name, value, "a number > 0")
        return number

    def text(self, name: str) -> str | None:
        value = self.raw(name)
        if value is not None and not isinstance(value, str):
            raise self.bad(name, value, "a string")
        return value.strip() if value else None

    def hosts(self, name: str) -> tuple[str, ...]:
        """Host names, from a JSON list or a comma- or space-separated string."""
        value = self.raw(name)
        if value is None:
            return ()
        items = value.replace(",", " ").split() if isinstance(value, str) else value
        if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
            raise self.bad(name, value, "a list of host names")
        return tuple(item.strip().lower().rstrip(".") for item in items if item.strip())

    def bad(self, name: str, value: object, expected: str) -> NanoGPTConfigurationError:
        return NanoGPTConfigurationError(
            f"Connection {self.conn_id!r}: extra {name}={value!r} is not {expected}."
        )


def _mask(secret: str) -> None:
    try:
        from airflow.sdk.log import mask_secret
    except ImportError:  # pragma: no cover - older task SDKs
        return
    mask_secret(secret)


def _airflow_version() -> str:
    try:
        from airflow import __version__ as airflow_version
    except ImportError:  # pragma: no cover
        return "unknown"
    return str(airflow_version)
