"""Sandboxes: quota and validation in SQL, every lifecycle change through SandboxWorkflow."""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from api.schemas.common import Pagination
from api.schemas.config import MASK
from api.schemas.sandboxes import (
    ConnectionDetails,
    Health,
    LifecycleAccepted,
    LogEntry,
    LogsOut,
    ResourcesIn,
    SandboxConfigOut,
    SandboxConfigUpdate,
    SandboxCreate,
    SandboxCreated,
    SandboxDetail,
    SandboxMetricsSummary,
    SandboxOut,
    mask_env,
)
from api.temporal import TemporalGateway
from config.settings import API_PREFIX, Settings
from domain import search_attributes as sa
from domain.containers import DEFAULT_DISK_MB, sandbox_disk_mb
from domain.enums import SUPPORTED_MCP_SERVERS
from domain.errors import (
    AlreadyExists,
    ConfigurationInvalid,
    NotFound,
    ResourceExhausted,
    SandboxNotReady,
    ServiceUnavailable,
    ValidationFailed,
)
from domain.ids import Prefix, is_valid, new_id, sandbox_workflow_id
from domain.sandbox import (
    ESTIMATED_READY_SECONDS,
    ConfigUpdate,
    LifecycleResult,
    SandboxOp,
    SandboxResources,
    SandboxState,
    SandboxWorkflowInput,
)
from domain.timeutil import as_utc, iso, utcnow
from store.models import Sandbox, User, Workspace
from store.repositories import messages as message_repo
from store.repositories import sandboxes as repo

WORKFLOW = "Sandbox"


