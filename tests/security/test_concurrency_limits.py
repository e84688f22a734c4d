"""Quotas and unique names hold under concurrent requests, on SQLite and PostgreSQL.

Many requests are in flight at once (asyncio.gather over the in-process ASGI app: every request
runs as its own task and they interleave at each database and Temporal await, each on its own
pooled connection), so a check-then-insert that is not atomic lets several requests pass the
check before any of them inserts. The answers must be exactly what a sequential client would
get: the limit's worth of 201s, then 409 RESOURCE_EXHAUSTED; one 201 per name, then 409
RESOURCE_ALREADY_EXISTS; never a 500.

Sandbox creates start their lifecycle workflow on a real Temporal dev server; no worker polls
this app's task queue (the lifecycle is not what is under test and no containers are wanted),
so each started workflow is checked in Temporal itself.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.app import create_app
from config.settings import Settings
from domain.ids import sandbox_workflow_id
from store.models import Sandbox, Workspace
from tests.conftest import (
    Account,
    app_client,
    assert_error,
    make_settings,
    new_account,
    temporal_address,
)

pytestmark = [pytest.mark.security, pytest.mark.temporal]

WS = "/api/v1/workspaces"
AGENT = {"primary_agent": {"name": "lead", "role": "Engineer"}}


@dataclass
class Api:
    client: httpx.AsyncClient
    settings: Settings
    temporal: Any  # the dev server's client, to look at the started workflows


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def api(
    database_url: str, tmp_path_factory: pytest.TempPathFactory, temporal_env: Any
) -> AsyncIterator[Api]:
    settings = make_settings(
        database_url,
        Path(tmp_path_factory.mktemp("quota")),
        temporal_address=temporal_address(temporal_env),
        task_queue=f"quota-{uuid.uuid4().hex[:8]}",  # nothing polls it: no containers
        max_sandboxes_per_workspace=50,
        max_workspaces=10,
    )
    async with app_client(create_app(settings)) as client:
        yield Api(client, settings, temporal_env.client)


async def _workspace(api: Api, acc: Account, **settings: Any) -> str:
    r = await api.client.post(
        WS, headers=acc.headers, json={"name": f"ws-{uuid.uuid4().hex[:6]}", "settings": settings}
    )
    assert r.status_code == 201, r.text
    return str(r.json()["data"]["workspace_id"])


def _create_sandbox(api: Api, acc: Account, wid: str, name: str) -> Any:
    return api.client.post(
        f"{WS}/{wid}/sandboxes", headers=acc.headers, json={"name": name, "agent_config": AGENT}
    )


async def _warm_pool(api: Api, acc: Account, wid: str) -> None:
    """Open the app's pooled connections first: requests that each wait for a new connection
    start their transactions staggered, which hides the race instead of exposing it."""
    responses = await asyncio.gather(
        *(api.client.get(f"{WS}/{wid}/sandboxes", headers=acc.headers) for _ in range(8))
    )
    assert {r.status_code for r in responses} == {200}


def _statuses(responses: list[httpx.Response]) -> Counter[int]:
    return Counter(r.status_code for r in responses)


async def _sandbox_rows(db: async_sessionmaker[AsyncSession], wid: str) -> list[Sandbox]:
    async with db() as s:
        return list(await s.scalars(select(Sandbox).where(Sandbox.workspace_id == wid)))


async def _assert_lifecycles_started(api: Api, sandbox_ids: list[str]) -> None:
    for sid in sandbox_ids:
        desc = await api.temporal.get_workflow_handle(sandbox_workflow_id(sid)).describe()
        assert desc.id == sandbox_workflow_id(sid)


@pytest.mark.parametrize("binding", ["workspace_setting", "edition_limit"])
async def test_concurrent_sandbox_creates_never_exceed_the_limit(
    api: Api, db: async_sessionmaker[AsyncSession], binding: str
) -> None:
    """8 creates at once in a workspace that allows 5: exactly five 201s and three 409s."""
    acc = await new_account(api.client)
    if binding == "workspace_setting":
        wid = await _workspace(api, acc, max_sandboxes=5)
        await _burst_into_a_workspace_of_five(api, db, acc, wid)
        return
    # The edition's per-workspace limit binds even when the workspace setting allows more.
    wid = await _workspace(api, acc, max_sandboxes=20)
    edition = api.settings.model_copy(update={"max_sandboxes_per_workspace": 5})
    async with app_client(create_app(edition)) as client:
        await _burst_into_a_workspace_of_five(Api(client, edition, api.temporal), db, acc, wid)


async def _burst_into_a_workspace_of_five(
    api: Api, db: async_sessionmaker[AsyncSession], acc: Account, wid: str
) -> None:
    await _warm_pool(api, acc, wid)
    responses = await asyncio.gather(
        *(_create_sandbox(api, acc, wid, f"team-{i}") for i in range(8))
    )
    assert _statuses(responses) == {201: 5, 409: 3}, [r.text for r in responses]
    for r in responses:
        if r.status_code == 409:
            body = assert_error(r, 409, "RESOURCE_EXHAUSTED")
            assert body["error"]["details"]["limit"] == 5
    rows = await _sandbox_rows(db, wid)
    created = sorted(r.json()["data"]["sandbox_id"] for r in responses if r.status_code == 201)
    assert sorted(sb.id for sb in rows) == created
    await _assert_lifecycles_started(api, created)
    # The workspace is full for a sequential client too.
    assert_error(await _create_sandbox(api, acc, wid, "one-more"), 409, "RESOURCE_EXHAUSTED")


async def test_concurrent_workspace_creates_never_exceed_the_limit(
    api: Api, db: async_sessionmaker[AsyncSession]
) -> None:
    """A user at 8 of 10 workspaces sends 16 creates at once: exactly 2 succeed."""
    acc = await new_account(api.client)
    for _ in range(8):
        await _workspace(api, acc)
    responses = await asyncio.gather(
        *(api.client.post(WS, headers=acc.headers, json={"name": f"burst-{i}"}) for i in range(16))
    )
    assert _statuses(responses) == {201: 2, 409: 14}, [r.text for r in responses]
    for r in responses:
        if r.status_code == 409:
            body = assert_error(r, 409, "RESOURCE_EXHAUSTED")
            assert body["error"]["details"]["limit"] == 10
    async with db() as s:
        owned = await s.scalar(
            select(func.count()).select_from(Workspace).where(Workspace.owner_id == acc.user_id)
        )
    assert owned == 10


async def test_concurrent_creates_of_one_name_give_one_sandbox(
    api: Api, db: async_sessionmaker[AsyncSession]
) -> None:
    """5 creates of the same name at once: one 201, four 409 RESOURCE_ALREADY_EXISTS (the
    answer a sequential duplicate gets), never a 500 from the unique constraint."""
    acc = await new_account(api.client)
    wid = await _workspace(api, acc, max_sandboxes=10)
    responses = await asyncio.gather(*(_create_sandbox(api, acc, wid, "twin") for _ in range(5)))
    assert _statuses(responses) == {201: 1, 409: 4}, [r.text for r in responses]
    for r in responses:
        if r.status_code == 409:
            body = assert_error(r, 409, "RESOURCE_ALREADY_EXISTS")
            assert body["error"]["details"] == {"field": "name"}
    rows = await _sandbox_rows(db, wid)
    assert [sb.name for sb in rows] == ["twin"]
    await _assert_lifecycles_started(api, [rows[0].id])
    # The workspace is not left locked or broken: another name still works.
    assert (await _create_sandbox(api, acc, wid, "twin-2")).status_code == 201


async def test_a_refused_lifecycle_start_gives_its_quota_slot_back(
    api: Api, db: async_sessionmaker[AsyncSession]
) -> None:
    """The row is written (taking its slot), then the workflow started; when Temporal refuses
    the start (here for real: the namespace does not exist there) the row is undone and its slot
    is free again."""
    acc = await new_account(api.client)
    wid = await _workspace(api, acc, max_sandboxes=2)
    refusing = api.settings.model_copy(update={"temporal_namespace": "aintandem-missing-ns"})
    async with app_client(create_app(refusing)) as client:
        broken = Api(client, refusing, api.temporal)
        responses = await asyncio.gather(
            *(_create_sandbox(broken, acc, wid, f"refused-{i}") for i in range(4))
        )
    # A pending start holds its slot (a create meanwhile may find the workspace full: 409);
    # the others are refused by Temporal (503). None of them leaves a sandbox behind.
    assert any(r.status_code == 503 for r in responses), [r.text for r in responses]
    for r in responses:
        if r.status_code == 503:
            assert_error(r, 503, "SERVICE_UNAVAILABLE")
        else:
            assert_error(r, 409, "RESOURCE_EXHAUSTED")
    assert await _sandbox_rows(db, wid) == []
    responses = await asyncio.gather(*(_create_sandbox(api, acc, wid, f"ok-{i}") for i in range(3)))
    assert _statuses(responses) == {201: 2, 409: 1}, [r.text for r in responses]
