"""Message delivery types shared by the API and the inbox workflow (pure)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class MessageStatus(StrEnum):
    QUEUED = "queued"
    PENDING_APPROVAL = "pending_approval"
    DELIVERED = "delivered"
    RESPONDED = "responded"
    FAILED = "failed"
    TIMEOUT = "timeout"


@dataclass(frozen=True)
class Envelope:
    """What the inbox needs to order a message: the rest stays in the database."""

    message_id: str
    priority: int  # 0–9, 9 highest
    accepted_at: str  # ISO 8601, when the API accepted it (bounds the wait for the target)
    attempt: int = 1  # a retried message is a new delivery of the same id

    @property
    def key(self) -> str:
        return f"{self.message_id}:{self.attempt}"


@dataclass
class InboxInput:
    sandbox_id: str
    workspace_id: str
    # How long a message may wait for its target to be running before it fails.
    max_wait_seconds: float = 300.0
    recheck_seconds: float = 2.0
    batch_size: int = 100
    signals_per_run: int = 2000
    pending: list[Envelope] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)  # recent ids, so a re-sent signal is a no-op


@dataclass(frozen=True)
class DeliveryBatch:
    sandbox_id: str
    message_ids: list[str]


@dataclass(frozen=True)
class DeliveryOutcome:
    delivered: list[str]
    skipped: list[str]  # no longer queued (already delivered, failed, or deleted)


@dataclass(frozen=True)
class FailBatch:
    sandbox_id: str
    message_ids: list[str]
    reason: str
