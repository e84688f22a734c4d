"""Store activities: workflows write the read model and the event log only through these."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity

from domain.events import EventInput
from store import events


class StoreActivities:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    @activity.defn(name="append_event")
    async def append_event(self, item: EventInput) -> int:
        """Append one event to the durable log; returns its id."""
        async with self._sessions() as session:
            row = events.append(
                session,
                channel=item.channel,
                event=item.event,
                data=item.data,
                workspace_id=item.workspace_id,
                sandbox_id=item.sandbox_id,
                collaboration_id=item.collaboration_id,
            )
            await session.commit()
            return row.id
