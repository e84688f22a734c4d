"""Idempotency-Key rows: claim (atomic, by primary key), read, answer, release.

The rules (what to replay, when to refuse) live in api/idempotency.py; these are the queries.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession

from domain.timeutil import utcnow
from store.models import IdempotencyKey as Key


async def claim(
    session: AsyncSession, user_id: str, key: str, route: str, request_hash: str
) -> bool:
    """Insert the key in flight, in the caller's transaction; False when a row already holds it.

    ON CONFLICT DO NOTHING rather than catching the IntegrityError: no rollback is needed, so
    the caller's session and its loaded objects stay usable. On PostgreSQL a concurrent
    uncommitted claim makes this wait for that transaction's outcome; SQLite serialises writers.
    """
    values = {
        "user_id": user_id,
        "key": key,
        "route": route,
        "request_hash": request_hash,
        "status_code": None,
        "body": None,
        "created_at": utcnow(),
    }
    dialect = session.get_bind().dialect.name
    stmt = (pg_insert if dialect == "postgresql" else sqlite_insert)(Key).values(values)
    stmt = stmt.on_conflict_do_nothing(index_elements=["user_id", "key"]).returning(Key.key)
    # RETURNING, not rowcount: psycopg does not report 0 for a row ON CONFLICT skipped.
    return (await session.execute(stmt)).first() is not None


async def get(session: AsyncSession, user_id: str, key: str) -> Row[Any] | None:
    """The stored row, read afresh (Core, not the ORM identity map)."""
    return (
        await session.execute(
            select(Key.route, Key.request_hash, Key.status_code, Key.body, Key.created_at).where(
                Key.user_id == user_id, Key.key == key
            )
        )
    ).first()


async def answer(
    session: AsyncSession, user_id: str, key: str, status_code: int, body: dict[str, Any]
) -> None:
    await session.execute(
        update(Key)
        .where(Key.user_id == user_id, Key.key == key, Key.status_code.is_(None))
        .values(status_code=status_code, body=body)
    )


async def release(session: AsyncSession, user_id: str, key: str) -> None:
    """Drop an unanswered claim (the request failed), so a retry with the key runs again."""
    await session.execute(
        delete(Key).where(Key.user_id == user_id, Key.key == key, Key.status_code.is_(None))
    )


async def release_if_older(
    session: AsyncSession, user_id: str, key: str, claimed_before: datetime
) -> bool:
    """Drop a claim left unanswered since before `claimed_before` (its request died)."""
    result = await session.execute(
        delete(Key).where(
            Key.user_id == user_id,
            Key.key == key,
            Key.status_code.is_(None),
            Key.created_at < claimed_before,
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]
