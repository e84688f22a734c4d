"""WebSocket streams (`/ws/sandboxes/{id}`, `/ws/collaborations/{id}`) as async iterators.

Handshake: the access token goes in an `Authorization: Bearer` header (not the URL, so it stays
out of access logs); after the server's `connected` frame the client sends
`{"action": "subscribe", "channels": [...]}`. Every event frame carries an `id`; after a dropped
connection the stream reconnects with `?last_event_id=<last id seen>` and the server replays
everything after it, in order, so no event is lost or repeated. An expired token (close 1008
"token expired") is refreshed and the stream resumes; other refusals raise.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Sequence
from types import TracebackType
from typing import Any
from urllib.parse import urlencode

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from ._errors import (
    AInTandemError,
    APIConnectionError,
    AuthenticationFailed,
    AuthorizationFailed,
    RateLimitExceeded,
    ResourceNotFound,
    ValidationError,
)
from ._http import HTTPCore
from ._models import StreamEvent
from ._version import __version__

POLICY = 1008


def _refusal(reason: str) -> AInTandemError:
    low = reason.lower()
    if "not found" in low:
        cls: type[AInTandemError] = ResourceNotFound
    elif "too many" in low:
        cls = RateLimitExceeded
    elif "authentication" in low or "expired" in low or "revoked" in low:
        cls = AuthenticationFailed
    elif "unknown channels" in low or "must be" in low:
        cls = ValidationError
    else:
        cls = AuthorizationFailed
    return cls(f"stream refused: {reason or 'policy violation'}", status=None)


class EventStream:
    """An async iterator of `StreamEvent`s; also an async context manager that closes it.

    Iterate with ``async for event in stream`` and close with ``await stream.aclose()`` (or use
    ``async with``). `last_event_id` is the id of the last event received: pass it as
    `last_event_id=` to a later stream to continue where this one stopped.
    """

    def __init__(
        self,
        core: HTTPCore,
        path: str,
        channels: Sequence[str] | None = None,
        *,
        last_event_id: int | None = None,
        include_system: bool = False,
        reconnect: bool = True,
        max_reconnect_attempts: int = 10,
        query_channels: bool = True,
    ) -> None:
        self._core = core
        self._path = path
        self.channels = list(channels) if channels else None
        self.last_event_id = last_event_id
        self._include_system = include_system
        self._reconnect = reconnect
        self._max_attempts = max_reconnect_attempts
        self._query_channels = query_channels
        self._gen: AsyncIterator[StreamEvent] | None = None
        #: How many times the connection was re-established (after a drop or token expiry).
        self.reconnects = 0
        self.connected = asyncio.Event()

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> StreamEvent:
        if self._gen is None:
            self._gen = self._run()
        return await self._gen.__anext__()

    async def aclose(self) -> None:
        if self._gen is not None:
            await self._gen.aclose()  # type: ignore[attr-defined]

    async def __aenter__(self) -> EventStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _url(self) -> str:
        params: dict[str, str] = {}
        if self.channels and self._query_channels:
            params["channels"] = ",".join(self.channels)
        if self.last_event_id is not None:
            params["last_event_id"] = str(self.last_event_id)
        query = f"?{urlencode(params)}" if params else ""
        return f"{self._core.ws_url}/{self._path.lstrip('/')}{query}"

    async def _run(self) -> AsyncIterator[StreamEvent]:
        failures = 0
        force_refresh = False
        while True:
            token = await self._core.access_token(force_refresh=force_refresh)
            force_refresh = False
            try:
                async with connect(
                    self._url(),
                    additional_headers={
                        "Authorization": f"Bearer {token}",
                        "X-Client-Version": __version__,
                    },
                    user_agent_header=f"aintandem-python/{__version__}",
                    open_timeout=self._core.timeout,
                    max_size=2**24,
                ) as ws:
                    async for raw in ws:
                        body = _load(raw)
                        if body is None:
                            continue
                        event = StreamEvent.model_validate(body)
                        if event.channel == "system":
                            if event.event == "connected":
                                failures = 0
                                self.connected.set()
                                if self.channels:
                                    await ws.send(
                                        json.dumps(
                                            {"action": "subscribe", "channels": self.channels}
                                        )
                                    )
                            if self._include_system:
                                yield event
                            continue
                        if event.id is not None:
                            self.last_event_id = event.id
                        if self.channels and event.channel not in self.channels:
                            continue
                        yield event
                    close_code, reason = ws.close_code, ws.close_reason or ""
            except ConnectionClosed as exc:
                close_code = exc.rcvd.code if exc.rcvd else 1006
                reason = exc.rcvd.reason if exc.rcvd else ""
            except InvalidStatus as exc:
                status = exc.response.status_code
                if status in (401, 403, 404):
                    raise _refusal(f"HTTP {status}") from exc
                close_code, reason = 1006, f"HTTP {status}"
            except (OSError, InvalidHandshake, TimeoutError) as exc:
                close_code, reason = 1006, f"{type(exc).__name__}: {exc}"
            self.connected.clear()
            if close_code == POLICY:
                if "expired" in reason.lower() and self._core.can_reauthenticate:
                    force_refresh = True
                    self.reconnects += 1
                    continue
                raise _refusal(reason)
            if not self._reconnect:
                return
            failures += 1
            if failures > self._max_attempts:
                raise APIConnectionError(
                    f"stream {self._path} lost after {failures - 1} reconnect attempts: {reason}"
                )
            self.reconnects += 1
            await asyncio.sleep(min(5.0, 0.2 * 2 ** (failures - 1)) * (0.5 + random.random() / 2))


def _load(raw: str | bytes) -> dict[str, Any] | None:
    try:
        body = json.loads(raw)
    except ValueError:
        return None
    return body if isinstance(body, dict) and "channel" in body else None
