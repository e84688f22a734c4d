"""Idempotency-Key under concurrency and reuse, on SQLite and PostgreSQL (IETF httpapi draft).

Every POST that takes the key (message send, broadcast, collaboration orchestrate):

- 6 concurrent requests with one key create exactly one thing and enqueue it once: while the
  first is in flight (held inside Temporal here) the others answer 409 in the spec's envelope
  with Retry-After, never a 500; once it answered, a retry replays its 202;
- the key reused with a different body is refused with 422 instead of silently answering
  with the first request's result;
- a request that Temporal refused (503) keeps no answer, so its retry really runs;
- a claim whose request died (left in flight past the expiry) is taken over.

Temporal is the one thing stood in for (the API's connected client, as in
tests/api/test_message_accept.py): what is under test is the API's database protocol.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.app import create_app
from api.idempotency import IN_FLIGHT_EXPIRY_SECONDS
from config.settings import Settings
from domain.ids import Prefix, new_id
from domain.timeutil import utcnow
from store.db import create_engine, session_factory
from store.models import Collaboration, IdempotencyKey, Message, Sandbox
from tests.conftest import Account, app_client, assert_error, new_account

pytestmark = pytest.mark.security

ROUTES = ["send", "broadcast", "orchestrate"]
CONCURRENT = 6


class GatedTemporal:
    """The API's Temporal client: every start_workflow (inbox signal-with-start, delivery or
    collaboration start) waits at the gate while it is closed, and is refused while `refuse`."""

    def __init__(self) -> None:
        self.started: list[dict[str, Any]] = []
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()
        self.gate.set()
        self.refuse = False

    async def start_workflow(self, *args: Any, **kwargs: Any) -> None:
        self.entered.set()
        await self.gate.wait()
        if self.refuse:
            raise RuntimeError("Temporal refused the start")
        self.started.append(kwargs)


@dataclass
class Env:
    client: httpx.AsyncClient
    temporal: GatedTemporal
    sessions: async_sessionmaker[AsyncSession]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def env(settings: Settings) -> AsyncIterator[Env]:
    app = create_app(settings)
    engine = create_engine(settings.resolved_database_url)
    try:
        async with app_client(app) as client:
            temporal = GatedTemporal()
            app.state.aintandem.temporal._client = temporal  # connected
            yield Env(client, temporal, session_factory(engine))
    finally:
        await engine.dispose()


@pytest.fixture
def temporal(env: Env) -> GatedTemporal:
    fresh = GatedTemporal()
    env.temporal.__dict__.update(fresh.__dict__)  # each test starts with an open gate
    return env.temporal


@dataclass
class Team:
    account: Account
    workspace_id: str
    a: str
    b: str


async def make_team(env: Env) -> Team:
    """An account, a workspace (REST) and two running sandboxes (store layer, no Docker)."""
    acc = await new_account(env.client)
    r = await env.client.post("/api/v1/workspaces", headers=acc.headers, json={"name": "idem"})
    assert r.status_code == 201, r.text
    wid = r.json()["data"]["workspace_id"]
    a, b = new_id(Prefix.SANDBOX), new_id(Prefix.SANDBOX)
    async with env.sessions() as s:
        for sid, name in ((a, "front"), (b, "back")):
            s.add(
                Sandbox(
                    id=sid,
                    workspace_id=wid,
                    name=name,
                    status="running",
                    agent_config={"primary_agent": {"name": f"{name}-lead", "role": "Engineer"}},
                )
            )
        await s.commit()
    return Team(acc, wid, a, b)


def poster(
    env: Env, team: Team, route: str, key: str
) -> Callable[[dict[str, Any] | None], Awaitable[httpx.Response]]:
    """POST the route's request (or `body` instead) with the Idempotency-Key."""
    headers = {**team.account.headers, "Idempotency-Key": key}
    path, default = {
        "send": (
            f"/api/v1/sandboxes/{team.a}/messages",
            {"to_sandbox": team.b, "message_type": "notification", "content": {"n": 1}},
        ),
        "broadcast": (
            f"/api/v1/workspaces/{team.workspace_id}/broadcast",
            {"from_sandbox": team.a, "content": {"n": 1}},
        ),
        "orchestrate": (
            f"/api/v1/workspaces/{team.workspace_id}/collaboration/orchestrate",
            {"task": "Build the login page", "participants": ["front", "back"]},
        ),
    }[route]

    async def post(body: dict[str, Any] | None = None) -> httpx.Response:
        return await env.client.post(path, headers=headers, json=default if body is None else body)

    return post


async def created(env: Env, team: Team, route: str) -> int:
    """How many things the route has created in the team's workspace."""
    async with env.sessions() as s:
        if route == "orchestrate":
            q = select(func.count()).where(Collaboration.workspace_id == team.workspace_id)
        else:
            q = select(func.count()).where(Message.workspace_id == team.workspace_id)
        return await s.scalar(q) or 0


def _another_body(route: str, team: Team) -> dict[str, Any]:
    return {
        "send": {"to_sandbox": team.b, "message_type": "notification", "content": {"n": 2}},
        "broadcast": {"from_sandbox": team.a, "content": {"n": 2}},
        "orchestrate": {"task": "Something else entirely", "participants": ["front", "back"]},
    }[route]


