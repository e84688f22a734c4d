"""Chaos: the API process is SIGKILLed while WebSocket clients follow their streams, with work
in flight (a sandbox starting, a burst of messages queued for it); the worker carries on while
the API is away (the sandbox comes up, the burst is delivered, health ticks sample, the agents
write output), and the API comes back. Each client reconnects with the last event id it saw
and ends with exactly its scope of the event log: no gap, no duplicate, in order.

Why the API alone, as a process of its own: that is the production topology (docker-compose.yml:
the API and the worker are separate services, and `restart: unless-stopped` brings a crashed API
back while the worker carries on), so events keep landing in the log while no API serves them.
The API here runs exactly as that service does (`aintandem api`, on a fixed port, its JWT secret
in the data dir so the clients' tokens stay valid), beside a worker in the test process, on one
SQLite database and the session's Temporal dev server. The test restarts it itself rather than
through a supervisor, so it decides how long the API stays down: until the worker's events have
landed. SIGKILL, not SIGTERM: no close frame, no lifespan shutdown, what an OOM kill or a lost
node looks like to a client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from domain.containers import container_name
from store.db import create_engine, session_factory
from store.migrate import upgrade
from store.models import Event
from tests.cleanup import remove_installation_sandboxes
from tests.conftest import make_settings, temporal_address
from tests.integration.conftest import eventually
from tests.live_stack import ROOT, free_port
from worker.main import build_activities, build_worker

pytestmark = [pytest.mark.chaos, pytest.mark.docker, pytest.mark.temporal]

PASSWORD = "correct horse battery"
BURST = 40  # messages per burst, sent concurrently just before the kill and after the restart


class ApiProcess:
    """`aintandem api` in a subprocess on a fixed port: killed and started again by the drill."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.log = log
        self.base = f"http://127.0.0.1:{env['AINTANDEM_API_PORT']}"
        self.proc: subprocess.Popen[bytes] | None = None

    def ws_url(self, path: str, **params: Any) -> str:
        query = "&".join(f"{k}={v}" for k, v in params.items())
        return f"ws://127.0.0.1:{self.env['AINTANDEM_API_PORT']}{path}?{query}"

    def _spawn(self) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "cli.main", "api"],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    async def start(self) -> None:
        self.proc = self._spawn()
        # uvicorn binds only after the lifespan started (database, Temporal client, event bus).
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient(base_url=self.base, timeout=2) as http:
            while time.monotonic() < deadline:
                assert self.proc.poll() is None, self.log.read_text()
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get("/api/v1/system/health")).status_code < 500:
                        return
                await asyncio.sleep(0.1)
        raise AssertionError(f"the API did not come up:\n{self.log.read_text()}")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@dataclass
class Follower:
    """A WebSocket client that follows one stream and, whenever the connection drops,
    reconnects with `last_event_id` = the last event id it received (the spec's resume)."""

    name: str
    url: Callable[[int], str] = field(repr=False)
    frames: list[dict[str, Any]] = field(default_factory=list, repr=False)
    connections: int = 0
    drops: list[str] = field(default_factory=list)

    @property
    def last_id(self) -> int:
        return int(self.frames[-1]["id"]) if self.frames else 0

    async def run(self) -> None:
        while True:
            try:
                # last_event_id=0 on the first connection too: the whole scope from its start.
                async with connect(self.url(self.last_id), open_timeout=5) as ws:
                    hello = json.loads(await ws.recv())
                    assert hello["event"] == "connected", hello
                    self.connections += 1
                    async for text in ws:
                        item = json.loads(text)
                        if item["id"] is not None:  # system frames (pings, acks) have none
                            self.frames.append(item)
            except ConnectionClosed as exc:
                self.drops.append(f"closed {exc.rcvd.code if exc.rcvd else 'without a frame'}")
            except (OSError, InvalidHandshake, TimeoutError) as exc:
                self.drops.append(repr(exc))  # the API is down: try again shortly
            await asyncio.sleep(0.2)


