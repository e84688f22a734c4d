"""Message queries, scoped to the requesting user's workspaces."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from store.models import IdempotencyKey, Message, Sandbox, Workspace


async def get_owned(session: AsyncSession, message_id: str, owner_id: str) -> Message | None:
    return await session.scalar(
        select(Message)
        .join(Workspace, Workspace.id == Message.workspace_id)
        .where(Message.id == message_id, Workspace.owner_id == owner_id)
    )


async def for_sandbox(
    session: AsyncSession, sandbox_id: str, direction: str, since: datetime | None, limit: int
) -> tuple[list[Message], int]:
    if direction == "sent":
        conds: list[ColumnElement[bool]] = [Message.from_sandbox_id == sandbox_id]
    elif direction == "received":
        conds = [Message.to_sandbox_id == sandbox_id]
    else:
        conds = [or_(Message.from_sandbox_id == sandbox_id, Message.to_sandbox_id == sandbox_id)]
    if since is not None:
        conds.append(Message.created_at >= since)
    total = await session.scalar(select(func.count()).select_from(Message).where(*conds)) or 0
    rows = await session.scalars(
        select(Message)
        .where(*conds)
        .order_by(Message.created_at.desc(), Message.id.desc())
        .limit(limit)
    )
    return list(rows), total


async def find_sandbox(session: AsyncSession, workspace_id: str, ref: str) -> Sandbox | None:
    """A sandbox of the workspace by id or by name."""
    return await session.scalar(
        select(Sandbox).where(
            Sandbox.workspace_id == workspace_id, or_(Sandbox.id == ref, Sandbox.name == ref)
        )
    )


async def idempotent_response(
    session: AsyncSession, user_id: str, key: str
) -> IdempotencyKey | None:
    return await session.get(IdempotencyKey, (user_id, key))


async def counters(session: AsyncSession, sandbox_id: str) -> dict[str, int | None]:
    sent = (
        await session.scalar(
            select(func.count()).select_from(Message).where(Message.from_sandbox_id == sandbox_id)
        )
        or 0
    )
    received = (
        await session.scalar(
            select(func.count())
            .select_from(Message)
            .where(Message.to_sandbox_id == sandbox_id, Message.delivered_at.is_not(None))
        )
        or 0
    )
    failed = (
        await session.scalar(
            select(func.count())
            .select_from(Message)
            .where(
                or_(Message.from_sandbox_id == sandbox_id, Message.to_sandbox_id == sandbox_id),
                Message.status.in_(("failed", "timeout")),
            )
        )
        or 0
    )
    # Response times arrive with agent replies (requires_response); none are measured yet.
    return {
        "messages_sent": sent,
        "messages_received": received,
        "messages_failed": failed,
        "avg_response_time_ms": None,
    }
