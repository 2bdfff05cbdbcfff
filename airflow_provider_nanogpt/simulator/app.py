"""``NanoGPTSimulator``: the Python API that starts and controls the simulator."""

from __future__ import annotations

import ipaddress
import socket
import threading
from types import TracebackType
from typing import Any

from .control import add_faults, advance
from .errors import ApiError
from .server import SimHTTPServer
from .state import ConfigError, SimConfig, SimState, validate_config


def resolve_loopback(host: str) -> tuple[str, socket.AddressFamily]:
    """Map ``host`` to a bind address; anything that is not loopback is refused."""
    if host.strip().lower() == "localhost":
        return "127.0.0.1", socket.AF_INET
    try:
        address = ipaddress.ip_address(host.strip().strip("[]"))
    except ValueError:
        raise ValueError(
            f"host must be a loopback IP address or 'localhost', got {host!r}"
        ) from None
    if not address.is_loopback:
        raise ValueError(f"the simulator binds to loopback only; {host!r} is not loopback")
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    return str(address), family


class NanoGPTSimulator:
    """A local, standard-library stand-in for the NanoGPT video API.

    >>> with NanoGPTSimulator(api_key="sk-nano-test", time_scale=0.05) as sim:
    ...     base_url = sim.url  # "http://127.0.0.1:<port>"
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        time_scale: float = 1.0,
        balance_usd: float = 100.0,
        rate_limit_per_minute: int = 50,
        recover_limit_per_minute: int = 20,
        status_shape: str = "nested",
        queue_seconds: float = 2.0,
        render_seconds: float = 8.0,
        quiet: bool = False,
        latency_seconds: float = 0.0,
        recover_lag_seconds: float = 0.0,
        sample_video: str | None = None,
    ) -> None:
        self._bind_host, self._family = resolve_loopback(host)
        if not 0 <= port <= 65535:
            raise ValueError("port must be between 0 and 65535")
        self._requested_port = port
        try:
            settings = validate_config(
                {
                    "api_key": api_key,
                    "time_scale": time_scale,
                    "balance_usd": balance_usd,
                    "rate_limit_per_minute": rate_limit_per_minute,
                    "recover_limit_per_minute": recover_limit_per_minute,
                    "status_shape": status_shape,
                    "queue_seconds": queue_seconds,
                    "render_seconds": render_seconds,
                    "latency_seconds": latency_seconds,
                    "recover_lag_seconds": recover_lag_seconds,
                    "sample_video": sample_video,
                }
            )
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        self._state = SimState(SimConfig(**settings))
        self._quiet = quiet
        self._server: SimHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> NanoGPTSimulator:
        """Bind and serve in a background thread; returns ``self``."""
        if self._server is not None:
            raise RuntimeError("the simulator is already running")
        self._state.stopping.clear()
        server = SimHTTPServer(
            (self._bind_host, self._requested_port), self._family, self._state, self._quiet
        )
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.01},
            name="nanogpt-simulator",
            daemon=True,
        )
        thread.start()
        self._server, self._thread = server, thread
        return self

    def stop(self) -> None:
        """Stop serving and close every connection (idempotent)."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._state.stopping.set()
        server.shutdown()
        server.close_connections()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._server, self._thread = None, None

    def __enter__(self) -> NanoGPTSimulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- addresses ---------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._server is not None

    @property
    def port(self) -> int:
        """The bound port (useful with ``port=0``)."""
        if self._server is None:
            raise RuntimeError("the simulator is not running; call start() first")
        return self._server.server_port

    @property
    def url(self) -> str:
        """Origin such as ``http://127.0.0.1:8787`` (no ``/api``)."""
        if self._server is None:
            raise RuntimeError("the simulator is not running; call start() first")
        return self._server.origin

    @property
    def api_url(self) -> str:
        """``url + "/api"``."""
        return self.url + "/api"

    # -- control (same as the /_sim endpoints) -----------------------------------------------

    def state(self) -> dict[str, Any]:
        """Same JSON-able dict as ``GET /_sim/state`` (never contains the API key)."""
        return self._state.snapshot()

    def reset(self) -> None:
        """Same as ``POST /_sim/reset``."""
        self._state.reset()

    def configure(self, **updates: Any) -> dict[str, Any]:
        """Same as ``POST /_sim/config``; returns the public config."""
        try:
            return self._state.configure(updates)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None

    def add_fault(
        self,
        endpoint: str = "any",
        kind: str | int = "500",
        count: int = 1,
        retry_after: float | None = None,
        delay: float | None = None,
        body_shape: str = "string",
    ) -> dict[str, Any]:
        """Same as ``POST /_sim/faults``; returns the queued fault."""
        spec: dict[str, Any] = {
            "endpoint": endpoint,
            "kind": str(kind),
            "count": count,
            "body_shape": body_shape,
        }
        if retry_after is not None:
            spec["retry_after"] = retry_after
        if delay is not None:
            spec["delay"] = delay
        try:
            (fault,) = add_faults(self._state, spec)
        except ApiError as exc:
            raise ValueError(str(exc.body.get("error"))) from None
        return fault.to_json()

    def clear_faults(self) -> None:
        """Same as ``DELETE /_sim/faults``."""
        self._state.faults.clear()

    def advance(self, seconds: float) -> float:
        """Same as ``POST /_sim/advance``: jump simulated time; returns the new sim time."""
        try:
            return advance(self._state, seconds)
        except ApiError as exc:
            raise ValueError(str(exc.body.get("error"))) from None
