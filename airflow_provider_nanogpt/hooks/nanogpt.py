"""NanoGPTHook: every HTTP call this provider makes to NanoGPT.

Sync methods (requests, one pooled session) run on workers; async methods (httpx) run in the
triggerer. Both share request building (``api.endpoints``), response reading (``api.errors``,
``api.status``, ``api.responses``) and the retry policy (``api.retry``); only the transport
differs. ``requests`` and ``httpx`` are imported lazily so DAG files that use the operators parse
fast.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

from airflow_provider_nanogpt import __version__
from airflow_provider_nanogpt.api.endpoints import (
    ApiRequest,
    balance_request,
    build_headers,
    legacy_status_request,
    normalize_base_url,
    recover_request,
    status_request,
    submit_request,
    video_models_request,
)
from airflow_provider_nanogpt.api.errors import error_from_response, read_response
from airflow_provider_nanogpt.api.responses import (
    Balance,
    RecoveredRun,
    Submission,
    VideoModel,
    parse_balance,
    parse_recovered_runs,
    parse_submission,
    parse_video_models,
)
from airflow_provider_nanogpt.api.retry import (
    DEFAULT_MAX_RETRIES,
    RetryPolicy,
    is_retryable_read,
    is_retryable_submit,
    tenacity_kwargs,
)
from airflow_provider_nanogpt.api.status import VideoStatus, normalize_status
from airflow_provider_nanogpt.exceptions import (
    NanoGPTConfigurationError,
    NanoGPTConnectionError,
    NanoGPTDownloadError,
)
from airflow_provider_nanogpt.storage import atomic_writer, describe, resolve_destination

if TYPE_CHECKING:
    import requests
    from airflow.sdk import Connection

    from airflow_provider_nanogpt.hooks.async_clients import SharedClient

DEFAULT_REQUEST_TIMEOUT = 30.0
SUBMIT_TIMEOUT_FLOOR = 60.0
CONNECT_TIMEOUT = 10.0
# Each chunk is a new bytes object. Measured in a new worker process: at 1 MiB the copies into
# freshly faulted memory cost a third of the throughput; at 256 KiB the heap's pages are reused.
DOWNLOAD_CHUNK_BYTES = 256 * 1024


@dataclass(frozen=True)
class ClientSettings:
    """Everything needed to talk to NanoGPT, read from the connection once."""

    base_url: str
    api_key: str = field(repr=False)
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    max_retries: int = DEFAULT_MAX_RETRIES

    @property
    def user_agent(self) -> str:
        return f"airflow-provider-nanogpt/{__version__} (+apache-airflow/{_airflow_version()})"

    def headers(self) -> dict[str, str]:
        return build_headers(self.api_key, self.user_agent)


@dataclass(frozen=True)
class DownloadResult:
    path: str
    size_bytes: int


class NanoGPTHook(BaseHook):
    """Talk to NanoGPT's video API through an Airflow ``nanogpt`` connection.

    :param nanogpt_conn_id: Connection with the API key in the password field and the origin
        (default ``https://nano-gpt.com``) in the host field.
    :param request_timeout: Read timeout per HTTP call in seconds; overrides the connection extra.
    :param max_retries: Retries for transient errors per call; overrides the connection extra.
    """

    conn_name_attr = "nanogpt_conn_id"
    default_conn_name = "nanogpt_default"
    conn_type = "nanogpt"
    hook_name = "NanoGPT"

    def __init__(
        self,
        nanogpt_conn_id: str = default_conn_name,
        *,
        request_timeout: float | None = None,
        max_retries: int | None = None,
        retry_policy: RetryPolicy | None = None,
    ) -> None:
        super().__init__()
        self.nanogpt_conn_id = nanogpt_conn_id
        self._request_timeout_override = request_timeout
        self._max_retries_override = max_retries
        self._retry_policy_override = retry_policy
        self._settings: ClientSettings | None = None
        self._async_client: SharedClient | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(nanogpt_conn_id={self.nanogpt_conn_id!r})"

    # --- connection ------------------------------------------------------------------------

    def settings(self) -> ClientSettings:
        if self._settings is None:
            try:
                conn = self.get_connection(self.nanogpt_conn_id)
            except Exception as exc:
                raise _missing_connection(self.nanogpt_conn_id, exc) from None
            self._settings = self._settings_from(conn, conn.extra_dejson)
        return self._settings

    async def asettings(self) -> ClientSettings:
        if self._settings is None:
            from airflow.providers.common.compat.connection import (
                get_async_connection,
                get_async_extra_dejson,
            )

            try:
                conn = await get_async_connection(self.nanogpt_conn_id, hook=self)
            except Exception as exc:
                raise _missing_connection(self.nanogpt_conn_id, exc) from None
            self._settings = self._settings_from(conn, await get_async_extra_dejson(conn))
        return self._settings

    def _settings_from(self, conn: Connection, extras: Mapping[str, Any]) -> ClientSettings:
        api_key = (conn.password or "").strip()
        if not api_key:
            raise NanoGPTConfigurationError(
                f"Connection {self.nanogpt_conn_id!r} has no API key: put the NanoGPT API key "
                "in the connection's password field."
            )
        _mask(api_key)
        try:
            base_url = normalize_base_url(conn.host)
        except ValueError as exc:
            raise NanoGPTConfigurationError(f"Connection {self.nanogpt_conn_id!r}: {exc}") from None
        timeout = self._request_timeout_override or _extra(extras, "request_timeout")
        retries = self._max_retries_override
        if retries is None:
            retries = _extra(extras, "max_retries")
        return ClientSettings(
            base_url=base_url,
            api_key=api_key,
            request_timeout=float(timeout or DEFAULT_REQUEST_TIMEOUT),
            max_retries=int(retries if retries is not None else DEFAULT_MAX_RETRIES),
        )

    def retry_policy(self, settings: ClientSettings) -> RetryPolicy:
        if self._retry_policy_override is not None:
            return self._retry_policy_override
        return RetryPolicy(max_retries=settings.max_retries)

    def _policy(self, max_rate_limit_sleep: float | None) -> RetryPolicy:
        policy = self.retry_policy(self.settings())
        if max_rate_limit_sleep is None:
            return policy
        return replace(policy, max_retry_after=min(policy.max_retry_after, max_rate_limit_sleep))

    # --- sync transport (workers) ------------------------------------------------------------

    @cached_property
    def _session(self) -> requests.Session:
        import requests
        from requests.adapters import HTTPAdapter

        session = requests.Session()
        # Retries are ours (tenacity); urllib3 must never re-send a POST on its own.
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=16, max_retries=0)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        return session

    def _send(self, request: ApiRequest, *, timeout: float | None = None) -> Any:
        """One HTTP exchange, no retries: a parsed JSON body or a typed error."""
        import requests

        settings = self.settings()
        try:
            response = self._session.request(
                request.method,
                settings.base_url + request.path,
                params=dict(request.params) or None,
                json=request.json,
                headers=settings.headers(),
                timeout=(CONNECT_TIMEOUT, timeout or settings.request_timeout),
            )
        except requests.exceptions.RequestException as exc:
            raise _requests_transport_error(exc, request.action, settings.base_url) from None
        return read_response(response.status_code, response.headers, response.text, request.action)

    def _request(self, request: ApiRequest, policy: RetryPolicy | None = None) -> Any:
        """A read with the shared retry policy."""
        from tenacity import Retrying

        kwargs = tenacity_kwargs(
            policy or self.retry_policy(self.settings()),
            is_retryable_read,
            self.log,
            request.action,
        )
        for attempt in Retrying(**kwargs):
            with attempt:
                return self._send(request)
        raise AssertionError("unreachable: tenacity reraises the last error")

    # --- async transport (triggerer) ---------------------------------------------------------

    async def _aclient(self) -> SharedClient:
        if self._async_client is None:
            from airflow_provider_nanogpt.hooks import async_clients

            settings = await self.asettings()
            self._async_client = async_clients.acquire(
                settings.base_url, settings.headers(), settings.request_timeout, CONNECT_TIMEOUT
            )
        return self._async_client

    async def _asend(self, request: ApiRequest) -> Any:
        import httpx

        shared = await self._aclient()
        try:
            response = await shared.request(
                request.method,
                request.path,
                params=dict(request.params) or None,
                json=request.json,
            )
        except httpx.HTTPError as exc:
            raise _httpx_transport_error(exc, request.action, shared.base_url) from None
        return read_response(response.status_code, response.headers, response.text, request.action)

    async def _arequest(self, request: ApiRequest) -> Any:
        from tenacity import AsyncRetrying

        settings = await self.asettings()
        kwargs = tenacity_kwargs(
            self.retry_policy(settings), is_retryable_read, self.log, request.action
        )
        async for attempt in AsyncRetrying(**kwargs):
            with attempt:
                return await self._asend(request)
        raise AssertionError("unreachable: tenacity reraises the last error")

    async def aclose(self) -> None:
        if self._async_client is not None:
            from airflow_provider_nanogpt.hooks import async_clients

            client, self._async_client = self._async_client, None
            await async_clients.release(client)

    def close(self) -> None:
        if "_session" in self.__dict__:
            self._session.close()
            del self.__dict__["_session"]

    # --- API: status -------------------------------------------------------------------------

    def get_video_status(self, run_id: str) -> VideoStatus:
        return normalize_status(self._request(status_request(run_id)), run_id)

    async def aget_video_status(self, run_id: str) -> VideoStatus:
        return normalize_status(await self._arequest(status_request(run_id)), run_id)

    def get_legacy_video_status(self, run_id: str, model: str | None = None) -> VideoStatus:
        """The deprecated ``/api/generate-video/status`` endpoint, for old run ids."""
        return normalize_status(self._request(legacy_status_request(run_id, model)), run_id)

    # --- API: account and catalog ------------------------------------------------------------

    def get_balance(self) -> Balance:
        return parse_balance(self._request(balance_request()))

    async def aget_balance(self) -> Balance:
        return parse_balance(await self._arequest(balance_request()))

    def list_video_models(self, detailed: bool = True) -> list[VideoModel]:
        return parse_video_models(self._request(video_models_request(detailed)))

    def recover_runs(
        self,
        model: str | None = None,
        limit: int = 10,
        conversation_uuid: str | None = None,
        *,
        max_rate_limit_sleep: float | None = None,
    ) -> list[RecoveredRun]:
        """Recent runs of this API key, newest first (NanoGPT allows 20 lookups a minute).

        ``max_rate_limit_sleep`` caps how long a 429's Retry-After is slept here; a longer wait
        raises NanoGPTRateLimitError.
        """
        request = recover_request(model, limit, conversation_uuid)
        policy = self._policy(max_rate_limit_sleep)
        return parse_recovered_runs(self._request(request, policy))

    def test_connection(self) -> tuple[bool, str]:
        """Authenticated balance read: proves the key and URL work, never submits or spends."""
        try:
            balance = self.get_balance()
        except Exception as exc:
            return False, str(exc)
        return True, f"Connected to NanoGPT; balance ${balance.usd:.2f}"

    # --- API: submit -------------------------------------------------------------------------

    def submit_video(
        self, payload: Mapping[str, Any], *, max_rate_limit_sleep: float | None = None
    ) -> Submission:
        """Send one video request to NanoGPT (each accepted request is a paid job).

        Re-sent within this call only when NanoGPT proved nothing was created: a 429 (after its
        Retry-After) or a connection that was never established. Any other failure is raised as
        it is; whether a job was created then is for the caller to settle (the operator does so
        through ``airflow_provider_nanogpt.submission``), never by sending again blindly.

        ``max_rate_limit_sleep`` caps how long a 429's Retry-After is slept here; a longer wait, or
        a 429 without Retry-After, raises NanoGPTRateLimitError so the caller can wait without
        holding a worker (defer).
        """
        from tenacity import Retrying

        request = submit_request(payload)
        settings = self.settings()
        timeout = max(SUBMIT_TIMEOUT_FLOOR, settings.request_timeout)
        policy = self._policy(max_rate_limit_sleep)
        if max_rate_limit_sleep is not None:
            policy = replace(policy, retry_rate_limit_without_retry_after=False)
        kwargs = tenacity_kwargs(policy, is_retryable_submit, self.log, request.action)
        for attempt in Retrying(**kwargs):
            with attempt:
                return parse_submission(self._send(request, timeout=timeout))
        raise AssertionError("unreachable: tenacity reraises the last error")

    # --- API: download -----------------------------------------------------------------------

    def download_video(self, url: str, destination: Any) -> DownloadResult:
        """Stream the video at ``url`` to a local path, ``file://`` URI or ObjectStoragePath.

        Constant memory; the byte count is checked against Content-Length; the file appears at
        ``destination`` only when complete. The API key is never sent to the video URL's host.
        """
        from tenacity import Retrying

        target = resolve_destination(destination)
        settings = self.settings()
        policy = self.retry_policy(settings)

        def retryable(exc: BaseException, policy: RetryPolicy) -> bool:
            return isinstance(exc, NanoGPTDownloadError) or is_retryable_read(exc, policy)

        kwargs = tenacity_kwargs(policy, retryable, self.log, "download the video")
        for attempt in Retrying(**kwargs):
            with attempt:
                size = self._download_once(url, target, settings)
                self.log.info("Saved the video to %s (%d bytes).", describe(target), size)
                return DownloadResult(path=describe(target), size_bytes=size)
        raise AssertionError("unreachable: tenacity reraises the last error")

    def _download_once(self, url: str, target: Any, settings: ClientSettings) -> int:
        import requests
        from urllib3.exceptions import HTTPError

        action = f"download the video from {redact_url(url)}"
        try:
            with self._session.get(
                url,
                stream=True,
                # A video is already compressed; asking for identity spares a decode pass.
                headers={"User-Agent": settings.user_agent, "Accept-Encoding": "identity"},
                timeout=(CONNECT_TIMEOUT, settings.request_timeout),
            ) as response:
                if response.status_code >= 400:
                    raise error_from_response(
                        response.status_code, response.text, response.headers, action=action
                    )
                expected = response.headers.get("Content-Length")
                written = 0
                with atomic_writer(target) as handle:
                    for chunk in response.iter_content(chunk_size=DOWNLOAD_CHUNK_BYTES):
                        handle.write(chunk)
                        written += len(chunk)
                    if expected is not None and expected.isdigit() and written != int(expected):
                        raise NanoGPTDownloadError(
                            f"Could not {action}: got {written} of {expected} bytes"
                        )
                return written
        except (requests.exceptions.RequestException, HTTPError) as exc:
            raise NanoGPTDownloadError(f"Could not {action}: {type(exc).__name__}") from None


def redact_url(url: str | None) -> str:
    """A URL without its query string: signed storage URLs carry credentials there."""
    if not url:
        return ""
    return url.split("?", 1)[0]


def _missing_connection(conn_id: str, exc: Exception) -> NanoGPTConfigurationError:
    env_name = f"AIRFLOW_CONN_{conn_id.upper()}"
    return NanoGPTConfigurationError(
        f"NanoGPT connection {conn_id!r} is not available ({type(exc).__name__}). Create it in "
        f"Admin → Connections (type 'nanogpt', API key as password) or set {env_name}."
    )


def _extra(extras: Mapping[str, Any], name: str) -> Any:
    value = extras.get(name)
    if value in (None, ""):
        value = extras.get(f"extra__nanogpt__{name}")
    return None if value in (None, "") else value


def _mask(secret: str) -> None:
    try:
        from airflow.sdk.log import mask_secret
    except ImportError:  # pragma: no cover - older task SDKs
        return
    mask_secret(secret)


def _airflow_version() -> str:
    try:
        from airflow import __version__ as airflow_version
    except ImportError:  # pragma: no cover
        return "unknown"
    return str(airflow_version)


def _requests_transport_error(exc: Exception, action: str, base_url: str) -> NanoGPTConnectionError:
    import requests
    from urllib3.exceptions import NewConnectionError

    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    never_connected = isinstance(exc, requests.exceptions.ConnectTimeout) or isinstance(
        reason, NewConnectionError
    )
    return NanoGPTConnectionError(
        f"Could not {action} at {base_url}: {type(exc).__name__}",
        request_sent=not never_connected,
    )


def _httpx_transport_error(exc: Exception, action: str, base_url: str) -> NanoGPTConnectionError:
    import httpx

    never_connected = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
    return NanoGPTConnectionError(
        f"Could not {action} at {base_url}: {type(exc).__name__}",
        request_sent=not never_connected,
    )
