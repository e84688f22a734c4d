"""WebSocket streams of real sandboxes: API (real uvicorn) → Temporal → Docker → event log → bus.

The stack's health loop runs every second, so metrics and logs tick; lifecycle changes made over
REST arrive as `events` frames; a client that was away resumes from its last id with exactly the
rows it missed; a client that cannot keep up with a burst is dropped and resumes.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from websockets.asyncio.client import ClientConnection, connect

from domain.containers import container_name
from domain.timeutil import as_utc, utcnow
from store.db import create_engine, session_factory
from store.models import Event
from tests.api.test_ws_auth import ApiServer, closed_with, connected, recv_event
from tests.conftest import Account
from tests.integration.conftest import Stack

pytestmark = [pytest.mark.docker, pytest.mark.temporal]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def db(stack: Stack) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(stack.settings.resolved_database_url)
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def api(stack: Stack) -> AsyncIterator[ApiServer]:
    """The same API as the stack's, served by uvicorn so WebSockets work."""
    async with ApiServer(stack.settings) as server:
        yield server


def stream_url(server: ApiServer, sid: str, acc: Account, **params: Any) -> str:
    query = "&".join(f"{k}={v}" for k, v in {"token": acc.access_token, **params}.items())
    return server.ws_url(f"/ws/sandboxes/{sid}?{query}")


async def rows(
    db: async_sessionmaker[AsyncSession], sid: str, after: int, upto: int | None = None
) -> list[Event]:
    async with db() as s:
        stmt = select(Event).where(Event.sandbox_id == sid, Event.id > after)
        if upto is not None:
            stmt = stmt.where(Event.id <= upto)
        return list(await s.scalars(stmt.order_by(Event.id)))


async def collect_until(
    ws: ClientConnection, done: Any, within: float = 60
) -> list[tuple[float, dict[str, Any]]]:
    """(arrival time, frame) of event frames until `done(frames)` holds."""
    got: list[tuple[float, dict[str, Any]]] = []
    deadline = time.monotonic() + within
    while not done([f for _, f in got]):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"stream did not deliver in time; got {[f for _, f in got]}")
        item = await recv_event(ws, remaining)
        got.append((time.monotonic(), item))
    return got


def has(frames: list[dict[str, Any]], channel: str, event: str, **data: Any) -> bool:
    return any(
        f["channel"] == channel
        and f["event"] == event
        and all(f["data"].get(k) == v for k, v in data.items())
        for f in frames
    )


async def test_live_lifecycle_logs_and_metrics(
    stack: Stack, api: ApiServer, db: async_sessionmaker[AsyncSession]
) -> None:
    acc = await stack.account()
    wid = await stack.workspace(acc)
    sid = await stack.sandbox(acc, wid)
    # Subscribed from creation on: the start, the runtime's first log lines, metrics ticking.
    async with connect(stream_url(api, sid, acc, last_event_id=0)) as ws:
        hello = await connected(ws)
        assert hello["data"]["sandbox_id"] == sid
        got = await collect_until(
            ws,
            lambda fs: (
                has(fs, "events", "sandbox_started")
                and any(
                    "Agent runtime started" in f["data"].get("message", "")
                    for f in fs
                    if f["channel"] == "logs"
                )
                and sum(f["channel"] == "metrics" for f in fs) >= 3
            ),
        )
        frames = [f for _, f in got]
        metrics = [f for f in frames if f["channel"] == "metrics"]
        assert all(
            m["event"] == "metrics_sample" and m["data"]["memory_usage_mb"] > 0 for m in metrics
        )
        assert all(f["timestamp"].endswith("Z") and isinstance(f["id"], int) for f in frames)

        # Stop over REST: `sandbox_stopping` and `sandbox_stopped` arrive as soon as recorded.
        called = time.monotonic()
        r = await stack.client.post(f"/api/v1/sandboxes/{sid}/stop", headers=acc.headers)
        assert r.status_code == 202, r.text
        got += await collect_until(ws, lambda fs: has(fs, "events", "sandbox_stopped"), 30)
        arrival = {f["id"]: (t, f) for t, f in got}
        stopping = next(t for t, f in arrival.values() if f["event"] == "sandbox_stopping")
        stopped_at, stopped = next(
            (t, f) for t, f in arrival.values() if f["event"] == "sandbox_stopped"
        )
        assert stopping - called < 2, "sandbox_stopping not within 2 s of the REST call"
        assert stopped["data"] == {
            "sandbox_id": sid,
            "status": "stopped",
            "reason": None,
            "restart_count": 0,
        }
        stopped_row = (await rows(db, sid, stopped["id"] - 1, stopped["id"]))[0]
        wall_at_arrival = utcnow().timestamp() - (time.monotonic() - stopped_at)
        assert wall_at_arrival - as_utc(stopped_row.created_at).timestamp() < 1.0  # row → frame
        assert stopped_at - called < 2, "sandbox_stopped not within 2 s of the REST call"

    # Everything received is the table, in order, without a gap or a duplicate.
    ids = [f["id"] for _, f in got]
    assert ids == [r.id for r in await rows(db, sid, 0, ids[-1])]


