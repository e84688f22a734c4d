"""One place that maps every error to an HTTP status and the spec's error envelope."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.envelope import error_payload
from domain import errors as de
from domain.errors import ErrorCode

log = logging.getLogger("aintandem.api")

STATUS_BY_CODE: dict[ErrorCode, int] = {
    ErrorCode.AUTHENTICATION_FAILED: 401,
    ErrorCode.AUTHORIZATION_FAILED: 403,
    ErrorCode.RESOURCE_NOT_FOUND: 404,
    ErrorCode.RESOURCE_ALREADY_EXISTS: 409,
    ErrorCode.VALIDATION_ERROR: 422,
    ErrorCode.RATE_LIMIT_EXCEEDED: 429,
    ErrorCode.SANDBOX_NOT_READY: 409,
    ErrorCode.MESSAGE_DELIVERY_FAILED: 409,
    ErrorCode.COLLABORATION_FAILED: 409,
    ErrorCode.CONFIGURATION_INVALID: 422,
    ErrorCode.RESOURCE_EXHAUSTED: 409,
    ErrorCode.INTERNAL_ERROR: 500,
    ErrorCode.SERVICE_UNAVAILABLE: 503,
    ErrorCode.CONFLICT: 409,
}


def error_response(
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(error_payload(code, message, details), status, headers=headers)


def field_errors(errors: Any) -> list[dict[str, str]]:
    """Pydantic errors as the spec's per-field problems: `{field, message, location}`."""
    out = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ())]
        location = loc[0] if loc and loc[0] in {"body", "query", "path", "header"} else "body"
        path = loc[1:] if loc and loc[0] in {"body", "query", "path", "header"} else loc
        out.append(
            {
                "field": ".".join(path) or location,
                "message": err.get("msg", "invalid value"),
                "location": location,
            }
        )
    return out


async def _domain_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, de.DomainError)
    status = STATUS_BY_CODE.get(exc.code, 500)
    headers = {}
    # Rate limits, and an Idempotency-Key whose first request is still in flight.
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    if isinstance(exc, de.AuthenticationFailed):
        headers["WWW-Authenticate"] = "Bearer"
    return error_response(status, exc.code.value, exc.message, exc.details, headers)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errs = list(exc.errors())
    if any(e.get("type") == "json_invalid" for e in errs):
        return error_response(
            400, ErrorCode.VALIDATION_ERROR, "Request body is not valid JSON", {"fields": []}
        )
    return error_response(
        422,
        ErrorCode.VALIDATION_ERROR,
        "Request validation failed",
        {"fields": field_errors(errs)},
    )


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 404:
        return error_response(404, ErrorCode.RESOURCE_NOT_FOUND, "Route not found", None, headers)
    if exc.status_code == 405:
        return error_response(
            405, ErrorCode.VALIDATION_ERROR, "Method not allowed for this route", None, headers
        )
    if exc.status_code == 401:
        return error_response(401, ErrorCode.AUTHENTICATION_FAILED, str(exc.detail), None, headers)
    code = ErrorCode.INTERNAL_ERROR if exc.status_code >= 500 else ErrorCode.VALIDATION_ERROR
    return error_response(exc.status_code, code, str(exc.detail), None, headers)


async def _database_unavailable(_: Request, exc: Exception) -> JSONResponse:
    """The database went away (connection dropped, refused, pool exhausted, SQLite locked):
    a retryable 503, not a 500; the pool's pre-ping reconnects once it is back."""
    log.warning("database unavailable: %s", str(exc).splitlines()[0] if str(exc) else exc)
    return error_response(
        503,
        ErrorCode.SERVICE_UNAVAILABLE,
        "The database is unavailable; try again shortly",
        {"service": "database"},
        {"Retry-After": "1"},
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(de.DomainError, _domain_error)
    for db_outage in (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError):
        app.add_exception_handler(db_outage, _database_unavailable)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
