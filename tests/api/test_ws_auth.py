"""WebSocket streams (/ws/...) over a real uvicorn server: authentication, authorization, limits,
session revocation, token expiry, actions, replay and live fan-out of the event log.

Events are appended straight into the `events` table here (as the worker's activities do); the
real sandbox lifecycle over WebSocket is in tests/integration/test_websocket.py.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import uvicorn
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from api.app import create_app
from api.metrics import EVENTS_PUBLISHED, WEBSOCKETS_OPEN
from api.security import TokenService
from config.settings import Settings
from domain.ids import Prefix, new_id
from store import events
from store.db import create_engine, is_sqlite, session_factory
from store.models import Collaboration, Sandbox
from tests.conftest import Account, make_settings, new_account

FRAME_KEYS = {"channel", "event", "data", "timestamp", "id"}


# -- a real server ------------------------------------------------------------------------------


class ApiServer:
    """`create_app(settings)` served by uvicorn on a free loopback port, in a thread of its own."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app: FastAPI = create_app(settings)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            loop="asyncio",
            lifespan="on",
            timeout_graceful_shutdown=5,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._sock]},
            name=f"uvicorn-{self.port}",
            daemon=True,
        )

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws_url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    async def __aenter__(self) -> ApiServer:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            await asyncio.sleep(0.02)
        return self

    async def __aexit__(self, *_: object) -> None:
        self._server.should_exit = True
        await until(lambda: not self._thread.is_alive(), 30)
        self._thread.join()
        self._sock.close()


@dataclass
class Env:
    """A server plus direct database access, for one backend."""

    server: ApiServer
    http: httpx.AsyncClient
    sessions: async_sessionmaker[AsyncSession]

    def url(self, path: str, **params: Any) -> str:
        query = "&".join(f"{k}={v}" for k, v in params.items())
        return self.server.ws_url(path + (f"?{query}" if query else ""))

    async def account(self, email: str | None = None) -> Account:
        if email is None:
            return await new_account(self.http)
        password = "correct horse battery"
        r = await self.http.post(
            "/api/v1/auth/register", json={"email": email, "password": password, "name": "Admin"}
        )
        assert r.status_code == 201, r.text
        r = await self.http.post("/api/v1/auth/login", json={"email": email, "password": password})
        data = r.json()["data"]
        return Account(
            data["user"]["user_id"], email, password, data["access_token"], data["refresh_token"]
        )

    async def sandbox(self, acc: Account) -> tuple[str, str]:
        """A workspace (REST) and a sandbox row in it (no Temporal in the API suite)."""
        r = await self.http.post(
            "/api/v1/workspaces", headers=acc.headers, json={"name": f"ws-{uuid.uuid4().hex[:6]}"}
        )
        assert r.status_code == 201, r.text
        wid = r.json()["data"]["workspace_id"]
        sid = new_id(Prefix.SANDBOX)
        async with self.sessions() as s:
            s.add(Sandbox(id=sid, workspace_id=wid, name=f"sb-{sid[-6:]}"))
            await s.commit()
        return wid, sid

    async def collaboration(self, wid: str, cid: str) -> None:
        """A collaboration row (the workflow is not needed to authorize its stream)."""
        async with self.sessions() as s:
            s.add(
                Collaboration(
                    id=cid,
                    workspace_id=wid,
                    task="t",
                    mode="orchestrated",
                    orchestrator_sandbox_id="sb_x",
                    orchestrator_agent="a",
                    timeout_seconds=60,
                    estimated_duration_seconds=60,
                )
            )
            await s.commit()

    async def append(
        self,
        wid: str,
        sid: str | None,
        n: int,
        channel: str = "events",
        collaboration_id: str | None = None,
    ) -> list[int]:
        async with self.sessions() as s:
            rows = [
                events.append(
                    s,
                    channel=channel,
                    event=f"test_{i}",
                    data={"i": i},
                    workspace_id=wid,
                    sandbox_id=sid,
                    collaboration_id=collaboration_id,
                )
                for i in range(n)
            ]
            await s.commit()
        return [r.id for r in rows]


