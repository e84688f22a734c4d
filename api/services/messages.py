"""Messages: accept durably (row + signal-with-start of the target's inbox) before the 202."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy
from temporalio.service import RPCError

from api import idempotency
from api.idempotency import Idempotency
from api.schemas.messages import (
    BroadcastAccepted,
    BroadcastSend,
    MessageAccepted,
    MessageDetail,
    MessageList,
    MessageOut,
    MessageSend,
)
from api.services.sandboxes import temporal_client
from api.temporal import TemporalGateway
from config.settings import Settings
from domain import search_attributes as sa
from domain.agent import configured_agents
from domain.errors import (
    AuthorizationFailed,
    DomainError,
    ErrorCode,
    NotFound,
    ServiceUnavailable,
    ValidationFailed,
)
from domain.ids import Prefix, is_valid, message_workflow_id, new_id
from domain.messages import (
    ApprovalDecision,
    Envelope,
    MessageDeliveryInput,
    MessageStatus,
)
from domain.policy import decide
from domain.timeutil import iso, utcnow
from store import events
from store.models import Message, Sandbox, User, Workspace
from store.repositories import messages as repo

RETRYABLE = (MessageStatus.FAILED, MessageStatus.TIMEOUT)
DELIVERY = "MessageDelivery"


class NotRetryable(DomainError):
    code = ErrorCode.MESSAGE_DELIVERY_FAILED


def _field(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(
        message, {"fields": [{"field": field, "message": message, "location": "body"}]}
    )


def to_out(m: Message) -> MessageOut:
    return MessageOut(
        message_id=m.id,
        from_sandbox=m.from_sandbox_id,
        from_agent=m.from_agent,
        to_sandbox=m.to_sandbox_id,
        to_agent=m.to_agent,
        message_type=m.message_type,
        content=m.content,
        priority=m.priority,
        requires_response=m.requires_response,
        status=m.status,
        status_reason=m.status_reason,
        correlation_id=m.correlation_id,
        broadcast_id=m.broadcast_id,
        attempts=m.attempts,
        timestamp=iso(m.created_at) or "",
        delivered_at=iso(m.delivered_at),
        responded_at=iso(m.responded_at),
    )


def _row(m: Message) -> dict[str, Any]:
    """A transient Message's column values, for a Core INSERT."""
    return {c.key: getattr(m, c.key) for c in Message.__table__.columns if c.key in m.__dict__}


def _agent_names(sb: Sandbox) -> list[str]:
    return [str(a["name"]) for a in configured_agents(sb.agent_config)]


def _primary(sb: Sandbox) -> str | None:
    names = _agent_names(sb)
    return names[0] if names else None


async def signal_inbox(temporal: TemporalGateway, m: Message) -> None:
    """Enqueue the message into its target's inbox (coalesced with concurrent requests)."""
    env = Envelope(
        message_id=m.id, priority=m.priority, accepted_at=utcnow().isoformat(), attempt=m.attempts
    )
    await temporal.inbox.enqueue(m.to_sandbox_id, m.workspace_id, env)


async def _undo(session: AsyncSession, message_ids: list[str], idem: Idempotency) -> None:
    """Take back a request whose enqueueing Temporal refused (it answers 503): its messages, and
    its claim on the Idempotency-Key (never answered), so a retry with that key sends again
    instead of replaying a 202 for messages that no longer exist."""
    await session.execute(delete(Message).where(Message.id.in_(message_ids)))
    await idempotency.release(session, idem)
    await session.commit()


async def _accept(
    session: AsyncSession, temporal: TemporalGateway, messages: list[Message], idem: Idempotency
) -> None:
    """Signal every inbox after the commit; if Temporal refuses, undo the whole request."""
    try:
        await asyncio.gather(*(signal_inbox(temporal, m) for m in messages))
    except Exception as exc:
        await _undo(session, [m.id for m in messages], idem)
        raise ServiceUnavailable("Could not enqueue the message (Temporal unavailable)") from exc


