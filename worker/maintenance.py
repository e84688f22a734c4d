"""Background duties of a worker process that are not workflows."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from config.settings import Settings
from domain.messages import Envelope, MessageStatus, inbox_signal_with_start
from domain.timeutil import as_utc, utcnow
from store.models import Message

log = logging.getLogger("aintandem.worker")


async def requeue_stale_messages(
    client: Client,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    older_than: timedelta = timedelta(seconds=60),
    limit: int = 500,
) -> int:
    """Re-signal the inboxes of messages still `queued` after `older_than`.

    The API commits the row, then signals the inbox; if it dies in between, the message would
    wait forever. Re-signalling is safe: the inbox ignores a delivery key it has seen and the
    delivery activity only moves `queued` rows."""
    cutoff = utcnow() - older_than
    async with sessions() as session:
        stale = list(
            await session.scalars(
                select(Message)
                .where(Message.status == MessageStatus.QUEUED, Message.created_at < cutoff)
                .order_by(Message.created_at)
                .limit(limit)
            )
        )
    for m in stale:
        env = Envelope(m.id, m.priority, as_utc(m.created_at).isoformat(), m.attempts)
        await client.start_workflow(
            **inbox_signal_with_start(
                to_sandbox_id=m.to_sandbox_id,
                workspace_id=m.workspace_id,
                envelope=env,
                task_queue=settings.task_queue,
                max_wait_seconds=settings.message_max_wait_seconds,
            )
        )
    return len(stale)


async def run_periodically(
    client: Client,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    every: float = 30.0,
) -> None:
    while True:
        await asyncio.sleep(every)
        try:
            n = await requeue_stale_messages(client, settings, sessions)
            if n:
                log.info("re-signalled %d stale queued messages", n)
        except Exception as exc:  # Temporal or the database blipped: try again next round
            log.warning("stale-message sweep failed: %s", exc)
