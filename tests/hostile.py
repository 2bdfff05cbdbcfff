"""A small scriptable HTTP server on loopback, for answers no honest API gives.

The simulator stands in for NanoGPT as documented; this server is for the rest: redirects to other
hosts, bodies that echo secrets, slow drips, endless streams, garbage. Each test scripts the
routes it needs and reads back what the client sent. As a front before the simulator
(``fallback=forward_to(simulator.url)``), it passes requests through and lets a test replace
NanoGPT's real answer with a hostile one after NanoGPT has acted on the request.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit


@dataclass
class Seen:
    """One request as the server received it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: bytes


@dataclass
class Reply:
    """What to answer. ``chunks`` streams a body; ``drip`` sleeps that long between chunks."""

    status: int = 200
    body: Any = b""  # bytes, str, or anything JSON-serialisable
    headers: dict[str, str] = field(default_factory=dict)
    chunks: Iterable[bytes] | None = None
    drip: float = 0.0
    content_length: int | None = None  # announce this instead of the real length
    reset: bool = False  # drop the connection (TCP RST) instead of answering

    def payload(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode()
        return json.dumps(self.body).encode()


Handler = Callable[[Seen], Reply]


class _CountingServer(ThreadingHTTPServer):
    """Counts accepted connections and, given an SSL context, speaks https."""

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        tls: ssl.SSLContext | None,
    ) -> None:
        super().__init__(address, handler)
        self.tls = tls
        self.accepted = 0

    def get_request(self) -> tuple[socket.socket, Any]:
        connection, address = super().get_request()
        self.accepted += 1
        if self.tls is None:
            return connection, address
        try:  # a client that refuses the certificate ends here: serve_forever carries on
            return self.tls.wrap_socket(connection, server_side=True), address
        except OSError:
            connection.close()
            raise


class HostileServer:
    """``with HostileServer() as server: server.route("GET", "/x", Reply(...))``.

    ``tls``: serve https with this context. ``accepted`` counts the connections made to it.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: ssl.SSLContext | None = None,
        fallback: Handler | None = None,
    ) -> None:
        self.routes: dict[tuple[str, str], Handler] = {}
        self.fallback = fallback  # answers what no route does (a 404 without one)
        self.seen: list[Seen] = []
        self._server = _CountingServer((host, port), _handler_for(self), tls)
        self._server.daemon_threads = True
        # A short poll interval: shutting the server down waits for one.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{'https' if self._server.tls else 'http'}://{host}:{port}"

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def accepted(self) -> int:
        return self._server.accepted

    def route(self, method: str, path: str, reply: Reply | Handler) -> None:
        self.routes[(method, path)] = reply if callable(reply) else (lambda _seen: reply)

    def requests_to(self, path: str) -> list[Seen]:
        return [seen for seen in self.seen if seen.path == path]

    def __enter__(self) -> HostileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler_for(server: HostileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _handle(self) -> None:
            split = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            seen = Seen(
                method=self.command,
                path=split.path,
                query=parse_qs(split.query),
                headers={k.lower(): v for k, v in self.headers.items()},
                body=self.rfile.read(length) if length else b"",
            )
            server.seen.append(seen)
            route = server.routes.get((self.command, split.path)) or server.fallback
            reply = route(seen) if route else Reply(404, {"error": "no route"})
            self.close_connection = True
            with contextlib.suppress(OSError):  # the client gave up: that is often the point
                self._write(reply)

        def _write(self, reply: Reply) -> None:
            if reply.reset:
                # Linger 0: close() sends RST, so the client sees a reset, not an empty answer.
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                self.connection.close()
                return
            chunks: Iterator[bytes]
            if reply.chunks is not None:
                chunks = iter(reply.chunks)
                length = reply.content_length
            else:
                data = reply.payload()
                chunks = iter([data])
                length = len(data) if reply.content_length is None else reply.content_length
            self.send_response(reply.status)
            headers = {"Content-Type": "application/json", **reply.headers}
            for name, value in headers.items():
                self.send_header(name, value)
            if length is not None:
                self.send_header("Content-Length", str(length))
            self.send_header("Connection", "close")
            self.end_headers()
            for chunk in chunks:
                if reply.drip:
                    for index in range(len(chunk)):
                        self.wfile.write(chunk[index : index + 1])
                        self.wfile.flush()
                        time.sleep(reply.drip)
                else:
                    self.wfile.write(chunk)
            self.wfile.flush()

        do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = _handle

    return Handler


# Hop-by-hop or recomputed headers: the front writes its own.
_NOT_FORWARDED = frozenset({"connection", "content-length", "transfer-encoding", "keep-alive"})


def forward_to(upstream: str, timeout: float = 30.0) -> Handler:
    """A handler that passes each request to ``upstream`` (``http://host:port``) and answers
    with its answer; an upstream that drops the connection is dropped in turn.

    The client's Host header goes along, so URLs the upstream builds from it (a video's) point
    back at the front.
    """
    split = urlsplit(upstream)

    def forward(seen: Seen) -> Reply:
        path = seen.path + (f"?{urlencode(seen.query, doseq=True)}" if seen.query else "")
        headers = {k: v for k, v in seen.headers.items() if k not in _NOT_FORWARDED}
        connection = http.client.HTTPConnection(split.hostname or "", split.port, timeout=timeout)
        try:
            connection.request(seen.method, path, body=seen.body or None, headers=headers)
            answer = connection.getresponse()
            body = answer.read()
        except (OSError, http.client.HTTPException):
            return Reply(reset=True)
        finally:
            connection.close()
        kept = {k: v for k, v in answer.getheaders() if k.lower() not in _NOT_FORWARDED}
        return Reply(answer.status, body, headers=kept)

    return forward
