"""Agent discovery: a workspace's sandboxes and, in one aggregate query, their deliveries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Float, and_, case, cast, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from domain.messages import MessageStatus
from store.models import Message, Sandbox

PROCESSED = (MessageStatus.DELIVERED.value, MessageStatus.RESPONDED.value)


@dataclass(frozen=True)
class DeliveryStats:
    """Deliveries to one (sandbox, to_agent) pair; to_agent None means "the primary agent"."""

    sandbox_id: str
    to_agent: str | None
    processed: int
    in_flight: int
    responded: int
    response_ms_total: float


async def sandboxes(
    session: AsyncSession, workspace_id: str, sandbox_id: str | None
) -> list[Sandbox]:
    conds: list[ColumnElement[bool]] = [Sandbox.workspace_id == workspace_id]
    if sandbox_id is not None:
        conds.append(Sandbox.id == sandbox_id)
    return list(await session.scalars(select(Sandbox).where(*conds).order_by(Sandbox.id)))


def _elapsed_ms(session: AsyncSession) -> ColumnElement[Any]:
    if session.get_bind().dialect.name == "postgresql":
        return func.extract("epoch", Message.responded_at - Message.delivered_at) * 1000.0
    # SQLite stores ISO-8601 text; julianday keeps millisecond precision at today's dates.
    return (func.julianday(Message.responded_at) - func.julianday(Message.delivered_at)) * (
        86_400_000.0
    )


async def delivery_stats(
    session: AsyncSession, workspace_id: str, sandbox_id: str | None
) -> list[DeliveryStats]:
    """Per target (sandbox, agent): messages processed, replies still running, reply times."""
    answered = and_(
        Message.status == MessageStatus.RESPONDED.value,
        Message.responded_at.is_not(None),
        Message.delivered_at.is_not(None),
    )
    # Delivered and awaiting the agent's reply: its turn is running now.
    running = and_(
        Message.status == MessageStatus.DELIVERED.value,
        Message.requires_response.is_(True),
        Message.responded_at.is_(None),
    )
    conds: list[ColumnElement[bool]] = [
        Message.workspace_id == workspace_id,
        Message.status.in_(PROCESSED),
    ]
    if sandbox_id is not None:
        conds.append(Message.to_sandbox_id == sandbox_id)
    stmt = (
        select(
            Message.to_sandbox_id,
            Message.to_agent,
            func.count(),
            func.count(case((running, 1))),
            func.count(case((answered, 1))),
            func.coalesce(func.sum(cast(case((answered, _elapsed_ms(session))), Float)), 0.0),
        )
        .where(*conds)
        .group_by(Message.to_sandbox_id, Message.to_agent)
    )
    return [
        DeliveryStats(
            sandbox_id=row[0],
            to_agent=row[1],
            processed=int(row[2]),
            in_flight=int(row[3]),
            responded=int(row[4]),
            response_ms_total=float(row[5]),
        )
        for row in (await session.execute(stmt)).all()
    ]
