"""FastAPI dependencies: `Annotated` aliases for the session, the current user and rate limits."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.events_bus import EventBus
from api.ratelimit import RateLimiter
from api.security import TokenClaims, TokenService
from api.temporal import TemporalGateway
from config.settings import Settings
from domain.errors import AuthenticationFailed
from store.models import User
from store.repositories import users as users_repo


@dataclass
class AppState:
    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    tokens: TokenService
    limiter: RateLimiter
    temporal: TemporalGateway
    events: EventBus | None = None  # the WebSocket fan-out, started in the app's lifespan


def app_state(request: Request) -> AppState:
    return request.app.state.aintandem  # type: ignore[no-any-return]


StateDep = Annotated[AppState, Depends(app_state)]


async def db_session(state: StateDep) -> AsyncIterator[AsyncSession]:
    async with state.sessions() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(db_session)]


@dataclass(frozen=True)
class Principal:
    user: User
    claims: TokenClaims


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationFailed("Missing bearer token")
    return token.strip()


async def authenticate(state: AppState, session: AsyncSession, token: str) -> Principal:
    """Shared by HTTP and WebSocket auth: a valid access token of a live session."""
    claims = state.tokens.decode(token, "access")
    user = await users_repo.active_session_user(session, claims.session_id, claims.user_id)
    if user is None:
        raise AuthenticationFailed("Session is no longer valid")
    return Principal(user=user, claims=claims)


async def current_principal(request: Request, state: StateDep, session: SessionDep) -> Principal:
    principal = await authenticate(state, session, bearer_token(request))
    request.state.principal = principal
    return principal


PrincipalDep = Annotated[Principal, Depends(current_principal)]


async def current_user(principal: PrincipalDep) -> User:
    return principal.user


CurrentUser = Annotated[User, Depends(current_user)]


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def rate_limit(group: str) -> Callable[..., Any]:
    """Per-user limit for authenticated route groups."""

    async def dependency(state: StateDep, user: CurrentUser) -> None:
        state.limiter.hit(group, user.id)

    return Depends(dependency)


async def _auth_rate_limit(request: Request, state: StateDep) -> None:
    state.limiter.hit("auth", client_ip(request))


AuthRateLimit = Depends(_auth_rate_limit)
