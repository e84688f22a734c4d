"""Spec section 3 (Sandboxes), the sandbox half of 6 (configuration) and 7 (metrics)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Response

from api.deps import CurrentUser, SessionDep, StateDep, rate_limit
from api.envelope import Envelope, ListEnvelope, ok, page
from api.schemas.common import Pagination, pagination
from api.schemas.sandboxes import (
    LifecycleAccepted,
    LogsOut,
    SandboxConfigOut,
    SandboxConfigUpdate,
    SandboxCreate,
    SandboxCreated,
    SandboxDetail,
    SandboxOut,
)
from api.services import sandboxes as service
from api.services import workspaces as workspace_service
from api.validation import ConfigRoute
from domain.sandbox import SandboxOp

router = APIRouter(tags=["sandboxes"], dependencies=[rate_limit("sandbox")])
config_router = APIRouter(
    tags=["configuration"], route_class=ConfigRoute, dependencies=[rate_limit("sandbox")]
)
PageDep = Annotated[Pagination, Depends(pagination)]


@router.get(
    "/workspaces/{workspace_id}/sandboxes",
    response_model=ListEnvelope[SandboxOut],
    operation_id="sandboxes_list",
)
async def list_sandboxes(
    workspace_id: str,
    user: CurrentUser,
    session: SessionDep,
    pg: PageDep,
    status: Annotated[Literal["running", "stopped", "error"] | None, Query()] = None,
) -> Response:
    ws = await workspace_service.get_owned(session, workspace_id, user)
    items, total = await service.list_sandboxes(session, ws, pg, status)
    return page(items, total, pg.page, pg.per_page)


@router.post(
    "/workspaces/{workspace_id}/sandboxes",
    status_code=201,
    response_model=Envelope[SandboxCreated],
    operation_id="sandboxes_create",
)
async def create_sandbox(
    workspace_id: str,
    body: SandboxCreate,
    user: CurrentUser,
    session: SessionDep,
    state: StateDep,
) -> Response:
    ws = await workspace_service.get_owned(session, workspace_id, user)
    created = await service.create(session, state.temporal, state.settings, ws, body)
    return ok(created, 201)


@router.get(
    "/sandboxes/{sandbox_id}", response_model=Envelope[SandboxDetail], operation_id="sandboxes_get"
)
async def get_sandbox(
    sandbox_id: str, user: CurrentUser, session: SessionDep, state: StateDep
) -> Response:
    sb = await service.get_owned(session, sandbox_id, user)
    return ok(await service.detail(session, state.settings, sb))


async def _lifecycle(
    sandbox_id: str, user: Any, session: Any, state: Any, op: SandboxOp
) -> Response:
    sb = await service.get_owned(session, sandbox_id, user)
    return ok(await service.lifecycle(state.temporal, state.settings, sb, op), 202)


@router.post(
    "/sandboxes/{sandbox_id}/start",
    status_code=202,
    response_model=Envelope[LifecycleAccepted],
    operation_id="sandboxes_start",
)
async def start_sandbox(
    sandbox_id: str, user: CurrentUser, session: SessionDep, state: StateDep
) -> Response:
    return await _lifecycle(sandbox_id, user, session, state, SandboxOp.START)


@router.post(
    "/sandboxes/{sandbox_id}/stop",
    status_code=202,
    response_model=Envelope[LifecycleAccepted],
    operation_id="sandboxes_stop",
)
async def stop_sandbox(
    sandbox_id: str, user: CurrentUser, session: SessionDep, state: StateDep
) -> Response:
    return await _lifecycle(sandbox_id, user, session, state, SandboxOp.STOP)


@router.post(
    "/sandboxes/{sandbox_id}/restart",
    status_code=202,
    response_model=Envelope[LifecycleAccepted],
    operation_id="sandboxes_restart",
)
async def restart_sandbox(
    sandbox_id: str, user: CurrentUser, session: SessionDep, state: StateDep
) -> Response:
    return await _lifecycle(sandbox_id, user, session, state, SandboxOp.RESTART)


@router.get(
    "/sandboxes/{sandbox_id}/logs", response_model=Envelope[LogsOut], operation_id="sandboxes_logs"
)
async def sandbox_logs(
    sandbox_id: str,
    user: CurrentUser,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    since: Annotated[datetime | None, Query()] = None,
    level: Annotated[
        Literal["debug", "info", "warn", "error"] | None,
        Query(description="minimum severity (default info: heartbeats are debug)"),
    ] = None,
) -> Response:
    sb = await service.get_owned(session, sandbox_id, user)
    return ok(await service.logs(session, sb, since, level, limit))


@router.get(
    "/sandboxes/{sandbox_id}/status",
    response_model=Envelope[dict[str, Any]],
    operation_id="sandboxes_status",
)
async def sandbox_status(sandbox_id: str, user: CurrentUser, session: SessionDep) -> Response:
    sb, ws = await service.get_owned_with_workspace(session, sandbox_id, user)
    return ok(await service.status(session, ws, sb))


@router.get(
    "/sandboxes/{sandbox_id}/metrics",
    response_model=Envelope[dict[str, Any]],
    operation_id="sandboxes_metrics",
)
async def sandbox_metrics(sandbox_id: str, user: CurrentUser, session: SessionDep) -> Response:
    sb = await service.get_owned(session, sandbox_id, user)
    return ok(await service.metrics(session, sb))


@router.delete("/sandboxes/{sandbox_id}", status_code=204, operation_id="sandboxes_delete")
async def delete_sandbox(
    sandbox_id: str, user: CurrentUser, session: SessionDep, state: StateDep
) -> Response:
    sb = await service.get_owned(session, sandbox_id, user)
    await service.delete(session, state.temporal, state.settings, sb)
    return Response(status_code=204)


@config_router.get(
    "/sandboxes/{sandbox_id}/config",
    response_model=Envelope[SandboxConfigOut],
    operation_id="sandbox_config_get",
)
async def get_sandbox_config(sandbox_id: str, user: CurrentUser, session: SessionDep) -> Response:
    sb = await service.get_owned(session, sandbox_id, user)
    return ok(service.config_out(sb))


@config_router.put(
    "/sandboxes/{sandbox_id}/config",
    response_model=Envelope[SandboxConfigOut],
    operation_id="sandbox_config_update",
)
async def update_sandbox_config(
    sandbox_id: str,
    body: SandboxConfigUpdate,
    user: CurrentUser,
    session: SessionDep,
    state: StateDep,
) -> Response:
    sb, ws = await service.get_owned_with_workspace(session, sandbox_id, user)
    return ok(await service.update_config(session, state.temporal, state.settings, ws, sb, body))
