"""Message queries, scoped to the requesting user's workspaces."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from store.models import Message, Sandbox, Workspace


async def get_owned(session: AsyncSession, message_id: str, owner_id: str) -> Message | None:
    return await session.scalar(
        select(Message)
        .join(Workspace, Workspace.id == Message.workspace_id)
        .where(Message.id == message_id, Workspace.owner_id == owner_id)
    )


async def for_sandbox(
    session: AsyncSession,
    sandbox_id: str,
    direction: str,
    since: datetime | None,
    limit: int,
    statuses: Sequence[str] | None = None,
) -> tuple[list[Message], int]:
    if direction == "sent":
        conds: list[ColumnElement[bool]] = [Message.from_sandbox_id == sandbox_id]
    elif direction == "received":
        conds = [Message.to_sandbox_id == sandbox_id]
    else:
        conds = [or_(Message.from_sandbox_id == sandbox_id, Message.to_sandbox_id == sandbox_id)]
    return await _newest(session, conds, since, statuses, limit)


async def for_workspace(
    session: AsyncSession,
    workspace_id: str,
    *,
    since: datetime | None,
    limit: int,
    statuses: Sequence[str] | None = None,
    sandbox_id: str | None = None,
) -> tuple[list[Message], int]:
    """Every message of the workspace (broadcast copies and collaboration turns included);
    `sandbox_id` keeps those it sent or received. Served by ix_messages_workspace_created."""
    conds: list[ColumnElement[bool]] = [Message.workspace_id == workspace_id]
    if sandbox_id is not None:
        conds.append(
            or_(Message.from_sandbox_id == sandbox_id, Message.to_sandbox_id == sandbox_id)
        )
    return await _newest(session, conds, since, statuses, limit)


async def _newest(
    session: AsyncSession,
    conds: list[ColumnElement[bool]],
    since: datetime | None,
    statuses: Sequence[str] | None,
    limit: int,
) -> tuple[list[Message], int]:
    """The newest `limit` messages matching, and how many match in all."""
    if since is not None:
        conds = [*conds, Message.created_at >= since]
    if statuses:
        conds = [*conds, Message.status.in_(list(statuses))]
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


# -- retry -------------------------------------------------------------------------------------


async def target_exists(session: AsyncSession, m: Message) -> bool:
    """Whether the message's target sandbox still exists in its workspace."""
    found = await session.scalar(
        select(Sandbox.id).where(
            Sandbox.id == m.to_sandbox_id, Sandbox.workspace_id == m.workspace_id
        )
    )
    return found is not None


async def claim_retry(session: AsyncSession, m: Message, queued: str) -> bool:
    """Move the message to `queued` (one more attempt) only if it is still exactly as the caller
    read it (same status, same attempt): a conditional UPDATE, so of concurrent retries exactly
    one matches the row on both backends (PostgreSQL re-checks the condition after the row lock;
    SQLite runs it under the single write lock) and the others see it moved on."""
    result = await session.execute(
        update(Message)
        .where(Message.id == m.id, Message.status == m.status, Message.attempts == m.attempts)
        .values(status=queued, status_reason=None, attempts=Message.attempts + 1, failed_at=None)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0) == 1


async def undo_retry(
    session: AsyncSession, message_id: str, claimed: dict[str, Any], previous: dict[str, Any]
) -> None:
    """Put back the columns `claim_retry` changed, if nothing moved the message since."""
    await session.execute(
        update(Message)
        .where(
            Message.id == message_id,
            *(getattr(Message, k) == v for k, v in claimed.items()),
        )
        .values(**previous)
        .execution_options(synchronize_session=False)
    )
