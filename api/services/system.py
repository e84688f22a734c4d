"""System health (each dependency really probed) and installation info."""

from __future__ import annotations

import asyncio
import importlib.util
from datetime import timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

from api.temporal import TemporalGateway
from config.settings import VERSION, Settings
from domain.enums import SUPPORTED_MCP_SERVERS, HealthStatus, LLMProviderName
from domain.llm import OFFLINE_PROVIDER
from domain.timeutil import iso, utcnow

PROBE_TIMEOUT = 2.0


async def _database(sessions: async_sessionmaker[AsyncSession]) -> str:
    try:
        async with sessions() as session:
            await asyncio.wait_for(session.execute(text("SELECT 1")), PROBE_TIMEOUT)
        return HealthStatus.HEALTHY
    except Exception:
        return HealthStatus.UNHEALTHY


async def _worker(temporal: TemporalGateway, settings: Settings) -> str:
    """Healthy when some worker polls our task queue; degraded (not down) when none does."""
    try:
        client = await temporal.client(PROBE_TIMEOUT)
        for queue_type in (
            TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
            TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
        ):
            resp = await client.workflow_service.describe_task_queue(
                DescribeTaskQueueRequest(
                    namespace=settings.temporal_namespace,
                    task_queue=TaskQueue(name=settings.task_queue),
                    task_queue_type=queue_type,
                ),
                timeout=timedelta(seconds=PROBE_TIMEOUT),
            )
            if resp.pollers:
                return HealthStatus.HEALTHY
        return HealthStatus.DEGRADED
    except Exception:
        return HealthStatus.UNHEALTHY


async def health(
    sessions: async_sessionmaker[AsyncSession], temporal: TemporalGateway, settings: Settings
) -> dict[str, Any]:
    database, temporal_ok = await asyncio.gather(
        _database(sessions), temporal.healthy(PROBE_TIMEOUT)
    )
    services = {
        "api": HealthStatus.HEALTHY.value,
        "database": database,
        "temporal": HealthStatus.HEALTHY if temporal_ok else HealthStatus.UNHEALTHY,
    }
    services["worker"] = (
        await _worker(temporal, settings) if temporal_ok else HealthStatus.UNHEALTHY
    )
    core = (services["api"], services["database"], services["temporal"])
    if any(s == HealthStatus.UNHEALTHY for s in core):
        status = HealthStatus.UNHEALTHY
    elif any(s != HealthStatus.HEALTHY for s in services.values()):
        status = HealthStatus.DEGRADED
    else:
        status = HealthStatus.HEALTHY
    return {
        "status": status.value,
        "version": VERSION,
        "services": {k: str(v) for k, v in services.items()},
        "timestamp": iso(utcnow()),
    }


def info(settings: Settings) -> dict[str, Any]:
    return {
        "version": VERSION,
        "edition": settings.edition,
        "features": {
            "max_workspaces": settings.max_workspaces,
            "max_sandboxes_per_workspace": settings.max_sandboxes_per_workspace,
            "cross_machine_deployment": False,
        },
        "supported_llm_providers": [p.value for p in LLMProviderName],
        "supported_mcp_servers": list(SUPPORTED_MCP_SERVERS),
        "offline_llm": {
            "provider": OFFLINE_PROVIDER,
            "model": settings.offline_model,
            # Whether this installation ships the model; workers serve it on loopback.
            "available": _offline_model_installed(settings),
            "used_when": "a workspace configures no LLM provider",
            "license": settings.offline_model_spec().license,
        },
    }


def _offline_model_installed(settings: Settings) -> bool:
    # Same check as the worker's (activities/offline_llm.py), without importing activities.
    has_weights = settings.offline_model_file().is_file()
    return has_weights and importlib.util.find_spec("xllamacpp") is not None
