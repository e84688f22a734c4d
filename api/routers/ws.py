"""Spec section 9: WebSocket streams of the event log (a sandbox, a collaboration, everything).

Authentication: `?token=<access JWT>`, an `Authorization: Bearer` header, or a first message
`{"action": "auth", "token": "..."}` (so tokens need not appear in URLs and access logs).
Refusals close with 1008 and a reason. Client → server actions: `subscribe` / `unsubscribe`
(`channels`), `resume` (`last_event_id`), `auth` (a fresh token extends the connection), `ping`.
A connection follows every channel until its first `subscribe`, which narrows it to the channels
listed; later ones add. Server → client frames are `{channel, event, data, timestamp, id}`: `id`
is the event id to resume from (`?last_event_id=N`), null for `system` frames (connected, acks,
errors, pings). The connection closes when the access token expires (1008), when its login
session is revoked (1008, checked periodically), and when the client cannot keep up (1013).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, WebSocket
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.websockets import WebSocketDisconnect

from api.deps import AppState, Principal, authenticate
from api.events_bus import CHANNELS, EventBus, Frame, StreamScope, Subscription, frame
from api.metrics import WEBSOCKETS_OPEN
from api.services import sandboxes as sandbox_service
from domain.errors import AuthenticationFailed, ErrorCode, NotFound
from domain.ids import Prefix, is_valid
from domain.timeutil import iso, utcnow
from store.models import Collaboration, User, Workspace
from store.repositories import users as users_repo

log = logging.getLogger("aintandem.api.ws")

router = APIRouter(tags=["websocket"])

POLICY = 1008  # policy violation: authentication, authorization, limits
TRY_AGAIN = 1013
INTERNAL = 1011
MAX_CLIENT_MESSAGE = 16_384
Authorize = Callable[[AsyncSession, User], Awaitable[None]]


class _Close(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


# -- authorization, one function per stream -----------------------------------------------------


async def _owns_sandbox(session: AsyncSession, user: User, sandbox_id: str) -> None:
    await sandbox_service.get_owned(session, sandbox_id, user)  # NotFound when foreign/malformed


async def collaboration_owned(session: AsyncSession, collaboration_id: str, user_id: str) -> bool:
    if not is_valid(Prefix.COLLABORATION, collaboration_id):
        return False
    found = await session.scalar(
        select(Collaboration.id)
        .join(Workspace, Workspace.id == Collaboration.workspace_id)
        .where(Collaboration.id == collaboration_id, Workspace.owner_id == user_id)
    )
    return found is not None


async def _owns_collaboration(session: AsyncSession, user: User, collaboration_id: str) -> None:
    if not await collaboration_owned(session, collaboration_id, user.id):
        raise NotFound("collaboration", collaboration_id)


async def _admin(_: AsyncSession, user: User) -> None:
    if user.role != "admin":
        raise _Close(POLICY, "admin only")


# -- routes ---------------------------------------------------------------------------------------


@router.websocket("/ws/sandboxes/{sandbox_id}")
async def sandbox_stream(websocket: WebSocket, sandbox_id: str) -> None:
    async def authorize(session: AsyncSession, user: User) -> None:
        await _owns_sandbox(session, user, sandbox_id)

    await _Connection(
        websocket,
        StreamScope(sandbox_id=sandbox_id),
        authorize,
        {"stream": "sandbox", "sandbox_id": sandbox_id},
    ).run()


@router.websocket("/ws/collaborations/{collaboration_id}")
async def collaboration_stream(websocket: WebSocket, collaboration_id: str) -> None:
    async def authorize(session: AsyncSession, user: User) -> None:
        await _owns_collaboration(session, user, collaboration_id)

    await _Connection(
        websocket,
        StreamScope(collaboration_id=collaboration_id),
        authorize,
        {"stream": "collaboration", "collaboration_id": collaboration_id},
    ).run()


@router.websocket("/ws/system")
async def system_stream(websocket: WebSocket) -> None:
    await _Connection(websocket, StreamScope(), _admin, {"stream": "system"}).run()


# -- one connection -------------------------------------------------------------------------------


def _system(event: str, data: dict[str, Any]) -> Frame:
    return frame("system", event, data)


def _error(code: ErrorCode | str, message: str, **details: Any) -> Frame:
    return _system("error", {"code": str(code), "message": message, **details})


def _event_id(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


class _Connection:
    def __init__(
        self,
        websocket: WebSocket,
        scope: StreamScope,
        authorize: Authorize,
        describe: dict[str, Any],
    ) -> None:
        self.ws = websocket
        self.state: AppState = websocket.app.state.aintandem
        bus = self.state.events
        assert bus is not None, "the event bus starts in the app's lifespan"
        self.bus: EventBus = bus
        self.settings = self.state.settings
        self.scope = scope
        self.authorize = authorize
        self.describe = describe
        self.principal: Principal | None = None
        self.sub = Subscription(scope, self.settings.websocket_queue_size)
        self.position = 0  # highest event id sent (or skipped by the channel filter)
        self.resume_to: int | None = None
        self.explicit_channels = False
        self._send_lock = asyncio.Lock()

    # -- lifecycle --

    async def run(self) -> None:
        await self.ws.accept()
        counted = False
        user_id = ""
        try:
            self.principal = await self._authenticate()
            user_id = self.principal.user.id
            if not self.bus.connections.acquire(
                user_id, self.settings.websocket_max_connections_per_user
            ):
                raise _Close(POLICY, "too many connections")
            counted = True
            WEBSOCKETS_OPEN.inc()
            self._parse_query()
            try:
                await asyncio.wait_for(self.bus.ready(), 5.0)
            except TimeoutError:
                raise _Close(TRY_AGAIN, "event stream unavailable, try again later") from None
            await self._send(
                _system(
                    "connected",
                    {
                        **self.describe,
                        "user_id": user_id,
                        "channels": self._channels(),
                        "head_event_id": self.bus.cursor,
                        "expires_at": iso(self.principal.claims.expires_at),
                    },
                )
            )
            await self._serve()
        except _Close as close:
            await self._close(close.code, close.reason)
        except WebSocketDisconnect:
            pass
        except Exception:
            log.exception("websocket %s failed", self.ws.url.path)
            await self._close(INTERNAL, "internal error")
        finally:
            self.bus.unsubscribe(self.sub)
            self.sub.end(1000, "closed")
            if counted:
                WEBSOCKETS_OPEN.dec()
                self.bus.connections.release(user_id)

    async def _serve(self) -> None:
        tasks = [
            asyncio.create_task(self._read(), name="ws-read"),
            asyncio.create_task(self._pump(), name="ws-pump"),
            asyncio.create_task(self._watch(), name="ws-watch"),
            asyncio.create_task(self.sub.ended.wait(), name="ws-ended"),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        if self.sub.ended.is_set():
            raise _Close(self.sub.end_code, self.sub.end_reason)

    async def _close(self, code: int, reason: str) -> None:
        # A peer that stopped reading may never let the close frame out: bound the wait.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(code, reason[:120]), 5.0)

    async def _send(self, item: Frame) -> None:
        async with self._send_lock:
            await self.ws.send_text(item.text)

    # -- authentication --

    async def _authenticate(self) -> Principal:
        token = self.ws.query_params.get("token")
        if not token:
            scheme, _, value = self.ws.headers.get("authorization", "").partition(" ")
            if scheme.lower() == "bearer" and value.strip():
                token = value.strip()
        if not token:
            token = await self._first_message_token()
        try:
            async with self.state.sessions() as session:
                principal = await authenticate(self.state, session, token)
                await self.authorize(session, principal.user)
        except AuthenticationFailed as exc:
            raise _Close(POLICY, f"authentication failed: {exc.message}") from exc
        except NotFound as exc:
            raise _Close(POLICY, exc.message.lower()) from exc
        return principal

    async def _first_message_token(self) -> str:
        timeout = self.settings.websocket_auth_timeout_seconds
        try:
            message = await asyncio.wait_for(self.ws.receive(), timeout)
        except TimeoutError as exc:
            raise _Close(POLICY, "authentication required") from exc
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000))
        body = _parse(message.get("text"))
        if (
            not isinstance(body, dict)
            or body.get("action") != "auth"
            or not isinstance(body.get("token"), str)
            or not body["token"]
        ):
            raise _Close(
                POLICY, 'authentication required: send {"action": "auth", "token": ...} first'
            )
        return str(body["token"])

    def _parse_query(self) -> None:
        params = self.ws.query_params
        if "channels" in params:
            wanted = [c for c in params["channels"].split(",") if c]
            unknown = sorted(set(wanted) - set(CHANNELS))
            if unknown:
                raise _Close(POLICY, f"unknown channels: {', '.join(unknown)}")
            self.sub.channels = set(wanted)
            self.explicit_channels = True
        if "last_event_id" in params:
            last = _event_id(params["last_event_id"])
            if last is None:
                raise _Close(POLICY, "last_event_id must be a non-negative integer")
            self.resume_to = last

    def _channels(self) -> list[str]:
        return sorted(self.sub.channels) if self.sub.channels is not None else list(CHANNELS)

    # -- the three loops --

    async def _pump(self) -> None:
        """Replay (when resuming), then live events, in id order, each once."""
        after, self.resume_to = self.resume_to, None
        await self._restart(after)
        while True:
            await self.sub.wait()
            if self.sub.ended.is_set():
                return
            if self.resume_to is not None:
                after, self.resume_to = self.resume_to, None
                await self._restart(after)
                continue
            for item in self.sub.drain():
                assert item.id is not None
                if item.id <= self.position:
                    continue
                self.position = item.id
                if self.sub.wants(item.channel):
                    await self._send(item)

    async def _restart(self, after: int | None) -> None:
        self.bus.unsubscribe(self.sub)
        self.sub.clear()
        if after is None:
            self.position = self.bus.subscribe(self.sub)
            return
        self.position = after
        # Catch up from the table before registering, so a long backlog does not pile up in the
        # bounded queue; then register and replay the little that arrived meanwhile.
        for _ in range(3):
            head = self.bus.cursor
            if head <= self.position or await self._replay(head) < 100:
                break
        head = self.bus.subscribe(self.sub)
        await self._replay(head)

    async def _replay(self, upto: int) -> int:
        sent = 0
        async for page in self.bus.replay(self.scope, self.position, upto):
            for item in page:
                assert item.id is not None
                self.position = item.id
                if self.sub.wants(item.channel):
                    await self._send(item)
                    sent += 1
        self.position = max(self.position, upto)
        return sent

    async def _read(self) -> None:
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:
                await self._send(_error(ErrorCode.VALIDATION_ERROR, "send JSON text frames"))
                continue
            if len(text) > MAX_CLIENT_MESSAGE:
                raise _Close(1009, "message too big")
            await self._handle(_parse(text))

    async def _handle(self, body: object) -> None:
        if not isinstance(body, dict) or not isinstance(body.get("action"), str):
            await self._send(
                _error(ErrorCode.VALIDATION_ERROR, 'expected a JSON object with an "action"')
            )
            return
        action = body["action"]
        if action in ("subscribe", "unsubscribe"):
            await self._channels_action(action, body.get("channels"))
        elif action == "resume":
            last = _event_id(body.get("last_event_id"))
            if last is None:
                await self._send(
                    _error(
                        ErrorCode.VALIDATION_ERROR, "last_event_id must be a non-negative integer"
                    )
                )
                return
            self.resume_to = last
            self.sub.wake()
        elif action == "auth":
            await self._reauthenticate(body.get("token"))
        elif action == "ping":
            await self._send(_system("pong", {}))
        else:
            await self._send(
                _error(
                    ErrorCode.VALIDATION_ERROR,
                    f"unknown action: {action!r}",
                    actions=["subscribe", "unsubscribe", "resume", "auth", "ping"],
                )
            )

    async def _channels_action(self, action: str, channels: object) -> None:
        if (
            not isinstance(channels, list)
            or not channels
            or not all(isinstance(c, str) for c in channels)
        ):
            await self._send(
                _error(
                    ErrorCode.VALIDATION_ERROR,
                    "channels must be a non-empty list of channel names",
                    channels=list(CHANNELS),
                )
            )
            return
        unknown = sorted(set(channels) - set(CHANNELS))
        if unknown:
            await self._send(
                _error(
                    ErrorCode.VALIDATION_ERROR,
                    f"unknown channels: {', '.join(unknown)}",
                    channels=list(CHANNELS),
                )
            )
            return
        current = set(CHANNELS) if self.sub.channels is None else set(self.sub.channels)
        if action == "subscribe":
            current = set(channels) if not self.explicit_channels else current | set(channels)
        else:
            current -= set(channels)
        self.sub.channels = current
        self.explicit_channels = True
        await self._send(_system(f"{action}d", {"channels": self._channels()}))

    async def _reauthenticate(self, token: object) -> None:
        assert self.principal is not None
        if not isinstance(token, str) or not token:
            await self._send(_error(ErrorCode.VALIDATION_ERROR, "token is required"))
            return
        try:
            async with self.state.sessions() as session:
                principal = await authenticate(self.state, session, token)
        except AuthenticationFailed as exc:
            await self._send(_error(ErrorCode.AUTHENTICATION_FAILED, exc.message))
            return
        if principal.user.id != self.principal.user.id:
            await self._send(_error(ErrorCode.AUTHORIZATION_FAILED, "token of another user"))
            return
        self.principal = principal
        await self._send(_system("authenticated", {"expires_at": iso(principal.claims.expires_at)}))

    async def _watch(self) -> None:
        """Token expiry, session revocation and keep-alive pings."""
        ping_every = self.settings.websocket_ping_interval_seconds
        check_every = self.settings.websocket_session_check_seconds
        now = time.monotonic()
        next_ping, next_check = now + ping_every, now + check_every
        while True:
            assert self.principal is not None
            expires_in = (self.principal.claims.expires_at - utcnow()).total_seconds()
            if expires_in <= 0:
                raise _Close(POLICY, "token expired")
            now = time.monotonic()
            await asyncio.sleep(max(0.0, min(expires_in, next_ping - now, next_check - now)))
            now = time.monotonic()
            if now >= next_check:
                next_check = now + check_every
                if not await self._session_alive():
                    raise _Close(POLICY, "session revoked")
            if now >= next_ping:
                next_ping = now + ping_every
                await self._send(_system("ping", {}))

    async def _session_alive(self) -> bool:
        assert self.principal is not None
        claims = self.principal.claims
        try:
            async with self.state.sessions() as session:
                user = await users_repo.active_session_user(
                    session, claims.session_id, claims.user_id
                )
        except Exception:  # a database hiccup does not end the stream; the next check decides
            log.warning("websocket session check failed", exc_info=True)
            return True
        return user is not None


def _parse(text: str | None) -> object:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None
