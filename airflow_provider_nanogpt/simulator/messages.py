"""Plain request/response values passed between the HTTP plumbing and the endpoint code."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from email.message import Message
from typing import Any


@dataclass
class Request:
    """One parsed HTTP request."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: Message
    body: bytes | None  # None: larger than the body limit (not read)
    client_ip: str
    origin: str  # "http://host:port" from the Host header (validated) or the bound address

    def param(self, *names: str) -> str | None:
        """First value of the first query parameter of ``names`` that is present."""
        for name in names:
            values = self.query.get(name)
            if values:
                return values[0]
        return None


@dataclass
class JsonResponse:
    """A JSON body."""

    status: int
    payload: Any
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class RawResponse:
    """Bytes sent as-is (used for the ``malformed`` fault)."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class StreamResponse:
    """A streamed body; when ``sent`` < ``content_length`` the connection closes early."""

    status: int
    content_length: int
    chunks: Iterable[bytes]
    content_type: str = "application/octet-stream"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class ResetResponse:
    """Close the socket without answering."""


Response = JsonResponse | RawResponse | StreamResponse | ResetResponse
