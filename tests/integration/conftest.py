"""The real stack in-process: Temporal dev server, a worker on a fresh task queue, the API."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import httpx
import pytest
import pytest_asyncio
from temporalio.client import Client

from api.app import create_app
from config.payload_codec import with_data_converter
from config.settings import Settings
from store.db import create_engine, session_factory
from tests.cleanup import remove_installation_sandboxes
from tests.conftest import Account, app_client, make_settings, new_account, temporal_address
from worker.main import build_activities, build_worker


@dataclass
class Temporal:
    """The dev server as the tests reach it: a client that encrypts and decrypts payloads with
    the stack's key, as the API and the worker do (results, queries and signals just work)."""

    client: Client


@dataclass
class Stack:
    settings: Settings
    client: httpx.AsyncClient
    docker: docker.DockerClient
    temporal: Any
    # Workspaces created by the current test, deleted (containers included) after it: live
    # sandboxes are health-checked every second and would load the machine for the session.
    created: list[tuple[Account, str]] = field(default_factory=list)

    async def account(self) -> Account:
        return await new_account(self.client)

    async def workspace(self, acc: Account, **settings: Any) -> str:
        r = await self.client.post(
            "/api/v1/workspaces",
            headers=acc.headers,
            json={"name": f"ws-{uuid.uuid4().hex[:6]}", "settings": settings},
        )
        assert r.status_code == 201, r.text
        wid = str(r.json()["data"]["workspace_id"])
        self.created.append((acc, wid))
        return wid

    async def sandbox(self, acc: Account, wid: str, name: str | None = None, **body: Any) -> str:
        payload = {
            "name": name or f"sb-{uuid.uuid4().hex[:6]}",
            "agent_config": {"primary_agent": {"name": "lead", "role": "Engineer"}},
            **body,
        }
        r = await self.client.post(
            f"/api/v1/workspaces/{wid}/sandboxes", headers=acc.headers, json=payload
        )
        assert r.status_code == 201, r.text
        return str(r.json()["data"]["sandbox_id"])

    async def get(self, acc: Account, sid: str) -> dict[str, Any]:
        r = await self.client.get(f"/api/v1/sandboxes/{sid}", headers=acc.headers)
        assert r.status_code == 200, r.text
        return dict(r.json()["data"])

    async def wait_status(
        self, acc: Account, sid: str, status: str, timeout: float = 60
    ) -> dict[str, Any]:
        return await eventually(
            lambda: self.get(acc, sid),
            lambda d: d["status"] == status,
            timeout,
            f"sandbox {sid} to be {status}",
        )


async def eventually(
    fetch: Callable[[], Awaitable[Any]],
    done: Callable[[Any], bool],
    timeout: float = 30,
    what: str = "condition",
) -> Any:
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = await fetch()
        if done(value):
            return value
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last value: {value}")


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def stack(
    database_url: str, tmp_path_factory: pytest.TempPathFactory, temporal_env: Any
) -> AsyncIterator[Stack]:
    settings = make_settings(
        database_url,
        Path(tmp_path_factory.mktemp("stack")),
        temporal_address=temporal_address(temporal_env),
        task_queue=f"it-{uuid.uuid4().hex[:8]}",
        sandbox_health_interval_seconds=1.0,
        max_sandboxes_per_workspace=50,
        message_max_wait_seconds=15.0,
        # A configured key, as in production: an API a test starts with another data dir (and
        # so another generated key) still talks to this worker.
        payload_key=base64.b64encode(secrets.token_bytes(32)).decode(),
    )
    engine = create_engine(settings.resolved_database_url)
    activities = build_activities(settings, session_factory(engine), temporal_env.client)
    docker_client = docker.from_env()
    with ThreadPoolExecutor(64) as pool:
        async with (
            build_worker(temporal_env.client, settings, pool, activities),
            app_client(create_app(settings)) as client,
        ):
            temporal = Temporal(with_data_converter(temporal_env.client, settings))
            yield Stack(settings, client, docker_client, temporal)
    await activities.aclose()
    # Leave none of this run's sandboxes behind (containers, disks, loop devices, workspace
    # networks), whatever a failed test did, and fail loudly if anything stays. Only this
    # installation's (this database's): a platform running beside the tests is left alone.
    await asyncio.to_thread(
        remove_installation_sandboxes, settings.installation_id, client=docker_client
    )
    docker_client.close()
    await engine.dispose()


@pytest_asyncio.fixture(autouse=True, loop_scope="session")
async def _delete_test_workspaces(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    yield
    if "stack" not in request.fixturenames:
        return
    stack: Stack = request.getfixturevalue("stack")
    while stack.created:
        acc, wid = stack.created.pop()
        with contextlib.suppress(Exception):
            await stack.client.delete(f"/api/v1/workspaces/{wid}", headers=acc.headers)
