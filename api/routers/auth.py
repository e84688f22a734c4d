"""Spec section 1: Authentication."""

from __future__ import annotations

from fastapi import APIRouter, Response

from api.deps import AuthRateLimit, PrincipalDep, SessionDep, StateDep
from api.envelope import Envelope, ok
from api.schemas.auth import (
    LoginRequest,
    LoginResult,
    RefreshRequest,
    RefreshResult,
    RegisteredUser,
    RegisterRequest,
)
from api.services import auth as service

router = APIRouter(prefix="/auth", tags=["auth"])


@router.post(
    "/register",
    status_code=201,
    response_model=Envelope[RegisteredUser],
    operation_id="auth_register",
    dependencies=[AuthRateLimit],
)
async def register(body: RegisterRequest, session: SessionDep, state: StateDep) -> Response:
    user = await service.register(
        session,
        state.settings,
        email=str(body.email),
        password=body.password,
        name=body.name,
        organization=body.organization,
    )
    return ok(user, 201)


@router.post(
    "/login",
    response_model=Envelope[LoginResult],
    operation_id="auth_login",
    dependencies=[AuthRateLimit],
)
async def login(body: LoginRequest, session: SessionDep, state: StateDep) -> Response:
    return ok(await service.login(session, state.tokens, email=body.email, password=body.password))


@router.post(
    "/refresh",
    response_model=Envelope[RefreshResult],
    operation_id="auth_refresh",
    dependencies=[AuthRateLimit],
)
async def refresh(body: RefreshRequest, session: SessionDep, state: StateDep) -> Response:
    return ok(await service.refresh(session, state.tokens, body.refresh_token))


@router.post("/logout", status_code=204, operation_id="auth_logout", dependencies=[AuthRateLimit])
async def logout(principal: PrincipalDep, session: SessionDep) -> Response:
    await service.logout(session, principal.claims.session_id)
    return Response(status_code=204)