async def until(
    predicate: Callable[[], bool], timeout: float, what: str, state: Callable[[], object]
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; {state()}")
        await asyncio.sleep(0.05)


async def scope_rows(
    db: async_sessionmaker[AsyncSession],
    *,
    sandbox_id: str | None = None,
    channels: tuple[str, ...] | None = None,
    after: int = 0,
    upto: int | None = None,
) -> list[Event]:
    stmt = select(Event).where(Event.id > after)
    if sandbox_id is not None:
        stmt = stmt.where(Event.sandbox_id == sandbox_id)
    if channels is not None:
        stmt = stmt.where(Event.channel.in_(channels))
    if upto is not None:
        stmt = stmt.where(Event.id <= upto)
    async with db() as s:
        return list(await s.scalars(stmt.order_by(Event.id)))


async def head(db: async_sessionmaker[AsyncSession]) -> int:
    async with db() as s:
        return int(await s.scalar(select(func.max(Event.id))) or 0)


async def log_lines(db: async_sessionmaker[AsyncSession], sid: str, marker: str) -> int:
    rows = await scope_rows(db, sandbox_id=sid, channels=("logs",))
    return sum(marker in r.data.get("message", "") for r in rows)


def echo_markers(dk: docker.DockerClient, sid: str, marker: str, n: int) -> None:
    """The agent writes n lines to its output: log events at the sandbox's next health tick."""
    result = dk.containers.get(container_name(sid)).exec_run(
        ["sh", "-c", f"for i in $(seq {n}); do echo {marker} $i > /proc/1/fd/1; done"]
    )
    assert result.exit_code == 0, result.output


@contextlib.asynccontextmanager
async def in_process_worker(settings: Any, temporal: Any) -> AsyncIterator[None]:
    engine = create_engine(settings.resolved_database_url)
    activities = build_activities(settings, session_factory(engine), temporal)
    try:
        with ThreadPoolExecutor(64) as pool:
            async with build_worker(temporal, settings, pool, activities):
                yield
    finally:
        await activities.aclose()
        await engine.dispose()


async def test_clients_resume_after_an_api_crash_with_exactly_the_events_they_missed(
    tmp_path: Path, temporal_env: Any
) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'aintandem.db'}"
    await asyncio.to_thread(upgrade, database_url)
    task_queue = f"chaos-api-{uuid.uuid4().hex[:8]}"
    admin_email = f"admin-{uuid.uuid4().hex[:8]}@example.com"
    settings = make_settings(
        database_url,
        tmp_path,
        temporal_address=temporal_address(temporal_env),
        task_queue=task_queue,
        sandbox_health_interval_seconds=1.0,
    )
    env = {
        **os.environ,
        "AINTANDEM_DATA_DIR": str(tmp_path),
        "AINTANDEM_DATABASE_URL": database_url,
        "AINTANDEM_TEMPORAL_ADDRESS": settings.resolved_temporal_address,
        "AINTANDEM_TASK_QUEUE": task_queue,
        "AINTANDEM_API_PORT": str(free_port()),
        "AINTANDEM_ADMIN_EMAILS": admin_email,
        # Every sandbox's health tick appends metrics (and new log lines) once a second: the
        # streams move all the time, the API up or down.
        "AINTANDEM_SANDBOX_HEALTH_INTERVAL_SECONDS": "1.0",
        "AINTANDEM_RATE_LIMIT_ENABLED": "false",
    }
    api = ApiProcess(env, tmp_path / "api.log")
    engine = create_engine(database_url)
    db = session_factory(engine)
    dk = docker.from_env()
    sandboxes: list[str] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        async with in_process_worker(settings, temporal_env.client):
            await api.start()
            async with httpx.AsyncClient(base_url=f"{api.base}/api/v1", timeout=30) as http:

                async def login(email: str) -> str:
                    r = await http.post(
                        "/auth/register", json={"email": email, "password": PASSWORD, "name": "C"}
                    )
                    assert r.status_code == 201, r.text
                    r = await http.post("/auth/login", json={"email": email, "password": PASSWORD})
                    assert r.status_code == 200, r.text
                    return str(r.json()["data"]["access_token"])

                token = await login(f"user-{uuid.uuid4().hex[:8]}@example.com")
                admin = await login(admin_email)
                h = {"Authorization": f"Bearer {token}"}
                r = await http.post("/workspaces", headers=h, json={"name": "chaos"})
                assert r.status_code == 201, r.text
                wid = r.json()["data"]["workspace_id"]
                for name in ("sender", "receiver"):
                    r = await http.post(
                        f"/workspaces/{wid}/sandboxes",
                        headers=h,
                        json={
                            "name": name,
                            "agent_config": {"primary_agent": {"name": "a", "role": "r"}},
                        },
                    )
                    assert r.status_code == 201, r.text
                    sandboxes.append(r.json()["data"]["sandbox_id"])
                a, b = sandboxes

                async def status(sid: str) -> str:
                    r = await http.get(f"/sandboxes/{sid}", headers=h)
                    return str(r.json()["data"]["status"])

                for sid in sandboxes:
                    await eventually(
                        lambda sid=sid: status(sid), lambda s: s == "running", 90, "running"
                    )

                async def burst(tag: str) -> None:
                    sent = await asyncio.gather(
                        *(
                            http.post(
                                f"/sandboxes/{a}/messages",
                                headers=h,
                                json={
                                    "to_sandbox": b,
                                    "message_type": "notification",
                                    "content": {"burst": tag, "n": i},
                                },
                            )
                            for i in range(BURST)
                        )
                    )
                    assert all(r.status_code == 202 for r in sent), [r.text for r in sent][:3]

                # Three clients, three scopes: sandbox a (every channel), sandbox b narrowed to
                # three channels (the filter must hold across resumes), and the admin's system
                # stream (the whole log).
                b_channels = ("messages", "events", "logs")
                followers = [
                    Follower(
                        "sandbox a",
                        lambda last: api.ws_url(
                            f"/ws/sandboxes/{a}", token=token, last_event_id=last
                        ),
                    ),
                    Follower(
                        "sandbox b",
                        lambda last: api.ws_url(
                            f"/ws/sandboxes/{b}",
                            token=token,
                            channels=",".join(b_channels),
                            last_event_id=last,
                        ),
                    ),
                    Follower(
                        "system",
                        lambda last: api.ws_url("/ws/system", token=admin, last_event_id=last),
                    ),
                ]
                tasks = [asyncio.create_task(f.run(), name=f.name) for f in followers]
                await until(
                    lambda: all(f.connections == 1 and f.frames for f in followers),
                    20,
                    "every client streaming",
                    lambda: [(f, len(f.frames)) for f in followers],
                )

                # Mid-stream, with work in flight: b is stopped, a burst for it is accepted
                # (queued until b runs), b's start is accepted, and the API dies at once.
                r = await http.post(f"/sandboxes/{b}/stop", headers=h)
                assert r.status_code == 202, r.text
                await eventually(lambda: status(b), lambda s: s == "stopped", 30, "b stopped")
                await burst("before")
                r = await http.post(f"/sandboxes/{b}/start", headers=h)
                assert r.status_code == 202, r.text
                at_kill = await head(db)
                api.kill()

                # While the API is away the worker goes on: b comes up, the queued burst is
                # delivered, health ticks sample, the agents write output.
                await eventually(
                    lambda: scope_rows(db, sandbox_id=b, channels=("events",), after=at_kill),
                    lambda rows: "sandbox_started" in [r.event for r in rows],
                    60,
                    "b running while the API is down",
                )
                await eventually(
                    lambda: scope_rows(db, sandbox_id=b, channels=("messages",), after=at_kill),
                    lambda rows: len(rows) == BURST,
                    60,
                    "the burst delivered while the API is down",
                )
                await asyncio.to_thread(echo_markers, dk, a, "chaos-down-a", 5)
                await asyncio.to_thread(echo_markers, dk, b, "chaos-down-b", 5)
                for sid, marker in ((a, "chaos-down-a"), (b, "chaos-down-b")):
                    await eventually(
                        lambda sid=sid, marker=marker: log_lines(db, sid, marker),
                        lambda n: n == 5,
                        30,
                        f"{marker} lines recorded while the API is down",
                    )
                # Held down for a few health ticks more: the clients retry against a dead port.
                for sid in sandboxes:
                    await eventually(
                        lambda sid=sid: scope_rows(
                            db, sandbox_id=sid, channels=("metrics",), after=at_kill
                        ),
                        lambda rows: len(rows) >= 3,
                        30,
                        "health ticks while the API is down",
                    )
                assert all(f.drops for f in followers), "a client was not disconnected"
                at_restart = await head(db)
                await api.start()

                # After the restart: more of everything, then the clients must catch up.
                await burst("after")
                await asyncio.to_thread(echo_markers, dk, a, "chaos-up-a", 5)
                await asyncio.to_thread(echo_markers, dk, b, "chaos-up-b", 5)
                for sid, marker in ((a, "chaos-up-a"), (b, "chaos-up-b")):
                    await eventually(
                        lambda sid=sid, marker=marker: log_lines(db, sid, marker),
                        lambda n: n == 5,
                        30,
                        f"{marker} lines recorded",
                    )
                received = await eventually(
                    lambda: scope_rows(db, sandbox_id=b, channels=("messages",)),
                    lambda rows: len(rows) >= 2 * BURST,
                    60,
                    "both bursts delivered",
                )
                assert sorted(
                    (r.data["content"]["burst"], r.data["content"]["n"]) for r in received
                ) == sorted((tag, n) for tag in ("before", "after") for n in range(BURST))
                target = await head(db)
                scopes: list[dict[str, Any]] = [
                    {"sandbox_id": a},
                    {"sandbox_id": b, "channels": b_channels},
                    {},
                ]
                for f, scope in zip(followers, scopes, strict=True):
                    last_in_scope = (await scope_rows(db, **scope, upto=target))[-1].id
                    await until(
                        lambda f=f, want=last_in_scope: f.last_id >= want,
                        30,
                        f"{f.name} to catch up to event {last_in_scope}",
                        lambda f=f: (f.last_id, f.connections, f.drops),
                    )
                for task in tasks:
                    task.cancel()
                ended = await asyncio.gather(*tasks, return_exceptions=True)
                assert all(isinstance(e, asyncio.CancelledError) for e in ended), ended

                for f, scope in zip(followers, scopes, strict=True):
                    expected = await scope_rows(db, **scope, upto=f.last_id)
                    got = [(x["id"], x["channel"], x["event"], x["data"]) for x in f.frames]
                    ids = [x[0] for x in got]
                    assert len(ids) == len(set(ids)), f"{f.name}: duplicates"
                    assert ids == sorted(ids), f"{f.name}: out of order"
                    missing = sorted({r.id for r in expected} - set(ids))
                    assert not missing, f"{f.name}: missed events {missing[:20]}"
                    assert got == [(r.id, r.channel, r.event, r.data) for r in expected], f.name
                    # It did resume, once, and its scope moved while the API was down.
                    assert f.connections == 2, (f.name, f.drops)
                    down = [r.id for r in expected if at_kill < r.id <= at_restart]
                    assert down, f"{f.name}: no event in its scope while the API was down"

                for sid in sandboxes:
                    await http.delete(f"/sandboxes/{sid}", headers=h)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        api.stop()
        try:  # whatever a failure left behind: sandboxes, their disks, the network
            await asyncio.to_thread(
                remove_installation_sandboxes, settings.installation_id, client=dk
            )
        finally:
            dk.close()
        await engine.dispose()
