"""Collaboration activities: the read-model side of `CollaborationWorkflow`.

Each turn of a collaboration is a real message (a row the API lists, a `MessageDeliveryWorkflow`
child the operator sees), created here idempotently under an id the workflow chose, so a
retried activity never sends a step twice.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime

from prometheus_client import Counter
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.messaging import message_event_data, publish_to_both
from domain.collaboration import (
    FINISHED,
    Snapshot,
    StepMessage,
    StepReply,
    StepSent,
    estimate_completion,
)
from domain.collaboration_warnings import with_warnings
from domain.messages import MessageStatus
from domain.policy import decide
from domain.timeutil import as_utc, iso, utcnow
from store import events
from store.models import Collaboration, Message, Sandbox, Workspace

FINISHED_TOTAL = Counter(
    "aintandem_collaboration_finished_total",
    "Collaborations that ended, by outcome (completed, failed, cancelled) and mode",
    ["status", "mode"],
)
OPEN = (MessageStatus.QUEUED, MessageStatus.PENDING_APPROVAL, MessageStatus.DELIVERED)


class CollaborationActivities:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    @activity.defn(name="collaboration_send")
    async def send(self, step: StepMessage) -> StepSent:
        """Write one step's message (queued, or pending the owner's approval when the policy
        says so); a retry finds the row it already wrote."""
        async with self._sessions() as session:
            existing = await session.get(Message, step.message_id)
            if existing is not None:
                return StepSent(existing.id, existing.status == MessageStatus.PENDING_APPROVAL)
            ws = await session.get(Workspace, step.workspace_id)
            names = dict(
                (
                    await session.execute(
                        select(Sandbox.id, Sandbox.name).where(
                            Sandbox.id.in_({step.from_sandbox_id, step.to_sandbox_id})
                        )
                    )
                ).all()
            )
            if ws is None or step.to_sandbox_id not in names:
                raise ApplicationError(
                    "a participant sandbox no longer exists",
                    type="ParticipantGone",
                    non_retryable=True,
                )
            decision = decide(
                ws.collaboration_policy,
                names.get(step.from_sandbox_id, ""),
                names[step.to_sandbox_id],
                "request",
            )
            if not decision.allowed:
                raise ApplicationError(
                    f"collaboration policy: {decision.reason}",
                    type="CollaborationPolicyDenied",
                    non_retryable=True,
                )
            m = Message(
                id=step.message_id,
                workspace_id=step.workspace_id,
                from_sandbox_id=step.from_sandbox_id,
                from_agent=step.from_agent,
                to_sandbox_id=step.to_sandbox_id,
                to_agent=step.to_agent,
                message_type="request",
                content={
                    "text": step.text,
                    "collaboration_id": step.collaboration_id,
                    "step": step.step,
                    "tools": step.tools,
                },
                priority=5,
                requires_response=True,
                timeout_seconds=step.timeout_seconds,
                correlation_id=step.collaboration_id,
                collaboration_id=step.collaboration_id,
                status=MessageStatus.PENDING_APPROVAL
                if decision.approval_required
                else MessageStatus.QUEUED,
            )
            session.add(m)
            await session.flush()
            publish_to_both(
                session, m, "message_queued", {**message_event_data(m), "step": step.step}
            )
            await session.commit()
            return StepSent(m.id, decision.approval_required)

    @activity.defn(name="collaboration_reply")
    async def reply(self, message_id: str) -> StepReply:
        """The step's outcome: the reply text when the agent answered, else why not."""
        async with self._sessions() as session:
            m = await session.get(Message, message_id)
            if m is None:
                return StepReply("failed", reason="the step's message was deleted")
            if m.status != MessageStatus.RESPONDED or not m.response_message_id:
                return StepReply(m.status, reason=m.status_reason or f"message {m.status}")
            r = await session.get(Message, m.response_message_id)
            text = str((r.content or {}).get("text", "")) if r is not None else ""
            return StepReply(m.status, text=text, agent=r.from_agent if r else None)

    @activity.defn(name="collaboration_record")
    async def record(self, snap: Snapshot) -> bool:
        """Mirror the workflow's state into the read model and the event stream (once per
        version). The final snapshot also fails the collaboration's messages still in flight."""
        async with self._sessions() as session:
            row = await session.get(Collaboration, snap.collaboration_id, with_for_update=True)
            if row is None or row.version >= snap.version:
                return False
            now = utcnow()
            progress = asdict(snap.progress)
            row.version, row.status, row.progress = snap.version, snap.status, progress
            row.steps, row.deliverables = snap.steps, snap.deliverables
            # The final result says how well the run did its job (fallback plan, empty or
            # echoed outputs, no valid vote): `completed` alone would not tell the truth.
            result = with_warnings(row.mode, snap.result, snap.steps) if snap.finished else None
            row.result, row.error, row.updated_at = result or snap.result, snap.error, now
            if row.started_at is None and snap.status != "initializing":
                row.started_at = now
            if snap.finished and row.completed_at is None:
                row.completed_at = now
                FINISHED_TOTAL.labels(snap.status, row.mode).inc()
                await self._close_open_messages(session, row, now)
            if snap.event:
                events.append(
                    session,
                    channel="collaboration",
                    event=snap.event,
                    data={
                        "collaboration_id": row.id,
                        "status": row.status,
                        "progress": progress,
                        # A watcher builds its snapshot from the event alone (no re-read that
                        # would count against a rate limit) and drops a version it has seen.
                        "version": snap.version,
                        "estimated_completion": _estimate(row, progress, now),
                        **snap.event_data,
                        **({"result": result} if result is not None else {}),
                    },
                    workspace_id=row.workspace_id,
                    collaboration_id=row.id,
                )
            await session.commit()
            return True

    async def _close_open_messages(
        self, session: AsyncSession, row: Collaboration, now: object
    ) -> None:
        assert row.status in FINISHED
        reason = f"collaboration {row.status}"
        open_messages = await session.scalars(
            select(Message).where(
                Message.collaboration_id == row.id,
                Message.requires_response.is_(True),  # the step requests, not the replies
                Message.status.in_(OPEN),
            )
        )
        for m in open_messages:
            m.status, m.status_reason, m.failed_at = MessageStatus.FAILED, reason, now
            publish_to_both(
                session, m, "message_failed", {**message_event_data(m), "reason": reason}
            )


def _estimate(row: Collaboration, progress: dict[str, object], now: datetime) -> str | None:
    """What GET /collaborations/{id} says as `estimated_completion` at this change."""
    if row.status in FINISHED:
        return None
    return iso(
        estimate_completion(
            created_at=as_utc(row.created_at),
            started_at=as_utc(row.started_at) if row.started_at else None,
            progressed_at=now,
            progress=progress,
            estimated_duration_seconds=row.estimated_duration_seconds,
            timeout_seconds=row.timeout_seconds,
            now=now,
        )
    )
