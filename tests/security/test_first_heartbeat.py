"""A sandbox reported `running` has a heartbeat at once (issue #13, item 14).

The start already probes the runtime before it reports `running`; that probe is the first
heartbeat. With a health interval far longer than the test, only the transition itself can have
written it: the first read that shows `running` must show health `healthy` with a heartbeat.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import docker
import pytest
import pytest_asyncio
from sqlalchemy import select

from api.app import create_app
from store.db import create_engine, session_factory
from store.models import Sandbox
from tests.cleanup import remove_installation_sandboxes
from tests.conftest import app_client, make_settings, temporal_address
from tests.integration.conftest import Stack, eventually
from worker.main import build_activities, build_worker

pytestmark = pytest.mark.docker


@pytest_asyncio.fixture(loop_scope="session")
async def slow_health_stack(
    database_url: str, tmp_path: Path, temporal_env: Any
) -> AsyncIterator[Stack]:
    settings = make_settings(
        database_url,
        tmp_path,
        temporal_address=temporal_address(temporal_env),
        task_queue=f"hb-{uuid.uuid4().hex[:8]}",
        sandbox_health_interval_seconds=600.0,  # no health tick during the test
    )
    engine = create_engine(settings.resolved_database_url)
    activities = build_activities(settings, session_factory(engine), temporal_env.client)
    docker_client = docker.from_env()
    stack = None
    sandbox_ids: set[str] = set()
    try:
        with ThreadPoolExecutor(64) as pool:
            async with (
                build_worker(temporal_env.client, settings, pool, activities),
                app_client(create_app(settings)) as client,
            ):
                stack = Stack(settings, client, docker_client, temporal_env)
                yield stack
                async with session_factory(engine)() as session:
                    sandbox_ids = set(
                        await session.scalars(
                            select(Sandbox.id).where(
                                Sandbox.workspace_id.in_([w for _, w in stack.created])
                            )
                        )
                    )
                for acc, wid in stack.created:
                    await client.delete(f"/api/v1/workspaces/{wid}", headers=acc.headers)
    finally:
        await activities.aclose()
        try:
            if stack is not None and stack.created:
                # Whatever the deletes left: sandboxes with their disks, and the networks.
                # Scoped to this fixture's workspaces: the session's stack shares the database
                # (and so the installation).
                await asyncio.to_thread(
                    remove_installation_sandboxes,
                    settings.installation_id,
                    workspace_ids=[wid for _, wid in stack.created],
                    sandbox_ids=sandbox_ids,
                    client=docker_client,
                )
        finally:
            docker_client.close()
            await engine.dispose()


async def test_running_comes_with_its_first_heartbeat(slow_health_stack: Stack) -> None:
    stack = slow_health_stack
    acc = await stack.account()
    wid = await stack.workspace(acc)
    created_at = datetime.now().astimezone().replace(microsecond=0)  # the API shows seconds
    sid = await stack.sandbox(acc, wid)

    detail = await eventually(
        lambda: stack.get(acc, sid), lambda d: d["status"] != "provisioning", 90, "a start"
    )
    assert detail["status"] == "running", detail
    assert detail["health"]["status"] == "healthy", detail["health"]
    beat = datetime.fromisoformat(detail["health"]["last_heartbeat"].replace("Z", "+00:00"))
    assert beat >= created_at

    # A stop clears it to unknown; the next start brings the heartbeat back with `running`.
    r = await stack.client.post(f"/api/v1/sandboxes/{sid}/stop", headers=acc.headers)
    assert r.status_code == 202, r.text
    await stack.wait_status(acc, sid, "stopped")
    r = await stack.client.post(f"/api/v1/sandboxes/{sid}/start", headers=acc.headers)
    assert r.status_code == 202, r.text
    again = await eventually(
        lambda: stack.get(acc, sid), lambda d: d["status"] in ("running", "error"), 90, "start"
    )
    assert again["status"] == "running" and again["health"]["status"] == "healthy", again
    assert again["health"]["last_heartbeat"] >= detail["health"]["last_heartbeat"]
