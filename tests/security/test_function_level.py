"""Function-level checks: mass assignment, write-only secrets, rate-limit keys.

Covered elsewhere and not repeated here: JWT forgery (alg none, wrong key/aud/iss, expiry, type
confusion) and refresh-token rotation — reuse revokes the whole family, logout revokes the
session — in tests/api/test_auth.py (test_jwt_attacks_are_refused,
test_refresh_rotates_and_reuse_revokes_the_family, test_logout_revokes_the_session); a logout
closing open WebSockets in tests/api/test_ws_auth.py (test_logout_closes_open_connections).
Admin-only WebSockets are in test_bola.py (test_admin_only_websockets_refuse_a_normal_user).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.testclient import TestClient

from api.app import create_app
from store.models import Event, Workspace
from tests.conftest import Account, app_client, assert_error, make_settings, new_account
from tests.security.conftest import make_owned
from tests.security.routes import Sampler, routes

pytestmark = pytest.mark.security

# Fields a client must never set on any resource, whatever the body.
PROTECTED = ("owner_id", "id", "status", "created_at", "updated_at", "user_id", "role")


def _app() -> Any:
    return create_app(make_settings("sqlite+aiosqlite:///:memory:", Path("/nonexistent")))


def _writes(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path, body schema) of every operation that takes a JSON body."""
    out = []
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            body = op.get("requestBody")
            if body:
                out.append((method.upper(), path, body["content"]["application/json"]["schema"]))
    return out


def _objects(sampler: Sampler, schema: dict[str, Any], seen: set[str]) -> list[dict[str, Any]]:
    """Every object schema with properties reachable from `schema` (refs followed once)."""
    if "$ref" in schema:
        if schema["$ref"] in seen:
            return []
        seen.add(schema["$ref"])
    schema = sampler.resolve(schema)
    found = [schema] if schema.get("properties") else []
    children: list[dict[str, Any]] = []
    for key in ("anyOf", "oneOf", "allOf"):
        children += schema.get(key, [])
    children += list(schema.get("properties", {}).values())
    if isinstance(schema.get("items"), dict):
        children.append(schema["items"])
    if isinstance(schema.get("additionalProperties"), dict):
        children.append(schema["additionalProperties"])
    for child in children:
        found += _objects(sampler, child, seen)
    return found


def test_every_request_body_object_is_closed_in_the_openapi_document() -> None:
    """Every object a client can send (at any depth) forbids unknown fields."""
    doc = _app().openapi()
    sampler = Sampler(doc)
    open_objects = sorted(
        {
            f"{method} {path}: {obj.get('title', '?')}"
            for method, path, schema in _writes(doc)
            for obj in _objects(sampler, schema, set())
            if obj.get("additionalProperties") is not False
        }
    )
    assert not open_objects, f"request objects that accept unknown fields: {open_objects}"


def _fill(path: str, ids: dict[str, str]) -> str:
    for name, value in ids.items():
        path = path.replace("{" + name + "}", value)
    assert "{" not in path, path
    return path


async def test_unknown_and_protected_fields_are_rejected_on_every_write(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession]
) -> None:
    """Mass assignment, generated from the OpenAPI request schemas: a valid body plus one extra
    field — unknown, or one the server owns — is a 422, at the top level and in nested objects,
    on the caller's own objects (so ownership is not what refuses it)."""
    owned = await make_owned(client, db)
    doc = _app().openapi()
    sampler = Sampler(doc)
    writes = _writes(doc)
    assert len(writes) >= 10, writes
    failures: list[str] = []
    tried = 0
    for method, path, schema in writes:
        base = sampler.sample(schema)
        if not isinstance(base, dict):
            base = {}
        props = sampler.resolve(schema).get("properties") or {}
        if not props:  # an optional body (anyOf [Model, null]): the model's own properties
            for option in sampler.resolve(schema).get("anyOf", []):
                props = sampler.resolve(option).get("properties") or props
        extras = [("injected_field", "x")] + [(f, "x") for f in PROTECTED if f not in props]
        variants = [{**base, name: value} for name, value in extras]
        # One level down: each object-valued property, present with one unknown field.
        for name, prop in props.items():
            inner = sampler.resolve(prop)
            options = [sampler.resolve(o) for o in inner.get("anyOf", [inner])]
            obj = next((o for o in options if o.get("properties")), None)
            if obj is not None:
                variants.append({**base, name: {**sampler.sample(obj), "injected_field": 1}})
        url = _fill(path, owned.ids)
        for body in variants:
            tried += 1
            r = await client.request(method, url, json=body, headers=owned.owner.headers)
            code = r.json().get("error", {}).get("code") if r.status_code == 422 else None
            if code not in ("VALIDATION_ERROR", "CONFIGURATION_INVALID"):
                failures.append(f"{method} {path} {json.dumps(body)[:160]}: {r.status_code}")
    assert not failures, "\n".join(failures)
    assert tried >= 60, tried


