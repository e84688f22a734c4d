"""The spec's success envelope: `{success, data, meta}`; list endpoints add pagination to `meta`."""

from __future__ import annotations

import math
from typing import Any, Generic, TypeVar

from fastapi.responses import JSONResponse
from pydantic import BaseModel

from api.context import current_request_id
from config.settings import VERSION
from domain.timeutil import iso, utcnow

T = TypeVar("T")


class Meta(BaseModel):
    request_id: str
    timestamp: str
    version: str


class PageMeta(Meta):
    total: int
    page: int
    per_page: int
    total_pages: int
    has_next: bool
    has_prev: bool


class Envelope(BaseModel, Generic[T]):
    success: bool = True
    data: T
    meta: Meta


class ListEnvelope(BaseModel, Generic[T]):
    success: bool = True
    data: list[T]
    meta: PageMeta


class ErrorBody(BaseModel):
    code: str
    message: str
    details: dict[str, Any] = {}


class ErrorEnvelope(BaseModel):
    success: bool = False
    error: ErrorBody
    meta: Meta


def meta() -> dict[str, Any]:
    return {"request_id": current_request_id(), "timestamp": iso(utcnow()), "version": VERSION}


def _dump(data: Any) -> Any:
    if isinstance(data, BaseModel):
        return data.model_dump(mode="json")
    if isinstance(data, list):
        return [_dump(item) for item in data]
    return data


def ok(data: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        {"success": True, "data": _dump(data), "meta": meta()}, status_code, headers=headers
    )


def page(items: list[Any], total: int, page_no: int, per_page: int) -> JSONResponse:
    total_pages = max(1, math.ceil(total / per_page)) if total else 0
    extra = {
        "total": total,
        "page": page_no,
        "per_page": per_page,
        "total_pages": total_pages,
        "has_next": page_no < total_pages,
        "has_prev": page_no > 1,
    }
    return JSONResponse({"success": True, "data": _dump(items), "meta": {**meta(), **extra}})


def error_payload(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "success": False,
        "error": {"code": code, "message": message, "details": details or {}},
        "meta": meta(),
    }