@pytest.mark.parametrize("route", ROUTES)
async def test_concurrent_requests_with_one_key_create_one_thing(
    env: Env, temporal: GatedTemporal, route: str
) -> None:
    team = await make_team(env)
    post = poster(env, team, route, f"concurrent-{uuid.uuid4().hex}")
    temporal.gate.clear()  # the first request to reach Temporal stays in flight there
    tasks = [asyncio.create_task(post(None)) for _ in range(CONCURRENT)]
    try:
        # Every other request must answer while the first is still in flight.
        async with asyncio.timeout(60):
            while sum(t.done() for t in tasks) < CONCURRENT - 1:
                await asyncio.wait(
                    [t for t in tasks if not t.done()], return_when=asyncio.FIRST_COMPLETED
                )
        assert temporal.entered.is_set()
    finally:
        temporal.gate.set()
    answers = await asyncio.gather(*tasks)

    accepted = [r for r in answers if r.status_code == 202]
    in_flight = [r for r in answers if r.status_code != 202]
    assert len(accepted) == 1, [(r.status_code, r.text) for r in answers]
    for r in in_flight:
        assert_error(r, 409, "RESOURCE_ALREADY_EXISTS")
        assert r.headers["retry-after"] == "1"
        assert r.json()["error"]["details"]["field"] == "Idempotency-Key"
    first = accepted[0].json()["data"]
    expected = 1 if route != "broadcast" else len(first["message_ids"])
    assert await created(env, team, route) == expected == 1
    assert len(temporal.started) == 1

    # Answered: a retry (same key, same request) replays the first answer, creating nothing.
    replayed = await post(None)
    assert replayed.status_code == 202, replayed.text
    assert replayed.json()["data"] == first
    assert await created(env, team, route) == 1 and len(temporal.started) == 1


@pytest.mark.parametrize("route", ROUTES)
async def test_a_key_reused_with_another_body_is_refused(
    env: Env, temporal: GatedTemporal, route: str
) -> None:
    team = await make_team(env)
    post = poster(env, team, route, f"reused-{uuid.uuid4().hex}")
    first = await post(None)
    assert first.status_code == 202, first.text

    other = await post(_another_body(route, team))
    body = assert_error(other, 422, "VALIDATION_ERROR")
    assert [f["field"] for f in body["error"]["details"]["fields"]] == ["Idempotency-Key"]
    assert await created(env, team, route) == 1 and len(temporal.started) == 1

    # The same request with its JSON spelt differently (key order, spacing) is the same body.
    sent = json.loads(first.request.content)
    respelt = json.dumps(dict(reversed(list(sent.items()))), indent=2)
    again = await env.client.post(
        first.request.url.path,
        headers={
            "Authorization": first.request.headers["authorization"],
            "Idempotency-Key": first.request.headers["idempotency-key"],
            "Content-Type": "application/json",
        },
        content=respelt,
    )
    assert again.status_code == 202, again.text
    assert again.json()["data"] == first.json()["data"]


@pytest.mark.parametrize("route", ROUTES)
async def test_a_refused_start_keeps_no_answer(
    env: Env, temporal: GatedTemporal, route: str
) -> None:
    """Temporal refuses: 503 and nothing stored under the key; the retry creates it for real."""
    team = await make_team(env)
    key = f"refused-{uuid.uuid4().hex}"
    post = poster(env, team, route, key)
    temporal.refuse = True
    assert_error(await post(None), 503, "SERVICE_UNAVAILABLE")
    async with env.sessions() as s:
        stored = await s.get(IdempotencyKey, (team.account.user_id, key))
    assert stored is None and await created(env, team, route) == 0

    temporal.refuse = False
    retried = await post(None)
    assert retried.status_code == 202, retried.text
    assert await created(env, team, route) == 1 and len(temporal.started) == 1
    if route == "orchestrate":
        cid = retried.json()["data"]["collaboration_id"]
        r = await env.client.get(f"/api/v1/collaborations/{cid}", headers=team.account.headers)
        assert r.status_code == 200, r.text


async def test_a_claim_whose_request_died_is_taken_over(env: Env, temporal: GatedTemporal) -> None:
    """A key left in flight (the API died mid-request) answers 409 for a while, then the next
    request with it runs instead of being refused forever."""
    team = await make_team(env)
    key = f"died-{uuid.uuid4().hex}"
    post = poster(env, team, "send", key)

    async def leave_claim(age_seconds: float) -> None:
        async with env.sessions() as s:
            await s.merge(
                IdempotencyKey(
                    user_id=team.account.user_id,
                    key=key,
                    route=f"send:{team.a}",
                    request_hash=None,
                    status_code=None,
                    body=None,
                    created_at=utcnow() - timedelta(seconds=age_seconds),
                )
            )
            await s.commit()

    await leave_claim(1)
    assert_error(await post(None), 409, "RESOURCE_ALREADY_EXISTS")
    assert await created(env, team, "send") == 0

    await leave_claim(IN_FLIGHT_EXPIRY_SECONDS + 60)
    taken = await post(None)
    assert taken.status_code == 202, taken.text
    assert await created(env, team, "send") == 1 and len(temporal.started) == 1
    assert (await post(None)).json()["data"] == taken.json()["data"]