def _field_error(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(
        message, {"fields": [{"field": field, "message": message, "location": "body"}]}
    )


# -- reading -----------------------------------------------------------------------------------


async def get_owned(session: AsyncSession, sandbox_id: str, user: User) -> Sandbox:
    if not is_valid(Prefix.SANDBOX, sandbox_id):
        raise NotFound("sandbox", sandbox_id)
    sandbox = await repo.get_owned(session, sandbox_id, user.id)
    if sandbox is None:
        raise NotFound("sandbox", sandbox_id)
    return sandbox


async def get_owned_with_workspace(
    session: AsyncSession, sandbox_id: str, user: User
) -> tuple[Sandbox, Workspace]:
    if not is_valid(Prefix.SANDBOX, sandbox_id):
        raise NotFound("sandbox", sandbox_id)
    found = await repo.get_owned_with_workspace(session, sandbox_id, user.id)
    if found is None:
        raise NotFound("sandbox", sandbox_id)
    return found


def connection_details(settings: Settings, sandbox_id: str) -> ConnectionDetails:
    base = settings.resolved_public_url
    ws_base = base.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
    return ConnectionDetails(
        collaboration_bus_url=f"{ws_base}/ws/sandboxes/{sandbox_id}",
        api_endpoint=f"{base}{API_PREFIX}/sandboxes/{sandbox_id}",
    )


def to_out(sb: Sandbox) -> SandboxOut:
    return SandboxOut(
        sandbox_id=sb.id,
        name=sb.name,
        workspace_id=sb.workspace_id,
        status=sb.status,
        status_reason=sb.status_reason,
        agent_config=sb.agent_config,
        resources=sb.resources,
        mcp_servers=sb.mcp_servers,
        health=Health(
            status=sb.health_status
            if sb.status == "running"
            else ("unhealthy" if sb.status == "error" else "unknown"),
            last_heartbeat=iso(sb.last_heartbeat),
        ),
        restart_count=sb.restart_count,
        created_at=iso(sb.created_at) or "",
        updated_at=iso(sb.updated_at) or "",
        started_at=iso(sb.started_at),
    )


def uptime_seconds(sb: Sandbox) -> int:
    if sb.status != "running" or sb.started_at is None:
        return 0
    return max(0, int((utcnow() - as_utc(sb.started_at)).total_seconds()))


async def detail(session: AsyncSession, settings: Settings, sb: Sandbox) -> SandboxDetail:
    sample = await repo.latest_sample(session, sb.id)
    running = sb.status == "running"
    counts = await message_repo.counters(session, sb.id)
    return SandboxDetail(
        **to_out(sb).model_dump(),
        metrics=SandboxMetricsSummary(
            cpu_usage_percent=round(sample.cpu_percent, 2) if sample and running else None,
            memory_usage_mb=round(sample.memory_mb, 1) if sample and running else None,
            message_count=int(counts["messages_sent"] or 0) + int(counts["messages_received"] or 0),
            uptime_seconds=uptime_seconds(sb),
        ),
        connection_details=connection_details(settings, sb.id),
    )


async def list_sandboxes(
    session: AsyncSession, ws: Workspace, pg: Pagination, status: str | None
) -> tuple[list[SandboxOut], int]:
    if pg.sort not in repo.SORTABLE:
        raise ValidationFailed(
            "Unsupported sort field",
            {
                "fields": [
                    {
                        "field": "sort",
                        "message": f"one of {sorted(repo.SORTABLE)}",
                        "location": "query",
                    }
                ]
            },
        )
    rows, total = await repo.list_in_workspace(
        session,
        ws.id,
        status=status,
        search=pg.search,
        sort=pg.sort,
        descending=pg.order == "desc",
        offset=pg.offset,
        limit=pg.per_page,
    )
    return [to_out(sb) for sb in rows], total


async def logs(
    session: AsyncSession, sb: Sandbox, since: datetime | None, level: str | None, limit: int
) -> LogsOut:
    # Heartbeats are debug lines: hidden unless asked for, so the agent's work is what shows.
    min_level = level or "info"
    rows, total = await repo.logs(session, sb.id, since=since, min_level=min_level, limit=limit)
    return LogsOut(
        sandbox_id=sb.id,
        logs=[
            LogEntry(
                timestamp=r.data.get("timestamp") or iso(r.created_at) or "",
                level=r.data.get("level", "info"),
                message=r.data.get("message", ""),
            )
            for r in rows
        ],
        meta={"total": total, "returned": len(rows), "since": iso(since)},
    )


async def status(session: AsyncSession, ws: Workspace, sb: Sandbox) -> dict[str, Any]:
    sample = await repo.latest_sample(session, sb.id)
    running = sb.status == "running"
    allocated_mb = sb.resources.get("memory_mb")
    used_mb = round(sample.memory_mb, 1) if sample and running else 0
    configured = {s["name"] for s in ws.mcp_servers or [] if s.get("enabled", True)}
    disk_allocated = sandbox_disk_mb(sb.resources)
    disk_used = round(sample.disk_mb, 1) if sample else 0
    return {
        "sandbox_id": sb.id,
        "status": sb.status,
        "status_reason": sb.status_reason,
        "health": {
            "status": to_out(sb).health.status,
            "last_heartbeat": iso(sb.last_heartbeat),
            "uptime_seconds": uptime_seconds(sb),
        },
        "resources": {
            "memory_mb": {
                "allocated": allocated_mb,
                "used": used_mb,
                "percentage": round(100 * used_mb / allocated_mb, 1) if allocated_mb else 0,
            },
            "cpu_cores": {
                "allocated": sb.resources.get("cpu_cores"),
                # Docker's cpu % is per core: 100 % = one core busy.
                "used": round(sample.cpu_percent / 100, 3) if sample and running else 0,
            },
            "max_processes": {
                "allocated": sb.resources.get("max_processes"),
                "used": sample.pids if sample and running else 0,
            },
            # /workspace's size; used: /workspace + /tmp, kept while stopped (files stay).
            "disk_mb": {
                "allocated": disk_allocated,
                "used": disk_used,
                "percentage": round(100 * disk_used / disk_allocated, 1) if disk_allocated else 0,
            },
        },
        "connections": {
            "collaboration_bus": "connected"
            if running and sb.health_status == "healthy"
            else "disconnected",
            # MCP servers are configuration only so far: report whether each is configured.
            "mcp_servers": {
                name: "configured" if name in configured else "not_configured"
                for name in sb.mcp_servers
            },
        },
    }


async def metrics(session: AsyncSession, sb: Sandbox) -> dict[str, Any]:
    sample = await repo.latest_sample(session, sb.id)
    running = sb.status == "running"
    resources = None
    if sample is not None:
        resources = {
            "cpu_usage_percent": round(sample.cpu_percent, 2) if running else 0.0,
            "memory_usage_mb": round(sample.memory_mb, 1) if running else 0.0,
            "memory_usage_percent": round(sample.memory_percent, 1) if running else 0.0,
            "disk_usage_mb": round(sample.disk_mb, 1),
            "disk_limit_mb": sandbox_disk_mb(sb.resources),
            "disk_usage_percent": round(100 * sample.disk_mb / sandbox_disk_mb(sb.resources), 1),
            "network_in_bytes": sample.network_in_bytes,
            "network_out_bytes": sample.network_out_bytes,
            "processes": sample.pids if running else 0,
        }
    return {
        "sandbox_id": sb.id,
        "timestamp": iso(sample.sampled_at) if sample else None,
        "resources": resources,
        "messaging": await message_repo.counters(session, sb.id),
        "health": {
            "status": to_out(sb).health.status,
            "uptime_seconds": uptime_seconds(sb),
            "restart_count": sb.restart_count,
        },
    }


def config_out(sb: Sandbox, applied: dict[str, str] | None = None) -> SandboxConfigOut:
    return SandboxConfigOut(
        sandbox_id=sb.id,
        agent_config=sb.agent_config,
        resources=sb.resources,
        mcp_servers=sb.mcp_servers,
        environment_variables=mask_env(sb.environment_variables),
        applied=applied or {},
    )


# -- writing -----------------------------------------------------------------------------------


def _resources(
    ws: Workspace, requested: ResourcesIn | None, base: dict[str, Any] | None = None
) -> dict[str, Any]:
    defaults = {
        "memory_mb": 512,
        "cpu_cores": 1.0,
        "timeout_seconds": 300,
        "max_processes": 10,
        "disk_mb": DEFAULT_DISK_MB,
    }
    defaults.update((ws.settings or {}).get("resource_defaults", {}))
    merged = {**defaults, **(base or {})}
    if requested is not None:
        merged.update(requested.model_dump(exclude_none=True))
    return merged


def _check_disk_cap(
    settings: Settings, requested: ResourcesIn | None, config: bool = False
) -> None:
    """The operator's cap on `resources.disk_mb` (AINTANDEM_SANDBOX_MAX_DISK_MB): the images are
    sparse, so what a user may be promised is the operator's choice, below the schema's absolute
    bound. Only a value the request names is checked: a sandbox made under a higher cap keeps
    its disk when other resources change. `config`: PUT /config's code for a bad body
    (CONFIGURATION_INVALID, as its schema errors), else VALIDATION_ERROR."""
    disk_mb = requested.disk_mb if requested is not None else None
    if disk_mb is None or disk_mb <= settings.sandbox_max_disk_mb:
        return
    message = (
        f"resources.disk_mb {disk_mb} is above this installation's limit of "
        f"{settings.sandbox_max_disk_mb} MiB (AINTANDEM_SANDBOX_MAX_DISK_MB)"
    )
    if not config:
        raise _field_error("resources.disk_mb", message)
    raise ConfigurationInvalid(
        "Configuration is invalid",
        {"fields": [{"field": "resources.disk_mb", "message": message, "location": "body"}]},
    )


def _check_mcp(ws: Workspace, names: list[str]) -> None:
    known = {s["name"] for s in ws.mcp_servers or []} | set(SUPPORTED_MCP_SERVERS)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise _field_error(
            "mcp_servers",
            f"unknown MCP servers: {', '.join(unknown)} "
            "(configure them in the workspace config first)",
        )


def _workflow_input(
    settings: Settings, sb: Sandbox, state: SandboxState | None = None
) -> SandboxWorkflowInput:
    return SandboxWorkflowInput(
        sandbox_id=sb.id,
        workspace_id=sb.workspace_id,
        name=sb.name,
        image=settings.sandbox_image,
        resources=SandboxResources(**sb.resources),
        environment=dict(sb.environment_variables),
        health_interval_seconds=settings.sandbox_health_interval_seconds,
        state=state or SandboxState(),
    )


async def _start_workflow(client: Client, settings: Settings, inp: SandboxWorkflowInput) -> None:
    await client.start_workflow(
        WORKFLOW,
        inp,
        id=sandbox_workflow_id(inp.sandbox_id),
        task_queue=settings.task_queue,
        # A retried create finds the same workflow instead of starting a second lifecycle.
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(sa.WORKSPACE_ID, inp.workspace_id),
                SearchAttributePair(sa.SANDBOX_ID, inp.sandbox_id),
            ]
        ),
        memo={"sandbox_name": inp.name, "workspace_id": inp.workspace_id},
    )


