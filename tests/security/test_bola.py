"""Broken object-level authorization: a matrix generated from the app's route table.

User A owns one real object of every kind a path can name (workspace, sandbox, message,
collaboration; see conftest.make_owned). User B — authenticated, with objects of their own —
calls every method of every HTTP route that has a path parameter, with A's ids and a valid body,
and connects to every WebSocket route with A's ids. Every answer must be the one a never-issued
id gets: 404 RESOURCE_NOT_FOUND (WebSocket: closed 1008), with none of A's data, and A's rows
unchanged afterwards. A route whose path parameter the matrix cannot fill fails the suite, so
coverage cannot silently drop when routes are added (the collaboration routes are picked up by
the same walk as soon as they are registered).
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from api.app import create_app
from config.settings import Settings
from domain.ids import Prefix, new_id
from store.models import Message, Sandbox
from tests.conftest import Account, make_settings, new_account
from tests.security.conftest import FRESH, Owned, make_owned, snapshot
from tests.security.routes import RouteInfo, Sampler, routes

pytestmark = pytest.mark.security

POLICY_VIOLATION = 1008
# Id-less WebSocket routes: each must be listed here with who may use it.
ADMIN_ONLY_WEBSOCKETS = {"/ws/system"}
_ID = re.compile(r"\b(?:usr|ws|sb|msg|col|bc|ses)_[a-z0-9]{10}\b")


def _app() -> Any:
    return create_app(make_settings("sqlite+aiosqlite:///:memory:", Path("/nonexistent")))


def _id_routes(kind: str) -> list[RouteInfo]:
    return [r for r in routes(_app()) if r.kind == kind and r.params]


def test_the_matrix_can_fill_every_path_parameter() -> None:
    """A new route with a path parameter the matrix has no owned object for fails here."""
    table = routes(_app())
    unfillable = sorted(f"{r} needs {p!r}" for r in table for p in r.params if p not in FRESH)
    assert not unfillable, (
        "routes with path parameters the BOLA matrix cannot fill (add the object kind to "
        f"tests/security/conftest.py make_owned and FRESH): {unfillable}"
    )
    http = [r for r in table if r.kind == "http" and r.params]
    ws = [r for r in table if r.kind == "websocket"]
    # The walk itself must keep seeing the app's routes (FastAPI's route table has changed shape
    # before): the core id routes must be in it.
    paths = {r.path for r in http}
    for core in (
        "/api/v1/workspaces/{workspace_id}",
        "/api/v1/sandboxes/{sandbox_id}",
        "/api/v1/messages/{message_id}",
    ):
        assert core in paths, f"{core} missing from the route walk: {sorted(paths)}"
    assert sum(len(r.methods) for r in http) >= 25
    assert {r.path for r in ws if r.params} >= {
        "/ws/sandboxes/{sandbox_id}",
        "/ws/collaborations/{collaboration_id}",
    }
    unlisted = sorted(r.path for r in ws if not r.params and r.path not in ADMIN_ONLY_WEBSOCKETS)
    assert not unlisted, f"WebSocket routes without an id must be classified: {unlisted}"


def _normalised(body: dict[str, Any]) -> dict[str, Any]:
    """The error without request-specific parts (request id, timestamp, the id asked for)."""
    error = json.loads(_ID.sub("<id>", json.dumps(body.get("error"))))
    return {"success": body.get("success"), "error": error}


def _leaks(text: str, owned: Owned, asked: set[str]) -> list[str]:
    secrets = [m for m in owned.markers if m in text]
    others = [i for i in owned.ids.values() if i not in asked and i in text]
    return secrets + others


async def _objects_of(client: httpx.AsyncClient, acc: Account) -> str:
    r = await client.post(
        "/api/v1/workspaces", headers=acc.headers, json={"name": "b-own-workspace"}
    )
    assert r.status_code == 201, r.text
    return str(r.json()["data"]["workspace_id"])


async def test_another_user_gets_404_on_every_id_route_and_method(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession]
) -> None:
    owned = await make_owned(client, db)
    intruder = await new_account(client, "Intruder B")
    await _objects_of(client, intruder)
    before = await snapshot(db, owned)
    app = _app()
    sampler = Sampler(app.openapi())

    checked: list[str] = []
    failures: list[str] = []
    for route in _id_routes("http"):
        for method in route.methods:
            schema, _ = sampler.request_schema(route.path, method)
            kwargs: dict[str, Any] = {
                "headers": intruder.headers,
                "params": sampler.required_query(route.path, method),
            }
            if schema is not None:
                kwargs["json"] = sampler.sample(schema)
            asked = {owned.ids[p] for p in route.params}
            r = await client.request(method, route.fill(owned.ids), **kwargs)
            fresh = {p: FRESH[p]() for p in route.params}
            control = await client.request(method, route.fill(fresh), **kwargs)
            label = f"{method} {route.path}"
            checked.append(label)
            if r.status_code != 404:
                failures.append(f"{label}: {r.status_code} {r.text[:300]}")
                continue
            body = r.json()
            if body.get("success") is not False or body["error"]["code"] != "RESOURCE_NOT_FOUND":
                failures.append(f"{label}: not the error envelope: {r.text[:300]}")
            if leaked := _leaks(r.text, owned, asked):
                failures.append(f"{label}: response carries A's data {leaked}")
            if control.status_code != 404 or _normalised(body) != _normalised(control.json()):
                failures.append(
                    f"{label}: A's id is distinguishable from an unknown one: "
                    f"{r.text[:200]} vs {control.status_code} {control.text[:200]}"
                )
    assert not failures, "\n".join(failures)
    assert len(checked) >= 25, checked
    assert await snapshot(db, owned) == before, "another user's requests changed A's rows"

    # And A still sees everything (the ids were real, the matrix was not testing ghosts).
    for path in (
        f"/api/v1/workspaces/{owned.ids['workspace_id']}",
        f"/api/v1/sandboxes/{owned.ids['sandbox_id']}",
        f"/api/v1/messages/{owned.ids['message_id']}",
    ):
        r = await client.get(path, headers=owned.owner.headers)
        assert r.status_code == 200, (path, r.text)


def _ws_close(app: Any, url: str) -> tuple[int, str]:
    """Connect, read until the server closes; its close code and reason."""
    with TestClient(app) as tc, tc.websocket_connect(url) as ws:
        try:
            while True:
                ws.receive_text()
        except WebSocketDisconnect as exc:
            return exc.code, str(exc.reason)


async def test_another_user_is_refused_on_every_websocket_route(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    owned = await make_owned(client, db)
    intruder = await new_account(client, "Intruder B")
    app = create_app(settings)
    results: list[tuple[str, tuple[int, str], tuple[int, str]]] = []
    for route in _id_routes("websocket"):
        fresh = {p: FRESH[p]() for p in route.params}
        token = f"?token={intruder.access_token}"
        got = await asyncio.to_thread(_ws_close, app, route.fill(owned.ids) + token)
        control = await asyncio.to_thread(_ws_close, app, route.fill(fresh) + token)
        results.append((route.path, got, control))
    failures = [
        f"{path}: {got} (unknown id: {control})"
        for path, got, control in results
        if got[0] != POLICY_VIOLATION or got != control or _leaks(got[1], owned, set())
    ]
    assert not failures, failures
    assert len(results) >= 2
    # The owner is let in on the same ids: the refusals above were about B, not broken fixtures.
    for route in _id_routes("websocket"):
        url = route.fill(owned.ids) + f"?token={owned.owner.access_token}"
        hello = await asyncio.to_thread(_ws_first_frame, app, url)
        assert hello["event"] == "connected", (route.path, hello)


def _ws_first_frame(app: Any, url: str) -> dict[str, Any]:
    with TestClient(app) as tc, tc.websocket_connect(url) as ws:
        return dict(ws.receive_json())


async def test_admin_only_websockets_refuse_a_normal_user(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    user = await new_account(client)
    app = create_app(settings)
    for path in sorted(ADMIN_ONLY_WEBSOCKETS):
        got = await asyncio.to_thread(_ws_close, app, f"{path}?token={user.access_token}")
        assert got == (POLICY_VIOLATION, "admin only"), (path, got)


async def test_ids_of_another_user_inside_bodies_and_queries_are_not_found(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession]
) -> None:
    """B names A's sandboxes from B's own workspace: as a message target, a broadcast sender, a
    discovery filter, a collaboration participant. Nothing crosses the tenant boundary."""
    owned = await make_owned(client, db)
    intruder = await new_account(client, "Intruder B")
    b_ws = await _objects_of(client, intruder)
    b_sb = new_id(Prefix.SANDBOX)
    async with db() as s:
        s.add(Sandbox(id=b_sb, workspace_id=b_ws, name="b-sandbox", status="running"))
        await s.commit()
    a_sb, a_peer = owned.ids["sandbox_id"], None
    async with db() as s:
        a_peer = await s.scalar(
            select(Sandbox.id).where(
                Sandbox.workspace_id == owned.ids["workspace_id"], Sandbox.id != a_sb
            )
        )
    h = intruder.headers

    r = await client.post(
        f"/api/v1/sandboxes/{b_sb}/messages",
        headers=h,
        json={"to_sandbox": a_sb, "content": {"x": 1}},
    )
    assert r.status_code == 404 and r.json()["error"]["code"] == "RESOURCE_NOT_FOUND", r.text
    r = await client.post(
        f"/api/v1/workspaces/{b_ws}/broadcast",
        headers=h,
        json={"from_sandbox": a_sb, "content": {"x": 1}},
    )
    assert r.status_code == 404 and r.json()["error"]["code"] == "RESOURCE_NOT_FOUND", r.text
    r = await client.get(
        f"/api/v1/workspaces/{b_ws}/agents/discover", headers=h, params={"sandbox_id": a_sb}
    )
    assert r.status_code == 200 and r.json()["data"]["agents"] == [], r.text
    assert not _leaks(r.text, owned, set())
    async with db() as s:
        assert not list(await s.scalars(select(Message).where(Message.workspace_id == b_ws)))

    doc = _app().openapi()
    orchestrate = "/api/v1/workspaces/{workspace_id}/collaboration/orchestrate"
    if orchestrate in doc["paths"]:
        body = Sampler(doc).sample(
            doc["paths"][orchestrate]["post"]["requestBody"]["content"]["application/json"][
                "schema"
            ]
        )
        body["participants"] = [a_sb, a_peer]
        r = await client.post(orchestrate.format(workspace_id=b_ws), headers=h, json=body)
        assert r.status_code in (404, 422), r.text
        assert not _leaks(r.text, owned, {a_sb, a_peer})