async def test_reconnect_with_last_event_id_gets_exactly_what_was_missed(
    stack: Stack, api: ApiServer, db: async_sessionmaker[AsyncSession]
) -> None:
    acc = await stack.account()
    wid = await stack.workspace(acc)
    sid = await stack.sandbox(acc, wid)
    await stack.wait_status(acc, sid, "running")
    async with connect(stream_url(api, sid, acc)) as ws:
        await connected(ws)
        last = (await recv_event(ws, 10))["id"]  # a metrics tick

    # While away: stop and start again.
    assert (
        await stack.client.post(f"/api/v1/sandboxes/{sid}/stop", headers=acc.headers)
    ).status_code == 202
    await stack.wait_status(acc, sid, "stopped")
    assert (
        await stack.client.post(f"/api/v1/sandboxes/{sid}/start", headers=acc.headers)
    ).status_code == 202
    await stack.wait_status(acc, sid, "running")
    missed = await rows(db, sid, last)
    assert [r.event for r in missed if r.channel == "events"] == [
        "sandbox_stopping",
        "sandbox_stopped",
        "sandbox_starting",
        "sandbox_started",
    ]

    async with connect(stream_url(api, sid, acc, last_event_id=last)) as ws:
        await connected(ws)
        got = [await recv_event(ws, 10) for _ in range(len(missed))]
        assert [(f["id"], f["channel"], f["event"], f["data"]) for f in got] == [
            (r.id, r.channel, r.event, r.data) for r in missed
        ]
        # …and then live, seamlessly: the next ticks follow on without a gap.
        live = [await recv_event(ws, 10) for _ in range(2)]
    ids = [f["id"] for f in got + live]
    assert ids == [r.id for r in await rows(db, sid, last, ids[-1])]


async def test_a_consumer_that_cannot_keep_up_with_a_burst_is_dropped(
    stack: Stack, db: async_sessionmaker[AsyncSession]
) -> None:
    acc = await stack.account()
    wid = await stack.workspace(acc)
    sid = await stack.sandbox(acc, wid)
    await stack.wait_status(acc, sid, "running")
    settings = stack.settings.model_copy(update={"websocket_queue_size": 20})
    async with ApiServer(settings) as api:
        async with connect(stream_url(api, sid, acc, channels="logs")) as ws:
            await connected(ws)
            last = max([r.id for r in await rows(db, sid, 0)])
            # The agent floods its output: the next health tick records 300 lines at once.
            container = stack.docker.containers.get(container_name(sid))
            result = await asyncio.to_thread(
                container.exec_run,
                ["sh", "-c", "for i in $(seq 300); do echo flood line $i > /proc/1/fd/1; done"],
            )
            assert result.exit_code == 0, result.output
            # Not reading: the burst overflows the 20-frame queue and the server lets go.
            code, reason = await closed_with(ws, 30)
        assert code == 1013 and reason.startswith("slow consumer"), reason

        # Reconnecting from the last id it saw, it gets all of it.
        flood = [r for r in await rows(db, sid, last) if "flood line" in r.data.get("message", "")]
        assert len(flood) == 300
        async with connect(stream_url(api, sid, acc, channels="logs", last_event_id=last)) as ws:
            await connected(ws)
            got: list[dict[str, Any]] = []
            while len([f for f in got if "flood line" in f["data"]["message"]]) < 300:
                got.append(await recv_event(ws, 10))
        assert [f["id"] for f in got if "flood line" in f["data"]["message"]] == [
            r.id for r in flood
        ]
        assert json.dumps(got[-1]["data"])  # frames carry the recorded log line