async def create(
    session: AsyncSession,
    temporal: TemporalGateway,
    settings: Settings,
    ws: Workspace,
    body: SandboxCreate,
) -> SandboxCreated:
    _check_mcp(ws, body.mcp_servers)
    _check_disk_cap(settings, body.resources)
    # Connect before taking the lock: nobody waits on the database while Temporal is slow.
    client = await temporal_client(temporal)
    # Quota, name and insert in one transaction holding the workspace's lock (row lock on
    # PostgreSQL, the write lock on SQLite), so concurrent creates are checked one after another.
    # A refusal raised below ends the request's session, whose rollback releases the lock.
    await repo.lock_workspace(session, ws.id)
    await session.refresh(ws, ["settings"])  # the limit as it is now, under the lock
    limit = min(
        int((ws.settings or {}).get("max_sandboxes", 10)), settings.max_sandboxes_per_workspace
    )
    if await repo.count_in_workspace(session, ws.id) >= limit:
        raise ResourceExhausted(
            f"Sandbox limit reached: this workspace allows {limit} sandboxes",
            {
                "limit": limit,
                "resource": "sandboxes",
                "workspace_max_sandboxes": (ws.settings or {}).get("max_sandboxes"),
                "edition_max_sandboxes_per_workspace": settings.max_sandboxes_per_workspace,
            },
        )
    if await repo.name_taken(session, ws.id, body.name):
        raise _name_taken()
    sb = Sandbox(
        id=new_id(Prefix.SANDBOX),
        workspace_id=ws.id,
        name=body.name,
        status="provisioning",
        agent_config=body.agent_config.model_dump(mode="json", exclude_none=True),
        resources=_resources(ws, body.resources),
        mcp_servers=body.mcp_servers,
        environment_variables=body.environment_variables,
    )
    session.add(sb)
    try:
        await session.commit()
    except IntegrityError as exc:
        # Only the (workspace_id, name) constraint can fail here; the lock makes it unreachable
        # for concurrent creates, this keeps any other path to it a clean 409 rather than a 500.
        raise _name_taken() from exc
    # The row holds its quota slot while the lifecycle starts (outside the lock); a refused
    # start deletes the row, which frees the slot.
    try:
        await _start_workflow(client, settings, _workflow_input(settings, sb))
    except Exception as exc:
        # No lifecycle, no sandbox: undo the row rather than leave a sandbox nothing drives.
        await session.delete(sb)
        await session.commit()
        raise ServiceUnavailable(
            "Could not start the sandbox lifecycle (Temporal unavailable)"
        ) from exc
    return SandboxCreated(
        sandbox_id=sb.id,
        name=sb.name,
        workspace_id=ws.id,
        status=sb.status,
        connection_details=connection_details(settings, sb.id),
        created_at=iso(sb.created_at) or "",
    )


