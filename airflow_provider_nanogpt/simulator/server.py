"""HTTP plumbing: a loopback-only ``ThreadingHTTPServer`` and its request handler."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import socketserver
import struct
import sys
import threading
import time
import traceback
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .api import apply_fault, known_path, route
from .control import CONTROL_PREFIX, handle_control
from .errors import ApiError, simple_error
from .messages import JsonResponse, RawResponse, Request, ResetResponse, Response, StreamResponse
from .state import SimState

DRAIN_LIMIT = 64 * 1024 * 1024  # oversized bodies up to this are read and discarded
_READ_CHUNK = 64 * 1024
_HOST_RE = re.compile(r"^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$")


class SimHTTPServer(ThreadingHTTPServer):
    """Threaded server that remembers its open connections so ``stop`` can cut them."""

    daemon_threads = True
    allow_reuse_address = True
    # Hundreds of triggers connect at once; the default backlog of 5 drops their SYNs.
    request_queue_size = 1024

    def __init__(
        self, address: tuple[str, int], family: socket.AddressFamily, state: SimState, quiet: bool
    ) -> None:
        self.address_family = family
        self.state = state
        self.quiet = quiet
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, SimRequestHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a possible DNS lookup: skip it.
        socketserver.TCPServer.server_bind(self)
        host, port = self.socket.getsockname()[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Shut every open client connection (keep-alive sockets, slow downloads)."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    @property
    def origin(self) -> str:
        """``http://host:port`` of the bound socket."""
        host = self.server_name
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.server_port}"


class SimRequestHandler(BaseHTTPRequestHandler):
    """Parses a request, applies faults, dispatches it and writes the response."""

    server: SimHTTPServer
    protocol_version = "HTTP/1.1"
    server_version = "NanoGPT-Simulator/1.0"
    sys_version = ""
    timeout = 120

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without this, Nagle plus delayed ACKs add
        # about 40 ms to every response on a kept-alive connection.
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default log: it prints the raw request line, query included."""

    def version_string(self) -> str:
        """``Server`` header value."""
        return self.server_version

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_OPTIONS(self) -> None:
        self._dispatch()

    # -- request -----------------------------------------------------------------------------

    def _drain(self, remaining: int) -> bool:
        """Discard ``remaining`` body bytes; False when too many to drain."""
        if remaining > DRAIN_LIMIT:
            self.close_connection = True
            return False
        while remaining > 0:
            chunk = self.rfile.read(min(_READ_CHUNK, remaining))
            if not chunk:
                break
            remaining -= len(chunk)
        return True

    def _read_chunked(self, limit: int) -> bytes | None:
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";")[0].strip() or b"0", 16)
            except ValueError:
                self.close_connection = True
                return b""
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                break
            total += size
            if total > max(limit, DRAIN_LIMIT):
                self.close_connection = True
                return None
            data = self.rfile.read(size)
            self.rfile.readline(1024)
            if total <= limit:
                parts.append(data)
        return b"".join(parts) if total <= limit else None

    def _read_body(self, limit: int) -> bytes | None:
        """The request body, or None when it exceeds ``limit`` bytes."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked(limit)
        raw_length = self.headers.get("Content-Length")
        if not raw_length:
            return b""
        try:
            length = int(raw_length)
        except ValueError:
            self.close_connection = True
            return b""
        if length < 0:
            self.close_connection = True
            return b""
        if length > limit:
            self._drain(length)
            return None
        return self.rfile.read(length)

    def _origin(self) -> str:
        host = (self.headers.get("Host") or "").strip()
        if host and _HOST_RE.match(host):
            return f"http://{host}"
        return self.server.origin

    # -- dispatch ----------------------------------------------------------------------------

    def _dispatch(self) -> None:
        state = self.server.state
        request_id = "req_" + uuid.uuid4().hex
        split = urlsplit(self.path)
        path = split.path or "/"
        method = self.command
        body = self._read_body(state.config.max_body_bytes)
        request = Request(
            method=method,
            path=path,
            query=parse_qs(split.query, keep_blank_values=True),
            headers=self.headers,
            body=body,
            client_ip=str(self.client_address[0]),
            origin=self._origin(),
        )
        control = path.startswith(CONTROL_PREFIX)
        try:
            response = handle_control(state, request) if control else self._api(request)
        except ApiError as exc:
            response = JsonResponse(exc.status, exc.body, exc.headers)
        except Exception:  # pragma: no cover - a simulator bug; keep serving
            traceback.print_exc(file=sys.stderr)
            response = JsonResponse(500, {"error": "Internal simulator error", "status": 500})
        # Log before answering: once a client has its response, the state shows the request.
        status = 0 if isinstance(response, ResetResponse) else response.status
        if not control:
            # Which credential headers came with it (never their values), so tests can prove
            # that a client does not send its key where it should not.
            sent = [h for h in ("x-api-key", "authorization") if request.headers.get(h)]
            state.log_request(method, path, status, sent)
        if not self.server.quiet:
            print(
                f"{request.client_ip} {method} {path} {status or 'reset'}",
                file=sys.stderr,
                flush=True,
            )
        self._send(response, request_id)

    def _api(self, request: Request) -> Response:
        state = self.server.state
        if state.config.latency_seconds:
            time.sleep(state.config.latency_seconds)
        state.count_request(request.method, request.path)
        found = route(request.method, request.path)
        endpoint = found[0] if found else None
        if endpoint == "submit":
            with state.lock:
                state.submit_requests += 1
        fault = state.faults.take(endpoint)
        if fault is None and endpoint is not None:
            fault = state.random_transient_fault(endpoint)
        if fault is not None and endpoint is not None:
            faulted = apply_fault(state, endpoint, fault)
            if faulted is not None:
                return faulted
        if found is None:
            if known_path(request.path):
                raise simple_error(405, "Method not allowed")
            raise simple_error(404, "Not found")
        if request.body is None and endpoint != "submit":  # submit checks it after auth
            raise simple_error(413, "Request entity too large")
        return found[1](state, request)

    # -- response ----------------------------------------------------------------------------

    def _send(self, response: Response, request_id: str) -> None:
        """Write ``response`` (or reset the connection)."""
        if isinstance(response, ResetResponse):
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
            return
        head_only = self.command == "HEAD"
        try:
            if isinstance(response, StreamResponse):
                self._start(
                    response.status,
                    response.content_type,
                    response.content_length,
                    request_id,
                    response.headers,
                )
                sent = 0
                if not head_only:
                    for chunk in response.chunks:
                        self.wfile.write(chunk)
                        sent += len(chunk)
                    if sent < response.content_length:
                        self.close_connection = True
                self.wfile.flush()
                return
            if isinstance(response, RawResponse):
                data, content_type = response.body, response.content_type
            else:
                data = json.dumps(response.payload).encode("utf-8")
                content_type = "application/json; charset=utf-8"
            self._start(response.status, content_type, len(data), request_id, response.headers)
            if not head_only:
                self.wfile.write(data)
            self.wfile.flush()
        except OSError:  # the client went away (or stop() cut the connection)
            self.close_connection = True

    def _start(
        self, status: int, content_type: str, length: int, request_id: str, headers: dict[str, str]
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(length))
        self.send_header("X-Request-ID", request_id)
        for name, value in headers.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