async def send(
    session: AsyncSession,
    temporal: TemporalGateway,
    settings: Settings,
    user: User,
    ws: Workspace,
    sender: Sandbox,
    body: MessageSend,
    idem_key: str | None,
) -> tuple[int, dict[str, Any]]:
    idem = Idempotency.of(user.id, idem_key, f"send:{sender.id}", body)
    if (replayed := await idempotency.replay(session, idem)) is not None:
        return replayed
    target = await repo.find_sandbox(session, ws.id, body.to_sandbox)
    if target is None:
        raise NotFound("sandbox", body.to_sandbox)
    if target.id == sender.id:
        raise _field("to_sandbox", "a sandbox cannot send a message to itself")
    if body.to_agent and body.to_agent not in _agent_names(target):
        raise _field("to_agent", f"no agent named {body.to_agent!r} in {target.name}")
    if body.from_agent and body.from_agent not in _agent_names(sender):
        raise _field("from_agent", f"no agent named {body.from_agent!r} in {sender.name}")
    decision = decide(ws.collaboration_policy, sender.name, target.name, body.message_type)
    if not decision.allowed:
        raise AuthorizationFailed(decision.reason, {"from": sender.name, "to": target.name})
    client = await temporal_client(temporal)
    m = Message(
        id=new_id(Prefix.MESSAGE),
        workspace_id=ws.id,
        from_sandbox_id=sender.id,
        from_agent=body.from_agent or _primary(sender),
        to_sandbox_id=target.id,
        to_agent=body.to_agent,
        message_type=body.message_type,
        content=body.content,
        priority=body.priority,
        requires_response=body.requires_response,
        timeout_seconds=body.timeout,
        correlation_id=body.correlation_id,
        status=MessageStatus.PENDING_APPROVAL
        if decision.approval_required
        else MessageStatus.QUEUED,
        attempts=1,
        created_at=utcnow(),
    )
    # The key is claimed in the transaction that writes the message: one message per key.
    if (replayed := await idempotency.claim(session, idem)) is not None:
        return replayed
    # Core INSERTs, not the ORM's unit of work: this is the hottest write of the platform and
    # the object is not used as a persistent entity afterwards.
    await session.execute(insert(Message).values(_row(m)))
    data = MessageAccepted(
        message_id=m.id, status=m.status, timestamp=iso(m.created_at) or ""
    ).model_dump()
    await events.append_many(
        session,
        [
            {
                "channel": "messages",
                "event": "message_queued",
                "data": {"message_id": m.id, "to_sandbox": target.id, "priority": m.priority},
                "workspace_id": ws.id,
                "sandbox_id": sender.id,
            }
        ],
    )
    await session.commit()
    if decision.approval_required or m.requires_response:
        await _start_delivery(
            session,
            client,
            settings,
            m,
            idem,
            needs_approval=decision.approval_required,
        )
    else:
        await _accept(session, temporal, [m], idem)
    # Answered only once Temporal has it: until then a retry with the key gets 409, not a 202
    # for a message that a refused enqueue would take back.
    await idempotency.remember(session, idem, 202, data)
    return 202, data


def _delivery_start_args(settings: Settings, m: Message, needs_approval: bool) -> dict[str, Any]:
    inp = MessageDeliveryInput(
        message_id=m.id,
        workspace_id=m.workspace_id,
        to_sandbox_id=m.to_sandbox_id,
        priority=m.priority,
        attempt=m.attempts,
        needs_approval=needs_approval,
        approval_timeout_seconds=settings.message_approval_timeout_seconds,
        requires_response=m.requires_response,
        timeout_seconds=m.timeout_seconds,
        max_wait_seconds=settings.message_max_wait_seconds,
    )
    return {
        "workflow": DELIVERY,
        "arg": inp,
        "id": message_workflow_id(m.id),
        "task_queue": settings.task_queue,
        "id_conflict_policy": WorkflowIDConflictPolicy.USE_EXISTING,
        "search_attributes": TypedSearchAttributes(
            [
                SearchAttributePair(sa.WORKSPACE_ID, m.workspace_id),
                SearchAttributePair(sa.SANDBOX_ID, m.to_sandbox_id),
                SearchAttributePair(sa.MESSAGE_ID, m.id),
            ]
        ),
    }