def _name_taken() -> AlreadyExists:
    return AlreadyExists(
        "A sandbox with this name already exists in the workspace", {"field": "name"}
    )


async def temporal_client(temporal: TemporalGateway) -> Client:
    try:
        return await temporal.client()
    except Exception as exc:
        raise ServiceUnavailable("Temporal is unavailable; try again shortly") from exc


async def _update(
    temporal: TemporalGateway, settings: Settings, sb: Sandbox, name: str, arg: Any = None
) -> LifecycleResult:
    """Send a workflow update; re-create a lost lifecycle workflow from the read model once."""
    client = await temporal_client(temporal)
    handle = client.get_workflow_handle(sandbox_workflow_id(sb.id))
    args = [] if arg is None else [arg]
    for attempt in range(2):
        try:
            return await handle.execute_update(name, *args, result_type=LifecycleResult)
        except WorkflowUpdateFailedError as exc:
            cause = exc.cause
            if isinstance(cause, ApplicationError) and cause.type == "SandboxNotReady":
                raise SandboxNotReady(cause.message, {"status": sb.status}) from exc
            raise
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND and attempt == 0:
                await _resume_workflow(client, settings, sb)
                continue
            raise ServiceUnavailable("Temporal is unavailable; try again shortly") from exc
        except WorkflowUpdateRPCTimeoutOrCancelledError as exc:
            raise ServiceUnavailable("The sandbox lifecycle did not answer in time") from exc
    raise ServiceUnavailable("The sandbox lifecycle could not be resumed")


async def _resume_workflow(client: Client, settings: Settings, sb: Sandbox) -> None:
    # The workflow is gone (completed, or Temporal's data was reset): start a new run that
    # continues from what the read model knows.
    desc_status = None
    with contextlib.suppress(RPCError):
        desc_status = (
            await client.get_workflow_handle(sandbox_workflow_id(sb.id)).describe()
        ).status
    if desc_status == WorkflowExecutionStatus.RUNNING:
        return
    state = SandboxState(
        status=sb.status if sb.status in ("running", "stopped", "error") else "stopped",
        version=sb.status_version,
        restart_count=sb.restart_count,
    )
    await _start_workflow(client, settings, _workflow_input(settings, sb, state))


