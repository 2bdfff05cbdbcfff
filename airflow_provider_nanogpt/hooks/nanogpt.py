"""NanoGPTHook: every HTTP call this provider makes to NanoGPT.

Sync methods (requests, one pooled session) run on workers; async methods (httpx) run in the
triggerer. Both share request building (``api.endpoints``), response reading (``api.errors``,
``api.status``, ``api.responses``) and the retry policy (``api.retry``); only the transport
differs. Each exchange is bounded in total time and in body size, never follows a redirect (the
key stays with the connection's origin), and has the key scrubbed from anything read back.
``requests`` and ``httpx`` are imported lazily so DAG files that use the operators parse fast.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

from airflow_provider_nanogpt import metrics
from airflow_provider_nanogpt.api.endpoints import (
    ApiRequest,
    balance_request,
    recover_request,
    status_request,
    submit_request,
    usage_request,
    video_models_request,
)
from airflow_provider_nanogpt.api.errors import read_response, tls_failure
from airflow_provider_nanogpt.api.responses import (
    Balance,
    RecoveredRun,
    Submission,
    VideoModel,
    parse_balance,
    parse_recovered_runs,
    parse_submission,
    parse_usage_usd,
    parse_video_models,
)
from airflow_provider_nanogpt.api.retry import (
    RetryPolicy,
    is_retryable_read,
    is_retryable_submit,
    tenacity_kwargs,
)
from airflow_provider_nanogpt.api.status import VideoStatus, normalize_status
from airflow_provider_nanogpt.exceptions import (
    NanoGPTConfigurationError,
    NanoGPTConnectionError,
    NanoGPTDeadlinePassedError,
    NanoGPTDownloadError,
    NanoGPTResponseError,
)
from airflow_provider_nanogpt.hooks.settings import (
    CONNECT_TIMEOUT,
    DEFAULT_REQUEST_TIMEOUT,
    ClientSettings,
    settings_from,
)
from airflow_provider_nanogpt.hooks.video_hosts import redact_url

if TYPE_CHECKING:
    import requests

    from airflow_provider_nanogpt.hooks.async_clients import SharedClient

__all__ = [
    "DEFAULT_REQUEST_TIMEOUT",
    "ClientSettings",
    "DownloadResult",
    "NanoGPTHook",
    "redact_url",
]

SUBMIT_TIMEOUT_FLOOR = 60.0
# NanoGPT's answers are small JSON documents; anything larger is refused unread.
MAX_API_BODY_BYTES = 4 * 1024 * 1024
# The model catalog changes rarely: one task execution reads it once (validation and the cost
# guard both need it), and a worker-side loop at most once a minute.
CATALOG_MAX_AGE_SECONDS = 60.0


@dataclass(frozen=True)
class DownloadResult:
    path: str
    size_bytes: int


class NanoGPTHook(BaseHook):
    """Talk to NanoGPT's video API through an Airflow ``nanogpt`` connection.

    :param nanogpt_conn_id: Connection with the API key in the password field and the origin
        (default ``https://nano-gpt.com``) in the host field.
    :param request_timeout: The most one HTTP exchange may take, in seconds; overrides the
        connection extra.
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
        self._catalog: dict[bool, tuple[float, list[VideoModel]]] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(nanogpt_conn_id={self.nanogpt_conn_id!r})"

    # --- connection ------------------------------------------------------------------------

    def settings(self) -> ClientSettings:
        if self._settings is None:
            try:
                conn = self.get_connection(self.nanogpt_conn_id)
            except Exception as exc:
                raise _missing_connection(self.nanogpt_conn_id, exc) from None
            self._settings = self._settings_from(conn.password, conn.host, conn.extra_dejson)
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
            extras = await get_async_extra_dejson(conn)
            self._settings = self._settings_from(conn.password, conn.host, extras)
        return self._settings

    def _settings_from(
        self, password: str | None, host: str | None, extras: Mapping[str, Any]
    ) -> ClientSettings:
        return settings_from(
            self.nanogpt_conn_id,
            password,
            host,
            extras,
            request_timeout=self._request_timeout_override,
            max_retries=self._max_retries_override,
        )

    def retry_policy(self, settings: ClientSettings) -> RetryPolicy:
        if self._retry_policy_override is not None:
            return self._retry_policy_override
        return RetryPolicy(max_retries=settings.max_retries)

    def _metric_tags(self, endpoint: str) -> dict[str, str]:
        """What tags this hook's rate-limit wait metric (``airflow_provider_nanogpt.metrics``)."""
        return {"conn_id": self.nanogpt_conn_id, "endpoint": endpoint}

    def _policy(self, settings: ClientSettings, max_rate_limit_sleep: float | None) -> RetryPolicy:
        policy = self.retry_policy(settings)
        if max_rate_limit_sleep is None:
            return policy
        return replace(policy, max_retry_after=min(policy.max_retry_after, max_rate_limit_sleep))

    # --- sync transport (workers) ------------------------------------------------------------

    @cached_property
    def _session(self) -> requests.Session:
        import requests

        from airflow_provider_nanogpt.hooks.limits import TimeLimitedAdapter

        session = requests.Session()
        # Retries are ours (tenacity); urllib3 must never re-send a POST on its own.
        adapter = TimeLimitedAdapter(pool_connections=4, pool_maxsize=16, max_retries=0)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        return session

    def _send(
        self, request: ApiRequest, *, timeout: float | None = None, deadline: float | None = None
    ) -> Any:
        """One HTTP exchange, no retries: a parsed JSON body or a typed error."""
        import requests

        from airflow_provider_nanogpt.hooks.limits import read_capped, time_limit

        settings = self.settings()
        budget = _budget(timeout or settings.request_timeout, deadline, request, settings)
        with time_limit(budget) as limit:
            try:
                response = self._session.request(
                    request.method,
                    settings.base_url + request.path,
                    params=dict(request.params) or None,
                    json=request.json,
                    headers=settings.headers(),
                    timeout=(min(CONNECT_TIMEOUT, budget), budget),
                    allow_redirects=False,  # the key goes to the connection's origin only
                    stream=True,
                )
                with response:
                    body = read_capped(response, MAX_API_BODY_BYTES)
            except requests.exceptions.RequestException as exc:
                if limit.expired:
                    raise _too_slow(request, settings, budget) from None
                raise _requests_transport_error(exc, request.action, settings.base_url) from None
            if limit.expired:
                raise _too_slow(request, settings, budget)
        if body is None:
            raise _too_large(request, response.status_code)
        return read_response(
            response.status_code, response.headers, body, request.action, settings.secrets
        )

    def _request(
        self,
        request: ApiRequest,
        policy: RetryPolicy | None = None,
        *,
        deadline: float | None = None,
    ) -> Any:
        """A read with the shared retry policy, never retrying past ``deadline``."""
        from tenacity import Retrying

        settings = self.settings()
        kwargs = tenacity_kwargs(
            policy or self.retry_policy(settings),
            is_retryable_read,
            self.log,
            request.action,
            deadline,
            **self._metric_tags(request.path),
        )
        for attempt in Retrying(**kwargs):
            with attempt:
                return self._send(request, deadline=deadline)
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

    async def _asend(self, request: ApiRequest, *, deadline: float | None = None) -> Any:
        import httpx

        shared = await self._aclient()
        settings = await self.asettings()
        budget = _budget(settings.request_timeout, deadline, request, settings)
        try:
            # The whole exchange, not each read: a drip-fed answer ends here too.
            async with asyncio.timeout(budget):
                answer = await shared.fetch(
                    request.method,
                    request.path,
                    max_bytes=MAX_API_BODY_BYTES,
                    params=dict(request.params) or None,
                    json=request.json,
                )
        except TimeoutError:
            raise _too_slow(request, settings, budget) from None
        except httpx.HTTPError as exc:
            raise _httpx_transport_error(exc, request.action, shared.base_url) from None
        if answer.body is None:
            raise _too_large(request, answer.status_code)
        return read_response(
            answer.status_code, answer.headers, answer.body, request.action, settings.secrets
        )

    async def _arequest(self, request: ApiRequest, *, deadline: float | None = None) -> Any:
        from tenacity import AsyncRetrying

        settings = await self.asettings()
        kwargs = tenacity_kwargs(
            self.retry_policy(settings),
            is_retryable_read,
            self.log,
            request.action,
            deadline,
            **self._metric_tags(request.path),
        )
        async for attempt in AsyncRetrying(**kwargs):
            with attempt:
                return await self._asend(request, deadline=deadline)
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

    def get_video_status(self, run_id: str, *, deadline: float | None = None) -> VideoStatus:
        """The run's status; ``deadline`` (epoch seconds) bounds the call and its retries."""
        return normalize_status(self._request(status_request(run_id), deadline=deadline), run_id)

    async def aget_video_status(self, run_id: str, *, deadline: float | None = None) -> VideoStatus:
        body = await self._arequest(status_request(run_id), deadline=deadline)
        return normalize_status(body, run_id)

    # --- API: account and catalog ------------------------------------------------------------

    def get_balance(self) -> Balance:
        return parse_balance(self._request(balance_request()))

    async def aget_balance(self) -> Balance:
        return parse_balance(await self._arequest(balance_request()))

    def get_usage_usd(
        self, from_day: str, to_day: str, *, deadline: float | None = None
    ) -> Decimal:
        """The USD this key spent (net of refunds) on the UTC days ``from_day`` to ``to_day``
        (``YYYY-MM-DD``), from ``GET /api/v1/usage`` (up to 60 s stale). Raises
        NanoGPTResponseError for an answer it cannot read as USD."""
        return parse_usage_usd(self._request(usage_request(from_day, to_day), deadline=deadline))

    def list_video_models(self, detailed: bool = True) -> list[VideoModel]:
        """NanoGPT's video model catalog, read at most once a minute by this hook."""
        cached = self._catalog.get(detailed)
        if cached is not None and time.monotonic() - cached[0] < CATALOG_MAX_AGE_SECONDS:
            return list(cached[1])
        models = parse_video_models(self._request(video_models_request(detailed)))
        self._catalog[detailed] = (time.monotonic(), models)
        return list(models)

    def recover_runs(
        self,
        model: str | None = None,
        limit: int = 10,
        conversation_uuid: str | None = None,
        *,
        max_rate_limit_sleep: float | None = None,
        deadline: float | None = None,
    ) -> list[RecoveredRun]:
        """Recent runs of this API key, newest first (NanoGPT allows 20 lookups a minute).

        ``max_rate_limit_sleep`` caps how long a 429's Retry-After is slept here; a longer wait
        raises NanoGPTRateLimitError. ``deadline`` (epoch seconds) bounds the call and its
        retry waits.
        """
        request = recover_request(model, limit, conversation_uuid)
        policy = self._policy(self.settings(), max_rate_limit_sleep)
        return parse_recovered_runs(self._request(request, policy, deadline=deadline))

    def test_connection(self) -> tuple[bool, str]:
        """Authenticated balance read: proves the key and URL work, never submits or spends."""
        try:
            balance = self.get_balance()
        except Exception as exc:
            return False, str(exc)
        return True, f"Connected to NanoGPT; balance ${balance.usd:.2f}"

    # --- API: submit -------------------------------------------------------------------------

    def submit_video(
        self,
        payload: Mapping[str, Any],
        *,
        max_rate_limit_sleep: float | None = None,
        deadline: float | None = None,
    ) -> Submission:
        """Send one video request to NanoGPT (each accepted request is a paid job).

        Re-sent within this call only when NanoGPT proved nothing was created: a 429 (after its
        Retry-After) or a connection that was never established. Any other failure is raised as
        it is; whether a job was created then is for the caller to settle (the operator does so
        through ``airflow_provider_nanogpt.submission``), never by sending again blindly.

        ``max_rate_limit_sleep`` caps how long a 429's Retry-After is slept here; a longer wait, or
        a 429 without Retry-After, raises NanoGPTRateLimitError so the caller can wait without
        holding a worker (defer). ``deadline`` (epoch seconds): no re-send is waited for past it
        (the error is raised instead), and none is started after it. A request already sent is
        never cut short by it: that would leave a paid job's creation uncertain.
        """
        from tenacity import Retrying

        request = submit_request(payload)
        settings = self.settings()
        timeout = max(SUBMIT_TIMEOUT_FLOOR, settings.request_timeout)
        policy = self._policy(settings, max_rate_limit_sleep)
        if max_rate_limit_sleep is not None:
            policy = replace(policy, retry_rate_limit_without_retry_after=False)
        kwargs = tenacity_kwargs(
            policy,
            is_retryable_submit,
            self.log,
            request.action,
            deadline,
            **self._metric_tags(request.path),
        )
        for attempt in Retrying(**kwargs):
            with attempt:
                _check_not_past(deadline, request, settings)
                return parse_submission(self._send(request, timeout=timeout))
        raise AssertionError("unreachable: tenacity reraises the last error")

    # --- API: download -----------------------------------------------------------------------

    def download_video(self, url: str, destination: Any) -> DownloadResult:
        """Stream the video at ``url`` to a local path, ``file://`` URI or ObjectStoragePath.

        Constant memory; the byte count is checked against Content-Length; the file appears at
        ``destination`` only when complete. Refused at once, without retries: a URL that is not
        http(s), not on the connection's ``allowed_video_hosts``, or whose host is at a private
        or loopback address (``hooks.video_hosts``), a video larger than
        ``max_video_bytes``, a destination outside ``output_base_dir``. The API key is never sent
        to the video's host.
        """
        from tenacity import Retrying

        from airflow_provider_nanogpt.hooks.download import fetch_video
        from airflow_provider_nanogpt.hooks.video_hosts import check_video_url
        from airflow_provider_nanogpt.storage import (
            check_destination,
            describe,
            remove_stale_parts,
        )

        settings = self.settings()
        target = check_destination(destination, settings.output_base_dir)
        check_video_url(url, settings.video_hosts)
        remove_stale_parts(target)
        policy = self.retry_policy(settings)

        def retryable(exc: BaseException, policy: RetryPolicy) -> bool:
            return isinstance(exc, NanoGPTDownloadError) or is_retryable_read(exc, policy)

        # download_timeout bounds the whole download, retries included.
        deadline = time.time() + settings.download_timeout
        kwargs = tenacity_kwargs(
            policy,
            retryable,
            self.log,
            "download the video",
            deadline,
            **self._metric_tags("download"),
        )
        started = time.monotonic()
        for attempt in Retrying(**kwargs):
            with attempt:
                size = fetch_video(self._session, url, target, settings, deadline)
                self.log.info("Saved the video to %s (%d bytes).", describe(target), size)
                metrics.downloaded(self.nanogpt_conn_id, size, time.monotonic() - started)
                return DownloadResult(path=describe(target), size_bytes=size)
        raise AssertionError("unreachable: tenacity reraises the last error")


def _budget(
    limit: float, deadline: float | None, request: ApiRequest, settings: ClientSettings
) -> float:
    """Seconds this exchange may take: its own limit, or less when a deadline comes sooner."""
    _check_not_past(deadline, request, settings)
    if deadline is None:
        return limit
    return min(limit, deadline - time.time())


def _check_not_past(deadline: float | None, request: ApiRequest, settings: ClientSettings) -> None:
    """Refuse to start an exchange once ``deadline`` has passed (nothing is sent)."""
    if deadline is not None and deadline - time.time() <= 0:
        raise NanoGPTDeadlinePassedError(
            f"Could not {request.action} at {settings.base_url}: the task's deadline (timeout "
            "or execution_timeout) passed before it was sent; nothing was sent"
        )


def _too_slow(
    request: ApiRequest, settings: ClientSettings, budget: float
) -> NanoGPTConnectionError:
    return NanoGPTConnectionError(
        f"Could not {request.action} at {settings.base_url}: no complete answer within "
        f"{budget:.3g} s",
        request_sent=True,
    )


def _too_large(request: ApiRequest, status_code: int) -> NanoGPTResponseError:
    return NanoGPTResponseError(
        f"Could not {request.action}: NanoGPT's answer is larger than "
        f"{MAX_API_BODY_BYTES // (1024 * 1024)} MiB; it was not read",
        status_code=status_code,
    )


def _missing_connection(conn_id: str, exc: Exception) -> NanoGPTConfigurationError:
    env_name = f"AIRFLOW_CONN_{conn_id.upper()}"
    return NanoGPTConfigurationError(
        f"NanoGPT connection {conn_id!r} is not available ({type(exc).__name__}). Create it in "
        f"Admin → Connections (type 'nanogpt', API key as password) or set {env_name}."
    )


def _requests_transport_error(exc: Exception, action: str, base_url: str) -> NanoGPTConnectionError:
    import requests
    from urllib3.exceptions import NewConnectionError

    if (tls := tls_failure(exc, action, base_url, "the connection's host")) is not None:
        return tls
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

    if (tls := tls_failure(exc, action, base_url, "the connection's host")) is not None:
        return tls
    never_connected = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
    return NanoGPTConnectionError(
        f"Could not {action} at {base_url}: {type(exc).__name__}",
        request_sent=not never_connected,
    )
