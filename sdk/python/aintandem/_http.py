"""The HTTP core: envelope parsing, authentication (with automatic refresh), retries.

Retries: 429 and 503 answers are retried (at most `max_retries` times) after the server's
`Retry-After`, or an exponential backoff with jitter when it gives none; a wait longer than
`max_retry_wait` is not attempted (the error is raised at once). So is the 409 that says the
first attempt with the request's Idempotency-Key is still in flight (`details.state`).
Connection failures before anything was sent are retried the same way; every POST carries an
`Idempotency-Key` that stays the same across its retries, so the server can recognise a repeat.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from ._errors import (
    AInTandemError,
    APIConnectionError,
    AuthenticationFailed,
    error_from_response,
    parse_retry_after,
)
from ._models import LoginResult, Meta, PageMeta, TokenRefresh
from ._version import __version__

DEFAULT_BASE_URL = "http://127.0.0.1:8000/api/v1"
RETRY_STATUSES = frozenset({429, 503})


@dataclass
class Answer:
    """A parsed success envelope."""

    status: int
    data: Any
    meta: Meta
    headers: Mapping[str, str]

    def page_meta(self) -> PageMeta:
        return PageMeta.model_validate(self.meta.model_dump())


class _Tokens:
    def __init__(self) -> None:
        self.access: str | None = None
        self.refresh: str | None = None
        self.expires_at: float | None = None  # monotonic
        self.ttl: float | None = None

    def set(self, access: str, refresh: str | None, expires_in: float | None) -> None:
        self.access = access
        if refresh:
            self.refresh = refresh
        if expires_in:
            self.ttl = float(expires_in)
            self.expires_at = time.monotonic() + float(expires_in)
        else:
            self.ttl = self.expires_at = None

    def clear(self) -> None:
        self.access = self.refresh = None
        self.expires_at = self.ttl = None

    def stale(self) -> bool:
        """Expired, or about to (within 10 % of its lifetime, at most 30 s)."""
        if self.expires_at is None or self.ttl is None:
            return False
        return time.monotonic() >= self.expires_at - min(30.0, self.ttl * 0.1)


class HTTPCore:
    """Shared by every resource of one client: one connection pool, one token."""

    def __init__(
        self,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        email: str | None = None,
        password: str | None = None,
        refresh_token: str | None = None,
        timeout: float = 30.0,
        max_retries: int = 3,
        max_retry_wait: float = 60.0,
        ws_url: str | None = None,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = (
            base_url or os.environ.get("AINTANDEM_BASE_URL") or DEFAULT_BASE_URL
        ).rstrip("/")
        self.ws_url = (ws_url or _ws_base(self.base_url)).rstrip("/")
        if api_key is None and email is None and refresh_token is None:
            api_key = os.environ.get("AINTANDEM_API_KEY") or None
        self.email = email
        self._password = password
        self.tokens = _Tokens()
        if api_key:
            self.tokens.set(api_key, None, None)
        if refresh_token:
            self.tokens.refresh = refresh_token
        self.max_retries = max(0, max_retries)
        self.max_retry_wait = max_retry_wait
        self.timeout = timeout
        self._lock: asyncio.Lock | None = None
        self.http = httpx.AsyncClient(
            base_url=self.base_url + "/",
            timeout=timeout,
            transport=transport,
            headers={
                "Accept": "application/json",
                "User-Agent": f"aintandem-python/{__version__}",
                "X-Client-Version": __version__,
                **(headers or {}),
            },
        )
        #: Called with the new tokens after every login/refresh (e.g. to persist them).
        self.on_tokens: Any = None

    async def aclose(self) -> None:
        await self.http.aclose()

    # -- authentication --------------------------------------------------------------------------

    @property
    def can_reauthenticate(self) -> bool:
        return bool(self.tokens.refresh or (self.email and self._password))

    def _auth_lock(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    async def access_token(
        self, *, force_refresh: bool = False, failed_token: str | None = None
    ) -> str:
        """A usable access token: logs in or refreshes when needed.

        `failed_token` is the token the server just refused: if another task already replaced
        it, that new one is used instead of refreshing again (refresh tokens rotate, and
        presenting a spent one revokes the whole session).
        """
        current = self.tokens.access
        if current and not force_refresh and not self.tokens.stale():
            return current
        async with self._auth_lock():
            current = self.tokens.access
            fresh = current and not self.tokens.stale()
            if fresh and (not force_refresh or (failed_token and current != failed_token)):
                return current  # type: ignore[return-value]
            await self._reauthenticate()
        if not self.tokens.access:
            raise AuthenticationFailed("Not authenticated: pass api_key, or email and password")
        return self.tokens.access

    async def _reauthenticate(self) -> None:
        if self.tokens.refresh:
            try:
                await self.refresh()
                return
            except AuthenticationFailed:
                if not (self.email and self._password):
                    raise
        if self.email and self._password:
            await self.login(self.email, self._password)
            return
        if self.tokens.access and self.tokens.expires_at is None:
            return  # a static api_key: nothing to renew it with
        raise AuthenticationFailed("Not authenticated: pass api_key, or email and password")

    async def login(self, email: str, password: str) -> LoginResult:
        ans = await self.request(
            "POST", "auth/login", json={"email": email, "password": password}, auth=False
        )
        result = LoginResult.model_validate(ans.data)
        self.email, self._password = email, password
        self.tokens.set(result.access_token, result.refresh_token, result.expires_in)
        self._notify()
        return result

    async def refresh(self) -> TokenRefresh:
        if not self.tokens.refresh:
            raise AuthenticationFailed("No refresh token: log in first")
        ans = await self.request(
            "POST", "auth/refresh", json={"refresh_token": self.tokens.refresh}, auth=False
        )
        result = TokenRefresh.model_validate(ans.data)
        self.tokens.set(result.access_token, result.refresh_token, result.expires_in)
        self._notify()
        return result

    def _notify(self) -> None:
        if self.on_tokens is not None:
            self.on_tokens(self.tokens.access, self.tokens.refresh)

    # -- requests --------------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        auth: bool = True,
        idempotency_key: str | None = None,
        max_retries: int | None = None,
    ) -> Answer:
        """Send one API call; returns the parsed envelope or raises an `AInTandemError`."""
        method = method.upper()
        headers: dict[str, str] = {"X-Request-ID": str(uuid.uuid4())}
        if method == "POST":
            headers["Idempotency-Key"] = idempotency_key or str(uuid.uuid4())
        clean_params = {k: _param(v) for k, v in (params or {}).items() if v is not None}
        retries = self.max_retries if max_retries is None else max_retries
        refreshed = False
        attempt = 0
        token: str | None = None
        while True:
            if auth:
                token = await self.access_token()
                headers["Authorization"] = f"Bearer {token}"
            try:
                resp = await self.http.request(
                    method, path.lstrip("/"), json=json, params=clean_params, headers=headers
                )
            except httpx.TransportError as exc:
                # Only a request that surely never reached the server (or an idempotent one)
                # is sent again.
                unsent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
                if attempt < retries and (unsent or method in ("GET", "HEAD", "PUT", "DELETE")):
                    attempt += 1
                    await asyncio.sleep(_backoff(attempt))
                    continue
                raise APIConnectionError(
                    f"cannot reach {self.base_url}: {type(exc).__name__}: {exc}"
                ) from exc
            retryable = resp.status_code in RETRY_STATUSES or (
                "Idempotency-Key" in headers and _key_in_flight(resp)
            )
            if retryable and attempt < retries:
                wait = parse_retry_after(resp.headers.get("retry-after"))
                wait = _backoff(attempt + 1) if wait is None else wait
                if wait <= self.max_retry_wait:
                    attempt += 1
                    await resp.aclose()
                    await asyncio.sleep(wait)
                    continue
            if (
                resp.status_code == 401
                and auth
                and not refreshed
                and self.can_reauthenticate
                and path.lstrip("/") not in ("auth/logout",)
            ):
                refreshed = True
                await resp.aclose()
                await self.access_token(force_refresh=True, failed_token=token)
                continue
            return self._parse(resp, headers["X-Request-ID"])

    def _parse(self, resp: httpx.Response, sent_request_id: str) -> Answer:
        request_id = resp.headers.get("x-request-id") or sent_request_id
        body: Any = None
        if resp.content:
            try:
                body = resp.json()
            except ValueError:
                body = None
        if resp.status_code >= 400 or (isinstance(body, dict) and body.get("success") is False):
            raise error_from_response(
                resp.status_code,
                body if body is not None else {"error": {"message": resp.text[:500]}},
                {k.lower(): v for k, v in resp.headers.items()},
                request_id,
            )
        if resp.status_code == 204 or body is None:
            return Answer(resp.status_code, None, Meta(request_id=request_id), resp.headers)
        if not isinstance(body, dict) or "data" not in body:
            raise AInTandemError(
                "unexpected response: not the API envelope",
                status=resp.status_code,
                request_id=request_id,
            )
        meta = Meta.model_validate(body.get("meta") or {"request_id": request_id})
        return Answer(resp.status_code, body["data"], meta, resp.headers)


def _key_in_flight(resp: httpx.Response) -> bool:
    """409 because the first attempt with this Idempotency-Key is still being processed (the
    server answers `Retry-After: 1`): a retry gets that attempt's answer once it is stored. Any
    other 409 (a real conflict, the key reused for another body) is final."""
    if resp.status_code != 409:
        return False
    try:
        body = resp.json()
    except ValueError:
        return False
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or error.get("code") != "RESOURCE_ALREADY_EXISTS":
        return False
    details = error.get("details")
    return isinstance(details, dict) and details.get("state") == "in_flight"


def _param(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def _backoff(attempt: int) -> float:
    return min(8.0, 0.25 * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)


def _ws_base(base_url: str) -> str:
    """`http://host:8000/api/v1` → `ws://host:8000` (the streams live at /ws/...)."""
    parts = urlsplit(base_url)
    scheme = {"https": "wss", "http": "ws"}.get(parts.scheme, parts.scheme)
    path = parts.path.rstrip("/")
    segments = path.split("/")
    if len(segments) >= 2 and segments[-2] == "api" and segments[-1].startswith("v"):
        path = "/".join(segments[:-2])
    return urlunsplit((scheme, parts.netloc, path, "", ""))
