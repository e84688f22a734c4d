"""Domain errors, free of HTTP: `api/errors.py` maps each to a status and the spec's code."""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    AUTHENTICATION_FAILED = "AUTHENTICATION_FAILED"
    AUTHORIZATION_FAILED = "AUTHORIZATION_FAILED"
    RESOURCE_NOT_FOUND = "RESOURCE_NOT_FOUND"
    RESOURCE_ALREADY_EXISTS = "RESOURCE_ALREADY_EXISTS"
    VALIDATION_ERROR = "VALIDATION_ERROR"
    RATE_LIMIT_EXCEEDED = "RATE_LIMIT_EXCEEDED"
    SANDBOX_NOT_READY = "SANDBOX_NOT_READY"
    MESSAGE_DELIVERY_FAILED = "MESSAGE_DELIVERY_FAILED"
    COLLABORATION_FAILED = "COLLABORATION_FAILED"
    CONFIGURATION_INVALID = "CONFIGURATION_INVALID"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    # Not in the spec's table, which has no code for these statuses; named the same way.
    INTERNAL_ERROR = "INTERNAL_ERROR"
    SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    CONFLICT = "CONFLICT"


class DomainError(Exception):
    code: ErrorCode = ErrorCode.INTERNAL_ERROR

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}


class AuthenticationFailed(DomainError):
    code = ErrorCode.AUTHENTICATION_FAILED


class AuthorizationFailed(DomainError):
    code = ErrorCode.AUTHORIZATION_FAILED


class NotFound(DomainError):
    code = ErrorCode.RESOURCE_NOT_FOUND

    def __init__(self, resource: str, resource_id: str | None = None) -> None:
        details = {"resource": resource}
        if resource_id is not None:
            details["id"] = resource_id
        super().__init__(f"{resource.capitalize()} not found", details)


class AlreadyExists(DomainError):
    code = ErrorCode.RESOURCE_ALREADY_EXISTS


class ValidationFailed(DomainError):
    code = ErrorCode.VALIDATION_ERROR


class ConfigurationInvalid(DomainError):
    code = ErrorCode.CONFIGURATION_INVALID


class ResourceExhausted(DomainError):
    code = ErrorCode.RESOURCE_EXHAUSTED


class SandboxNotReady(DomainError):
    code = ErrorCode.SANDBOX_NOT_READY


class Conflict(DomainError):
    code = ErrorCode.CONFLICT


class RateLimited(DomainError):
    code = ErrorCode.RATE_LIMIT_EXCEEDED

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message, {"retry_after_seconds": retry_after})
        self.retry_after = retry_after


class ServiceUnavailable(DomainError):
    code = ErrorCode.SERVICE_UNAVAILABLE
