"""InboxWorkflow: one per sandbox (`inbox-{sandbox_id}`), fed by signal-with-start.

Signals into one long-lived workflow cost ≈ 2 ms each here, against ≈ 40 ms for a workflow per
message (RECIPES.md baselines), so the inbox batches deliveries and continues-as-new well before
Temporal's history limits.
"""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from domain.ids import message_workflow_id
    from domain.messages import DeliveryBatch, DeliveryOutcome, Envelope, FailBatch, InboxInput
    from workflows import policies as p

_SEEN_KEPT = 2000


@workflow.defn(name="Inbox")
class InboxWorkflow:
    """Deliver queued messages in priority order while the target sandbox runs."""

    def __init__(self) -> None:
        self._pending: list[Envelope] = []
        self._seen: dict[str, None] = {}  # insertion-ordered set of delivery keys
        self._signals = 0

    @workflow.signal(name="enqueue")
    def enqueue(self, env: Envelope) -> None:
        """Accept one message (a duplicate signal for the same delivery is ignored)."""
        if env.key in self._seen:
            return
        self._seen[env.key] = None
        self._pending.append(env)
        self._signals += 1

    @workflow.signal(name="enqueue_many")
    def enqueue_many(self, envs: list[Envelope]) -> None:
        """Accept several messages at once: the API coalesces the messages accepted for one
        inbox while its previous signal is in flight (one signal instead of one per message)."""
        for env in envs:
            self.enqueue(env)

    @workflow.query(name="pending")
    def pending(self) -> list[str]:
        """Message ids waiting for delivery, in the order they will go."""
        return [e.message_id for e in self._ordered()]

    def _ordered(self) -> list[Envelope]:
        return sorted(self._pending, key=lambda e: (-e.priority, e.accepted_at, e.message_id))

    @workflow.run
    async def run(self, inp: InboxInput) -> None:
        for env in inp.pending:
            self.enqueue(env)
        for key in inp.seen:
            self._seen.setdefault(key, None)
        while True:
            await workflow.wait_condition(lambda: bool(self._pending))
            status = await workflow.execute_activity(
                "inbox_target_status",
                inp.sandbox_id,
                start_to_close_timeout=p.STORE_TIMEOUT,
                retry_policy=p.STORE_RETRY,
                result_type=str,
            )
            if status is None:
                await self._fail(inp, self._pending, "target sandbox no longer exists")
                return
            if status != "running":
                await self._fail_expired(inp, status)
                with contextlib.suppress(TimeoutError):
                    await workflow.wait_condition(
                        lambda: False, timeout=timedelta(seconds=inp.recheck_seconds)
                    )
                continue
            batch = self._ordered()[: inp.batch_size]
            outcome = await workflow.execute_activity(
                "inbox_deliver",
                DeliveryBatch(inp.sandbox_id, [e.message_id for e in batch]),
                start_to_close_timeout=p.STORE_TIMEOUT,
                retry_policy=p.STORE_RETRY,
                result_type=DeliveryOutcome,
            )
            self._drop(batch)
            for message_id in outcome.awaiting_reply:
                # The message's own workflow runs the agent's reply once it is delivered; it may
                # be gone already (its collaboration was cancelled), which is not the inbox's
                # failure.
                handle = workflow.get_external_workflow_handle(message_workflow_id(message_id))
                try:
                    await handle.signal("delivered")
                except Exception as exc:
                    workflow.logger.warning("message %s: reply not started: %s", message_id, exc)
            if (
                self._signals >= inp.signals_per_run
                or workflow.info().is_continue_as_new_suggested()
            ):
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(
                    InboxInput(
                        sandbox_id=inp.sandbox_id,
                        workspace_id=inp.workspace_id,
                        max_wait_seconds=inp.max_wait_seconds,
                        recheck_seconds=inp.recheck_seconds,
                        batch_size=inp.batch_size,
                        signals_per_run=inp.signals_per_run,
                        pending=self._pending,
                        seen=list(self._seen)[-_SEEN_KEPT:],
                    )
                )

    def _drop(self, done: list[Envelope]) -> None:
        keys = {e.key for e in done}
        self._pending = [e for e in self._pending if e.key not in keys]

    async def _fail_expired(self, inp: InboxInput, status: str) -> None:
        now = workflow.now()
        expired = [
            e
            for e in self._pending
            if (now - datetime.fromisoformat(e.accepted_at)).total_seconds() >= inp.max_wait_seconds
        ]
        if expired:
            await self._fail(
                inp,
                expired,
                f"target sandbox was not running ({status}) for {inp.max_wait_seconds:.0f} s",
            )

    async def _fail(self, inp: InboxInput, envs: list[Envelope], reason: str) -> None:
        await workflow.execute_activity(
            "inbox_fail",
            FailBatch(inp.sandbox_id, [e.message_id for e in envs], reason),
            start_to_close_timeout=p.STORE_TIMEOUT,
            retry_policy=p.STORE_RETRY,
            result_type=list[str],
        )
        self._drop(envs)
