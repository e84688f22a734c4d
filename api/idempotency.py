"""Idempotency-Key on the POSTs that create work (message send, broadcast, orchestrate).

As in the IETF httpapi Idempotency-Key draft, per user and key:

- the first request claims the key *atomically* (the row's primary key; see
  store/repositories/idempotency.py) in the same transaction as the rows it creates, so N
  concurrent requests with one key create exactly one thing;
- while it is in flight, another request with the key gets 409 (RESOURCE_ALREADY_EXISTS, the
  spec's 409 for "the same identifier exists", with Retry-After: 1);
- once it answered, a retry with the same request gets that first answer again;
- the key reused with a different request (another route, or another body: a sha256 of the
  route and the canonical JSON body, keys sorted) is refused with 422 VALIDATION_ERROR;
- a request that fails (a 4xx before its claim, or a 503 when Temporal refuses the enqueue)
  keeps no answer, so its retry runs for real;
- a claim left unanswered for IN_FLIGHT_EXPIRY_SECONDS (the API process died mid-request) is
  taken over by the next request with the key.

Usage in a service: `replay()` first (cheap, before validation), `claim()` right before the
first write, `remember()` once the work is accepted, `release()` when it is undone.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from domain.errors import DomainError, ErrorCode, ValidationFailed
from domain.timeutil import as_utc, utcnow
from store.repositories import idempotency as repo

IN_FLIGHT_EXPIRY_SECONDS = 300
HEADER = "Idempotency-Key"


class KeyInFlight(DomainError):
    """Another request with this Idempotency-Key is still being processed."""

    code = ErrorCode.RESOURCE_ALREADY_EXISTS
    retry_after = 1


def _reused(message: str) -> ValidationFailed:
    return ValidationFailed(
        "Idempotency-Key was already used for a different request",
        {"fields": [{"field": HEADER, "location": "header", "message": message}]},
    )


def request_hash(route: str, body: BaseModel | dict[str, Any] | None) -> str:
    """sha256 of the route and the body as canonical JSON (parsed, defaults filled, keys
    sorted): the same request hashes the same however its JSON was spaced or ordered."""
    data = body.model_dump(mode="json") if isinstance(body, BaseModel) else body
    canonical = json.dumps(
        {"route": route, "body": data},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class Idempotency:
    """One request's key (None: the client sent none, and every helper does nothing)."""

    user_id: str
    key: str | None
    route: str
    request_hash: str

    @classmethod
    def of(
        cls, user_id: str, key: str | None, route: str, body: BaseModel | dict[str, Any] | None
    ) -> Idempotency:
        return cls(user_id, key or None, route, request_hash(route, body) if key else "")


def _in_flight() -> KeyInFlight:
    return KeyInFlight(
        "A request with this Idempotency-Key is still in progress; retry shortly",
        {"field": HEADER, "state": "in_flight", "retry_after_seconds": KeyInFlight.retry_after},
    )


def _expired(row: Any) -> bool:
    """Claimed, never answered, and older than the expiry: its request died mid-way."""
    cutoff = utcnow() - timedelta(seconds=IN_FLIGHT_EXPIRY_SECONDS)
    return row.status_code is None and as_utc(row.created_at) < cutoff


def _stored(row: Any, idem: Idempotency) -> tuple[int, dict[str, Any]]:
    """The row's answer for this request: 422 when it is another request's, 409 in flight."""
    if row.route != idem.route:
        raise _reused("reuse of a key on another route")
    if row.request_hash is not None and row.request_hash != idem.request_hash:
        raise _reused("reuse of a key with a different request body")
    if row.status_code is None or row.body is None:
        raise _in_flight()
    return row.status_code, row.body


async def replay(session: AsyncSession, idem: Idempotency) -> tuple[int, dict[str, Any]] | None:
    """The stored answer to replay; None when the key is new, was released or its claim expired
    (then `claim` decides). Raises 422 for another request under the key, 409 while in flight.
    """
    if not idem.key:
        return None
    row = await repo.get(session, idem.user_id, idem.key)
    if row is None or (row.route == idem.route and _expired(row)):
        return None
    return _stored(row, idem)


async def claim(session: AsyncSession, idem: Idempotency) -> tuple[int, dict[str, Any]] | None:
    """Claim the key in the caller's transaction (it commits with the caller's first writes).

    None: this request owns the key, go on. Otherwise another request holds it: its answer to
    replay is returned, or 409/422 raised as in `replay`. Call before any write of the request.
    """
    if not idem.key:
        return None
    for _ in range(2):
        if await repo.claim(session, idem.user_id, idem.key, idem.route, idem.request_hash):
            return None
        row = await repo.get(session, idem.user_id, idem.key)
        if row is None:
            continue  # its holder failed and released it between our claim and our read
        if row.route == idem.route and _expired(row):
            cutoff = utcnow() - timedelta(seconds=IN_FLIGHT_EXPIRY_SECONDS)
            if await repo.release_if_older(session, idem.user_id, idem.key, cutoff):
                continue  # take the dead request's key over
        return _stored(row, idem)
    raise _in_flight()


async def remember(
    session: AsyncSession, idem: Idempotency, status_code: int, body: dict[str, Any]
) -> None:
    """Store the answer of the request that owns the key, and commit."""
    if idem.key:
        await repo.answer(session, idem.user_id, idem.key, status_code, body)
        await session.commit()


async def release(session: AsyncSession, idem: Idempotency) -> None:
    """Give the key back unanswered (not committed: part of the caller's undo)."""
    if idem.key:
        await repo.release(session, idem.user_id, idem.key)