async def _start_delivery(
    session: AsyncSession,
    client: Client,
    settings: Settings,
    m: Message,
    idem: Idempotency,
    *,
    needs_approval: bool,
) -> None:
    """Start the message's own workflow (approval wait); undo the request if Temporal refuses."""
    try:
        await client.start_workflow(**_delivery_start_args(settings, m, needs_approval))
    except Exception as exc:
        await _undo(session, [m.id], idem)
        raise ServiceUnavailable("Could not enqueue the message (Temporal unavailable)") from exc


async def decide_approval(
    temporal: TemporalGateway, m: Message, user: User, approved: bool, reason: str | None
) -> dict[str, Any]:
    if m.status != MessageStatus.PENDING_APPROVAL:
        raise NotRetryable(
            f"message is not pending approval (it is {m.status})", {"status": m.status}
        )
    client = await temporal_client(temporal)
    handle = client.get_workflow_handle(message_workflow_id(m.id))
    try:
        status = await handle.execute_update(
            "decide",
            ApprovalDecision(approved=approved, by_user=user.id, reason=reason),
            result_type=str,
        )
    except WorkflowUpdateFailedError as exc:
        raise NotRetryable("message is no longer pending approval", {"status": m.status}) from exc
    except RPCError as exc:
        raise ServiceUnavailable("Temporal is unavailable; try again shortly") from exc
    return {"message_id": m.id, "status": status, "timestamp": iso(utcnow())}


async def broadcast(
    session: AsyncSession,
    temporal: TemporalGateway,
    settings: Settings,
    user: User,
    ws: Workspace,
    body: BroadcastSend,
    idem_key: str | None,
) -> tuple[int, dict[str, Any]]:
    idem = Idempotency.of(user.id, idem_key, f"broadcast:{ws.id}", body)
    if (replayed := await idempotency.replay(session, idem)) is not None:
        return replayed
    sender = await repo.find_sandbox(session, ws.id, body.from_sandbox)
    if sender is None:
        raise NotFound("sandbox", body.from_sandbox)
    from store.repositories.sandboxes import in_workspace

    await temporal_client(temporal)  # 503 before anything is written when Temporal is down
    # Claimed before the messages are added, in the transaction that writes them.
    if (replayed := await idempotency.claim(session, idem)) is not None:
        return replayed

    recipients, denied, messages = [], [], []
    bc_id = new_id(Prefix.BROADCAST)
    for target in sorted(await in_workspace(session, ws.id), key=lambda s: s.created_at):
        if body.exclude_self and target.id == sender.id:
            continue
        decision = decide(ws.collaboration_policy, sender.name, target.name, body.message_type)
        if not decision.allowed or decision.approval_required:
            denied.append({"sandbox_id": target.id, "reason": decision.reason})
            continue
        m = Message(
            id=new_id(Prefix.MESSAGE),
            workspace_id=ws.id,
            from_sandbox_id=sender.id,
            from_agent=_primary(sender),
            to_sandbox_id=target.id,
            to_agent=None,
            message_type=body.message_type,
            content=body.content,
            priority=body.priority,
            broadcast_id=bc_id,
            status=MessageStatus.QUEUED,
        )
        session.add(m)
        messages.append(m)
        recipients.append(target.id)
    data = BroadcastAccepted(
        broadcast_id=bc_id,
        recipients=recipients,
        denied=denied,
        message_ids=[m.id for m in messages],
        timestamp=iso(utcnow()) or "",
    ).model_dump()
    for m in messages:
        events.append(
            session,
            channel="messages",
            event="message_queued",
            data={
                "message_id": m.id,
                "to_sandbox": m.to_sandbox_id,
                "broadcast_id": bc_id,
                "priority": m.priority,
            },
            workspace_id=ws.id,
            sandbox_id=sender.id,
        )
    await session.commit()
    await _accept(session, temporal, messages, idem)
    await idempotency.remember(session, idem, 202, data)
    return 202, data


