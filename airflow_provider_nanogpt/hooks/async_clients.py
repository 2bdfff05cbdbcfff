"""One shared set of httpx.AsyncClients per event loop and connection, for the triggerer.

A triggerer runs up to a thousand triggers in one event loop. A client per trigger would build an
SSL context each (tens of milliseconds of CPU that block the loop, and most of a megabyte) and open
its own connections; sharing one client per (loop, NanoGPT origin, key, timeout) keeps start-up
cheap and reuses keep-alive connections across triggers. Reference counts close the clients when
their last hook lets go.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import os
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import ssl

    import httpx

# Enough concurrent requests for a busy triggerer; the rest wait at the gate.
MAX_CONNECTIONS = 64
# httpcore's pool re-checks every connection (a socket poll each, plus a pass over all of them
# per idle one) whenever a request starts or ends, so its cost grows with the square of its
# size. Several small pools behind one gate hold as many connections for a fraction of the CPU.
POOL_SHARDS = 4
MAX_KEEPALIVE_CONNECTIONS = 32


@dataclass
class SharedClient:
    """Small httpx clients behind one gate that keeps their pools' wait queues empty.

    httpcore's pool also does work proportional to every queued request whenever one is queued
    or finishes; with a thousand triggers polling, that made each poll cost tens of milliseconds
    of CPU. Waiting on an asyncio semaphore is O(1), and a request only enters a pool that has a
    free connection.
    """

    shards: list[httpx.AsyncClient]
    gate: asyncio.Semaphore
    in_flight: list[int] = field(init=False)  # requests inside each shard, by index
    users: int = 0

    def __post_init__(self) -> None:
        self.in_flight = [0] * len(self.shards)

    @property
    def base_url(self) -> str:
        return str(self.shards[0].base_url)

    @property
    def is_closed(self) -> bool:
        return any(shard.is_closed for shard in self.shards)

    async def fetch(self, method: str, path: str, *, max_bytes: int, **kwargs: Any) -> Answer:
        """One exchange; the body is read only up to ``max_bytes`` (None beyond it)."""
        async with self.gate:
            # The least busy pool: with the gate at the pools' total size, it has a free slot.
            index = min(range(len(self.shards)), key=self.in_flight.__getitem__)
            self.in_flight[index] += 1
            try:
                async with self.shards[index].stream(method, path, **kwargs) as response:
                    return Answer(
                        response.status_code,
                        dict(response.headers),
                        await _read_capped(response, max_bytes),
                    )
            finally:
                self.in_flight[index] -= 1

    async def aclose(self) -> None:
        for shard in self.shards:
            await shard.aclose()


@dataclass(frozen=True)
class Answer:
    status_code: int
    headers: dict[str, str]
    body: bytes | None  # None: larger than allowed, and not read


async def _read_capped(response: httpx.Response, max_bytes: int) -> bytes | None:
    announced = response.headers.get("Content-Length", "")
    if announced.isdigit() and int(announced) > max_bytes:
        return None
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > max_bytes:
            return None
    return bytes(body)


_ClientKey = tuple[str, str, float]
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[_ClientKey, SharedClient]] = (
    weakref.WeakKeyDictionary()
)


def _key(base_url: str, headers: dict[str, str], timeout: float) -> _ClientKey:
    # Hash the headers (they carry the key) so the registry never holds it in a readable key.
    digest = hashlib.sha256(repr(sorted(headers.items())).encode()).hexdigest()
    return (base_url, digest, timeout)


@functools.cache
def _ssl_context(cert_file: str | None, cert_dir: str | None) -> ssl.SSLContext:
    """One verifying SSL context per set of trusted certificates (httpx reads both variables when
    it builds one): building one costs tens of milliseconds of CPU, and ``airflow dags test`` runs
    each trigger in an event loop of its own."""
    import httpx

    return httpx.create_ssl_context()


def acquire(
    base_url: str, headers: dict[str, str], timeout: float, connect_timeout: float
) -> SharedClient:
    """The loop's shared client for these settings, created on first use."""
    import httpx

    per_loop = _clients.setdefault(asyncio.get_running_loop(), {})
    key = _key(base_url, headers, timeout)
    entry = per_loop.get(key)
    if entry is None or entry.is_closed:
        ssl_context = _ssl_context(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
        per_shard = max(1, MAX_CONNECTIONS // POOL_SHARDS)
        entry = per_loop[key] = SharedClient(
            shards=[
                httpx.AsyncClient(
                    base_url=base_url,
                    headers=headers,
                    verify=ssl_context,
                    # The key goes to NanoGPT's origin only; a redirect is an error, not a hop.
                    follow_redirects=False,
                    timeout=httpx.Timeout(timeout, connect=connect_timeout, pool=timeout),
                    limits=httpx.Limits(
                        max_connections=per_shard,
                        max_keepalive_connections=max(1, MAX_KEEPALIVE_CONNECTIONS // POOL_SHARDS),
                    ),
                )
                for _ in range(POOL_SHARDS)
            ],
            gate=asyncio.Semaphore(per_shard * POOL_SHARDS),
        )
    entry.users += 1
    return entry


async def release(shared: SharedClient) -> None:
    """Give a client back; the last user closes it."""
    shared.users -= 1
    if shared.users > 0:
        return
    per_loop = _clients.get(asyncio.get_running_loop(), {})
    for key, entry in list(per_loop.items()):
        if entry is shared:
            del per_loop[key]
    await shared.aclose()
