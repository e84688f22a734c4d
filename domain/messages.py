"""Message delivery types shared by the API and the inbox workflow (pure)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


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
    priority: int  # 0-9, 9 highest
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
    # Delivered messages whose MessageDeliveryWorkflow waits to run the agent's reply.
    awaiting_reply: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class FailBatch:
    sandbox_id: str
    message_ids: list[str]
    reason: str


@dataclass
class MessageDeliveryInput:
    """Input of the per-message workflow (`message-{message_id}`), used when a message needs
    the owner's approval or an agent's reply."""

    message_id: str
    workspace_id: str
    to_sandbox_id: str
    priority: int = 5
    attempt: int = 1
    needs_approval: bool = False
    approval_timeout_seconds: float = 3600.0
    requires_response: bool = False
    timeout_seconds: int = 30
    max_wait_seconds: float = 300.0


@dataclass(frozen=True)
class StatusChange:
    message_id: str
    from_status: str
    to_status: str
    reason: str | None = None
    event: str | None = None


@dataclass(frozen=True)
class ApprovalDecision:
    approved: bool
    by_user: str
    reason: str | None = None


INBOX_WORKFLOW = "Inbox"


def inbox_signal_with_start(
    *,
    to_sandbox_id: str,
    workspace_id: str,
    envelope: Envelope | list[Envelope],
    task_queue: str,
    max_wait_seconds: float,
) -> dict[str, Any]:
    """Keyword arguments of `client.start_workflow` that enqueue deliveries into the target's
    inbox, starting the inbox if it is not running (the API and activities both use this).
    One envelope goes as `enqueue`, several as one `enqueue_many`."""
    from temporalio.common import (
        SearchAttributePair,
        TypedSearchAttributes,
        WorkflowIDConflictPolicy,
    )

    from domain import search_attributes as sa
    from domain.ids import inbox_workflow_id

    return {
        "workflow": INBOX_WORKFLOW,
        "arg": InboxInput(
            sandbox_id=to_sandbox_id, workspace_id=workspace_id, max_wait_seconds=max_wait_seconds
        ),
        "id": inbox_workflow_id(to_sandbox_id),
        "task_queue": task_queue,
        **(
            {"start_signal": "enqueue_many", "start_signal_args": [envelope]}
            if isinstance(envelope, list)
            else {"start_signal": "enqueue", "start_signal_args": [envelope]}
        ),
        "id_conflict_policy": WorkflowIDConflictPolicy.USE_EXISTING,
        "search_attributes": TypedSearchAttributes(
            [
                SearchAttributePair(sa.WORKSPACE_ID, workspace_id),
                SearchAttributePair(sa.SANDBOX_ID, to_sandbox_id),
            ]
        ),
    }
