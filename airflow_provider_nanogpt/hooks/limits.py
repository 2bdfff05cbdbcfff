"""Limits on one blocking HTTP exchange made with requests: its total time, its body size, and
(for videos) the address its connection reached, checked by ``video_hosts``.

requests' (and urllib3's) timeouts apply to each socket operation, so a server that drips one byte
a second keeps a call alive indefinitely. ``TimeLimitedAdapter`` notes the connections a thread
uses inside ``time_limit(seconds)``; when the time is up, a timer shuts their sockets down, which
ends the blocked read at once in the calling thread. The httpx (async) side needs none of this:
``asyncio.timeout`` cancels the whole exchange.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

from requests import Response
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from airflow_provider_nanogpt.hooks.video_hosts import check_connected

_watched = threading.local()


@dataclass
class Limit:
    """One armed time limit: the connections and sockets it covers, and whether it has fired.

    Sockets are noted too: http.client lets go of a connection's socket once it knows the
    server will close it, while the response goes on reading from that very socket.
    """

    connections: list[HTTPConnection | socket.socket] = field(default_factory=list)
    expired: bool = False

    def expire(self) -> None:
        self.expired = True
        for item in self.connections:
            sock = item if isinstance(item, socket.socket) else getattr(item, "sock", None)
            if sock is not None:
                # The plain socket's shutdown, even under TLS: it wakes a reader blocked in
                # another thread without touching the TLS object that reader is using.
                with suppress(OSError):
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def arm(self, seconds: float) -> threading.Timer:
        """Expire after ``seconds``; cancel the returned timer when the exchange is over."""
        timer = threading.Timer(max(0.0, seconds), self.expire)
        timer.daemon = True
        timer.start()
        return timer


@contextmanager
def watching(limit: Limit) -> Iterator[Limit]:
    """Put the connections this thread opens inside the block under ``limit``."""
    outer = getattr(_watched, "limit", None)
    _watched.limit = limit
    try:
        yield limit
    finally:
        _watched.limit = outer


@contextmanager
def time_limit(seconds: float) -> Iterator[Limit]:
    """Cut off the exchanges this thread makes inside the block after ``seconds``."""
    limit = Limit()
    timer = limit.arm(seconds)
    try:
        with watching(limit):
            yield limit
    finally:
        timer.cancel()


class _Noted:
    """Registers each request's connection with the time limit armed in this thread."""

    def request(self, *args: Any, **kwargs: Any) -> Any:
        limit = getattr(_watched, "limit", None)
        if limit is not None:
            limit.connections.append(self)  # type: ignore[arg-type]
        result = super().request(*args, **kwargs)  # type: ignore[misc]
        sock = getattr(self, "sock", None)
        if limit is not None and sock is not None:
            limit.connections.append(sock)
        return result


class _Guarded:
    """Hands each new socket to the video host rules (a no-op outside ``guarded_connections``)."""

    def _new_conn(self) -> socket.socket:
        sock: socket.socket = super()._new_conn()  # type: ignore[misc]
        check_connected(self.host, sock, via_proxy=self.proxy is not None)  # type: ignore[attr-defined]
        return sock


class _NotedHTTPConnection(_Guarded, _Noted, HTTPConnection):
    pass


class _NotedHTTPSConnection(_Guarded, _Noted, HTTPSConnection):
    pass


class _NotedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _NotedHTTPConnection


class _NotedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _NotedHTTPSConnection


_POOLS = {"http": _NotedHTTPPool, "https": _NotedHTTPSPool}


class TimeLimitedAdapter(HTTPAdapter):
    """An HTTPAdapter whose connections ``time_limit`` can cut off."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_POOLS)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        manager.pool_classes_by_scheme = dict(_POOLS)
        return manager


def read_capped(response: Response, max_bytes: int) -> bytes | None:
    """The body, or None as soon as it is known to exceed ``max_bytes`` (nothing more is read)."""
    announced = response.headers.get("Content-Length", "")
    if announced.isdigit() and int(announced) > max_bytes:
        return None
    body = bytearray()
    for chunk in response.iter_content(chunk_size=64 * 1024):
        body += chunk
        if len(body) > max_bytes:
            return None
    return bytes(body)
