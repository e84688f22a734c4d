"""CollaborationWorkflow (`collaboration-{collaboration_id}`): several agents work one task.

Every turn is a real message to a participant's agent, run as a child `MessageDeliveryWorkflow`
(`message-{message_id}`, visible under the collaboration in the Temporal UI), so a turn gets the
delivery's guarantees: policy check, the owner's approval when a rule asks for it, waiting for a
stopped sandbox, the agent's tools, a stored reply, once. The modes only decide who is asked
what, and in which order:

- orchestrated: the orchestrator plans (validated JSON, asked again once, else one step per
  deliverable), steps run in dependency order with independent ones in parallel, the
  orchestrator integrates the deliverables;
- peer_to_peer: participants take turns on the shared conversation until one declares the
  deliverables complete (after everyone spoke) or the turn limit;
- swarm: independent proposals in parallel, then every participant votes; the majority wins.

Progress is a query and is mirrored (serially, versioned) into the read model and the event
stream on every change; `percentage` never goes down. A timeout fails the collaboration with its
partial deliverables kept; the `cancel` update or a Temporal cancel stops every step in flight.
"""

from __future__ import annotations

import asyncio
import copy
from dataclasses import asdict
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    ChildWorkflowError,
)

with workflow.unsafe.imports_passed_through():
    from domain import collaboration_prompts as prompts
    from domain import search_attributes as sa
    from domain.collaboration import (
        DONE_MARKER,
        PLAN_ATTEMPTS,
        STEP_ATTEMPTS,
        CollaborationInput,
        CollaborationMode,
        CollaborationStatus,
        Participant,
        PlanInvalid,
        PlanStep,
        Progress,
        Snapshot,
        StepMessage,
        StepReply,
        StepSent,
        fallback_plan,
        parse_plan,
        parse_vote,
        ready_steps,
        sections,
        tally,
        weighted_percentage,
    )
    from domain.errors import ErrorCode
    from domain.ids import Prefix, message_workflow_id, new_id
    from domain.messages import MessageDeliveryInput
    from workflows import policies as p

COLLABORATION_WORKFLOW = "Collaboration"
STOP_GRACE_SECONDS = 5.0
# Behind workflow.patched: histories recorded before this ended "completed" with the status as
# result (tests/histories/collaboration_failed_before_patch.json replays them).
FAILURE_FAILS = "collaboration-failure-fails-workflow"
COLLABORATION_FAILED = "CollaborationFailed"  # the ApplicationError type operators filter on
# Behind workflow.patched: swarm proposals and votes count as completed steps as they finish (and
# each is recorded, so watchers see them), and `current_step` is cleared whatever the end
# (histories recorded before this replay from
# tests/histories/collaboration_*_completed_before_progress_patch.json).
PROGRESS_RULES = "collaboration-progress-rules"


class StepFailed(Exception):
    """A participant's step failed on every attempt: the collaboration fails with this."""


