"""Every response carries the spec's envelope: success, errors of every kind, request ids."""

from __future__ import annotations

import uuid

import httpx
import pytest

from api.app import create_app
from config.settings import Settings
from tests.conftest import app_client, assert_error


async def test_success_envelope_and_generated_request_id(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/v1/system/info")
    assert r.status_code == 200
    body = r.json()
    assert body["success"] is True
    meta = body["meta"]
    assert set(meta) >= {"request_id", "timestamp", "version"}
    uuid.UUID(meta["request_id"])  # a generated one is a uuid
    assert r.headers["x-request-id"] == meta["request_id"]
    assert meta["timestamp"].endswith("Z")


async def test_client_request_id_is_honoured(client: httpx.AsyncClient) -> None:
    rid = "my-trace-123"
    r = await client.get("/api/v1/system/info", headers={"X-Request-ID": rid})
    assert r.headers["x-request-id"] == rid
    assert r.json()["meta"]["request_id"] == rid


async def test_unprintable_request_id_is_replaced(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/v1/system/info", headers={"X-Request-ID": "x" * 500})
    assert r.headers["x-request-id"] != "x" * 500
    uuid.UUID(r.headers["x-request-id"])


async def test_unknown_route_is_404_envelope(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/v1/definitely-not-here", headers={"X-Request-ID": "rid-404"})
    body = assert_error(r, 404, "RESOURCE_NOT_FOUND")
    assert body["meta"]["request_id"] == "rid-404"


async def test_wrong_method_is_405_envelope(client: httpx.AsyncClient) -> None:
    r = await client.delete("/api/v1/system/info")
    assert_error(r, 405, "VALIDATION_ERROR")
    assert "allow" in r.headers


async def test_validation_error_names_fields(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/v1/auth/register", json={"email": "not-an-email", "password": "x"})
    body = assert_error(r, 422, "VALIDATION_ERROR")
    fields = {f["field"] for f in body["error"]["details"]["fields"]}
    assert {"email", "password", "name"} <= fields
    assert all(f["message"] for f in body["error"]["details"]["fields"])


async def test_malformed_json_is_400(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/api/v1/auth/register", content=b'{"email": ', headers={"content-type": "application/json"}
    )
    assert_error(r, 400, "VALIDATION_ERROR")


async def test_oversized_body_is_413(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/api/v1/auth/register",
        content=b'{"name": "' + b"a" * 2_000_000 + b'"}',
        headers={"content-type": "application/json"},
    )
    assert_error(r, 413, "VALIDATION_ERROR")


async def test_unhandled_error_is_500_envelope_without_trace(settings: Settings) -> None:
    app = create_app(settings)

    @app.get("/api/v1/boom")
    async def boom() -> None:
        raise RuntimeError("secret internal detail")

    async with app_client(app) as c:
        r = await c.get("/api/v1/boom", headers={"X-Request-ID": "rid-500"})
    body = assert_error(r, 500, "INTERNAL_ERROR")
    assert "secret internal detail" not in r.text
    assert "Traceback" not in r.text
    assert r.headers["x-request-id"] == "rid-500" == body["meta"]["request_id"]


async def test_openapi_document_is_served(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/v1/openapi.json")
    assert r.status_code == 200
    paths = r.json()["paths"]
    for path in (
        "/api/v1/auth/register",
        "/api/v1/workspaces",
        "/api/v1/workspaces/{workspace_id}/config",
        "/api/v1/system/health",
    ):
        assert path in paths
    assert (await client.get("/docs")).status_code == 200


@pytest.mark.parametrize("path", ["/api/v1/workspaces", "/api/v1/workspaces/ws_abcdefghij/config"])
async def test_protected_routes_need_a_token(client: httpx.AsyncClient, path: str) -> None:
    r = await client.get(path)
    assert_error(r, 401, "AUTHENTICATION_FAILED")
    assert r.headers.get("www-authenticate") == "Bearer"
