"""Spec section 2: Workspaces, and the workspace half of section 6 (configuration)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response

from api.deps import CurrentUser, SessionDep, StateDep, rate_limit
from api.envelope import Envelope, ListEnvelope, ok, page
from api.schemas.common import Pagination, pagination
from api.schemas.config import WorkspaceConfigOut, WorkspaceConfigUpdate
from api.schemas.workspaces import WorkspaceCreate, WorkspaceDetail, WorkspaceOut, WorkspaceUpdate
from api.services import config as config_service
from api.services import sandboxes as sandbox_service
from api.services import workspaces as service
from api.validation import ConfigRoute

router = APIRouter(
    prefix="/workspaces", tags=["workspaces"], dependencies=[rate_limit("workspace")]
)
config_router = APIRouter(
    prefix="/workspaces",
    tags=["configuration"],
    route_class=ConfigRoute,
    dependencies=[rate_limit("workspace")],
)

PageDep = Annotated[Pagination, Depends(pagination)]


@router.get("", response_model=ListEnvelope[WorkspaceOut], operation_id="workspaces_list")
async def list_workspaces(user: CurrentUser, session: SessionDep, pg: PageDep) -> Response:
    items, total = await service.list_workspaces(session, user, pg)
    return page(items, total, pg.page, pg.per_page)


@router.post(
    "", status_code=201, response_model=Envelope[WorkspaceOut], operation_id="workspaces_create"
)
async def create_workspace(
    body: WorkspaceCreate, user: CurrentUser, session: SessionDep, state: StateDep
) -> Response:
    return ok(await service.create(session, state.settings, user, body), 201)


@router.get(
    "/{workspace_id}", response_model=Envelope[WorkspaceDetail], operation_id="workspaces_get"
)
async def get_workspace(workspace_id: str, user: CurrentUser, session: SessionDep) -> Response:
    ws = await service.get_owned(session, workspace_id, user)
    return ok(await service.detail(session, ws))


@router.put(
    "/{workspace_id}", response_model=Envelope[WorkspaceDetail], operation_id="workspaces_update"
)
async def update_workspace(
    workspace_id: str,
    body: WorkspaceUpdate,
    user: CurrentUser,
    session: SessionDep,
    state: StateDep,
) -> Response:
    ws = await service.get_owned(session, workspace_id, user)
    return ok(await service.update(session, ws, body, state.settings))


@router.delete("/{workspace_id}", status_code=204, operation_id="workspaces_delete")
async def delete_workspace(
    workspace_id: str, user: CurrentUser, session: SessionDep, state: StateDep
) -> Response:
    ws = await service.get_owned(session, workspace_id, user)
    # Containers go first (through their workflows); rows cascade after.
    await sandbox_service.delete_all_in_workspace(session, state.temporal, state.settings, ws)
    await service.delete(session, ws)
    return Response(status_code=204)


@config_router.get(
    "/{workspace_id}/config",
    response_model=Envelope[WorkspaceConfigOut],
    operation_id="workspace_config_get",
)
async def get_config(
    workspace_id: str, user: CurrentUser, session: SessionDep, state: StateDep
) -> Response:
    ws = await service.get_owned(session, workspace_id, user)
    return ok(config_service.to_out(ws, state.settings))


@config_router.put(
    "/{workspace_id}/config",
    response_model=Envelope[WorkspaceConfigOut],
    operation_id="workspace_config_update",
)
async def update_config(
    workspace_id: str,
    body: WorkspaceConfigUpdate,
    user: CurrentUser,
    session: SessionDep,
    state: StateDep,
) -> Response:
    ws = await service.get_owned(session, workspace_id, user)
    access = state.settings.provider_access()
    await config_service.update(session, ws, body, access, state.settings)
    return ok(config_service.to_out(ws, state.settings))
