"""Spec section 5: multi-agent collaborations."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Response

from api.deps import CurrentUser, SessionDep, StateDep, rate_limit
from api.envelope import Envelope, ListEnvelope, ok, page
from api.schemas.collaborations import (
    CancelRequest,
    CollaborationAccepted,
    CollaborationCancelled,
    CollaborationDetail,
    CollaborationSummary,
    OrchestrateRequest,
    Status,
)
from api.schemas.common import Pagination, pagination
from api.services import collaborations as service
from api.services import workspaces as workspace_service

router = APIRouter(tags=["collaboration"])
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=255)]


@router.post(
    "/workspaces/{workspace_id}/collaboration/orchestrate",
    status_code=202,
    response_model=Envelope[CollaborationAccepted],
    operation_id="collaborations_orchestrate",
    dependencies=[rate_limit("message")],
)
async def orchestrate(
    workspace_id: str,
    body: OrchestrateRequest,
    user: CurrentUser,
    session: SessionDep,
    state: StateDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Start a collaboration of running sandboxes (404 unknown participant, 409 one not
    running, 403 when the collaboration policy forbids a message the mode needs)."""
    ws = await workspace_service.get_owned(session, workspace_id, user)
    status, data = await service.orchestrate(
        session, state.temporal, state.settings, user, ws, body, idempotency_key
    )
    return ok(data, status)


@router.get(
    "/workspaces/{workspace_id}/collaborations",
    response_model=ListEnvelope[CollaborationSummary],
    operation_id="collaborations_list",
    dependencies=[rate_limit("workspace")],
)
async def list_collaborations(
    workspace_id: str,
    user: CurrentUser,
    session: SessionDep,
    pg: Annotated[Pagination, Depends(pagination)],
    status: Annotated[
        list[Status] | None, Query(description="only these statuses (repeatable)")
    ] = None,
) -> Response:
    """The workspace's collaborations, newest first (an extension of the spec for operators,
    with the spec's list envelope and `page`/`per_page` pagination; `search` matches the
    task, `sort` is created_at or updated_at)."""
    ws = await workspace_service.get_owned(session, workspace_id, user)
    items, total = await service.list_for_workspace(session, ws, pg, status)
    return page(items, total, pg.page, pg.per_page)


@router.get(
    "/collaborations/{collaboration_id}",
    response_model=Envelope[CollaborationDetail],
    operation_id="collaborations_get",
    dependencies=[rate_limit("workspace")],
)
async def get_collaboration(
    collaboration_id: str, user: CurrentUser, session: SessionDep
) -> Response:
    c = await service.get_owned(session, collaboration_id, user)
    return ok((await service.detail(session, c)).model_dump(mode="json", by_alias=True))


@router.post(
    "/collaborations/{collaboration_id}/cancel",
    status_code=202,
    response_model=Envelope[CollaborationCancelled],
    operation_id="collaborations_cancel",
    dependencies=[rate_limit("message")],
)
async def cancel_collaboration(
    collaboration_id: str,
    user: CurrentUser,
    session: SessionDep,
    state: StateDep,
    body: CancelRequest | None = None,
) -> Response:
    """Stop it and every step in flight (409 COLLABORATION_FAILED when already finished)."""
    c = await service.get_owned(session, collaboration_id, user)
    reason = body.reason if body else None
    return ok((await service.cancel(state.temporal, c, reason)).model_dump(), 202)