async def lifecycle(
    temporal: TemporalGateway, settings: Settings, sb: Sandbox, op: SandboxOp
) -> LifecycleAccepted:
    result = await _update(temporal, settings, sb, op.value)
    return LifecycleAccepted(
        sandbox_id=sb.id,
        status=result.status,
        estimated_ready_seconds=ESTIMATED_READY_SECONDS.get(result.status),
    )


async def delete(
    session: AsyncSession, temporal: TemporalGateway, settings: Settings, sb: Sandbox
) -> None:
    """Remove the container (through the workflow) first, then the row: nothing orphaned."""
    await _update(temporal, settings, sb, "delete")
    await session.delete(sb)
    await session.commit()


async def delete_all_in_workspace(
    session: AsyncSession, temporal: TemporalGateway, settings: Settings, ws: Workspace
) -> None:
    for sb in await repo.in_workspace(session, ws.id):
        await _update(temporal, settings, sb, "delete")


def _unmask_env(stored: dict[str, str], incoming: dict[str, str]) -> dict[str, str]:
    """GET /config shows secret values as the mask; a PUT that sends the mask back for a
    variable means "keep its stored value" (as the workspace config does for provider keys), so
    saving a config back unchanged never replaces a secret with the mask. A mask for a variable
    with no stored value is not a value: refused, nothing is changed."""
    unknown = sorted(k for k, v in incoming.items() if v == MASK and k not in stored)
    if unknown:
        raise ConfigurationInvalid(
            "Configuration is invalid",
            {
                "fields": [
                    {
                        "field": f"environment_variables.{k}",
                        "message": f"{MASK} stands for the stored value and this variable has "
                        "none: send the value",
                        "location": "body",
                    }
                    for k in unknown
                ]
            },
        )
    return {k: stored[k] if v == MASK else v for k, v in incoming.items()}


# Resource limits the workflow applies to the running container (`docker update`); the disk's
# size needs the container re-created (its /workspace filesystem resized), which only a start
# or restart does. timeout_seconds is read per tool call: it applies at once.
_NEXT_START_RESOURCES = frozenset({"disk_mb"})


def _resources_applied(before: dict[str, Any], after: dict[str, Any]) -> dict[str, str]:
    """When each changed resource takes effect: `resources.<name>` per changed field, and
    `resources` as a whole: "live" only if nothing waits for the next start."""
    changed = sorted(k for k, v in after.items() if before.get(k) != v)
    per_field = {
        f"resources.{k}": "next_start" if k in _NEXT_START_RESOURCES else "live" for k in changed
    }
    waits = any(k in _NEXT_START_RESOURCES for k in changed)
    return {"resources": "next_start" if waits else "live", **per_field}


async def update_config(
    session: AsyncSession,
    temporal: TemporalGateway,
    settings: Settings,
    ws: Workspace,
    sb: Sandbox,
    body: SandboxConfigUpdate,
) -> SandboxConfigOut:
    if body.sandbox_id is not None and body.sandbox_id != sb.id:
        # The GET body sent back names its sandbox: it must be this one (`applied`, the other
        # read-only field, is ignored).
        raise ConfigurationInvalid(
            "Configuration is invalid",
            {
                "fields": [
                    {
                        "field": "sandbox_id",
                        "message": "sandbox_id is read-only: it must be this sandbox's id",
                        "location": "body",
                    }
                ]
            },
        )
    _check_disk_cap(settings, body.resources, config=True)
    applied: dict[str, str] = {}
    resources = _resources(ws, body.resources, sb.resources) if body.resources else None
    if body.mcp_servers is not None:
        _check_mcp(ws, body.mcp_servers)
    environment = (
        _unmask_env(sb.environment_variables or {}, body.environment_variables)
        if body.environment_variables is not None
        else None
    )
    if resources is not None or environment is not None:
        change = ConfigUpdate(
            resources=SandboxResources(**resources) if resources is not None else None,
            environment=environment,
        )
        await _update(temporal, settings, sb, "update_config", change)
        if resources is not None:
            applied.update(_resources_applied(_resources(ws, None, sb.resources), resources))
        if environment is not None:
            applied["environment_variables"] = "next_start"
    # The workflow accepted the change: now the read model follows.
    if resources is not None:
        sb.resources = resources
    if environment is not None:
        sb.environment_variables = environment
    if body.agent_config is not None:
        sb.agent_config = body.agent_config.model_dump(mode="json", exclude_none=True)
        applied["agent_config"] = "immediate"
    if body.mcp_servers is not None:
        sb.mcp_servers = body.mcp_servers
        applied["mcp_servers"] = "immediate"
    sb.updated_at = utcnow()
    await session.commit()
    return config_out(sb, applied)
