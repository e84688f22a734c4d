"""`AInTandemClient`: the asynchronous entry point of the SDK."""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType

import httpx

from ._http import HTTPCore
from ._resources import (
    AuthResource,
    CollaborationsResource,
    MessagesResource,
    SandboxesResource,
    SystemResource,
    WorkspacesResource,
)


class AInTandemClient:
    """Asynchronous client of the AInTandem REST API (and its WebSocket streams).

    Authenticate with an access token (``api_key=``, the platform's JWT) or with ``email=`` and
    ``password=`` (logged in on first use, refreshed automatically before expiry and after a
    401). Without arguments, `AINTANDEM_BASE_URL` and `AINTANDEM_API_KEY` are read from the
    environment; the default base URL is ``http://127.0.0.1:8000/api/v1``.

    Use it as an async context manager, or call `aclose()` when done::

        async with AInTandemClient(email="me@example.com", password="...") as client:
            workspace = await client.workspaces.create(name="My Workspace")

    Requests answered 429 or 503 are retried up to `max_retries` times after `Retry-After`
    (never waiting longer than `max_retry_wait` seconds at once). Errors are raised as
    subclasses of `AInTandemError` named after the API's error codes.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
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
        self._core = HTTPCore(
            base_url=base_url,
            api_key=api_key,
            email=email,
            password=password,
            refresh_token=refresh_token,
            timeout=timeout,
            max_retries=max_retries,
            max_retry_wait=max_retry_wait,
            ws_url=ws_url,
            headers=headers,
            transport=transport,
        )
        self.auth = AuthResource(self._core)
        self.workspaces = WorkspacesResource(self._core, self)
        self.sandboxes = SandboxesResource(self._core, self)
        self.messages = MessagesResource(self._core)
        self.collaborations = CollaborationsResource(self._core, self)
        self.system = SystemResource(self._core)

    @property
    def base_url(self) -> str:
        return self._core.base_url

    @property
    def access_token(self) -> str | None:
        """The current access token (None before the first login)."""
        return self._core.tokens.access

    @property
    def refresh_token(self) -> str | None:
        return self._core.tokens.refresh

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._core.aclose()

    async def __aenter__(self) -> AInTandemClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
