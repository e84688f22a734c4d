"""MessageDeliveryWorkflow (`message-{message_id}`): the durable life of one message that needs
a human's approval or an agent's reply. Operators find it by message id in the Temporal UI,
see every LLM call and tool run as an activity, and can reset it. A delivery that fails (denied,
expired, not delivered, no reply, timed out) ends the workflow as *failed* (`DeliveryFailed`),
so the UI's status filter finds it; its message's row says the same."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.messaging import EnqueueInput
    from domain import search_attributes as sa
    from domain.agent import AgentTurnPlan, ResponseRecord, ToolInvocation
    from domain.llm import ChatMessage, LLMResult
    from domain.messages import (
        ApprovalDecision,
        Envelope,
        MessageDeliveryInput,
        MessageStatus,
        StatusChange,
    )
    from workflows import policies as p


# Behind workflow.patched: histories recorded before this ended "completed" with the status as
# result (tests/histories/message_delivery_failed_before_patch.json replays them).
DELIVERY_FAILURE_FAILS = "delivery-failure-fails-workflow"
DELIVERY_FAILED = "DeliveryFailed"  # the ApplicationError type an operator filters on
NOT_DELIVERED = "not_delivered"
FAILED_ENDINGS = frozenset({MessageStatus.FAILED, MessageStatus.TIMEOUT, NOT_DELIVERED})


@workflow.defn(name="MessageDelivery")
class MessageDeliveryWorkflow:
    """Wait for the owner's approval (bounded), then hand the message to the target's inbox."""

    def __init__(self) -> None:
        self._decision: ApprovalDecision | None = None
        self._status = MessageStatus.PENDING_APPROVAL.value
        self._delivered = False
        self._reason: str | None = None

    @workflow.signal(name="delivered")
    def delivered(self) -> None:
        """The target's inbox delivered the message: the agent's turn may start."""
        self._delivered = True

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
        status = await self._run(inp)
        if status in FAILED_ENDINGS and workflow.patched(DELIVERY_FAILURE_FAILS):
            await workflow.wait_condition(workflow.all_handlers_finished)  # `decide` answered
            # The message's own status (not delivered in time is `failed` in its row too).
            shown = MessageStatus.FAILED if status == NOT_DELIVERED else status
            workflow.upsert_search_attributes([sa.MESSAGE_STATUS.value_set(str(shown))])
            raise ApplicationError(
                f"message {inp.message_id} {status}: {self._reason or status}",
                {"message_id": inp.message_id, "status": status, "reason": self._reason},
                type=DELIVERY_FAILED,
                non_retryable=True,
            )
        return status

    async def _run(self, inp: MessageDeliveryInput) -> str:
        if not inp.needs_approval:
            self._status = MessageStatus.QUEUED
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
            await self._change(
                inp, MessageStatus.PENDING_APPROVAL, MessageStatus.QUEUED, None, "message_approved"
            )
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
        if not inp.requires_response:
            return self._status
        try:
            # The inbox fails a message it cannot deliver in max_wait; wait a little longer.
            await workflow.wait_condition(
                lambda: self._delivered, timeout=timedelta(seconds=inp.max_wait_seconds + 60)
            )
        except TimeoutError:
            self._reason = f"not delivered within {inp.max_wait_seconds + 60:.0f} s"
            return NOT_DELIVERED
        self._status = MessageStatus.DELIVERED
        turn = asyncio.create_task(self._reply(inp))
        try:
            await workflow.wait_condition(turn.done, timeout=timedelta(seconds=inp.timeout_seconds))
        except TimeoutError:
            turn.cancel()  # cancels the LLM call or tool run in flight
            await self._change(
                inp,
                MessageStatus.DELIVERED,
                MessageStatus.TIMEOUT,
                f"no response within {inp.timeout_seconds} s",
                "message_timeout",
            )
            return self._status
        try:
            turn.result()
        except ActivityError as err:
            await self._change(
                inp,
                MessageStatus.DELIVERED,
                MessageStatus.FAILED,
                f"the agent could not answer: {_cause(err)}",
                "message_failed",
            )
        return self._status

    async def _reply(self, inp: MessageDeliveryInput) -> None:
        """One agent turn: LLM calls with the sandbox's tools, bounded steps, reply stored."""
        plan = await workflow.execute_activity(
            "agent_prepare",
            inp.message_id,
            start_to_close_timeout=p.STORE_TIMEOUT,
            retry_policy=p.STORE_RETRY,
            result_type=AgentTurnPlan,
        )
        if plan is None:
            return
        req = plan.request
        steps = tool_calls = tokens_in = tokens_out = 0
        result: LLMResult | None = None
        for step in range(1, req.max_steps + 1):
            steps = step
            result = await workflow.execute_activity(
                "llm_complete",
                req,
                start_to_close_timeout=timedelta(seconds=req.provider.timeout_seconds),
                heartbeat_timeout=p.LLM_HEARTBEAT,
                retry_policy=p.LLM_RETRY,
                result_type=LLMResult,
            )
            tokens_in += result.input_tokens
            tokens_out += result.output_tokens
            if not result.tool_calls:
                break
            req.messages.append(result.as_message())
            for call in result.tool_calls:
                tool_calls += 1
                output = await workflow.execute_activity(
                    "sandbox_tool",
                    ToolInvocation(
                        plan.sandbox_id, call.name, call.arguments, plan.tool_timeout_seconds
                    ),
                    start_to_close_timeout=timedelta(seconds=plan.tool_timeout_seconds + 30),
                    retry_policy=p.DOCKER_RETRY,
                    result_type=str,
                )
                req.messages.append(ChatMessage(role="tool", content=output, tool_call_id=call.id))
        assert result is not None
        await workflow.execute_activity(
            "message_record_response",
            ResponseRecord(
                inp.message_id,
                plan.agent_name,
                result.content or "",
                result.model,
                result.provider,
                tokens_in,
                tokens_out,
                steps,
                tool_calls,
            ),
            start_to_close_timeout=p.STORE_TIMEOUT,
            retry_policy=p.STORE_RETRY,
        )
        self._status = MessageStatus.RESPONDED

    async def _change(
        self, inp: MessageDeliveryInput, frm: str, to: str, reason: str | None, event: str
    ) -> None:
        await workflow.execute_activity(
            "message_set_status",
            StatusChange(inp.message_id, frm, to, reason, event),
            start_to_close_timeout=p.STORE_TIMEOUT,
            retry_policy=p.STORE_RETRY,
            result_type=bool,
        )
        self._status, self._reason = to, reason

    async def _fail(self, inp: MessageDeliveryInput, reason: str) -> str:
        await self._change(
            inp, MessageStatus.PENDING_APPROVAL, MessageStatus.FAILED, reason, "message_failed"
        )
        return self._status


def _cause(err: ActivityError) -> str:
    cause = err.cause
    return str(getattr(cause, "message", None) or cause or err)