async def get_owned(session: AsyncSession, message_id: str, user: User) -> Message:
    if not is_valid(Prefix.MESSAGE, message_id):
        raise NotFound("message", message_id)
    m = await repo.get_owned(session, message_id, user.id)
    if m is None:
        raise NotFound("message", message_id)
    return m


async def detail(session: AsyncSession, m: Message) -> MessageDetail:
    response = None
    if m.response_message_id:
        reply = await session.get(Message, m.response_message_id)
        if reply is not None:
            response = {
                "message_id": reply.id,
                "content": reply.content,
                "from_agent": reply.from_agent,
                "timestamp": iso(reply.created_at),
            }
    return MessageDetail(**to_out(m).model_dump(), response=response)


async def list_for_sandbox(
    session: AsyncSession,
    sb: Sandbox,
    direction: str,
    since: datetime | None,
    limit: int,
    statuses: Sequence[str] | None = None,
) -> MessageList:
    rows, total = await repo.for_sandbox(session, sb.id, direction, since, limit, statuses)
    return MessageList(
        messages=[to_out(m) for m in rows],
        meta={
            "total": total,
            "returned": len(rows),
            "since": iso(since),
            "direction": direction,
            "status": list(statuses) if statuses else None,
        },
    )


async def list_for_workspace(
    session: AsyncSession,
    ws: Workspace,
    *,
    since: datetime | None,
    limit: int,
    statuses: Sequence[str] | None = None,
    sandbox_id: str | None = None,
) -> MessageList:
    """The operator's view: every message of the workspace, newest first. A `sandbox_id` that
    is not (or no longer) in the workspace is not an error: its messages stay listed after the
    sandbox is deleted, and an id of another user's workspace matches nothing here."""
    rows, total = await repo.for_workspace(
        session, ws.id, since=since, limit=limit, statuses=statuses, sandbox_id=sandbox_id
    )
    return MessageList(
        messages=[to_out(m) for m in rows],
        meta={
            "total": total,
            "returned": len(rows),
            "since": iso(since),
            "status": list(statuses) if statuses else None,
            "sandbox_id": sandbox_id,
        },
    )


async def retry(
    session: AsyncSession, temporal: TemporalGateway, settings: Settings, m: Message
) -> dict[str, Any]:
    if m.status not in RETRYABLE:
        raise NotRetryable(
            f"only failed or timed-out deliveries can be retried (this one is {m.status})",
            {"status": m.status},
        )
    if not await repo.target_exists(session, m):
        # Re-enqueueing would only fail again: say why now and leave the message as it is.
        raise NotRetryable(
            f"the target sandbox {m.to_sandbox_id} no longer exists; the message cannot be "
            "delivered",
            {"status": m.status, "reason": "target_deleted", "to_sandbox": m.to_sandbox_id},
        )
    client = await temporal_client(temporal)
    previous = {
        "status": m.status,
        "status_reason": m.status_reason,
        "attempts": m.attempts,
        "failed_at": m.failed_at,
    }
    # Only the request whose conditional UPDATE moves the message re-enqueues it.
    if not await repo.claim_retry(session, m, MessageStatus.QUEUED):
        await session.refresh(m)
        raise NotRetryable(
            f"another retry already re-enqueued this message (it is now {m.status})",
            {"status": m.status, "reason": "already_retried", "attempts": m.attempts},
        )
    await session.commit()
    await session.refresh(m)
    try:
        if m.requires_response:
            await client.start_workflow(**_delivery_start_args(settings, m, needs_approval=False))
        else:
            await signal_inbox(temporal, m)
    except Exception as exc:
        # Exactly as it was (failed_at and the reason included), unless it moved on meanwhile.
        await repo.undo_retry(session, m.id, {"status": m.status, "attempts": m.attempts}, previous)
        await session.commit()
        raise ServiceUnavailable("Could not re-enqueue the message (Temporal unavailable)") from exc
    return {
        "message_id": m.id,
        "status": m.status,
        "attempts": m.attempts,
        "timestamp": iso(utcnow()),
    }
