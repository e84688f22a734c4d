"""Spec section 7: workspace-level monitoring (sandbox metrics live with the sandboxes)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response

from api.deps import CurrentUser, SessionDep, rate_limit
from api.envelope import Envelope, ok
from api.services import monitoring as service
from api.services import workspaces as workspace_service

router = APIRouter(tags=["monitoring"], dependencies=[rate_limit("workspace")])


@router.get(
    "/workspaces/{workspace_id}/metrics/aggregate",
    response_model=Envelope[dict[str, Any]],
    operation_id="workspace_metrics_aggregate",
)
async def aggregate_metrics(
    workspace_id: str,
    user: CurrentUser,
    session: SessionDep,
    since: Annotated[datetime | None, Query(description="default: one hour ago")] = None,
    granularity: Annotated[Literal["minute", "hour", "day"], Query()] = "hour",
) -> Response:
    ws = await workspace_service.get_owned(session, workspace_id, user)
    return ok(await service.aggregate(session, ws, since, granularity))
