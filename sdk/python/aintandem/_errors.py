"""The SDK's exception hierarchy: one class per error code of the API contract.

Every error the SDK raises is an `AInTandemError`. Errors answered by the server carry its
HTTP `status`, the envelope's `code`, `message` and `details`, and the `request_id` to quote
when reporting a problem. Transport problems (connection refused, timeouts) are
`APIConnectionError`; waits that run out of time are `WaitTimeout`.
"""

from __future__ import annotations

import email.utils
import time
from typing import Any


class AInTandemError(Exception):
    """Base class of every error raised by the SDK."""

    #: The API error code this class stands for (None: not an API answer).
    default_code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        details: dict[str, Any] | None = None,
        request_id: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code or self.default_code
        self.details: dict[str, Any] = details or {}
        self.request_id = request_id
        self.headers: dict[str, str] = headers or {}

    def __str__(self) -> str:
        parts = [f"{self.code}: {self.message}" if self.code else self.message]
        if self.status is not None:
            parts.append(f"(HTTP {self.status}")
            parts[-1] += f", request_id={self.request_id})" if self.request_id else ")"
        return " ".join(parts)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status={self.status!r}, code={self.code!r}, "
            f"message={self.message!r}, request_id={self.request_id!r})"
        )


class APIConnectionError(AInTandemError):
    """The API could not be reached (refused, reset, timed out) after the allowed retries."""

    default_code = "CONNECTION_ERROR"


class WaitTimeout(AInTandemError):
    """A `wait_until()` / `wait()` did not see the expected state in time."""

    default_code = "TIMEOUT"


class AuthenticationFailed(AInTandemError):
    """401: missing, invalid or expired credentials."""

    default_code = "AUTHENTICATION_FAILED"


class AuthorizationFailed(AInTandemError):
    """403: the caller may not do this (for example a collaboration policy forbids it)."""

    default_code = "AUTHORIZATION_FAILED"


class ResourceNotFound(AInTandemError):
    """404: the resource does not exist or belongs to someone else."""

    default_code = "RESOURCE_NOT_FOUND"


class ResourceAlreadyExists(AInTandemError):
    """409: a resource with the same identifier (for example a sandbox name) exists."""

    default_code = "RESOURCE_ALREADY_EXISTS"


class ValidationError(AInTandemError):
    """400/422: the request was rejected; `fields` lists the per-field problems."""

    default_code = "VALIDATION_ERROR"

    @property
    def fields(self) -> list[dict[str, Any]]:
        """`[{field, message, location}]` from `details.fields` (empty when not given)."""
        fields = self.details.get("fields")
        return list(fields) if isinstance(fields, list) else []


class RateLimitExceeded(AInTandemError):
    """429: too many requests; `retry_after` is the server's advice in seconds."""

    default_code = "RATE_LIMIT_EXCEEDED"

    @property
    def retry_after(self) -> float | None:
        return parse_retry_after(self.headers.get("retry-after")) or _number(
            self.details.get("retry_after_seconds")
        )


class SandboxNotReady(AInTandemError):
    """409: the sandbox is not in a state that allows this (for example start while running)."""

    default_code = "SANDBOX_NOT_READY"


class MessageDeliveryFailed(AInTandemError):
    """409: the message could not be delivered."""

    default_code = "MESSAGE_DELIVERY_FAILED"


class CollaborationFailed(AInTandemError):
    """409: the collaboration task failed (also raised by `Collaboration.wait()`)."""

    default_code = "COLLABORATION_FAILED"


class ConfigurationInvalid(AInTandemError):
    """422: the configuration is inconsistent (for example a provider without a key)."""

    default_code = "CONFIGURATION_INVALID"


class ResourceExhausted(AInTandemError):
    """409: an edition or workspace limit was reached (workspaces, sandboxes)."""

    default_code = "RESOURCE_EXHAUSTED"


class Conflict(AInTandemError):
    """409: the request conflicts with the resource's current state."""

    default_code = "CONFLICT"


class InternalError(AInTandemError):
    """500: the server failed; quote `request_id` when reporting it."""

    default_code = "INTERNAL_ERROR"


class ServiceUnavailable(AInTandemError):
    """503: a dependency of the API (database, Temporal) is unavailable."""

    default_code = "SERVICE_UNAVAILABLE"


_BY_CODE: dict[str, type[AInTandemError]] = {
    cls.default_code: cls
    for cls in (
        AuthenticationFailed,
        AuthorizationFailed,
        ResourceNotFound,
        ResourceAlreadyExists,
        ValidationError,
        RateLimitExceeded,
        SandboxNotReady,
        MessageDeliveryFailed,
        CollaborationFailed,
        ConfigurationInvalid,
        ResourceExhausted,
        Conflict,
        InternalError,
        ServiceUnavailable,
    )
    if cls.default_code
}
_BY_CODE["METHOD_NOT_ALLOWED"] = ValidationError
_BY_CODE["TOKEN_EXPIRED"] = AuthenticationFailed

_BY_STATUS: dict[int, type[AInTandemError]] = {
    400: ValidationError,
    401: AuthenticationFailed,
    403: AuthorizationFailed,
    404: ResourceNotFound,
    409: Conflict,
    422: ValidationError,
    429: RateLimitExceeded,
    500: InternalError,
    502: ServiceUnavailable,
    503: ServiceUnavailable,
    504: ServiceUnavailable,
}


def error_class(code: str | None, status: int | None) -> type[AInTandemError]:
    """The exception class for an error code, falling back on the HTTP status."""
    if code and code in _BY_CODE:
        return _BY_CODE[code]
    if status is not None:
        if status in _BY_STATUS:
            return _BY_STATUS[status]
        if status >= 500:
            return InternalError
    return AInTandemError


def error_from_response(
    status: int, body: Any, headers: dict[str, str], request_id: str | None
) -> AInTandemError:
    """Build the exception for an error answer (the spec's envelope, or anything else)."""
    code: str | None = None
    message = f"HTTP {status}"
    details: dict[str, Any] = {}
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            code = err.get("code") if isinstance(err.get("code"), str) else None
            message = str(err.get("message") or message)
            details = err.get("details") if isinstance(err.get("details"), dict) else {}
        meta = body.get("meta")
        if isinstance(meta, dict) and isinstance(meta.get("request_id"), str):
            request_id = meta["request_id"]
    cls = error_class(code, status)
    return cls(
        message,
        status=status,
        code=code or cls.default_code,
        details=details,
        request_id=request_id,
        headers=headers,
    )


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    return None


def parse_retry_after(value: str | None) -> float | None:
    """`Retry-After` as seconds: delta-seconds or an HTTP date (RFC 9110)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
