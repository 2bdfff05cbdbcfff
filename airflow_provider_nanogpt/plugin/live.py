"""What the NanoGPT page asks NanoGPT itself, server-side: progress, balances, the video bytes.

Calls go through ``NanoGPTHook`` with the connection's key, on the api-server; only the figures
reach the browser. Answers are cached for a few seconds, so a page refreshed by many users does
not multiply calls to NanoGPT.
"""

from __future__ import annotations

import mimetypes
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

from airflow_provider_nanogpt.byte_ranges import byte_range

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

STATUS_TTL_SECONDS = 5.0
BALANCE_TTL_SECONDS = 30.0
# A page waits at most this long for NanoGPT before it renders without live figures.
CALL_DEADLINE_SECONDS = 4.0
CHUNK_BYTES = 256 * 1024
# Where the system names the file behind each open descriptor (Linux).
OPEN_FILES_DIR = "/proc/self/fd"

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


def stream_video(conn_id: str | None, url: str, range_header: str | None) -> VideoStream:
    """Stream a video from NanoGPT's storage through the api-server, under the same rules as a
    download (``hooks.video_hosts``: http(s), allowed hosts, no private addresses, no key),
    passing Range on so the player can seek. The browser never sees the (possibly signed) URL.

    Without a trusted connection (``conn_id`` None) no allow-list or NanoGPT host vouches for
    any address: public addresses only, with the default limits."""
    from airflow_provider_nanogpt.hooks.download import open_video, video_session
    from airflow_provider_nanogpt.hooks.limits import Limit, watching
    from airflow_provider_nanogpt.hooks.nanogpt import NanoGPTHook
    from airflow_provider_nanogpt.hooks.settings import ClientSettings

    settings = (
        NanoGPTHook(conn_id).settings()
        if conn_id is not None
        else ClientSettings(base_url="", api_key="")  # no host, no allow-list, no key to send
    )
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
        for name in ("Content-Length", "Content-Range", "Accept-Ranges")
        if name in response.headers
    }
    passed.update(_video_type(response.headers.get("Content-Type")))

    def chunks() -> Iterator[bytes]:
        import requests
        from urllib3.exceptions import HTTPError

        try:
            with session, response:
                yield from response.iter_content(chunk_size=CHUNK_BYTES)
        except (requests.exceptions.RequestException, HTTPError, OSError):
            return  # cut off at the deadline, or the host went away: the stream just ends
        finally:
            timer.cancel()

    return VideoStream(response.status_code, passed, chunks())


def stream_saved_video(
    conn_id: str | None, location: object, range_header: str | None
) -> VideoStream | None:
    """Stream the video the task saved (its ``output_path``), with Range so the player can seek;
    None when it may not or cannot be read, and the caller falls back to NanoGPT's URL.

    ``conn_id`` and ``location`` are the task's rendered template fields (None: no trusted
    record, nothing is read). ``location`` is read only when it resolves, links followed,
    under the connection's ``output_base_dir`` (``storage.saved_video_location``); without one,
    no saved file is ever read. Only a regular file is served, and the stream ends by the
    connection's ``download_timeout`` however slowly the browser reads.
    """
    from airflow_provider_nanogpt.hooks.nanogpt import NanoGPTHook
    from airflow_provider_nanogpt.storage import describe, is_local, saved_video_location

    if conn_id is None:
        return None
    try:
        settings = NanoGPTHook(conn_id).settings()
        target = saved_video_location(location, settings.output_base_dir)
        # Only a video (by its name) is read: the base dir may hold other files.
        media = mimetypes.guess_type(describe(target))[0] if target is not None else None
        if target is None or not (media or "").startswith("video/"):
            return None
        # The stream's whole life, an object store's slow answers included, ends by then.
        deadline = time.monotonic() + settings.download_timeout
        if is_local(target):
            handle, size = _open_local(Path(str(target)), settings.output_base_dir)
        else:
            handle, size = _open_object(target)
    except Exception:  # no connection, missing, unreadable, not a file, no store: use the URL
        return None
    headers = {"Accept-Ranges": "bytes", **_video_type(media)}
    try:
        span = byte_range(range_header, size)
    except ValueError:
        handle.close()
        headers["Content-Range"] = f"bytes */{size}"
        return VideoStream(416, headers, iter(()))
    first, last = span if span is not None else (0, size - 1)
    headers["Content-Length"] = str(last - first + 1)
    if span is not None:
        headers["Content-Range"] = f"bytes {first}-{last}/{size}"

    def chunks() -> Iterator[bytes]:
        with handle:
            handle.seek(first)
            left = last - first + 1
            while left > 0 and time.monotonic() < deadline:
                data = handle.read(min(CHUNK_BYTES, left))
                if not data:
                    return
                left -= len(data)
                yield data

    return VideoStream(206 if span is not None else 200, headers, chunks())


def _video_type(content_type: str | None) -> dict[str, str]:
    """Content-Type for a streamed video: a video type, or bytes the browser will not render as a
    page (HTML or script from a file or a host would run on Airflow's own origin)."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return {
        "Content-Type": media if media.startswith("video/") else "application/octet-stream",
        "X-Content-Type-Options": "nosniff",
    }


def _open_local(path: Path, base_dir: str | None) -> tuple[IO[bytes], int]:
    """Open the checked file: not a link, a regular file, and still under the base directory,
    should a folder have been swapped for a link since the check. Where the system cannot say
    which file a descriptor is (no /proc), it is not served: the caller falls back to the URL."""
    from airflow_provider_nanogpt.storage import saved_video_location

    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    descriptor = os.open(path, flags)  # O_NONBLOCK: a FIFO does not hang the open
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(f"{path} is not a regular file")
        try:
            opened = os.readlink(f"{OPEN_FILES_DIR}/{descriptor}")
        except OSError:
            raise OSError(f"cannot verify which file {path} opened") from None
        if saved_video_location(opened, base_dir) is None:
            raise OSError(f"{path} moved outside the base directory")
        return os.fdopen(descriptor, "rb"), info.st_size
    except BaseException:
        os.close(descriptor)
        raise


def _open_object(target: Path | ObjectStoragePath) -> tuple[IO[bytes], int]:
    if not target.is_file():
        raise OSError(f"{target} is not a file")
    size = int(target.stat().st_size)
    return target.open("rb"), size