@asynccontextmanager
async def running(
    settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> AsyncIterator[Env]:
    async with (
        ApiServer(settings) as server,
        httpx.AsyncClient(base_url=server.http_url, timeout=30) as http,
    ):
        yield Env(server, http, sessions)


ADMIN_EMAIL = f"admin-{uuid.uuid4().hex[:8]}@example.com"


def ws_settings(database_url: str, data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "admin_emails": [ADMIN_EMAIL],
        "websocket_auth_timeout_seconds": 1.0,
        "websocket_session_check_seconds": 0.3,
        "events_poll_interval_seconds": 0.05,
    }
    values.update(overrides)
    return make_settings(database_url, data_dir, **values)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def db(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(database_url)
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def env(
    database_url: str, data_dir: Path, db: async_sessionmaker[AsyncSession]
) -> AsyncIterator[Env]:
    async with running(ws_settings(database_url, data_dir), db) as e:
        yield e


# -- client helpers -----------------------------------------------------------------------------


async def until(predicate: Callable[[], bool], within: float = 5.0) -> bool:
    for _ in range(int(within / 0.02)):
        if predicate():
            return True
        await asyncio.sleep(0.02)
    return predicate()


async def recv(ws: ClientConnection, within: float = 5) -> dict[str, Any]:
    item = json.loads(await asyncio.wait_for(ws.recv(), within))
    assert set(item) == FRAME_KEYS, item
    return dict(item)


async def recv_event(ws: ClientConnection, within: float = 5) -> dict[str, Any]:
    """The next non-system frame."""
    deadline = time.monotonic() + within
    while True:
        item = await recv(ws, max(0.01, deadline - time.monotonic()))
        if item["channel"] != "system":
            return item


async def recv_events(ws: ClientConnection, n: int, within: float = 10) -> list[dict[str, Any]]:
    deadline = time.monotonic() + within
    return [await recv_event(ws, max(0.01, deadline - time.monotonic())) for _ in range(n)]


async def closed_with(ws: ClientConnection, within: float = 10) -> tuple[int, str]:
    """Read until the server closes the connection: its close code and reason."""
    with pytest.raises(ConnectionClosed) as info:
        async with asyncio.timeout(within):
            while True:
                await ws.recv()
    assert info.value.rcvd is not None, "closed without a close frame"
    return info.value.rcvd.code, info.value.rcvd.reason


async def connected(ws: ClientConnection) -> dict[str, Any]:
    hello = await recv(ws)
    assert (hello["channel"], hello["event"], hello["id"]) == ("system", "connected", None), hello
    return hello


# -- authentication -----------------------------------------------------------------------------


async def test_without_a_token_the_connection_is_closed_1008(env: Env) -> None:
    acc = await env.account()
    _, sid = await env.sandbox(acc)
    async with connect(env.url(f"/ws/sandboxes/{sid}")) as ws:  # no token, no auth message
        assert await closed_with(ws) == (1008, "authentication required")


@pytest.mark.parametrize("token", ["garbage", "a.b.c", ""])
async def test_garbage_token_is_refused_1008(env: Env, token: str) -> None:
    acc = await env.account()
    _, sid = await env.sandbox(acc)
    async with connect(env.url(f"/ws/sandboxes/{sid}", token=token)) as ws:
        if not token:  # an empty ?token= falls back to first-message auth
            await ws.send(json.dumps({"action": "auth", "token": "nope"}))
        code, reason = await closed_with(ws)
    assert code == 1008 and reason.startswith("authentication failed"), reason


async def test_expired_and_refresh_tokens_are_refused_1008(env: Env) -> None:
    acc = await env.account()
    _, sid = await env.sandbox(acc)
    claims = env.server.app.state.aintandem.tokens.decode(acc.access_token, "access")
    expired = TokenService(
        env.server.settings.model_copy(update={"access_token_ttl_seconds": -10})
    ).issue_access(claims.user_id, claims.session_id)
    async with connect(env.url(f"/ws/sandboxes/{sid}", token=expired)) as ws:
        assert await closed_with(ws) == (1008, "authentication failed: Token has expired")
    async with connect(env.url(f"/ws/sandboxes/{sid}", token=acc.refresh_token)) as ws:
        assert await closed_with(ws) == (1008, "authentication failed: Invalid token type")


async def test_foreign_unknown_and_malformed_sandboxes_are_refused_1008(env: Env) -> None:
    owner, stranger = await env.account(), await env.account()
    _, sid = await env.sandbox(owner)
    for path in (
        f"/ws/sandboxes/{sid}",
        f"/ws/sandboxes/{new_id(Prefix.SANDBOX)}",
        "/ws/sandboxes/not-an-id",
        "/ws/sandboxes/sb_%27%3B--",
    ):
        async with connect(env.url(path, token=stranger.access_token)) as ws:
            assert await closed_with(ws) == (1008, "sandbox not found"), path


async def test_query_header_and_first_message_auth(env: Env) -> None:
    acc = await env.account()
    _, sid = await env.sandbox(acc)
    async with connect(env.url(f"/ws/sandboxes/{sid}", token=acc.access_token)) as ws:
        hello = await connected(ws)
        assert hello["data"]["stream"] == "sandbox" and hello["data"]["sandbox_id"] == sid
        assert hello["data"]["user_id"] == acc.user_id and hello["timestamp"].endswith("Z")
        assert hello["data"]["channels"] == ["messages", "events", "logs", "metrics"]
    async with connect(env.url(f"/ws/sandboxes/{sid}"), additional_headers=acc.headers) as ws:
        await connected(ws)
    async with connect(env.url(f"/ws/sandboxes/{sid}")) as ws:
        await ws.send(json.dumps({"action": "auth", "token": acc.access_token}))
        await connected(ws)
        await ws.send(json.dumps({"action": "ping"}))
        assert (await recv(ws))["event"] == "pong"
    async with connect(env.url(f"/ws/sandboxes/{sid}")) as ws:
        await ws.send(json.dumps({"action": "subscribe", "channels": ["events"]}))
        code, reason = await closed_with(ws)
        assert code == 1008 and reason.startswith("authentication required")


# -- limits and the life of a connection ------------------------------------------------------


async def test_connections_per_user_are_limited(
    database_url: str, data_dir: Path, db: async_sessionmaker[AsyncSession]
) -> None:
    settings = ws_settings(database_url, data_dir, websocket_max_connections_per_user=2)
    async with running(settings, db) as e:
        acc, other = await e.account(), await e.account()
        _, sid = await e.sandbox(acc)
        _, other_sid = await e.sandbox(other)
        url = e.url(f"/ws/sandboxes/{sid}", token=acc.access_token)
        before = WEBSOCKETS_OPEN._value.get()
        async with connect(url) as first, connect(url) as second:
            await connected(first)
            await connected(second)
            assert WEBSOCKETS_OPEN._value.get() == before + 2
            async with connect(url) as third:
                assert await closed_with(third) == (1008, "too many connections")
            # The limit is per user: another user still gets in.
            async with connect(e.url(f"/ws/sandboxes/{other_sid}", token=other.access_token)) as ws:
                await connected(ws)
        # Closed connections give their slots back.
        assert await until(lambda: WEBSOCKETS_OPEN._value.get() == before)
        async with connect(url) as again:
            await connected(again)


async def test_logout_closes_open_connections(env: Env) -> None:
    acc = await env.account()
    _, sid = await env.sandbox(acc)
    async with connect(env.url(f"/ws/sandboxes/{sid}", token=acc.access_token)) as ws:
        await connected(ws)
        r = await env.http.post("/api/v1/auth/logout", headers=acc.headers)
        assert r.status_code == 204, r.text
        started = time.monotonic()
        assert await closed_with(ws, within=5) == (1008, "session revoked")
        assert time.monotonic() - started < 2  # the check interval is 0.3 s here


async def test_the_connection_ends_when_its_token_expires(env: Env) -> None:
    acc = await env.account()
    _, sid = await env.sandbox(acc)
    claims = env.server.app.state.aintandem.tokens.decode(acc.access_token, "access")
    short = TokenService(
        env.server.settings.model_copy(update={"access_token_ttl_seconds": 2})
    ).issue_access(claims.user_id, claims.session_id)
    async with connect(env.url(f"/ws/sandboxes/{sid}", token=short)) as ws:
        hello = await connected(ws)
        assert hello["data"]["expires_at"]
        assert await closed_with(ws, within=5) == (1008, "token expired")
    # A fresh token sent on the open connection extends it.
    short = TokenService(
        env.server.settings.model_copy(update={"access_token_ttl_seconds": 2})
    ).issue_access(claims.user_id, claims.session_id)
    async with connect(env.url(f"/ws/sandboxes/{sid}", token=short)) as ws:
        await connected(ws)
        await ws.send(json.dumps({"action": "auth", "token": acc.access_token}))
        assert (await recv(ws))["event"] == "authenticated"
        await ws.send(json.dumps({"action": "auth", "token": "garbage"}))
        assert (await recv(ws))["data"]["code"] == "AUTHENTICATION_FAILED"
        await asyncio.sleep(3)
        await ws.send(json.dumps({"action": "ping"}))
        assert (await recv(ws))["event"] == "pong"


async def test_pings_keep_idle_connections_alive(
    database_url: str, data_dir: Path, db: async_sessionmaker[AsyncSession]
) -> None:
    settings = ws_settings(database_url, data_dir, websocket_ping_interval_seconds=0.2)
    async with running(settings, db) as e:
        acc = await e.account()
        _, sid = await e.sandbox(acc)
        async with connect(e.url(f"/ws/sandboxes/{sid}", token=acc.access_token)) as ws:
            await connected(ws)
            pings = [await recv(ws, 2) for _ in range(3)]
        assert {(p["channel"], p["event"], p["id"]) for p in pings} == {("system", "ping", None)}


# -- admin and collaboration streams ----------------------------------------------------------


async def test_system_stream_is_admin_only_and_carries_every_event(env: Env) -> None:
    user = await env.account()
    wid, sid = await env.sandbox(user)
    async with connect(env.url("/ws/system", token=user.access_token)) as ws:
        assert await closed_with(ws) == (1008, "admin only")
    admin = await env.account(ADMIN_EMAIL)
    async with connect(env.url("/ws/system", token=admin.access_token)) as ws:
        assert (await connected(ws))["data"]["stream"] == "system"
        ids = await env.append(wid, sid, 2) + await env.append(wid, None, 1, channel="metrics")
        got = await recv_events(ws, 3)
    assert [g["id"] for g in got] == ids


async def test_collaboration_stream_follows_its_events(env: Env) -> None:
    owner, stranger = await env.account(), await env.account()
    wid, _ = await env.sandbox(owner)
    col = new_id(Prefix.COLLABORATION)
    async with connect(env.url(f"/ws/collaborations/{col}", token=owner.access_token)) as ws:
        assert await closed_with(ws) == (1008, "collaboration not found")  # no such row yet
    await env.collaboration(wid, col)
    first = await env.append(wid, None, 1, collaboration_id=col)
    for cid in (col, "col_bad"):
        async with connect(env.url(f"/ws/collaborations/{cid}", token=stranger.access_token)) as ws:
            assert await closed_with(ws) == (1008, "collaboration not found")
    async with connect(
        env.url(f"/ws/collaborations/{col}", token=owner.access_token, last_event_id=0)
    ) as ws:
        await connected(ws)
        await env.append(wid, None, 1)  # another stream's event
        later = await env.append(wid, None, 2, collaboration_id=col)
        got = await recv_events(ws, 3)
    assert [g["id"] for g in got] == first + later


# -- actions, filters, replay ------------------------------------------------------------------


async def test_bad_client_messages_get_error_frames_not_a_crash(env: Env) -> None:
    acc = await env.account()
    _, sid = await env.sandbox(acc)
    async with connect(env.url(f"/ws/sandboxes/{sid}", token=acc.access_token)) as ws:
        await connected(ws)
        for bad in (
            "not json",
            "[1, 2]",
            json.dumps({"action": "dance"}),
            json.dumps({"action": "subscribe", "channels": ["events", "gossip"]}),
            json.dumps({"action": "subscribe", "channels": "events"}),
            json.dumps({"action": "resume", "last_event_id": -1}),
        ):
            await ws.send(bad)
            err = await recv(ws)
            assert (err["channel"], err["event"]) == ("system", "error"), (bad, err)
            assert err["data"]["code"] == "VALIDATION_ERROR" and err["data"]["message"]
        await ws.send(b"\x00binary")
        assert (await recv(ws))["event"] == "error"
        await ws.send(json.dumps({"action": "ping"}))
        assert (await recv(ws))["event"] == "pong"
    async with connect(
        env.url(f"/ws/sandboxes/{sid}", token=acc.access_token, last_event_id="x")
    ) as ws:
        assert await closed_with(ws) == (1008, "last_event_id must be a non-negative integer")


async def test_subscribe_narrows_and_unsubscribe_removes_channels(env: Env) -> None:
    acc = await env.account()
    wid, sid = await env.sandbox(acc)
    published = EVENTS_PUBLISHED.labels("logs")._value.get()
    async with connect(env.url(f"/ws/sandboxes/{sid}", token=acc.access_token)) as ws:
        await connected(ws)
        await ws.send(json.dumps({"action": "subscribe", "channels": ["events"]}))
        assert (await recv(ws))["data"] == {"channels": ["events"]}
        await env.append(wid, sid, 2, channel="logs")
        wanted = await env.append(wid, sid, 1, channel="events")
        got = await recv_event(ws)
        assert (got["id"], got["channel"], got["event"], got["data"]) == (
            wanted[0],
            "events",
            "test_0",
            {"i": 0},
        )
        await ws.send(json.dumps({"action": "subscribe", "channels": ["logs"]}))
        assert (await recv(ws))["data"] == {"channels": ["events", "logs"]}
        await ws.send(json.dumps({"action": "unsubscribe", "channels": ["events"]}))
        assert (await recv(ws))["data"] == {"channels": ["logs"]}
        await env.append(wid, sid, 1, channel="events")
        logs = await env.append(wid, sid, 1, channel="logs")
        assert (await recv_event(ws))["id"] == logs[0]
    assert EVENTS_PUBLISHED.labels("logs")._value.get() >= published + 3
    # ?channels= sets the initial subscription.
    async with connect(
        env.url(f"/ws/sandboxes/{sid}", token=acc.access_token, channels="metrics")
    ) as ws:
        assert (await connected(ws))["data"]["channels"] == ["metrics"]
        await env.append(wid, sid, 1, channel="logs")
        metrics = await env.append(wid, sid, 1, channel="metrics")
        assert (await recv_event(ws))["id"] == metrics[0]


async def test_resume_replays_the_gap_then_goes_live_without_loss_or_duplicates(env: Env) -> None:
    acc = await env.account()
    wid, sid = await env.sandbox(acc)
    _, other_sid = await env.sandbox(acc)
    seen = await env.append(wid, sid, 5)
    missed = await env.append(wid, sid, 40)
    await env.append(wid, other_sid, 5)  # not this stream

    async def writer() -> list[int]:
        ids: list[int] = []
        for _ in range(20):  # keeps appending across the replay → live switch-over
            ids += await env.append(wid, sid, 3)
            await asyncio.sleep(0.01)
        return ids

    async with connect(
        env.url(f"/ws/sandboxes/{sid}", token=acc.access_token, last_event_id=seen[-1])
    ) as ws:
        await connected(ws)
        live = await writer()
        got = await recv_events(ws, len(missed) + len(live), within=20)
        assert [g["id"] for g in got] == missed + live
        # Nothing more (no duplicates) …
        await ws.send(json.dumps({"action": "ping"}))
        assert (await recv(ws))["event"] == "pong"
        # … and `resume` restarts the stream after the given id.
        await ws.send(json.dumps({"action": "resume", "last_event_id": missed[-1]}))
        got = await recv_events(ws, len(live))
        assert [g["id"] for g in got] == live
        more = await env.append(wid, sid, 2)
        assert [g["id"] for g in await recv_events(ws, 2)] == more


async def test_a_consumer_that_cannot_keep_up_is_dropped(
    database_url: str, data_dir: Path, db: async_sessionmaker[AsyncSession]
) -> None:
    settings = ws_settings(database_url, data_dir, websocket_queue_size=5)
    async with running(settings, db) as e:
        acc = await e.account()
        wid, sid = await e.sandbox(acc)
        async with connect(e.url(f"/ws/sandboxes/{sid}", token=acc.access_token)) as ws:
            await connected(ws)
            burst = await e.append(wid, sid, 50)  # one dispatch round, not read by anyone
            code, reason = await closed_with(ws)
        assert code == 1013 and reason.startswith("slow consumer"), reason
        # It reconnects from the last id it saw and gets everything.
        async with connect(
            e.url(f"/ws/sandboxes/{sid}", token=acc.access_token, last_event_id=burst[0] - 1)
        ) as ws:
            await connected(ws)
            got: list[int] = []
            while len(got) < len(burst):
                got.append((await recv_event(ws))["id"])
        assert got == burst


async def test_postgres_insert_notifies_the_bus(
    database_url: str, data_dir: Path, db: async_sessionmaker[AsyncSession]
) -> None:
    """The insert trigger's NOTIFY wakes the bus: delivery does not wait for the poll."""
    if is_sqlite(database_url):
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's")
    settings = ws_settings(
        database_url,
        data_dir,
        events_poll_interval_seconds=30,
        events_listen_poll_interval_seconds=30,
    )
    async with running(settings, db) as e:
        bus = e.server.app.state.aintandem.events
        assert await until(lambda: bus.listening, 10)
        acc = await e.account()
        wid, sid = await e.sandbox(acc)
        async with connect(e.url(f"/ws/sandboxes/{sid}", token=acc.access_token)) as ws:
            await connected(ws)
            for _ in range(3):
                started = time.monotonic()
                ids = await e.append(wid, sid, 2)
                assert [g["id"] for g in await recv_events(ws, 2, within=5)] == ids
                assert time.monotonic() - started < 2  # not the 30 s poll


async def test_postgres_event_in_flight_while_the_api_starts_is_delivered(
    database_url: str, data_dir: Path, db: async_sessionmaker[AsyncSession]
) -> None:
    """A worker's transaction holds id N while a later id N+1 commits, and the API (re)starts in
    between: the bus must not start after N+1 and skip N once it commits."""
    if is_sqlite(database_url):
        pytest.skip("SQLite commits ids in order")
    settings = ws_settings(database_url, data_dir, events_gap_timeout_seconds=10)
    async with running(settings, db) as e:
        acc = await e.account()
        wid, sid = await e.sandbox(acc)
    async with db() as slow:
        early = events.append(
            slow, channel="events", event="early", data={}, workspace_id=wid, sandbox_id=sid
        )
        await slow.flush()  # id allocated, not committed
        late = await e.append(wid, sid, 1)  # committed before the API starts
        assert late[0] > early.id
        async with (
            running(settings, db) as e2,
            connect(e2.url(f"/ws/sandboxes/{sid}", token=acc.access_token)) as ws,
        ):
            await connected(ws)
            await slow.commit()
            got = await recv_events(ws, 2, within=8)
    assert [g["id"] for g in got] == [early.id, late[0]]


async def test_postgres_ids_committed_out_of_order_are_delivered_in_order(
    database_url: str, data_dir: Path, db: async_sessionmaker[AsyncSession]
) -> None:
    """PostgreSQL hands out ids before commit: a later id may commit first. The bus holds it back
    until the earlier one commits (or, rolled back, for `events_gap_timeout_seconds`)."""
    if is_sqlite(database_url):
        pytest.skip("SQLite commits ids in order")
    settings = ws_settings(database_url, data_dir, events_gap_timeout_seconds=1.5)
    async with running(settings, db) as e:
        acc = await e.account()
        wid, sid = await e.sandbox(acc)
        async with connect(e.url(f"/ws/sandboxes/{sid}", token=acc.access_token)) as ws:
            await connected(ws)
            # Committed late: its id is smaller than the one committed meanwhile.
            async with db() as slow:
                early = events.append(
                    slow, channel="events", event="early", data={}, workspace_id=wid, sandbox_id=sid
                )
                await slow.flush()
                late = await e.append(wid, sid, 1)
                assert late[0] > early.id
                with pytest.raises(TimeoutError):
                    await recv_event(ws, 0.5)  # held back, not delivered out of order
                await slow.commit()
            got = await recv_events(ws, 2)
            assert [g["id"] for g in got] == [early.id, late[0]]
            # Rolled back: the hole never fills; later events flow after the gap timeout.
            async with db() as aborted:
                events.append(
                    aborted,
                    channel="events",
                    event="never",
                    data={},
                    workspace_id=wid,
                    sandbox_id=sid,
                )
                await aborted.flush()
                after = await e.append(wid, sid, 1)
                await aborted.rollback()
            started = time.monotonic()
            assert (await recv_event(ws, 5))["id"] == after[0]
            assert 0.5 < time.monotonic() - started < 3
