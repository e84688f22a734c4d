/**
 * One class per error code of the API contract, all extending {@link AInTandemError}, so callers
 * can `catch (e) { if (e instanceof ResourceNotFoundError) ... }` or switch on `e.code`.
 */

import type { JsonObject } from './types.js';

export interface ErrorInit {
  status: number;
  code: string;
  message: string;
  details?: JsonObject;
  requestId?: string | null;
  /** Seconds, from the Retry-After header (429/503). */
  retryAfter?: number | null;
  cause?: unknown;
}

/** Base of every error the SDK throws for a failed API call. */
export class AInTandemError extends Error {
  /** HTTP status (0 when no response arrived). */
  readonly status: number;
  /** The API's error code, e.g. `RESOURCE_NOT_FOUND`. */
  readonly code: string;
  /** Structured details from the error envelope (`{}` when none). */
  readonly details: JsonObject;
  /** `meta.request_id` of the failed response (also sent as X-Request-ID). */
  readonly requestId: string | null;
  /** Seconds the server asked to wait (Retry-After), when it said. */
  readonly retryAfter: number | null;

  constructor(init: ErrorInit) {
    super(init.message, init.cause === undefined ? undefined : { cause: init.cause });
    this.name = new.target.name;
    this.status = init.status;
    this.code = init.code;
    this.details = init.details ?? {};
    this.requestId = init.requestId ?? null;
    this.retryAfter = init.retryAfter ?? null;
  }
}

/** 401: invalid credentials, missing/expired token, revoked session. */
export class AuthenticationFailedError extends AInTandemError {}
/** 403: insufficient permissions (also a collaboration policy that refuses a message). */
export class AuthorizationFailedError extends AInTandemError {}
/** 404 */
export class ResourceNotFoundError extends AInTandemError {}
/** 409: a resource with the same identifier exists. */
export class ResourceAlreadyExistsError extends AInTandemError {}

/** A per-field problem of a validation error. */
export interface FieldError {
  field: string;
  message: string;
  location?: string;
}

/** 422 (or 400 for malformed JSON). */
export class ValidationError extends AInTandemError {
  /** `details.fields`: which fields were refused and why. */
  get fields(): FieldError[] {
    const fields = this.details['fields'];
    return Array.isArray(fields) ? (fields as unknown as FieldError[]) : [];
  }
}

/** 429, once the SDK's bounded retries are spent (or Retry-After is beyond its bound). */
export class RateLimitExceededError extends AInTandemError {}
/** 409: the sandbox is not in a state that allows this. */
export class SandboxNotReadyError extends AInTandemError {}
export class MessageDeliveryFailedError extends AInTandemError {}
/** A collaboration failed (from the API, or from `collaborations.wait()`). */
export class CollaborationFailedError extends AInTandemError {}
export class ConfigurationInvalidError extends AInTandemError {}
/** 409: a quota (workspaces, sandboxes) is exhausted. */
export class ResourceExhaustedError extends AInTandemError {}
/** 500 */
export class InternalError extends AInTandemError {}
/** 503, once the SDK's bounded retries are spent. */
export class ServiceUnavailableError extends AInTandemError {}
/** No HTTP response: DNS, refused connection, reset, or the request timeout. */
export class ConnectionError extends AInTandemError {}
/** A client-side wait (`waitUntil`, `collaborations.wait`) ran out of time. */
export class WaitTimeoutError extends AInTandemError {}

type ErrorClass = new (init: ErrorInit) => AInTandemError;

/** Error code → class. Unknown codes fall back to the HTTP status, then to the base class. */
export const ERROR_CLASSES: Readonly<Record<string, ErrorClass>> = {
  AUTHENTICATION_FAILED: AuthenticationFailedError,
  AUTHORIZATION_FAILED: AuthorizationFailedError,
  RESOURCE_NOT_FOUND: ResourceNotFoundError,
  RESOURCE_ALREADY_EXISTS: ResourceAlreadyExistsError,
  VALIDATION_ERROR: ValidationError,
  RATE_LIMIT_EXCEEDED: RateLimitExceededError,
  SANDBOX_NOT_READY: SandboxNotReadyError,
  MESSAGE_DELIVERY_FAILED: MessageDeliveryFailedError,
  COLLABORATION_FAILED: CollaborationFailedError,
  CONFIGURATION_INVALID: ConfigurationInvalidError,
  RESOURCE_EXHAUSTED: ResourceExhaustedError,
  INTERNAL_ERROR: InternalError,
  SERVICE_UNAVAILABLE: ServiceUnavailableError,
};

const BY_STATUS: Readonly<Record<number, ErrorClass>> = {
  400: ValidationError,
  401: AuthenticationFailedError,
  403: AuthorizationFailedError,
  404: ResourceNotFoundError,
  409: ResourceAlreadyExistsError,
  422: ValidationError,
  429: RateLimitExceededError,
  500: InternalError,
  503: ServiceUnavailableError,
};

/** Build the typed error for an API error response. */
export function errorFor(init: ErrorInit): AInTandemError {
  const cls = ERROR_CLASSES[init.code] ?? BY_STATUS[init.status] ?? AInTandemError;
  return new cls(init);
}
