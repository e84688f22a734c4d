"""System endpoints: info, and health that really probes database, Temporal and the worker."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.app import create_app
from store.db import create_engine, session_factory
from tests.conftest import app_client, assert_error, make_settings, temporal_address
from worker.main import build_activities, build_worker


async def test_info(client: httpx.AsyncClient) -> None:
    data = (await client.get("/api/v1/system/info")).json()["data"]
    assert data["edition"] == "community"
    assert data["features"] == {
        "max_workspaces": 10,
        "max_sandboxes_per_workspace": 5,
        "cross_machine_deployment": False,
    }
    assert data["supported_llm_providers"] == ["qwen", "glm", "claude", "openai"]
    assert "filesystem" in data["supported_mcp_servers"]
    # The test environment installs the offline model (scripts/llm-deps.sh via bootstrap).
    assert data["offline_llm"]["available"] is True
    assert data["offline_llm"]["provider"] == "offline"


async def test_health_names_temporal_when_it_is_down(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/v1/system/health")
    body = assert_error(r, 503, "SERVICE_UNAVAILABLE")
    details = body["error"]["details"]
    assert "temporal" in details["failing_services"]
    assert details["services"]["database"] == "healthy" and details["services"]["api"] == "healthy"


async def test_health_names_the_database_when_it_is_down(tmp_path: Path, temporal_env: Any) -> None:
    settings = make_settings(
        "postgresql+psycopg://postgres@127.0.0.1:1/nowhere",
        tmp_path,
        temporal_address=temporal_address(temporal_env),
    )
    async with app_client(create_app(settings)) as c:
        body = assert_error(await c.get("/api/v1/system/health"), 503, "SERVICE_UNAVAILABLE")
    assert body["error"]["details"]["failing_services"] == ["database"]
    assert body["error"]["details"]["services"]["temporal"] == "healthy"


@pytest.mark.temporal
async def test_health_with_real_temporal_and_worker(
    database_url: str, tmp_path: Path, temporal_env: Any
) -> None:
    settings = make_settings(
        database_url,
        tmp_path,
        temporal_address=temporal_address(temporal_env),
        task_queue=f"health-{uuid.uuid4().hex[:8]}",
    )
    async with app_client(create_app(settings)) as c:
        # Temporal up, nobody polling our queue yet: degraded, not down.
        data = (await c.get("/api/v1/system/health")).json()["data"]
        assert data["services"]["temporal"] == "healthy"
        assert data["services"]["worker"] == "degraded" and data["status"] == "degraded"
        engine = create_engine(settings.resolved_database_url)
        activities = build_activities(settings, session_factory(engine), temporal_env.client)
        with ThreadPoolExecutor(64) as pool:
            async with build_worker(temporal_env.client, settings, pool, activities):
                r = await c.get("/api/v1/system/health")
                data = r.json()["data"]
                for _ in range(20):  # pollers register within a moment of the worker starting
                    if data["services"]["worker"] == "healthy":
                        break
                    import asyncio

                    await asyncio.sleep(0.25)
                    data = (await c.get("/api/v1/system/health")).json()["data"]
        await activities.aclose()
        await engine.dispose()
        assert data["status"] == "healthy"
        assert data["services"] == {
            "api": "healthy",
            "database": "healthy",
            "temporal": "healthy",
            "worker": "healthy",
        }
