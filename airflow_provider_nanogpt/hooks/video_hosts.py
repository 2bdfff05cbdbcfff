"""Which video URLs may be fetched: the rules for every hop of a download and of the UI's stream.

Two checks, both on what the HTTP client really does rather than on a second parser's opinion:

- before a request, the URL as ``requests`` itself prepares it: http(s), no userinfo, no
  backslash, control character or whitespace anywhere, the same host whichever parser reads it,
  and on ``allowed_video_hosts`` when that list is set;
- when the socket is connected, the peer address: never loopback, private, link-local, reserved
  or otherwise non-global (cloud metadata at 169.254.169.254 included), unless the host is the
  connection's own NanoGPT host or is listed in ``allowed_video_hosts``. Checking the connected
  address (not a separate DNS lookup) leaves no window for a name that resolves differently twice.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

from airflow_provider_nanogpt.exceptions import NanoGPTVideoRefusedError

_guard = threading.local()


def redact_url(url: str | None) -> str:
    """A URL without its query string: signed storage URLs carry credentials there."""
    if not url:
        return ""
    return url.split("?", 1)[0]


def _normal_host(host: str) -> str:
    return host.strip("[]").lower().rstrip(".")


def host_matches(host: str, patterns: tuple[str, ...]) -> bool:
    """Whether ``host`` is one of ``patterns`` (exact names, or ``*.example.com``: subdomains)."""
    host = _normal_host(host)
    return any(
        host.endswith(pattern[1:]) if pattern.startswith("*.") else host == pattern
        for pattern in patterns
    )


@dataclass(frozen=True)
class VideoHostPolicy:
    """Where videos may come from, read from the connection.

    ``allowed`` set: only those hosts; empty: any host. Either way, only public addresses, except
    for ``nanogpt_host`` (the connection's own host) and the ``allowed`` hosts, which may be at any
    address: a simulator on loopback, a private mirror.
    """

    allowed: tuple[str, ...] = ()
    nanogpt_host: str | None = None

    def trusts_any_address(self, host: str) -> bool:
        trusted = self.allowed + ((_normal_host(self.nanogpt_host),) if self.nanogpt_host else ())
        return host_matches(host, trusted)


def _refuse(url: str, why: str) -> NanoGPTVideoRefusedError:
    return NanoGPTVideoRefusedError(f"Refusing to fetch the video from {redact_url(url)!r}: {why}")


def _has_unsafe_characters(url: str) -> bool:
    return "\\" in url or any(
        ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf") for ch in url
    )


def check_video_url(url: str, policy: VideoHostPolicy) -> str:
    """Refuse, before any request, a URL the client might read differently; returns its host."""
    from requests.models import PreparedRequest
    from urllib3.util import parse_url

    if _has_unsafe_characters(url):
        raise _refuse(url, "it holds a backslash, a control character or whitespace.")
    prepared = PreparedRequest()
    try:
        # What requests sends: urllib3's parse of the URL, the host IDNA-encoded.
        raw = parse_url(url)
        prepared.prepare_url(url, None)
        client = parse_url(prepared.url or "")
        ours = urlsplit(url)
        our_host, our_port = ours.hostname, ours.port
    except Exception:  # any parser's failure (bad port, bad IDNA) is a refusal, not a crash
        raise _refuse(url, "it is not a well-formed URL.") from None
    if client.scheme not in ("http", "https") or not client.host:
        raise _refuse(
            url, "only http(s) URLs are fetched; NanoGPT (or a redirect) pointed elsewhere."
        )
    if raw.auth or client.auth or "@" in ours.netloc:
        raise _refuse(url, "it carries a user name or password before its host.")
    if (
        our_host is None
        or _normal_host(our_host) != _normal_host(raw.host or "")
        or our_port != client.port
    ):
        raise _refuse(url, "its host reads differently to different URL parsers.")
    host = _normal_host(client.host)
    if policy.allowed and not host_matches(host, policy.allowed):
        raise NanoGPTVideoRefusedError(
            f"Refusing to fetch the video from {host}: it is not in the connection's "
            f"allowed_video_hosts ({', '.join(policy.allowed)}). Add it there if it is NanoGPT's "
            "storage."
        )
    return host


def is_public_address(address: str) -> bool:
    """A globally routable unicast address (IPv4-mapped IPv6 judged as the IPv4 it carries)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


@contextmanager
def guarded_connections(policy: VideoHostPolicy) -> Iterator[None]:
    """Hold every connection this thread opens inside the block to ``policy``'s address rule."""
    outer = getattr(_guard, "policy", None)
    _guard.policy = policy
    try:
        yield
    finally:
        _guard.policy = outer


def check_connected(host: str, sock: socket.socket, via_proxy: bool) -> None:
    """Called by the client's connections once connected: refuse a non-public peer.

    Behind a proxy the peer is the proxy, which resolves the name itself: the allow-list still
    applies, the address rule is the proxy's to enforce.
    """
    policy: VideoHostPolicy | None = getattr(_guard, "policy", None)
    if policy is None or via_proxy or policy.trusts_any_address(host):
        return
    peer = sock.getpeername()[0]
    if not is_public_address(peer):
        sock.close()
        raise NanoGPTVideoRefusedError(
            f"Refusing to fetch the video from {host}: it resolved to {peer}, a loopback, private, "
            "link-local or reserved address. If this host really is NanoGPT's storage (a private "
            "mirror), add it to the connection's allowed_video_hosts."
        )
