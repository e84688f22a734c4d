"""Workspaces: CRUD, pagination/sort/search, ownership isolation, limits, cascades."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import select

from api.app import create_app
from config.settings import Settings
from store.db import create_engine, session_factory
from store.models import Sandbox
from tests.conftest import Account, app_client, assert_error, make_settings, new_account

WS = "/api/v1/workspaces"


async def _create(client: httpx.AsyncClient, acc: Account, **body: object) -> dict[str, object]:
    r = await client.post(WS, json={"name": "ws", **body}, headers=acc.headers)
    assert r.status_code == 201, r.text
    return r.json()["data"]


async def test_create_get_update_delete(client: httpx.AsyncClient, account: Account) -> None:
    created = await _create(
        client,
        account,
        name="E-commerce Development",
        description="AI agents for e-commerce platform",
        settings={
            "max_sandboxes": 4,
            "default_llm_provider": "claude",
            "collaboration_policy": "allow_list",
        },
    )
    wid = created["workspace_id"]
    assert str(wid).startswith("ws_") and created["owner_id"] == account.user_id
    assert created["settings"]["max_sandboxes"] == 4
    assert created["settings"]["collaboration_policy"] == "allow_list"
    assert created["settings"]["resource_defaults"] == {
        "memory_mb": 512,
        "cpu_cores": 1.0,
        "timeout_seconds": 300,
    }

    r = await client.get(f"{WS}/{wid}", headers=account.headers)
    detail = r.json()["data"]
    assert detail["sandbox_count"] == 0 and detail["sandboxes"] == []

    r = await client.put(
        f"{WS}/{wid}",
        headers=account.headers,
        json={
            "name": "Renamed",
            "settings": {"max_sandboxes": 5, "resource_defaults": {"memory_mb": 1024}},
        },
    )
    assert r.status_code == 200, r.text
    updated = r.json()["data"]
    # Partial merge: untouched settings keep their values.
    assert (
        updated["name"] == "Renamed"
        and updated["description"] == "AI agents for e-commerce platform"
    )
    assert updated["settings"]["max_sandboxes"] == 5
    assert updated["settings"]["default_llm_provider"] == "claude"
    assert updated["settings"]["resource_defaults"] == {
        "memory_mb": 1024,
        "cpu_cores": 1.0,
        "timeout_seconds": 300,
    }
    assert updated["updated_at"] >= created["updated_at"]

    r = await client.delete(f"{WS}/{wid}", headers=account.headers)
    assert r.status_code == 204 and r.content == b""
    assert_error(
        await client.get(f"{WS}/{wid}", headers=account.headers), 404, "RESOURCE_NOT_FOUND"
    )


async def test_pagination_sort_and_search(client: httpx.AsyncClient) -> None:
    acc = await new_account(client)
    for name in ["alpha", "bravo", "charlie", "delta", "echo"]:
        await _create(client, acc, name=name, description=f"team {name}")
    r = await client.get(
        WS, params={"per_page": 2, "page": 2, "sort": "name", "order": "asc"}, headers=acc.headers
    )
    body = r.json()
    assert [w["name"] for w in body["data"]] == ["charlie", "delta"]
    meta = body["meta"]
    assert (meta["total"], meta["page"], meta["per_page"], meta["total_pages"]) == (5, 2, 2, 3)
    assert meta["has_next"] is True and meta["has_prev"] is True

    r = await client.get(
        WS, params={"per_page": 2, "page": 3, "sort": "name", "order": "asc"}, headers=acc.headers
    )
    assert [w["name"] for w in r.json()["data"]] == ["echo"] and r.json()["meta"][
        "has_next"
    ] is False

    r = await client.get(WS, headers=acc.headers)  # default: newest first
    assert [w["name"] for w in r.json()["data"]] == ["echo", "delta", "charlie", "bravo", "alpha"]

    r = await client.get(WS, params={"search": "RAV"}, headers=acc.headers)
    assert [w["name"] for w in r.json()["data"]] == ["bravo"]
    r = await client.get(
        WS, params={"search": "%"}, headers=acc.headers
    )  # LIKE wildcards are literal
    assert r.json()["data"] == [] and r.json()["meta"]["total"] == 0


@pytest.mark.parametrize(
    "params",
    [
        {"per_page": 101},
        {"per_page": 0},
        {"page": 0},
        {"page": "x"},
        {"order": "sideways"},
        {"sort": "password_hash"},
        {"search": "s" * 101},
    ],
)
async def test_bad_list_parameters_are_422(
    client: httpx.AsyncClient, account: Account, params: dict[str, object]
) -> None:
    assert_error(
        await client.get(WS, params=params, headers=account.headers), 422, "VALIDATION_ERROR"
    )


async def test_other_users_workspaces_are_not_found(
    client: httpx.AsyncClient, account: Account, other_account: Account
) -> None:
    wid = (await _create(client, account))["workspace_id"]
    h = other_account.headers
    for method, path, body in [
        ("GET", f"{WS}/{wid}", None),
        ("PUT", f"{WS}/{wid}", {"name": "pwned"}),
        ("DELETE", f"{WS}/{wid}", None),
        ("GET", f"{WS}/{wid}/config", None),
        ("PUT", f"{WS}/{wid}/config", {"settings": {"max_sandboxes": 1}}),
    ]:
        r = await client.request(method, path, json=body, headers=h)
        assert_error(r, 404, "RESOURCE_NOT_FOUND")
    listed = (await client.get(WS, headers=h)).json()["data"]
    assert wid not in [w["workspace_id"] for w in listed]
    still = await client.get(f"{WS}/{wid}", headers=account.headers)
    assert still.json()["data"]["name"] == "ws"


@pytest.mark.parametrize("wid", ["ws_short", "1", "ws_ABCDEFGHIJ", "ws_abcdefghij'--", "%00"])
async def test_malformed_ids_are_404(client: httpx.AsyncClient, account: Account, wid: str) -> None:
    assert_error(
        await client.get(f"{WS}/{wid}", headers=account.headers), 404, "RESOURCE_NOT_FOUND"
    )


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"name": ""},
        {"name": "x" * 101},
        {"name": "ok", "description": "d" * 501},
        {"name": "ok", "owner_id": "usr_aaaaaaaaaa"},
        {"name": "ok", "settings": {"max_sandboxes": 0}},
        {"name": "ok", "settings": {"max_sandboxes": 1001}},
        {"name": "ok", "settings": {"default_llm_provider": "gemini"}},
        {"name": "ok", "settings": {"collaboration_policy": "anything"}},
        {"name": "ok", "settings": {"resource_defaults": {"memory_mb": 64}}},
        {"name": "ok", "settings": {"unknown": 1}},
        {"name": "nul\x00"},
        {"name": ["list"]},
    ],
)
async def test_create_rejects_bad_input(
    client: httpx.AsyncClient, account: Account, body: dict[str, object]
) -> None:
    assert_error(await client.post(WS, json=body, headers=account.headers), 422, "VALIDATION_ERROR")


async def test_workspace_limit_is_enforced(database_url: str, data_dir: object) -> None:
    from pathlib import Path

    app = create_app(make_settings(database_url, Path(str(data_dir)), max_workspaces=2))
    async with app_client(app) as c:
        acc = await new_account(c)
        for _ in range(2):
            await _create(c, acc)
        body = assert_error(
            await c.post(WS, json={"name": "third"}, headers=acc.headers), 409, "RESOURCE_EXHAUSTED"
        )
        assert body["error"]["details"]["limit"] == 2
        # The limit is per user.
        other = await new_account(c)
        await _create(c, other)


async def test_delete_is_refused_whole_when_temporal_is_down(
    client: httpx.AsyncClient, account: Account, settings: Settings
) -> None:
    """Containers are removed through their workflows first: with Temporal unreachable the
    delete fails with 503 and nothing is deleted (no orphaned container, no partial write)."""
    wid = str((await _create(client, account))["workspace_id"])
    engine = create_engine(settings.resolved_database_url)
    sessions = session_factory(engine)
    async with sessions() as s:
        s.add(Sandbox(id="sb_cascade001", workspace_id=wid, name="one"))
        await s.commit()
    detail = (await client.get(f"{WS}/{wid}", headers=account.headers)).json()["data"]
    assert detail["sandbox_count"] == 1 and detail["sandboxes"][0]["sandbox_id"] == "sb_cascade001"
    listed = (await client.get(WS, headers=account.headers)).json()["data"]
    assert next(w for w in listed if w["workspace_id"] == wid)["sandbox_count"] == 1

    assert_error(
        await client.delete(f"{WS}/{wid}", headers=account.headers), 503, "SERVICE_UNAVAILABLE"
    )
    async with sessions() as s:
        assert (await s.scalar(select(Sandbox).where(Sandbox.id == "sb_cascade001"))) is not None
    assert (await client.get(f"{WS}/{wid}", headers=account.headers)).status_code == 200
    await engine.dispose()
