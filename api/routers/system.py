"""Spec section 8: System."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from api.deps import StateDep
from api.envelope import Envelope, ok
from api.errors import error_response
from api.services import system as service
from domain.errors import ErrorCode

router = APIRouter(prefix="/system", tags=["system"])


@router.get(
    "/health",
    response_model=Envelope[dict[str, Any]],
    operation_id="system_health",
    responses={503: {"description": "A dependency is down; the failing services are named"}},
)
async def health(state: StateDep) -> Response:
    report = await service.health(state.sessions, state.temporal, state.settings)
    if report["status"] == "unhealthy":
        down = sorted(k for k, v in report["services"].items() if v == "unhealthy")
        return error_response(
            503,
            ErrorCode.SERVICE_UNAVAILABLE,
            f"Unhealthy: {', '.join(down)}",
            {**report, "failing_services": down},
        )
    return ok(report)


@router.get("/info", response_model=Envelope[dict[str, Any]], operation_id="system_info")
async def info(state: StateDep) -> Response:
    return ok(service.info(state.settings))