async def test_owner_and_timestamps_cannot_be_rewritten(
    client: httpx.AsyncClient, account: Account, other_account: Account
) -> None:
    r = await client.post(
        "/api/v1/workspaces",
        headers=account.headers,
        json={"name": "mine", "owner_id": other_account.user_id},
    )
    assert_error(r, 422, "VALIDATION_ERROR")
    r = await client.post("/api/v1/workspaces", headers=account.headers, json={"name": "mine"})
    ws = r.json()["data"]
    for field, value in (
        ("owner_id", other_account.user_id),
        ("workspace_id", "ws_aaaaaaaaaa"),
        ("created_at", "2020-01-01T00:00:00Z"),
    ):
        r = await client.put(
            f"/api/v1/workspaces/{ws['workspace_id']}",
            headers=account.headers,
            json={"name": "renamed", field: value},
        )
        assert_error(r, 422, "VALIDATION_ERROR")
    after = await client.get(f"/api/v1/workspaces/{ws['workspace_id']}", headers=account.headers)
    data = after.json()["data"]
    assert data["owner_id"] == account.user_id and data["name"] == "mine"
    assert data["created_at"] == ws["created_at"]
    # Still invisible to the user it was aimed at.
    theirs = await client.get("/api/v1/workspaces", headers=other_account.headers)
    assert ws["workspace_id"] not in theirs.text


# -- secrets --------------------------------------------------------------------------------------


async def test_written_secrets_never_come_back(
    database_url: str, data_dir: Path, db: async_sessionmaker[AsyncSession]
) -> None:
    """An LLM api_key and an MCP server's env secret, written through the config API, appear in
    no GET response of any route (generated from the route table), no listing, no 422 echo, no
    stored event, and no WebSocket frame (the admin stream replays the whole event log)."""
    admin_email = f"sec-admin-{uuid.uuid4().hex[:8]}@example.com"
    settings = make_settings(database_url, data_dir, admin_emails=[admin_email])
    app = create_app(settings)
    secret = f"sk-live-{uuid.uuid4().hex}"
    mcp_secret = f"ghp_{uuid.uuid4().hex}"
    async with app_client(app) as c:
        owned = await make_owned(c, db)
        h = owned.owner.headers
        wid = owned.ids["workspace_id"]
        config = {
            "llm_providers": [
                {"name": "openai", "api_key": secret, "models": ["gpt-4o"]},
            ],
            "mcp_servers": [
                {
                    "name": "github",
                    "transport": "stdio",
                    "command": "mcp-github",
                    "env": {"GITHUB_TOKEN": mcp_secret},
                }
            ],
        }
        r = await c.put(f"/api/v1/workspaces/{wid}/config", headers=h, json=config)
        assert r.status_code == 200, r.text
        texts = {"PUT config": r.text}
        # An invalid write carrying the key: the validation error must not echo it.
        bad = {"llm_providers": [{"name": "openai", "api_key": secret, "models": "nope"}]}
        r = await c.put(f"/api/v1/workspaces/{wid}/config", headers=h, json=bad)
        assert r.status_code == 422, r.text
        texts["PUT config (invalid)"] = r.text
        bad_new = {"name": "x", "settings": {"max_sandboxes": 0}, "api_key": secret}
        texts["POST workspaces (invalid)"] = (
            await c.post("/api/v1/workspaces", headers=h, json=bad_new)
        ).text
        # Every GET route, with the owner's ids: details, listings, config, status, discovery...
        gets = [r for r in routes(app) if r.kind == "http" and "GET" in r.methods]
        assert len(gets) >= 15
        for route in gets:
            got = await c.get(route.fill(owned.ids), headers=h)
            texts[f"GET {route.path}"] = got.text
            assert got.status_code < 500 or route.path.endswith("/health"), got.text
        leaked = [where for where, text in texts.items() if secret in text or mcp_secret in text]
        assert not leaked, f"secret returned by: {leaked}"
        # The config really holds it (masked, not dropped).
        cfg = (await c.get(f"/api/v1/workspaces/{wid}/config", headers=h)).json()["data"]
        assert cfg["llm_providers"][0]["api_key_set"] is True

        admin = await _account(c, admin_email)
    async with db() as s:
        for row in await s.scalars(select(Event)):
            blob = json.dumps(row.data)
            assert secret not in blob and mcp_secret not in blob, row.event
        stored = await s.get(Workspace, wid)
        assert stored is not None and stored.llm_providers[0]["api_key"] == secret

        head = await s.scalar(select(func.max(Event.id)))
    assert head, "no events at all: the WebSocket check would prove nothing"
    frames = await asyncio.to_thread(
        _replay_frames, app, f"/ws/system?token={admin.access_token}&last_event_id=0", head
    )
    assert len(frames) > 1
    assert not [f for f in frames if secret in f or mcp_secret in f]


