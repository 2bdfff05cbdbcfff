"""Fetching a finished video: over http(s) only, from allowed hosts only, never with the API key,
never larger than allowed, never past its deadline, and never left half-written.

Redirects are followed here by hand (at most a few), so every hop is held to the same rules: a
storage URL that redirects to ``file://`` or to a host outside ``allowed_video_hosts`` is refused.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

from airflow_provider_nanogpt.api.errors import error_from_response, tls_failure
from airflow_provider_nanogpt.exceptions import (
    NanoGPTDownloadError,
    NanoGPTVideoRefusedError,
)
from airflow_provider_nanogpt.storage import atomic_writer

if TYPE_CHECKING:
    import requests

    from airflow_provider_nanogpt.hooks.settings import ClientSettings

CONNECT_TIMEOUT = 10.0
# Each chunk is a new bytes object. Measured in a new worker process: at 1 MiB the copies into
# freshly faulted memory cost a third of the throughput; at 256 KiB the heap's pages are reused.
DOWNLOAD_CHUNK_BYTES = 256 * 1024
MAX_REDIRECTS = 5
# Enough of an error page to quote NanoGPT's (or the CDN's) message.
MAX_ERROR_BODY_BYTES = 64 * 1024


def redact_url(url: str | None) -> str:
    """A URL without its query string: signed storage URLs carry credentials there."""
    if not url:
        return ""
    return url.split("?", 1)[0]


def host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    """Whether ``host`` matches ``allowed`` (exact names, or ``*.example.com`` for subdomains).

    An empty list allows every host: NanoGPT does not document where its videos are stored.
    """
    if not allowed:
        return True
    host = host.lower().rstrip(".")
    return any(
        host.endswith(pattern[1:]) if pattern.startswith("*.") else host == pattern
        for pattern in allowed
    )


def check_video_url(url: str, allowed: tuple[str, ...]) -> None:
    """Refuse, before any request, a URL that is not http(s) or not on an allowed host."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise NanoGPTVideoRefusedError(
            f"Refusing to fetch the video from {redact_url(url)!r}: only http(s) URLs are "
            "fetched. NanoGPT (or a redirect) pointed elsewhere."
        )
    if not host_allowed(parts.hostname, allowed):
        raise NanoGPTVideoRefusedError(
            f"Refusing to fetch the video from {parts.hostname}: it is not in the connection's "
            f"allowed_video_hosts ({', '.join(allowed)}). Add it there if it is NanoGPT's storage."
        )


def fetch_video(
    session: requests.Session, url: str, target: Any, settings: ClientSettings, deadline: float
) -> int:
    """One attempt, ending by ``deadline`` (epoch seconds): stream ``url`` into ``target``
    (which appears only when complete); returns the bytes written."""
    import requests
    from urllib3.exceptions import HTTPError

    from airflow_provider_nanogpt.hooks.limits import time_limit

    action = f"download the video from {redact_url(url)}"
    with time_limit(deadline - time.time()) as limit:
        try:
            response = open_video(session, url, settings)
            with response:
                return _write(response, target, settings, action, limit)
        except (requests.exceptions.RequestException, HTTPError) as exc:
            if limit.expired:
                raise _too_slow(action, settings) from None
            if (tls := tls_failure(exc, action, url, "the video URL")) is not None:
                raise tls from None
            raise NanoGPTDownloadError(f"Could not {action}: {type(exc).__name__}") from None


def open_video(
    session: requests.Session,
    url: str,
    settings: ClientSettings,
    extra_headers: dict[str, str] | None = None,
) -> requests.Response:
    """GET ``url`` (streamed), following redirects by hand so that every hop is checked."""
    from airflow_provider_nanogpt.hooks.limits import read_capped

    for _ in range(MAX_REDIRECTS + 1):
        check_video_url(url, settings.allowed_video_hosts)
        response = session.get(
            url,
            stream=True,
            allow_redirects=False,
            # A video is already compressed; asking for identity spares a decode pass. No API key:
            # storage hosts are not NanoGPT.
            headers={
                "User-Agent": settings.user_agent,
                "Accept-Encoding": "identity",
                **(extra_headers or {}),
            },
            timeout=(CONNECT_TIMEOUT, settings.request_timeout),
        )
        if response.is_redirect:
            location = response.headers.get("Location", "")
            response.close()
            url = urljoin(url, location)
            continue
        if response.status_code >= 400:
            with response:
                body = read_capped(response, MAX_ERROR_BODY_BYTES) or b""
            raise error_from_response(
                response.status_code,
                body.decode("utf-8", "replace"),
                response.headers,
                action=f"download the video from {redact_url(url)}",
                secrets=settings.secrets,  # never sent there, but never quoted either
            )
        return response
    raise NanoGPTDownloadError(
        f"Could not download the video: more than {MAX_REDIRECTS} redirects, last to "
        f"{redact_url(url)}"
    )


def _write(
    response: requests.Response, target: Any, settings: ClientSettings, action: str, limit: Any
) -> int:
    limit_bytes = settings.max_video_bytes
    announced = response.headers.get("Content-Length", "")
    expected = int(announced) if announced.isdigit() else None
    if expected is not None and expected > limit_bytes:
        raise _too_large(action, expected, limit_bytes, announced=True)
    written = 0
    with atomic_writer(target) as handle:
        for chunk in response.iter_content(chunk_size=DOWNLOAD_CHUNK_BYTES):
            written += len(chunk)
            if written > limit_bytes:
                raise _too_large(action, written, limit_bytes, announced=False)
            handle.write(chunk)
        if limit.expired:  # the limit cut the stream short without an error
            raise _too_slow(action, settings)
        if expected is not None and written != expected:
            raise NanoGPTDownloadError(f"Could not {action}: got {written} of {expected} bytes")
    return written


def _too_large(action: str, size: int, limit: int, *, announced: bool) -> NanoGPTVideoRefusedError:
    what = f"announces {size:,} bytes" if announced else f"sent more than {limit:,} bytes"
    return NanoGPTVideoRefusedError(
        f"Could not {action}: the video {what}, over the connection's max_video_bytes "
        f"({limit:,}). Nothing was kept. Raise max_video_bytes if such videos are expected."
    )


def _too_slow(action: str, settings: ClientSettings) -> NanoGPTDownloadError:
    return NanoGPTDownloadError(
        f"Could not {action}: not finished within the connection's download_timeout "
        f"({settings.download_timeout:g} s). Nothing was kept."
    )
