"""Fetching a finished video: only from hosts ``video_hosts`` allows, never with the API key,
never larger than allowed, never past its deadline, and never left half-written.

Redirects are followed here by hand (at most a few), so every hop is held to the same rules: a
storage URL that redirects to ``file://``, to a host outside ``allowed_video_hosts`` or to a
private address is refused.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin

from airflow_provider_nanogpt.api.errors import error_from_response, tls_failure
from airflow_provider_nanogpt.exceptions import (
    NanoGPTDownloadError,
    NanoGPTVideoRefusedError,
)
from airflow_provider_nanogpt.hooks.settings import CONNECT_TIMEOUT
from airflow_provider_nanogpt.hooks.video_hosts import (
    check_video_url,
    guarded_connections,
    redact_url,
)
from airflow_provider_nanogpt.storage import atomic_writer

if TYPE_CHECKING:
    import requests

    from airflow_provider_nanogpt.hooks.settings import ClientSettings

# Each chunk is a new bytes object. Measured in a new worker process: at 1 MiB the copies into
# freshly faulted memory cost a third of the throughput; at 256 KiB the heap's pages are reused.
DOWNLOAD_CHUNK_BYTES = 256 * 1024
MAX_REDIRECTS = 5
# Enough of an error page to quote NanoGPT's (or the CDN's) message.
MAX_ERROR_BODY_BYTES = 64 * 1024


def video_session() -> requests.Session:
    """A session for videos: its connections are the ones ``time_limit`` can cut off and whose
    peer address ``guarded_connections`` checks."""
    import requests

    from airflow_provider_nanogpt.hooks.limits import TimeLimitedAdapter

    session = requests.Session()
    # No retries inside urllib3: ours are counted and bounded (tenacity).
    adapter = TimeLimitedAdapter(max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


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

    policy = settings.video_hosts
    for _ in range(MAX_REDIRECTS + 1):
        check_video_url(url, policy)
        try:
            with guarded_connections(policy):
                response = session.get(
                    url,
                    stream=True,
                    allow_redirects=False,
                    # A video is already compressed: identity spares a decode pass. No API key:
                    # storage hosts are not NanoGPT.
                    headers={
                        "User-Agent": settings.user_agent,
                        "Accept-Encoding": "identity",
                        **(extra_headers or {}),
                    },
                    timeout=(CONNECT_TIMEOUT, settings.request_timeout),
                )
        except ValueError:  # requests reads a redirect's Location even when not following it
            raise _unreadable_redirect(url) from None
        if response.is_redirect:
            location = response.headers.get("Location", "")
            response.close()
            try:
                url = urljoin(url, location)
            except ValueError:  # "[127.0.0.1]" and other hosts no parser can read
                raise _unreadable_redirect(url) from None
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


def _unreadable_redirect(url: str) -> NanoGPTVideoRefusedError:
    return NanoGPTVideoRefusedError(
        f"Refusing to follow a redirect from {redact_url(url)}: its Location is not a URL that "
        "can be read."
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
