"""The operators' lists (issue 14, item 5): every message of a workspace with status, sandbox
and time filters (and `status` on the per-sandbox list), a workspace's collaborations; both
owner-scoped (another user's workspace is a 404) and strict about their filters (422).

Rows are written straight into the database (no Temporal here): the lists only read."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from config.settings import Settings
from store.db import create_engine, session_factory
from store.models import Collaboration, Message, Sandbox
from tests.conftest import Account, assert_error

API = "/api/v1"
T0 = datetime(2025, 1, 10, 15, 0, tzinfo=UTC)


@pytest_asyncio.fixture(loop_scope="session")
async def sessions(settings: Settings) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(settings.resolved_database_url)
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


@dataclass
class World:
    wid: str
    a: str  # sandbox ids
    b: str
    c: str
    msgs: dict[str, str]  # label -> message id
    cols: dict[str, str]  # label -> collaboration id


async def _workspace(client: httpx.AsyncClient, acc: Account, name: str = "ops") -> str:
    r = await client.post(f"{API}/workspaces", headers=acc.headers, json={"name": name})
    assert r.status_code == 201, r.text
    return str(r.json()["data"]["workspace_id"])


@pytest_asyncio.fixture(loop_scope="session")
async def world(
    client: httpx.AsyncClient, account: Account, sessions: async_sessionmaker[AsyncSession]
) -> World:
    """Three sandboxes, five messages a minute apart, three collaborations."""
    wid = await _workspace(client, account)
    a, b, c = _id("sb"), _id("sb"), _id("sb")
    rows: list[Any] = [
        Sandbox(id=a, workspace_id=wid, name="alpha", status="running"),
        Sandbox(id=b, workspace_id=wid, name="beta", status="running"),
        Sandbox(id=c, workspace_id=wid, name="gamma", status="running"),
    ]
    spec = [  # label, from, to, status, minutes after T0
        ("ab_delivered", a, b, "delivered", 0),
        ("ab_failed", a, b, "failed", 1),
        ("bc_timeout", b, c, "timeout", 2),
        ("cb_queued", c, b, "queued", 3),
        ("ca_failed", c, a, "failed", 4),
    ]
    msgs = {}
    for label, frm, to, status, minutes in spec:
        mid = _id("msg")
        msgs[label] = mid
        rows.append(
            Message(
                id=mid,
                workspace_id=wid,
                from_sandbox_id=frm,
                to_sandbox_id=to,
                message_type="request",
                content={"label": label},
                status=status,
                created_at=T0 + timedelta(minutes=minutes),
            )
        )
    cols = {}
    for i, (label, status) in enumerate(
        [("done", "completed"), ("broken", "failed"), ("running", "in_progress")]
    ):
        cid = _id("col")
        cols[label] = cid
        rows.append(
            Collaboration(
                id=cid,
                workspace_id=wid,
                task=f"task {label}",
                mode="orchestrated",
                orchestrator_sandbox_id=a,
                orchestrator_agent="alpha",
                participants=[
                    {"sandbox_id": a, "name": "alpha", "agent": "alpha"},
                    {"sandbox_id": b, "name": "beta", "agent": "beta"},
                ],
                timeout_seconds=300,
                estimated_duration_seconds=60,
                status=status,
                progress={"percentage": 100 if status == "completed" else 40},
                result={"plan_source": "fallback", "warnings": ["echoed output"]}
                if label == "done"
                else None,
                error={"code": "COLLABORATION_FAILED", "message": "timed out"}
                if label == "broken"
                else None,
                created_at=T0 + timedelta(minutes=i),
            )
        )
    async with sessions() as s:
        s.add_all(rows[:3])
        await s.flush()
        s.add_all(rows[3:])
        await s.commit()
    return World(wid, a, b, c, msgs, cols)


def _ids(r: httpx.Response) -> list[str]:
    assert r.status_code == 200, r.text
    return [m["message_id"] for m in r.json()["data"]["messages"]]


# -- GET /workspaces/{id}/messages ------------------------------------------------------------


async def test_workspace_messages_all_newest_first(
    client: httpx.AsyncClient, account: Account, world: World
) -> None:
    r = await client.get(f"{API}/workspaces/{world.wid}/messages", headers=account.headers)
    m = world.msgs
    order = ["ca_failed", "cb_queued", "bc_timeout", "ab_failed", "ab_delivered"]
    assert _ids(r) == [m[k] for k in order]
    body = r.json()
    assert body["success"] is True and body["meta"]["request_id"]
    meta = body["data"]["meta"]
    assert meta["total"] == 5 and meta["returned"] == 5
    assert meta["status"] is None and meta["sandbox_id"] is None and meta["since"] is None
    first = body["data"]["messages"][0]  # the spec's message shape
    assert {"message_id", "from_sandbox", "to_sandbox", "message_type", "content", "status"} <= (
        set(first)
    )
    assert first["content"] == {"label": "ca_failed"} and first["timestamp"].endswith("Z")


async def test_workspace_messages_filters(
    client: httpx.AsyncClient, account: Account, world: World
) -> None:
    url, h, m = f"{API}/workspaces/{world.wid}/messages", account.headers, world.msgs
    failed = await client.get(url, headers=h, params={"status": "failed"})
    assert _ids(failed) == [m["ca_failed"], m["ab_failed"]]
    assert failed.json()["data"]["meta"]["status"] == ["failed"]
    # Repeatable: every retryable delivery at once.
    retryable = await client.get(
        url, headers=h, params=[("status", "failed"), ("status", "timeout")]
    )
    assert _ids(retryable) == [m["ca_failed"], m["bc_timeout"], m["ab_failed"]]
    # Either end of the message.
    by_c = await client.get(url, headers=h, params={"sandbox_id": world.c})
    assert _ids(by_c) == [m["ca_failed"], m["cb_queued"], m["bc_timeout"]]
    assert by_c.json()["data"]["meta"]["sandbox_id"] == world.c
    both = await client.get(url, headers=h, params={"sandbox_id": world.a, "status": "failed"})
    assert _ids(both) == [m["ca_failed"], m["ab_failed"]]
    since = await client.get(url, headers=h, params={"since": "2025-01-10T15:02:00Z"})
    assert _ids(since) == [m["ca_failed"], m["cb_queued"], m["bc_timeout"]]
    assert since.json()["data"]["meta"]["since"] == "2025-01-10T15:02:00Z"
    # limit keeps the newest; total still counts every match.
    limited = await client.get(url, headers=h, params={"limit": 2})
    assert _ids(limited) == [m["ca_failed"], m["cb_queued"]]
    assert limited.json()["data"]["meta"]["total"] == 5
    # A well-formed id that is in no message of this workspace: nothing, not an error.
    assert _ids(await client.get(url, headers=h, params={"sandbox_id": "sb_zzzzzzzzzz"})) == []


@pytest.mark.parametrize(
    "params",
    [
        {"status": "broken"},
        {"status": ""},
        {"sandbox_id": "alpha"},
        {"sandbox_id": "sb_' OR 1=1 --"},
        {"since": "yesterday"},
        {"limit": 0},
        {"limit": 1001},
    ],
)
async def test_workspace_messages_bad_filters_are_422(
    client: httpx.AsyncClient, account: Account, world: World, params: dict[str, Any]
) -> None:
    r = await client.get(
        f"{API}/workspaces/{world.wid}/messages", headers=account.headers, params=params
    )
    body = assert_error(r, 422, "VALIDATION_ERROR")
    fields = {f["field"].split(".")[0] for f in body["error"]["details"]["fields"]}
    assert fields == set(params)  # (a repeatable filter names the bad item: status.0)


async def test_workspace_lists_are_owner_scoped(
    client: httpx.AsyncClient, account: Account, other_account: Account, world: World
) -> None:
    """BOLA: another user's workspace is not found (404), whatever the filters; without a
    token it is a 401."""
    for path in ("messages", "collaborations"):
        url = f"{API}/workspaces/{world.wid}/{path}"
        assert_error(
            await client.get(url, headers=other_account.headers), 404, "RESOURCE_NOT_FOUND"
        )
        assert_error(
            await client.get(url, headers=other_account.headers, params={"status": "failed"}),
            404,
            "RESOURCE_NOT_FOUND",
        )
        assert_error(await client.get(url), 401, "AUTHENTICATION_FAILED")
    # The other user's own workspace filtered by our sandbox shows none of our messages.
    theirs = await _workspace(client, other_account, "theirs")
    r = await client.get(
        f"{API}/workspaces/{theirs}/messages",
        headers=other_account.headers,
        params={"sandbox_id": world.a},
    )
    assert _ids(r) == []
    r = await client.get(f"{API}/workspaces/{theirs}/collaborations", headers=other_account.headers)
    assert r.status_code == 200 and r.json()["data"] == []
    # A malformed workspace id is a 404 too (as on the other workspace routes).
    assert_error(
        await client.get(f"{API}/workspaces/nope/messages", headers=account.headers),
        404,
        "RESOURCE_NOT_FOUND",
    )


# -- status on GET /sandboxes/{id}/messages ---------------------------------------------------


async def test_sandbox_messages_status_filter(
    client: httpx.AsyncClient, account: Account, world: World
) -> None:
    url, h, m = f"{API}/sandboxes/{world.b}/messages", account.headers, world.msgs
    assert _ids(await client.get(url, headers=h, params={"status": "failed"})) == [m["ab_failed"]]
    sent = await client.get(url, headers=h, params={"status": "timeout", "direction": "sent"})
    assert _ids(sent) == [m["bc_timeout"]]
    assert sent.json()["data"]["meta"]["status"] == ["timeout"]
    assert len(_ids(await client.get(url, headers=h))) == 4  # unfiltered as before
    assert_error(
        await client.get(url, headers=h, params={"status": "lost"}), 422, "VALIDATION_ERROR"
    )


# -- GET /workspaces/{id}/collaborations ------------------------------------------------------


async def test_workspace_collaborations(
    client: httpx.AsyncClient, account: Account, world: World
) -> None:
    url, h, c = f"{API}/workspaces/{world.wid}/collaborations", account.headers, world.cols
    r = await client.get(url, headers=h)
    assert r.status_code == 200, r.text
    body = r.json()
    assert [x["collaboration_id"] for x in body["data"]] == [c["running"], c["broken"], c["done"]]
    assert body["meta"] | {"request_id": None, "timestamp": None, "version": None} == {
        "request_id": None,
        "timestamp": None,
        "version": None,
        "total": 3,
        "page": 1,
        "per_page": 20,
        "total_pages": 1,
        "has_next": False,
        "has_prev": False,
    }
    done = next(x for x in body["data"] if x["collaboration_id"] == c["done"])
    assert done["status"] == "completed" and done["percentage"] == 100
    assert done["plan_source"] == "fallback" and done["warnings"] == ["echoed output"]
    assert done["participants"] == [world.a, world.b] and done["task"] == "task done"
    broken = next(x for x in body["data"] if x["collaboration_id"] == c["broken"])
    assert broken["error"] == {"code": "COLLABORATION_FAILED", "message": "timed out"}

    failed = await client.get(url, headers=h, params={"status": "failed"})
    assert [x["collaboration_id"] for x in failed.json()["data"]] == [c["broken"]]
    two = await client.get(url, headers=h, params=[("status", "failed"), ("status", "completed")])
    assert {x["collaboration_id"] for x in two.json()["data"]} == {c["broken"], c["done"]}
    # The spec's pagination.
    p2 = await client.get(url, headers=h, params={"per_page": 1, "page": 2, "order": "asc"})
    assert [x["collaboration_id"] for x in p2.json()["data"]] == [c["broken"]]
    assert p2.json()["meta"]["has_next"] and p2.json()["meta"]["has_prev"]
    found = await client.get(url, headers=h, params={"search": "BROK"})
    assert [x["collaboration_id"] for x in found.json()["data"]] == [c["broken"]]


@pytest.mark.parametrize(
    "params",
    [{"status": "done"}, {"sort": "task"}, {"per_page": 0}, {"page": 0}, {"order": "up"}],
)
async def test_workspace_collaborations_bad_input_is_422(
    client: httpx.AsyncClient, account: Account, world: World, params: dict[str, Any]
) -> None:
    r = await client.get(
        f"{API}/workspaces/{world.wid}/collaborations", headers=account.headers, params=params
    )
    assert_error(r, 422, "VALIDATION_ERROR")


async def test_the_new_routes_are_typed_in_openapi(client: httpx.AsyncClient) -> None:
    doc = (await client.get(f"{API}/openapi.json")).json()
    ops = {
        op["operationId"]: op
        for item in doc["paths"].values()
        for op in item.values()
        if isinstance(op, dict) and "operationId" in op
    }
    for name in ("messages_list_workspace", "collaborations_list"):
        schema = ops[name]["responses"]["200"]["content"]["application/json"]["schema"]
        assert "$ref" in schema, f"{name} has no typed response model"
