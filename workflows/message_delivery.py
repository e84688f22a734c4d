"""MessageDeliveryWorkflow (`message-{message_id}`): the durable life of one message that needs
a human's approval (or, later, an agent's reply). Operators find it by message id."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.messaging import EnqueueInput
    from domain.messages import (
        ApprovalDecision,
        Envelope,
        MessageDeliveryInput,
        MessageStatus,
        StatusChange,
    )
    from workflows import policies as p


@workflow.defn(name="MessageDelivery")
class MessageDeliveryWorkflow:
    """Wait for the owner's approval (bounded), then hand the message to the target's inbox."""

    def __init__(self) -> None:
        self._decision: ApprovalDecision | None = None
        self._status = MessageStatus.PENDING_APPROVAL.value

    @workflow.update(name="decide")
    async def decide(self, decision: ApprovalDecision) -> str:
        """The workspace owner approves or denies; answers with the message's new status."""
        self._decision = decision
        await workflow.wait_condition(lambda: self._status != MessageStatus.PENDING_APPROVAL)
        return self._status

    @decide.validator
    def _validate_decide(self, decision: ApprovalDecision) -> None:
        if self._decision is not None or self._status != MessageStatus.PENDING_APPROVAL:
            raise ApplicationError(
                f"message is no longer pending approval ({self._status})", type="NotPendingApproval"
            )

    @workflow.query(name="status")
    def status(self) -> str:
        return self._status

    @workflow.run
    async def run(self, inp: MessageDeliveryInput) -> str:
        if inp.needs_approval:
            try:
                await workflow.wait_condition(
                    lambda: self._decision is not None,
                    timeout=timedelta(seconds=inp.approval_timeout_seconds),
                )
            except TimeoutError:
                return await self._fail(
                    inp, f"approval expired after {inp.approval_timeout_seconds:.0f} s"
                )
            assert self._decision is not None
            if not self._decision.approved:
                why = f": {self._decision.reason}" if self._decision.reason else ""
                return await self._fail(inp, f"denied by the workspace owner{why}")
            await self._set(inp, MessageStatus.QUEUED, None, "message_approved")
        await workflow.execute_activity(
            "message_enqueue",
            EnqueueInput(
                inp.to_sandbox_id,
                inp.workspace_id,
                Envelope(inp.message_id, inp.priority, workflow.now().isoformat(), inp.attempt),
                inp.max_wait_seconds,
            ),
            start_to_close_timeout=p.STORE_TIMEOUT,
            retry_policy=p.STORE_RETRY,
        )
        return self._status

    async def _set(
        self, inp: MessageDeliveryInput, to: str, reason: str | None, event: str
    ) -> None:
        await workflow.execute_activity(
            "message_set_status",
            StatusChange(inp.message_id, MessageStatus.PENDING_APPROVAL, to, reason, event),
            start_to_close_timeout=p.STORE_TIMEOUT,
            retry_policy=p.STORE_RETRY,
            result_type=bool,
        )
        self._status = to

    async def _fail(self, inp: MessageDeliveryInput, reason: str) -> str:
        await self._set(inp, MessageStatus.FAILED, reason, "message_failed")
        return self._status
