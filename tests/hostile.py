"""A small scriptable HTTP server on loopback, for answers no honest API gives.

The simulator stands in for NanoGPT as documented; this server is for the rest: redirects to other
hosts, bodies that echo secrets, slow drips, endless streams, garbage. Each test scripts the
routes it needs and reads back what the client sent.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


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

    def payload(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode()
        return json.dumps(self.body).encode()


Handler = Callable[[Seen], Reply]


class HostileServer:
    """``with HostileServer() as server: server.route("GET", "/x", Reply(...))``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.routes: dict[tuple[str, str], Handler] = {}
        self.seen: list[Seen] = []
        self._server = ThreadingHTTPServer((host, port), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

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
            route = server.routes.get((self.command, split.path))
            reply = route(seen) if route else Reply(404, {"error": "no route"})
            self.close_connection = True
            with contextlib.suppress(OSError):  # the client gave up: that is often the point
                self._write(reply)

        def _write(self, reply: Reply) -> None:
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
