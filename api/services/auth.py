"""Register, login, refresh (rotating, with reuse detection) and logout."""

from __future__ import annotations

import unicodedata
from datetime import timedelta

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from api.schemas.auth import LoginResult, RefreshResult, RegisteredUser, UserOut
from api.security import TokenService, hash_password, verify_password
from config.settings import Settings
from domain.errors import AlreadyExists, AuthenticationFailed
from domain.ids import Prefix, new_id
from domain.timeutil import as_utc, iso, utcnow
from store.models import AuthSession, User
from store.repositories import users as users_repo

_BAD_CREDENTIALS = "Invalid email or password"


def _normalise_email(email: str) -> str:
    return email.strip().lower()


def _normalise_password(password: str) -> str:
    """NFKC, as NIST SP 800-63B (5.1.1.2) advises: a password typed as composed characters on
    one keyboard and decomposed on another (or with full-width forms) is the same password.
    ASCII is unchanged by it, so hashes of ASCII passwords stay valid."""
    return unicodedata.normalize("NFKC", password)


async def register(
    session: AsyncSession,
    settings: Settings,
    *,
    email: str,
    password: str,
    name: str,
    organization: str | None,
) -> RegisteredUser:
    email = _normalise_email(email)
    if await users_repo.get_by_email(session, email) is not None:
        raise AlreadyExists("An account with this email already exists", {"field": "email"})
    user = User(
        id=new_id(Prefix.USER),
        email=email,
        name=name,
        organization=organization,
        password_hash=hash_password(_normalise_password(password)),
        role="admin" if email in settings.admin_emails else "user",
    )
    session.add(user)
    try:
        await session.commit()
    except IntegrityError as exc:  # a concurrent registration won the race
        await session.rollback()
        raise AlreadyExists(
            "An account with this email already exists", {"field": "email"}
        ) from exc
    return RegisteredUser(
        user_id=user.id,
        email=user.email,
        name=user.name,
        organization=user.organization,
        created_at=iso(user.created_at) or "",
    )


async def login(
    session: AsyncSession, tokens: TokenService, *, email: str, password: str
) -> LoginResult:
    user = await users_repo.get_by_email(session, _normalise_email(email))
    normalised = _normalise_password(password)
    stored = user.password_hash if user else None
    # Same message and the same hashing work whether or not the email exists.
    valid = verify_password(stored, normalised)
    if normalised != password:
        # A non-ASCII password registered before normalisation was hashed as typed: it is still
        # accepted as typed, and its normalised hash stored so the next login is the usual one.
        # Checked whether or not the email exists, so the time taken does not tell.
        legacy = verify_password(stored, password)
        if legacy and not valid and user is not None:
            user.password_hash = hash_password(normalised)
            valid = True
    if not valid or user is None:
        raise AuthenticationFailed(_BAD_CREDENTIALS)
    auth_session = AuthSession(
        id=new_id(Prefix.SESSION),
        user_id=user.id,
        expires_at=utcnow() + timedelta(seconds=tokens.refresh_ttl),
    )
    session.add(auth_session)
    refresh, jti = tokens.issue_refresh(user.id, auth_session.id)
    users_repo.add_refresh_token(session, jti, auth_session.id, auth_session.expires_at)
    await session.commit()
    return LoginResult(
        access_token=tokens.issue_access(user.id, auth_session.id),
        refresh_token=refresh,
        expires_in=tokens.access_ttl,
        user=UserOut(user_id=user.id, email=user.email, name=user.name),
    )


async def refresh(session: AsyncSession, tokens: TokenService, refresh_token: str) -> RefreshResult:
    claims = tokens.decode(refresh_token, "refresh")
    stored = await users_repo.get_refresh_token(session, claims.jti)
    auth_session = await users_repo.get_session(session, claims.session_id)
    if stored is None or auth_session is None or stored.session_id != auth_session.id:
        raise AuthenticationFailed("Invalid refresh token")
    if auth_session.revoked_at is not None or as_utc(auth_session.expires_at) <= utcnow():
        raise AuthenticationFailed("Session is no longer valid")
    if not await users_repo.mark_refresh_used(session, claims.jti):
        # A spent token presented again means it leaked: end the whole family.
        await users_repo.revoke_session(session, auth_session.id, "refresh_token_reuse")
        await session.commit()
        raise AuthenticationFailed("Refresh token was already used; the session has been revoked")
    new_refresh, jti = tokens.issue_refresh(claims.user_id, auth_session.id)
    users_repo.add_refresh_token(session, jti, auth_session.id, auth_session.expires_at)
    await session.commit()
    return RefreshResult(
        access_token=tokens.issue_access(claims.user_id, auth_session.id),
        refresh_token=new_refresh,
        expires_in=tokens.access_ttl,
    )


async def logout(session: AsyncSession, session_id: str) -> None:
    await users_repo.revoke_session(session, session_id, "logout")
    await session.commit()
