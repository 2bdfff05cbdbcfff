"""One shared httpx.AsyncClient per event loop and connection, for the triggerer.

A triggerer runs up to a thousand triggers in one event loop. A client per trigger would build an
SSL context each (tens of milliseconds of CPU that block the loop, and most of a megabyte) and open
its own connections; sharing one client per (loop, NanoGPT origin, key, timeout) keeps start-up
cheap and reuses keep-alive connections across triggers. Reference counts close a client when its
last hook lets go.
"""

from __future__ import annotations

import asyncio
import hashlib
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import httpx

# Enough concurrent requests for a busy triggerer; the rest queue for a connection.
MAX_CONNECTIONS = 64
MAX_KEEPALIVE_CONNECTIONS = 32


@dataclass
class SharedClient:
    """A client plus the gate that keeps its pool's wait queue empty.

    httpcore's pool does work proportional to every queued request whenever one is queued or
    finishes; with a thousand triggers polling, that made each poll cost tens of milliseconds of
    CPU. Waiting on an asyncio semaphore before entering the pool is O(1), so the pool never has
    a queue.
    """

    client: httpx.AsyncClient
    gate: asyncio.Semaphore
    users: int = 0


_ClientKey = tuple[str, str, float]
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[_ClientKey, SharedClient]] = (
    weakref.WeakKeyDictionary()
)


def _key(base_url: str, headers: dict[str, str], timeout: float) -> _ClientKey:
    # Hash the headers (they carry the key) so the registry never holds it in a readable key.
    digest = hashlib.sha256(repr(sorted(headers.items())).encode()).hexdigest()
    return (base_url, digest, timeout)


def acquire(
    base_url: str, headers: dict[str, str], timeout: float, connect_timeout: float
) -> SharedClient:
    """The loop's shared client for these settings, created on first use."""
    import httpx

    per_loop = _clients.setdefault(asyncio.get_running_loop(), {})
    key = _key(base_url, headers, timeout)
    entry = per_loop.get(key)
    if entry is None or entry.client.is_closed:
        entry = per_loop[key] = SharedClient(
            client=httpx.AsyncClient(
                base_url=base_url,
                headers=headers,
                timeout=httpx.Timeout(timeout, connect=connect_timeout, pool=timeout),
                limits=httpx.Limits(
                    max_connections=MAX_CONNECTIONS,
                    max_keepalive_connections=MAX_KEEPALIVE_CONNECTIONS,
                ),
            ),
            gate=asyncio.Semaphore(MAX_CONNECTIONS),
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
    await shared.client.aclose()
