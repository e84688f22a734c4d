"""The durable event log: append (API or activities) and read after an id (stream resume)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from domain.timeutil import utcnow
from store.models import Event


def append(
    session: AsyncSession,
    *,
    channel: str,
    event: str,
    data: dict[str, Any],
    workspace_id: str | None = None,
    sandbox_id: str | None = None,
    collaboration_id: str | None = None,
) -> Event:
    """Stage one event in the caller's transaction, so it commits with the state it describes."""
    row = Event(
        channel=channel,
        event=event,
        data=data,
        workspace_id=workspace_id,
        sandbox_id=sandbox_id,
        collaboration_id=collaboration_id,
    )
    session.add(row)
    return row


async def append_many(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Stage many events with one multi-row INSERT (no ORM objects) in the caller's
    transaction; each row holds `append`'s keyword arguments."""
    if rows:
        now = utcnow()
        await session.execute(insert(Event), [{"created_at": now, **r} for r in rows])


async def after(
    session: AsyncSession,
    last_id: int,
    *,
    sandbox_id: str | None = None,
    collaboration_id: str | None = None,
    limit: int = 500,
) -> list[Event]:
    stmt = select(Event).where(Event.id > last_id)
    if sandbox_id is not None:
        stmt = stmt.where(Event.sandbox_id == sandbox_id)
    if collaboration_id is not None:
        stmt = stmt.where(Event.collaboration_id == collaboration_id)
    return list(await session.scalars(stmt.order_by(Event.id).limit(limit)))
