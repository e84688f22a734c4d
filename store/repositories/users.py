"""Users, login sessions and their refresh-token families."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from domain.timeutil import utcnow
from store.models import AuthSession, RefreshToken, User


async def get_by_email(session: AsyncSession, email: str) -> User | None:
    return await session.scalar(select(User).where(User.email == email))


async def get(session: AsyncSession, user_id: str) -> User | None:
    return await session.get(User, user_id)


async def get_session(session: AsyncSession, session_id: str) -> AuthSession | None:
    return await session.get(AuthSession, session_id)


async def active_session_user(session: AsyncSession, session_id: str, user_id: str) -> User | None:
    """The user behind a live (not revoked, not expired) login session, in one query."""
    stmt = (
        select(User)
        .join(AuthSession, AuthSession.user_id == User.id)
        .where(
            AuthSession.id == session_id,
            User.id == user_id,
            AuthSession.revoked_at.is_(None),
            AuthSession.expires_at > utcnow(),
        )
    )
    return await session.scalar(stmt)


async def get_refresh_token(session: AsyncSession, jti: str) -> RefreshToken | None:
    return await session.get(RefreshToken, jti)


async def mark_refresh_used(session: AsyncSession, jti: str) -> bool:
    """Atomically claim a refresh token; False when someone already used it (a replay)."""
    result = await session.execute(
        update(RefreshToken)
        .where(RefreshToken.jti == jti, RefreshToken.used_at.is_(None))
        .values(used_at=utcnow())
    )
    return bool(getattr(result, "rowcount", 0))


async def revoke_session(session: AsyncSession, session_id: str, reason: str) -> None:
    await session.execute(
        update(AuthSession)
        .where(AuthSession.id == session_id, AuthSession.revoked_at.is_(None))
        .values(revoked_at=utcnow(), revoked_reason=reason)
    )


def add_refresh_token(
    session: AsyncSession, jti: str, session_id: str, expires_at: datetime
) -> None:
    session.add(RefreshToken(jti=jti, session_id=session_id, expires_at=expires_at))