async def _account(c: httpx.AsyncClient, email: str) -> Account:
    password = "correct horse battery"
    r = await c.post(
        "/api/v1/auth/register", json={"email": email, "password": password, "name": "Admin"}
    )
    assert r.status_code == 201, r.text
    r = await c.post("/api/v1/auth/login", json={"email": email, "password": password})
    data = r.json()["data"]
    return Account(
        data["user"]["user_id"], email, password, data["access_token"], data["refresh_token"]
    )


def _replay_frames(app: Any, url: str, upto: int) -> list[str]:
    """Every frame of a stream resumed from the start, up to event `upto`."""
    frames = []
    with TestClient(app) as tc, tc.websocket_connect(url) as ws:
        while True:
            text = ws.receive_text()
            frames.append(text)
            if (json.loads(text)["id"] or 0) >= upto:
                return frames


# -- rate limits ---------------------------------------------------------------------------------


def _is_429(r: httpx.Response) -> bool:
    if r.status_code != 429:
        return False
    body = assert_error(r, 429, "RATE_LIMIT_EXCEEDED")
    assert int(r.headers["retry-after"]) >= 1
    assert body["error"]["details"]["retry_after_seconds"] == int(r.headers["retry-after"])
    return True


async def test_auth_limit_ignores_forwarded_headers_and_email_case(
    database_url: str, tmp_path: Path
) -> None:
    """api/ratelimit.py keys the auth group on the connection's peer address: headers a client
    controls (X-Forwarded-For, X-Real-IP, Forwarded) and the email's spelling change nothing."""
    app = create_app(make_settings(database_url, tmp_path, rate_limit_auth_per_minute=3))
    async with app_client(app) as c:
        acc = await new_account(c)  # register + login: 2 of 3
        r = await c.post("/api/v1/auth/login", json={"email": acc.email, "password": "wrong-pw1"})
        assert r.status_code == 401
        attempts = [
            ({"X-Forwarded-For": "203.0.113.7"}, acc.email),
            ({"X-Real-IP": "203.0.113.8"}, acc.email.upper()),
            ({"Forwarded": "for=198.51.100.9"}, acc.email.title()),
            ({"X-Forwarded-For": "198.51.100.10, 10.0.0.1"}, f" {acc.email} "),
            ({"X-Client-IP": "192.0.2.1", "True-Client-IP": "192.0.2.2"}, acc.email),
        ]
        for headers, email in attempts:
            r = await c.post(
                "/api/v1/auth/login",
                headers=headers,
                json={"email": email, "password": acc.password},
            )
            assert _is_429(r), (headers, email, r.status_code, r.text)


async def test_per_user_limit_survives_new_tokens_and_sessions(
    database_url: str, tmp_path: Path
) -> None:
    """Workspace operations are limited per user id, not per token or session: a refreshed
    token, a second login or forwarded headers do not reset the budget."""
    app = create_app(make_settings(database_url, tmp_path, rate_limit_workspace_per_hour=3))
    async with app_client(app) as c:
        acc = await new_account(c)
        for _ in range(3):
            assert (await c.get("/api/v1/workspaces", headers=acc.headers)).status_code == 200
        assert _is_429(await c.get("/api/v1/workspaces", headers=acc.headers))

        refreshed = await c.post("/api/v1/auth/refresh", json={"refresh_token": acc.refresh_token})
        assert refreshed.status_code == 200, refreshed.text
        second = await c.post(
            "/api/v1/auth/login", json={"email": acc.email.upper(), "password": acc.password}
        )
        assert second.status_code == 200, second.text
        for token in (
            refreshed.json()["data"]["access_token"],
            second.json()["data"]["access_token"],
        ):
            headers = {"Authorization": f"Bearer {token}", "X-Forwarded-For": "203.0.113.99"}
            assert _is_429(await c.get("/api/v1/workspaces", headers=headers))
            # The whole group shares the budget: another workspace route is limited too.
            assert _is_429(await c.post("/api/v1/workspaces", headers=headers, json={"name": "x"}))
        # Another user is not affected.
        other = await new_account(c)
        assert (await c.get("/api/v1/workspaces", headers=other.headers)).status_code == 200