@workflow.defn(name=COLLABORATION_WORKFLOW)
class CollaborationWorkflow:
    def __init__(self) -> None:
        self._progress = Progress()
        self._status = CollaborationStatus.INITIALIZING.value
        self._steps: dict[str, dict[str, Any]] = {}  # step records, in the order they started
        self._deliverables: dict[str, str] = {}
        self._result: dict[str, Any] | None = None
        self._failure: str | None = None
        self._cancel_reason: str | None = None
        self._finished = False
        self._version = 0
        self._record_lock = asyncio.Lock()  # snapshots reach the read model in order
        self._inp: CollaborationInput
        self._deadline: Any = None
        self._progress_rules = False  # PROGRESS_RULES, decided once at the start of the run

    # -- operator and API surface ---------------------------------------------------------

    @workflow.query(name="progress")
    def progress(self) -> dict[str, Any]:
        return {
            "status": self._status,
            "progress": asdict(self._progress),
            "steps": list(self._steps.values()),
            "deliverables": dict(self._deliverables),
        }

    @workflow.update(name="cancel")
    async def cancel(self, reason: str) -> str:
        """Stop the collaboration and every step in flight; answers with the final status."""
        self._cancel_reason = reason or "cancelled by the workspace owner"
        await workflow.wait_condition(lambda: self._finished)
        return self._status

    @cancel.validator
    def _validate_cancel(self, reason: str) -> None:
        if self._finished or self._cancel_reason is not None:
            raise ApplicationError(
                f"the collaboration is already {self._status}", type="CollaborationFinished"
            )

    # -- the run -----------------------------------------------------------------------------

    @workflow.run
    async def run(self, inp: CollaborationInput) -> str:
        self._inp = inp
        self._deadline = workflow.now() + timedelta(seconds=inp.timeout_seconds)
        self._progress_rules = workflow.patched(PROGRESS_RULES)
        self._progress.participants = {
            x.sandbox_id: {"name": x.name, "status": "idle", "messages_exchanged": 0}
            for x in inp.participants
        }
        self._status = CollaborationStatus.IN_PROGRESS
        await self._record("collaboration_started", {"mode": inp.mode, "task": inp.task})
        body = asyncio.create_task(self._run_mode(inp))
        timed_out = False
        try:
            await workflow.wait_condition(
                lambda: body.done() or self._cancel_reason is not None,
                timeout=timedelta(seconds=inp.timeout_seconds),
            )
        except TimeoutError:
            timed_out = True
        except asyncio.CancelledError:  # cancelled from the Temporal UI or CLI
            self._cancel_reason = "cancelled through Temporal"
            await self._stop(body)
            await self._finish(CollaborationStatus.CANCELLED, None, self._cancel_reason)
            raise
        if timed_out or self._cancel_reason is not None:
            await self._stop(body)
        if timed_out:
            why = f"timed out after {inp.timeout_seconds} s"
            await self._finish(CollaborationStatus.FAILED, ErrorCode.COLLABORATION_FAILED, why)
        elif self._cancel_reason is not None:
            await self._finish(CollaborationStatus.CANCELLED, None, self._cancel_reason)
        elif (exc := body.exception()) is not None:
            await self._finish(
                CollaborationStatus.FAILED, ErrorCode.COLLABORATION_FAILED, _reason(exc)
            )
        else:
            self._progress.advance(100)
            self._progress.current_step = None
            await self._finish(CollaborationStatus.COMPLETED, None, None)
        if self._status == CollaborationStatus.FAILED and workflow.patched(FAILURE_FAILS):
            # Failed (a step, the timeout) is a failed workflow: the Temporal UI's status
            # filter finds it. The read model and the stream already say so (_finish).
            raise ApplicationError(
                self._failure or "the collaboration failed",
                {"collaboration_id": inp.collaboration_id},
                type=COLLABORATION_FAILED,
                non_retryable=True,
            )
        return self._status

    async def _stop(self, body: asyncio.Task[None]) -> None:
        """Cancel the mode and give the steps in flight a moment to stop. One that does not
        (the SDK can lose a cancel that lands while a child is starting) is not waited for:
        its child delivery is terminated when this workflow closes (parent close policy)."""
        if not body.done():
            body.cancel()
            await workflow.wait([body], timeout=STOP_GRACE_SECONDS)

    async def _finish(self, status: str, code: str | None, reason: str | None) -> None:
        self._status = status
        self._failure = reason
        for state in self._progress.participants.values():
            if state["status"] == "active":
                state["status"] = "idle"
        for rec in self._steps.values():
            if rec["status"] == "running":  # stopped by the timeout or the cancel
                rec["status"] = "cancelled"
        if self._progress_rules:  # nothing is in progress once it ended, however it ended
            self._progress.current_step = None
        error = {"code": code, "message": reason} if reason else None
        await self._record(
            f"collaboration_{status}",
            {"reason": reason, "result": self._result},
            error=error,
            finished=True,
        )
        self._finished = True
        await workflow.wait_condition(workflow.all_handlers_finished)

    async def _run_mode(self, inp: CollaborationInput) -> None:
        if inp.mode == CollaborationMode.ORCHESTRATED:
            await self._orchestrated(inp)
        elif inp.mode == CollaborationMode.PEER_TO_PEER:
            await self._peer_to_peer(inp)
        else:
            await self._swarm(inp)

    # -- orchestrated --------------------------------------------------------------------------

    async def _orchestrated(self, inp: CollaborationInput) -> None:
        orch = inp.orchestrator
        self._progress.remaining_steps = ["task_breakdown", "integration"]
        plan: list[PlanStep] | None = None
        feedback = None
        for _ in range(PLAN_ATTEMPTS):
            text = await self._step(
                "task_breakdown", orch, orch, prompts.plan(inp, feedback), tools=False
            )
            try:
                plan = parse_plan(text, inp.participants, inp.deliverables)
                source = "orchestrator"
                break
            except PlanInvalid as exc:
                feedback = str(exc)
        if plan is None:
            plan = fallback_plan(inp.task, inp.participants, inp.deliverables)
            source = f"fallback (the orchestrator's plan was invalid: {feedback})"
        self._complete("task_breakdown")
        by_id = {x.sandbox_id: x for x in inp.participants}
        self._progress.remaining_steps = [s.id for s in plan] + ["integration"]
        self._progress.advance(10)
        await self._record(
            "plan_ready",
            {
                "plan_source": source,
                "plan": [
                    {
                        "id": s.id,
                        "assignee": s.assignee,
                        "deliverable": s.deliverable,
                        "depends_on": list(s.depends_on),
                    }
                    for s in plan
                ],
            },
        )
        outputs: dict[str, str] = {}
        running: dict[str, asyncio.Task[str]] = {}
        while len(outputs) < len(plan):
            for s in ready_steps(plan, set(outputs), set(outputs) | set(running)):
                inputs = {d: outputs[d] for d in s.depends_on}
                text = prompts.step(inp.task, s, inputs)
                running[s.id] = asyncio.create_task(self._step(s.id, by_id[s.assignee], orch, text))
            done = await self._first_done(running.values())
            for sid, task in list(running.items()):
                if task not in done:
                    continue
                del running[sid]
                if task.exception() is not None:
                    await self._cancel_all(running.values())
                    raise task.exception()  # type: ignore[misc]
                outputs[sid] = task.result()
                s = next(x for x in plan if x.id == sid)
                # The deliverable's own section when the reply has one, else the whole reply.
                text = sections(outputs[sid], [s.deliverable]).get(s.deliverable, outputs[sid])
                prior = self._deliverables.get(s.deliverable)
                self._deliverables[s.deliverable] = f"{prior}\n\n{text}" if prior else text
                self._complete(sid)
                self._progress.advance(10 + weighted_percentage([(80, len(outputs), len(plan))]))
                await self._record("step_completed", {"step": sid, "deliverable": s.deliverable})
        summary = await self._step(
            "integration", orch, orch, prompts.integrate(inp.task, self._deliverables), tools=False
        )
        self._result = {"summary": summary, "plan_source": source, "steps": len(plan)}
        self._complete("integration")

    # -- peer to peer --------------------------------------------------------------------------

    async def _peer_to_peer(self, inp: CollaborationInput) -> None:
        team = inp.participants
        turns = inp.max_turns or 2 * len(team)
        names = [f"turn_{i + 1}_{team[i % len(team)].name}" for i in range(turns)]
        self._progress.remaining_steps = list(names)
        transcript: list[tuple[str, str]] = []
        ended_by = "turn limit"
        for i, name in enumerate(names):
            speaker, previous = team[i % len(team)], team[(i - 1) % len(team)]
            text = await self._step(
                name, speaker, previous, prompts.peer_turn(inp, speaker, transcript)
            )
            transcript.append((speaker.name, text))
            self._deliverables.update(sections(text, inp.deliverables or ["result"]))
            self._complete(name)
            self._progress.advance(weighted_percentage([(90, i + 1, turns)]))
            await self._record("step_completed", {"step": name, "speaker": speaker.sandbox_id})
            if DONE_MARKER in text.upper() and i + 1 >= len(team):
                ended_by = f"{speaker.name} declared the deliverables complete"
                self._progress.remaining_steps = []
                break
        final = transcript[-1][1].replace(DONE_MARKER, "").strip()
        for name in inp.deliverables:
            self._deliverables.setdefault(name, final)
        self._result = {
            "final": final,
            "turns": len(transcript),
            "ended_by": ended_by,
            "conversation": [{"participant": who, "text": text} for who, text in transcript],
        }

    # -- swarm ------------------------------------------------------------------------------------

    async def _swarm(self, inp: CollaborationInput) -> None:
        team, orch = inp.participants, inp.orchestrator
        self._progress.remaining_steps = (
            [f"proposal_{x.name}" for x in team] + [f"vote_{x.name}" for x in team] + ["consensus"]
        )
        texts = await self._all(
            [self._step(f"proposal_{x.name}", x, orch, prompts.proposal(inp)) for x in team],
            lambda n: weighted_percentage([(45, n, len(team))]),
            [f"proposal_{x.name}" for x in team],
        )
        proposals = [(x.name, t) for x, t in zip(team, texts, strict=True)]
        ballots = await self._all(
            [
                self._step(f"vote_{x.name}", x, orch, prompts.vote(inp, proposals), tools=False)
                for x in team
            ],
            lambda n: 45 + weighted_percentage([(45, n, len(team))]),
            [f"vote_{x.name}" for x in team],
        )
        votes = {x.sandbox_id: parse_vote(b, len(team)) for x, b in zip(team, ballots, strict=True)}
        winner, how = tally(votes, [x.sandbox_id for x in team], orch.sandbox_id)
        chosen = texts[winner - 1]
        found = sections(chosen, inp.deliverables)
        self._deliverables.update({d: found.get(d, chosen) for d in inp.deliverables})
        self._result = {
            "consensus": chosen,
            "winner": {"proposal": winner, "sandbox_id": team[winner - 1].sandbox_id},
            "decided_by": how,
            "votes": votes,
            "proposals": [
                {"sandbox_id": x.sandbox_id, "text": t} for x, t in zip(team, texts, strict=True)
            ],
        }
        self._complete("consensus")
        await self._record("consensus_reached", {"winner": winner, "votes": votes, "how": how})

    async def _all(self, turns: list[Any], percent: Any, names: list[str]) -> list[str]:
        """Run turns in parallel (`names`: their steps); any failure cancels the rest and fails
        the collaboration."""
        tasks = [asyncio.create_task(t) for t in turns]
        pending = list(tasks)  # lists, not sets: commands must come in the same order on replay
        while pending:
            done = await self._first_done(pending)
            pending = [t for t in pending if t not in done]
            for task in tasks:
                if task in done and task.exception() is not None:
                    await self._cancel_all(pending)
                    raise task.exception()  # type: ignore[misc]
            self._progress.advance(percent(len(tasks) - len(pending)))
            if self._progress_rules:  # a finished turn leaves remaining_steps at once, and shows
                for name, task in zip(names, tasks, strict=True):
                    if task in done:
                        self._complete(name)
                        await self._record("step_completed", {"step": name})
        return [t.result() for t in tasks]

    async def _first_done(self, tasks: Any) -> set[asyncio.Task[str]]:
        """Wait for one of the step tasks; when the collaboration itself is cancelled (timeout,
        cancel), cancel them all first, so their deliveries stop instead of running on."""
        tasks = list(tasks)
        try:
            done, _ = await workflow.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            await self._cancel_all(tasks)
            raise
        return set(done)

    async def _cancel_all(self, tasks: Any) -> None:
        tasks = list(tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await workflow.wait(tasks, timeout=STOP_GRACE_SECONDS)
        for task in tasks:  # retrieved, so asyncio does not log them as lost
            if task.done() and not task.cancelled():
                task.exception()

    # -- one turn: a message with requires_response, as a child delivery --------------------------

    async def _step(
        self, name: str, to: Participant, frm: Participant, text: str, *, tools: bool = True
    ) -> str:
        rec = self._steps.setdefault(
            name,
            {
                "step": name,
                "assignee": to.sandbox_id,
                "agent": to.agent,
                "status": "running",
                "attempts": 0,
                "message_ids": [],
                "output": None,
                "error": None,
            },
        )
        rec["status"] = "running"
        self._progress.current_step = name
        self._progress.participants[to.sandbox_id]["status"] = "active"
        await self._record("step_started", {"step": name, "assignee": to.sandbox_id})
        reason = "no attempt"
        for _ in range(STEP_ATTEMPTS):
            rec["attempts"] += 1
            reply = await self._ask(name, to, frm, text, rec, tools)
            if reply.text is not None:
                rec["status"], rec["output"], rec["error"] = "completed", reply.text, None
                self._count(frm, to)
                self._progress.participants[to.sandbox_id]["status"] = "idle"
                return reply.text
            reason = reply.reason or reply.status
            rec["error"] = reason
            await self._record("step_retry", {"step": name, "reason": reason})
        rec["status"] = "failed"
        self._progress.participants[to.sandbox_id]["status"] = "failed"
        raise StepFailed(f"step {name} ({to.name}) failed after {STEP_ATTEMPTS} attempts: {reason}")

    async def _ask(
        self,
        name: str,
        to: Participant,
        frm: Participant,
        text: str,
        rec: dict[str, Any],
        tools: bool,
    ) -> StepReply:
        inp = self._inp
        message_id = new_id(Prefix.MESSAGE, workflow.random())
        rec["message_ids"].append(message_id)
        # A little beyond the collaboration's own deadline, so the collaboration's timeout (and
        # not a half-used retry) is what ends a slow step.
        timeout = max(1, int((self._deadline - workflow.now()).total_seconds())) + 5
        sent = await workflow.execute_activity(
            "collaboration_send",
            StepMessage(
                inp.collaboration_id,
                inp.workspace_id,
                message_id,
                name,
                frm.sandbox_id,
                frm.agent,
                to.sandbox_id,
                to.agent,
                text,
                timeout,
                tools,
            ),
            start_to_close_timeout=p.STORE_TIMEOUT,
            retry_policy=p.STORE_RETRY,
            result_type=StepSent,
        )
        self._count(frm, to)
        try:
            await self._deliver(name, to, message_id, sent, timeout)
        except ChildWorkflowError as exc:  # the attempt failed; its message says why
            if isinstance(exc.cause, CancelledError):  # we are being cancelled: no retry
                raise asyncio.CancelledError() from exc
            workflow.logger.warning("step %s: delivery %s failed: %s", name, message_id, exc)
        return await workflow.execute_activity(
            "collaboration_reply",
            message_id,
            start_to_close_timeout=p.STORE_TIMEOUT,
            retry_policy=p.STORE_RETRY,
            result_type=StepReply,
        )

    async def _deliver(
        self, name: str, to: Participant, message_id: str, sent: StepSent, timeout: int
    ) -> None:
        inp = self._inp
        await workflow.execute_child_workflow(
            "MessageDelivery",
            MessageDeliveryInput(
                message_id=message_id,
                workspace_id=inp.workspace_id,
                to_sandbox_id=to.sandbox_id,
                needs_approval=sent.needs_approval,
                approval_timeout_seconds=inp.approval_timeout_seconds,
                requires_response=True,
                timeout_seconds=timeout,
                max_wait_seconds=inp.max_wait_seconds,
            ),
            id=message_workflow_id(message_id),
            result_type=str,
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(sa.WORKSPACE_ID, inp.workspace_id),
                    SearchAttributePair(sa.SANDBOX_ID, to.sandbox_id),
                    SearchAttributePair(sa.MESSAGE_ID, message_id),
                    SearchAttributePair(sa.COLLABORATION_ID, inp.collaboration_id),
                ]
            ),
        )

    # -- progress bookkeeping -------------------------------------------------------------------

    def _count(self, frm: Participant, to: Participant) -> None:
        for sid in {frm.sandbox_id, to.sandbox_id}:
            if sid in self._progress.participants:
                self._progress.participants[sid]["messages_exchanged"] += 1

    def _complete(self, name: str) -> None:
        if name not in self._progress.completed_steps:
            self._progress.completed_steps.append(name)
        if name in self._progress.remaining_steps:
            self._progress.remaining_steps.remove(name)
        if self._progress.current_step == name:
            running = [k for k, r in self._steps.items() if r["status"] == "running"]
            self._progress.current_step = running[-1] if running else None

    async def _record(
        self,
        event: str,
        data: dict[str, Any],
        *,
        error: dict[str, Any] | None = None,
        finished: bool = False,
    ) -> None:
        async with self._record_lock:
            self._version += 1
            snap = Snapshot(
                collaboration_id=self._inp.collaboration_id,
                workspace_id=self._inp.workspace_id,
                version=self._version,
                status=self._status,
                event=event,
                progress=copy.deepcopy(self._progress),
                steps=copy.deepcopy(list(self._steps.values())),
                deliverables=dict(self._deliverables),
                result=copy.deepcopy(self._result),
                error=error,
                event_data=data,
                finished=finished,
            )
            await workflow.execute_activity(
                "collaboration_record",
                snap,
                start_to_close_timeout=p.STORE_TIMEOUT,
                retry_policy=p.STORE_RETRY,
                result_type=bool,
            )


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ActivityError | ChildWorkflowError) and exc.cause is not None:
        return str(getattr(exc.cause, "message", None) or exc.cause)
    return str(exc) or type(exc).__name__
