"""Spec section 4: Agent Communication."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Response
from pydantic import StringConstraints

from api.deps import CurrentUser, SessionDep, StateDep, rate_limit
from api.envelope import Envelope, ok
from api.schemas.common import RequestModel, SafeStr
from api.schemas.messages import (
    BroadcastAccepted,
    BroadcastSend,
    MessageAccepted,
    MessageDetail,
    MessageList,
    MessageSend,
    MessageStatusName,
)
from api.services import messages as service
from api.services import sandboxes as sandbox_service
from api.services import workspaces as workspace_service

router = APIRouter(tags=["messages"])
SANDBOX_ID = r"^sb_[a-z0-9]{10}$"  # domain.ids: a malformed id is a 422, not an empty list
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=255)]


@router.post(
    "/sandboxes/{sandbox_id}/messages",
    status_code=202,
    response_model=Envelope[MessageAccepted],
    operation_id="messages_send",
    dependencies=[rate_limit("message")],
)
async def send_message(
    sandbox_id: str,
    body: MessageSend,
    user: CurrentUser,
    session: SessionDep,
    state: StateDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    sender, ws = await sandbox_service.get_owned_with_workspace(session, sandbox_id, user)
    status, data = await service.send(
        session, state.temporal, state.settings, user, ws, sender, body, idempotency_key
    )
    return ok(data, status)


@router.post(
    "/workspaces/{workspace_id}/broadcast",
    status_code=202,
    response_model=Envelope[BroadcastAccepted],
    operation_id="messages_broadcast",
    dependencies=[rate_limit("message")],
)
async def broadcast(
    workspace_id: str,
    body: BroadcastSend,
    user: CurrentUser,
    session: SessionDep,
    state: StateDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    ws = await workspace_service.get_owned(session, workspace_id, user)
    status, data = await service.broadcast(
        session, state.temporal, state.settings, user, ws, body, idempotency_key
    )
    return ok(data, status)


StatusFilter = Annotated[
    list[MessageStatusName] | None,
    Query(description="only messages in this status (repeatable: status=failed&status=timeout)"),
]
Limit = Annotated[int, Query(ge=1, le=1000)]
Since = Annotated[datetime | None, Query(description="ISO 8601; messages created at or after")]


@router.get(
    "/sandboxes/{sandbox_id}/messages",
    response_model=Envelope[MessageList],
    operation_id="messages_list",
    dependencies=[rate_limit("sandbox")],
)
async def list_messages(
    sandbox_id: str,
    user: CurrentUser,
    session: SessionDep,
    direction: Annotated[Literal["sent", "received", "both"], Query()] = "both",
    limit: Limit = 50,
    since: Since = None,
    status: StatusFilter = None,
) -> Response:
    sb = await sandbox_service.get_owned(session, sandbox_id, user)
    return ok(await service.list_for_sandbox(session, sb, direction, since, limit, status))


@router.get(
    "/workspaces/{workspace_id}/messages",
    response_model=Envelope[MessageList],
    operation_id="messages_list_workspace",
    dependencies=[rate_limit("sandbox")],
)
async def list_workspace_messages(
    workspace_id: str,
    user: CurrentUser,
    session: SessionDep,
    limit: Limit = 50,
    since: Since = None,
    status: StatusFilter = None,
    sandbox_id: Annotated[
        str | None,
        Query(pattern=SANDBOX_ID, description="only messages this sandbox sent or received"),
    ] = None,
) -> Response:
    """Every message of the workspace, newest first (an extension of the spec for operators:
    the per-sandbox list's shape, filters and `limit`/`since` paging). Find what failed with
    `status=failed&status=timeout`, then `POST /messages/{id}/retry`."""
    ws = await workspace_service.get_owned(session, workspace_id, user)
    return ok(
        await service.list_for_workspace(
            session, ws, since=since, limit=limit, statuses=status, sandbox_id=sandbox_id
        )
    )


@router.get(
    "/messages/{message_id}",
    response_model=Envelope[MessageDetail],
    operation_id="messages_get",
    dependencies=[rate_limit("sandbox")],
)
async def get_message(message_id: str, user: CurrentUser, session: SessionDep) -> Response:
    m = await service.get_owned(session, message_id, user)
    return ok(await service.detail(session, m))


@router.post(
    "/messages/{message_id}/retry",
    status_code=202,
    response_model=Envelope[dict[str, Any]],
    operation_id="messages_retry",
    dependencies=[rate_limit("message")],
)
async def retry_message(
    message_id: str, user: CurrentUser, session: SessionDep, state: StateDep
) -> Response:
    m = await service.get_owned(session, message_id, user)
    return ok(await service.retry(session, state.temporal, state.settings, m), 202)


class Decision(RequestModel):
    reason: Annotated[SafeStr, StringConstraints(max_length=500)] | None = None


async def _decide(
    message_id: str, user: Any, session: Any, state: Any, approved: bool, body: Decision | None
) -> Response:
    m = await service.get_owned(session, message_id, user)
    reason = body.reason if body else None
    return ok(await service.decide_approval(state.temporal, m, user, approved, reason), 202)


@router.post(
    "/messages/{message_id}/approve",
    status_code=202,
    response_model=Envelope[dict[str, Any]],
    operation_id="messages_approve",
    dependencies=[rate_limit("message")],
)
async def approve_message(
    message_id: str,
    user: CurrentUser,
    session: SessionDep,
    state: StateDep,
    body: Decision | None = None,
) -> Response:
    return await _decide(message_id, user, session, state, True, body)


@router.post(
    "/messages/{message_id}/deny",
    status_code=202,
    response_model=Envelope[dict[str, Any]],
    operation_id="messages_deny",
    dependencies=[rate_limit("message")],
)
async def deny_message(
    message_id: str,
    user: CurrentUser,
    session: SessionDep,
    state: StateDep,
    body: Decision | None = None,
) -> Response:
    return await _decide(message_id, user, session, state, False, body)
