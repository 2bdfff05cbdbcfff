"""What the NanoGPT page asks NanoGPT itself, server-side: progress, balances, the video bytes.

Calls go through ``NanoGPTHook`` with the connection's key, on the api-server; only the figures
reach the browser. Answers are cached for a few seconds, so a page refreshed by many users does
not multiply calls to NanoGPT.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

STATUS_TTL_SECONDS = 5.0
BALANCE_TTL_SECONDS = 30.0
# A page waits at most this long for NanoGPT before it renders without live figures.
CALL_DEADLINE_SECONDS = 4.0

T = TypeVar("T")


@dataclass(frozen=True)
class Progress:
    state: str | None
    progress: float | None
    eta_seconds: float | None


@dataclass(frozen=True)
class BalanceReading:
    conn_id: str
    usd: float | None
    error: str | None = None


class _Cache:
    def __init__(self) -> None:
        self._entries: dict[tuple[str, ...], tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[str, ...], ttl: float, load: Callable[[], T]) -> T:
        now = time.monotonic()
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None and now - hit[0] < ttl:
                return hit[1]  # type: ignore[no-any-return]
        value = load()
        with self._lock:
            self._entries[key] = (now, value)
            if len(self._entries) > 10_000:  # bounded: drop the oldest half
                for old in sorted(self._entries, key=lambda k: self._entries[k][0])[:5_000]:
                    del self._entries[old]
        return value


_cache = _Cache()


def progress(conn_id: str, run_id: str) -> Progress | None:
    """The run's latest progress and ETA from NanoGPT, or None when it cannot be had now."""

    def load() -> Progress | None:
        from airflow_provider_nanogpt.exceptions import NanoGPTError
        from airflow_provider_nanogpt.hooks.nanogpt import NanoGPTHook

        hook = NanoGPTHook(conn_id, max_retries=0)
        try:
            status = hook.get_video_status(run_id, deadline=time.time() + CALL_DEADLINE_SECONDS)
        except NanoGPTError:
            return None
        finally:
            hook.close()
        return Progress(status.state.value.lower(), status.progress, status.eta_seconds)

    return _cache.get(("progress", conn_id, run_id), STATUS_TTL_SECONDS, load)


def balance(conn_id: str) -> BalanceReading:
    def load() -> BalanceReading:
        from airflow_provider_nanogpt.exceptions import NanoGPTError
        from airflow_provider_nanogpt.hooks.nanogpt import NanoGPTHook

        hook = NanoGPTHook(conn_id, max_retries=0)
        try:
            return BalanceReading(conn_id, hook.get_balance().usd)
        except NanoGPTError as exc:
            return BalanceReading(conn_id, None, type(exc).__name__)
        finally:
            hook.close()

    return _cache.get(("balance", conn_id), BALANCE_TTL_SECONDS, load)


@dataclass
class VideoStream:
    status_code: int
    headers: dict[str, str]
    chunks: Iterator[bytes]


def stream_video(conn_id: str, url: str, range_header: str | None) -> VideoStream:
    """Stream a video from NanoGPT's storage through the api-server, under the same rules as a
    download (``hooks.video_hosts``: http(s), allowed hosts, no private addresses, no key),
    passing Range on so the player can seek. The browser never sees the (possibly signed) URL."""
    from airflow_provider_nanogpt.hooks.download import open_video, video_session
    from airflow_provider_nanogpt.hooks.limits import Limit, watching
    from airflow_provider_nanogpt.hooks.nanogpt import NanoGPTHook

    settings = NanoGPTHook(conn_id).settings()
    session = video_session()
    # The whole stream, however slowly the host drips it, ends by the connection's
    # download_timeout: the limit outlives this call and is disarmed when the stream ends.
    limit = Limit()
    timer = limit.arm(settings.download_timeout)
    try:
        with watching(limit):
            response = open_video(
                session, url, settings, {"Range": range_header} if range_header else None
            )
    except BaseException:
        timer.cancel()
        session.close()
        raise
    passed = {
        name: response.headers[name]
        for name in ("Content-Type", "Content-Length", "Content-Range", "Accept-Ranges")
        if name in response.headers
    }

    def chunks() -> Iterator[bytes]:
        import requests
        from urllib3.exceptions import HTTPError

        try:
            with session, response:
                yield from response.iter_content(chunk_size=256 * 1024)
        except (requests.exceptions.RequestException, HTTPError, OSError):
            return  # cut off at the deadline, or the host went away: the stream just ends
        finally:
            timer.cancel()

    return VideoStream(response.status_code, passed, chunks())
