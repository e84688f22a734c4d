"""Security suites: an owner (user A) with one real object of every kind a route can name by id.

Objects the API can create without Temporal or Docker (the workspace) are created over REST;
the others (a sandbox, a message, a collaboration) are inserted through the store layer, exactly
as the worker's activities would write them — ownership is decided from these rows, so the
authorization checks under test see the same data as in production.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest_asyncio
from sqlalchemy import JSON, Boolean, DateTime, Float, Integer, String, Text, inspect, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import store.models as models
from config.settings import Settings
from domain.ids import Prefix, new_id
from domain.timeutil import utcnow
from store import events
from store.db import create_engine, session_factory
from store.models import Message, Sandbox, Workspace
from tests.conftest import Account, new_account

WS = "/api/v1/workspaces"


@dataclass
class Owned:
    """User A's objects, by path-parameter name, and the marker strings only A's data contains."""

    owner: Account
    ids: dict[str, str]
    markers: list[str] = field(default_factory=list)
    # How each object was made, for the report of a failing test.
    how: dict[str, str] = field(default_factory=dict)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def db(settings: Settings) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(settings.resolved_database_url)
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()


def _filler(column: Any, refs: dict[str, str], marker: str) -> Any:
    """A value for a NOT NULL column without a default, from its foreign key, name and type."""
    for fk in column.foreign_keys:
        if fk.column.table.name in refs:
            return refs[fk.column.table.name]
    kind = column.type
    if isinstance(kind, DateTime):
        return utcnow()
    if isinstance(kind, Boolean):
        return False
    if isinstance(kind, Integer | Float):
        return 0
    if isinstance(kind, JSON) or "JSON" in type(kind).__name__:
        return {}
    if isinstance(kind, String | Text):
        return marker[: getattr(kind, "length", None) or 64]
    raise AssertionError(f"security fixtures cannot fill column {column.table.name}.{column.name}")


def insert_row(model: type[Any], values: dict[str, Any], refs: dict[str, str], marker: str) -> Any:
    """An instance of `model`: `values` for the columns it has, every other required one filled
    (foreign keys from `refs`, by referred table)."""
    columns = {c.key: c for c in inspect(model).columns}
    kwargs = {k: v for k, v in values.items() if k in columns}
    for key, column in columns.items():
        if key in kwargs or column.nullable:
            continue
        if column.default is not None or column.server_default is not None:
            continue
        if column.primary_key and column.autoincrement is True:
            continue
        kwargs[key] = _filler(column, refs, marker)
    return model(**kwargs)


def collaboration_model() -> type[Any] | None:
    """The `collaborations` table's model, once the collaboration feature has added it."""
    for mapper in models.Base.registry.mappers:
        if mapper.local_table.name == "collaborations":
            return mapper.class_  # type: ignore[no-any-return]
    return None


async def make_owned(
    client: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession]
) -> Owned:
    tag = uuid.uuid4().hex[:8]
    owner = await new_account(client, "Owner A")
    markers = [f"a-secret-{tag}-{i}" for i in range(6)]
    r = await client.post(
        WS,
        headers=owner.headers,
        json={"name": f"ws-{markers[0]}", "description": markers[1]},
    )
    assert r.status_code == 201, r.text
    wid = r.json()["data"]["workspace_id"]
    sid, peer, mid, col = (
        new_id(Prefix.SANDBOX),
        new_id(Prefix.SANDBOX),
        new_id(Prefix.MESSAGE),
        new_id(Prefix.COLLABORATION),
    )
    how = {
        "workspace_id": "POST /workspaces",
        "sandbox_id": "sandboxes row (store layer)",
        "message_id": "messages row (store layer)",
    }
    async with sessions() as s:
        for sb_id, name in ((sid, "a-front"), (peer, "a-back")):
            s.add(
                Sandbox(
                    id=sb_id,
                    workspace_id=wid,
                    name=name,
                    status="stopped",
                    agent_config={"primary_agent": {"name": "lead", "role": markers[2]}},
                    environment_variables={"TOKEN": markers[3]},
                )
            )
        await s.flush()
        s.add(
            Message(
                id=mid,
                workspace_id=wid,
                from_sandbox_id=sid,
                to_sandbox_id=peer,
                message_type="request",
                content={"task": markers[4]},
                status="failed",
                status_reason="target stopped",
                created_at=utcnow(),
            )
        )
        model = collaboration_model()
        if model is not None:
            s.add(
                insert_row(
                    model,
                    {
                        "id": col,
                        "workspace_id": wid,
                        "owner_id": owner.user_id,
                        "user_id": owner.user_id,
                        "task": markers[5],
                        "status": "in_progress",
                        "mode": "orchestrated",
                        "orchestrator_sandbox_id": sid,
                        "orchestrator_agent": "lead",
                        "participants": [
                            {"sandbox_id": sid, "name": "a-front", "agent": "lead"},
                            {"sandbox_id": peer, "name": "a-back", "agent": "lead"},
                        ],
                        "timeout_seconds": 300,
                        "estimated_duration_seconds": 300,
                    },
                    {"users": owner.user_id, "workspaces": wid, "sandboxes": sid},
                    markers[5],
                )
            )
            how["collaboration_id"] = "collaborations row (store layer) + one event"
        else:
            # No collaborations table yet: a collaboration is known through its events (see
            # api/routers/ws.py, collaboration_owned), so one event in A's workspace makes it A's.
            how["collaboration_id"] = "an event with collaboration_id in A's workspace (no table)"
        events.append(
            s,
            channel="events",
            event="collaboration_started",
            data={"task": markers[5]},
            workspace_id=wid,
            collaboration_id=col,
        )
        await s.commit()
    return Owned(
        owner=owner,
        ids={
            "workspace_id": wid,
            "sandbox_id": sid,
            "message_id": mid,
            "collaboration_id": col,
        },
        markers=markers,
        how=how,
    )


async def snapshot(sessions: async_sessionmaker[AsyncSession], owned: Owned) -> dict[str, Any]:
    """A's rows, column by column: what another user's requests must leave untouched."""

    def cols(row: Any) -> dict[str, Any]:
        if row is None:
            return {}
        return {c.key: getattr(row, c.key) for c in inspect(type(row)).columns}

    out: dict[str, Any] = {}
    async with sessions() as s:
        out["workspace"] = cols(await s.get(Workspace, owned.ids["workspace_id"]))
        out["sandboxes"] = [
            cols(r)
            for r in await s.scalars(
                select(Sandbox)
                .where(Sandbox.workspace_id == owned.ids["workspace_id"])
                .order_by(Sandbox.id)
            )
        ]
        out["messages"] = [
            cols(r)
            for r in await s.scalars(
                select(Message)
                .where(Message.workspace_id == owned.ids["workspace_id"])
                .order_by(Message.id)
            )
        ]
        model = collaboration_model()
        if model is not None:
            out["collaboration"] = cols(await s.get(model, owned.ids["collaboration_id"]))
    return out


# A fresh, never-issued id of the same kind: the control every refusal is compared with.
FRESH: dict[str, Callable[[], str]] = {
    "workspace_id": lambda: new_id(Prefix.WORKSPACE),
    "sandbox_id": lambda: new_id(Prefix.SANDBOX),
    "message_id": lambda: new_id(Prefix.MESSAGE),
    "collaboration_id": lambda: new_id(Prefix.COLLABORATION),
}
