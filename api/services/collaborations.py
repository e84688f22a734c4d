"""Collaborations: validate and resolve the team, write the row, start CollaborationWorkflow.

The read model is what the workflow mirrors into `collaborations` (progress, steps, deliverables)
plus the collaboration's messages; the API never waits on the workflow except for `cancel`.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from temporalio.client import (
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
    WorkflowUpdateStage,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDReusePolicy
from temporalio.service import RPCError, RPCStatusCode

from api import idempotency
from api.idempotency import Idempotency
from api.schemas.collaborations import (
    CollaborationAccepted,
    CollaborationCancelled,
    CollaborationDetail,
    CollaborationMessage,
    CollaborationSummary,
    OrchestrateRequest,
)
from api.schemas.common import Pagination
from api.services.sandboxes import temporal_client
from api.temporal import TemporalGateway
from config.settings import Settings
from domain import search_attributes as sa
from domain.agent import configured_agents
from domain.collaboration import (
    FINISHED,
    CollaborationInput,
    CollaborationMode,
    CollaborationStatus,
    Participant,
    Progress,
    estimate_completion,
    turn_seconds_from_speed,
)
from domain.errors import (
    AuthorizationFailed,
    DomainError,
    ErrorCode,
    NotFound,
    SandboxNotReady,
    ServiceUnavailable,
    ValidationFailed,
)
from domain.ids import Prefix, collaboration_workflow_id, is_valid, new_id
from domain.llm import OFFLINE_PROVIDER
from domain.policy import decide
from domain.timeutil import as_utc, iso, utcnow
from store.models import Collaboration, Message, Sandbox, User, Workspace
from store.repositories import collaborations as collaboration_repo
from store.repositories import messages as message_repo

COLLABORATION = "Collaboration"
DEFAULT_TURN_SECONDS = 20  # a turn's duration before the workspace has measured any
MAX_LISTED_MESSAGES = 500
CANCEL_WAIT_SECONDS = 10.0


class CollaborationFinished(DomainError):
    code = ErrorCode.COLLABORATION_FAILED


class _StillRunning(Exception):
    """The cancel was accepted; the collaboration had not finished stopping when we stopped
    waiting."""


def _field(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(
        message, {"fields": [{"field": field, "message": message, "location": "body"}]}
    )


def _agents(sb: Sandbox) -> list[dict[str, Any]]:
    return configured_agents(sb.agent_config)


def _participant(sb: Sandbox, agent: dict[str, Any] | None = None) -> Participant:
    agent = agent or _agents(sb)[0]
    return Participant(sb.id, sb.name, str(agent.get("name")), str(agent.get("role") or ""))


async def _team(session: AsyncSession, ws: Workspace, refs: list[str]) -> list[Sandbox]:
    team: list[Sandbox] = []
    for ref in refs:
        sb = await message_repo.find_sandbox(session, ws.id, ref)
        if sb is None:
            raise NotFound("sandbox", ref)
        if any(s.id == sb.id for s in team):
            raise _field("participants", f"{ref!r} names a sandbox listed twice ({sb.name})")
        team.append(sb)
    return team


async def _orchestrator(
    session: AsyncSession, ws: Workspace, team: list[Sandbox], ref: str | None
) -> tuple[Sandbox, Participant]:
    """An agent of a participant by name, else a sandbox's primary agent by sandbox name/id."""
    if ref is None:
        return team[0], _participant(team[0])
    for sb in team:
        for agent in _agents(sb):
            if agent.get("name") == ref:
                return sb, _participant(sb, agent)
    sb = await message_repo.find_sandbox(session, ws.id, ref)
    if sb is not None:
        return sb, _participant(sb)
    raise _field("orchestrator", f"no agent or sandbox named {ref!r} in this workspace")


def _check_policy(ws: Workspace, pairs: list[tuple[Sandbox, Sandbox]]) -> None:
    """Every sender → recipient pair the mode will use must be allowed (approval is allowed:
    the step then waits for the owner)."""
    for frm, to in pairs:
        decision = decide(ws.collaboration_policy, frm.name, to.name, "request")
        if not decision.allowed:
            raise AuthorizationFailed(decision.reason, {"from": frm.name, "to": to.name})


def _pairs(mode: str, orch: Sandbox, team: list[Sandbox]) -> list[tuple[Sandbox, Sandbox]]:
    if mode == CollaborationMode.PEER_TO_PEER:
        return [(team[i - 1], sb) for i, sb in enumerate(team)]
    return [(orch, sb) for sb in team] + [(orch, orch)]


async def _turn_seconds(session: AsyncSession, workspace_id: str) -> float:
    """The workspace's measured delivered → responded time of recent replies."""
    rows = (
        await session.execute(
            select(Message.delivered_at, Message.responded_at)
            .where(
                Message.workspace_id == workspace_id,
                Message.responded_at.is_not(None),
                Message.delivered_at.is_not(None),
            )
            .order_by(Message.responded_at.desc())
            .limit(50)
        )
    ).all()
    spans = [(as_utc(r) - as_utc(d)).total_seconds() for d, r in rows]
    if spans:
        return sum(spans) / len(spans)
    return await _model_turn_seconds(session, workspace_id) or DEFAULT_TURN_SECONDS


async def _model_turn_seconds(session: AsyncSession, workspace_id: str) -> float | None:
    """Before a workspace has measured a turn: the embedded model's measured speed (tokens/s of
    this installation's recent turns on it, the worker's one model) applied to the tokens such
    a turn writes. Only for a workspace on the embedded model (no provider of its own)."""
    ws = await session.get(Workspace, workspace_id)
    if ws is None or ws.llm_providers:
        return None
    reply = aliased(Message)
    rows = (
        await session.execute(
            select(Message.delivered_at, Message.responded_at, reply.content)
            .join(reply, reply.id == Message.response_message_id)
            .where(Message.responded_at.is_not(None), Message.delivered_at.is_not(None))
            .order_by(Message.responded_at.desc())
            .limit(200)
        )
    ).all()
    turns = [
        (
            (as_utc(r) - as_utc(d)).total_seconds(),
            int(((c or {}).get("usage") or {}).get("output_tokens") or 0),
        )
        for d, r, c in rows
        if (c or {}).get("provider") == OFFLINE_PROVIDER
    ][:50]
    return turn_seconds_from_speed(turns)


def _expected_turns(body: OrchestrateRequest, team_size: int) -> int:
    """Sequential turns in the worst case (parallel turns count once)."""
    if body.collaboration_mode == CollaborationMode.PEER_TO_PEER:
        return body.max_turns or 2 * team_size
    if body.collaboration_mode == CollaborationMode.SWARM:
        return 2
    return 2 + max(1, math.ceil(len(body.deliverables or [None] * team_size) / team_size))


async def orchestrate(
    session: AsyncSession,
    temporal: TemporalGateway,
    settings: Settings,
    user: User,
    ws: Workspace,
    body: OrchestrateRequest,
    idem_key: str | None,
) -> tuple[int, dict[str, Any]]:
    idem = Idempotency.of(user.id, idem_key, f"orchestrate:{ws.id}", body)
    if (replayed := await idempotency.replay(session, idem)) is not None:
        return replayed
    team = await _team(session, ws, body.participants)
    orch_sb, orch = await _orchestrator(session, ws, team, body.orchestrator)
    for sb in [*team, orch_sb]:
        if sb.status != "running":
            raise SandboxNotReady(
                f"sandbox {sb.name} is {sb.status}; every participant must be running",
                {"sandbox_id": sb.id, "status": sb.status},
            )
    _check_policy(ws, _pairs(body.collaboration_mode, orch_sb, team))
    client = await temporal_client(temporal)
    participants = [_participant(sb) for sb in team]
    estimate = min(
        body.timeout,
        math.ceil(_expected_turns(body, len(team)) * await _turn_seconds(session, ws.id)),
    )
    row = Collaboration(
        id=new_id(Prefix.COLLABORATION),
        workspace_id=ws.id,
        task=body.task,
        mode=body.collaboration_mode,
        orchestrator_sandbox_id=orch.sandbox_id,
        orchestrator_agent=orch.agent,
        participants=[asdict(x) for x in participants],
        requested_deliverables=list(body.deliverables),
        timeout_seconds=body.timeout,
        estimated_duration_seconds=estimate,
        status=CollaborationStatus.INITIALIZING,
        progress=asdict(
            Progress(
                participants={
                    x.sandbox_id: {"name": x.name, "status": "idle", "messages_exchanged": 0}
                    for x in participants
                }
            )
        ),
    )
    # The key is claimed in the transaction that writes the collaboration: one per key.
    if (replayed := await idempotency.claim(session, idem)) is not None:
        return replayed
    session.add(row)
    await session.flush()
    data = CollaborationAccepted(
        collaboration_id=row.id,
        status="initializing",
        collaboration_mode=body.collaboration_mode,
        participants=[x.sandbox_id for x in participants],
        orchestrator={"sandbox_id": orch.sandbox_id, "agent": orch.agent},
        estimated_duration_seconds=estimate,
    ).model_dump()
    await session.commit()
    inp = CollaborationInput(
        collaboration_id=row.id,
        workspace_id=ws.id,
        task=body.task,
        mode=body.collaboration_mode,
        participants=participants,
        orchestrator=orch,
        deliverables=list(body.deliverables),
        timeout_seconds=body.timeout,
        max_turns=body.max_turns or 0,
        max_wait_seconds=settings.message_max_wait_seconds,
        approval_timeout_seconds=settings.message_approval_timeout_seconds,
    )
    try:
        await client.start_workflow(
            COLLABORATION,
            inp,
            id=collaboration_workflow_id(row.id),
            task_queue=settings.task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            # Temporal's own limit sits above ours, so our timeout ends it cleanly first.
            execution_timeout=timedelta(seconds=body.timeout + 600),
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(sa.WORKSPACE_ID, ws.id),
                    SearchAttributePair(sa.COLLABORATION_ID, row.id),
                ]
            ),
            memo={"task": body.task[:500], "mode": body.collaboration_mode},
        )
    except Exception as exc:
        # Nothing stays behind, not even the key's claim: a retry with the key starts it.
        await session.delete(row)
        await idempotency.release(session, idem)
        await session.commit()
        raise ServiceUnavailable(
            "Could not start the collaboration (Temporal unavailable)"
        ) from exc
    await idempotency.remember(session, idem, 202, data)
    return 202, data


async def get_owned(session: AsyncSession, collaboration_id: str, user: User) -> Collaboration:
    if not is_valid(Prefix.COLLABORATION, collaboration_id):
        raise NotFound("collaboration", collaboration_id)
    row = await session.scalar(
        select(Collaboration)
        .join(Workspace, Workspace.id == Collaboration.workspace_id)
        .where(Collaboration.id == collaboration_id, Workspace.owner_id == user.id)
    )
    if row is None:
        raise NotFound("collaboration", collaboration_id)
    return row


def _estimated_completion(c: Collaboration) -> str | None:
    """From the pace measured so far once a step completed, else from the estimate at the
    start (`domain.collaboration.estimate_completion`; the stream's events carry the same)."""
    if c.status in FINISHED:
        return None
    return iso(
        estimate_completion(
            created_at=as_utc(c.created_at),
            started_at=as_utc(c.started_at) if c.started_at else None,
            progressed_at=as_utc(c.updated_at) if c.updated_at else None,
            progress=c.progress or {},
            estimated_duration_seconds=c.estimated_duration_seconds,
            timeout_seconds=c.timeout_seconds,
            now=utcnow(),
        )
    )


async def detail(session: AsyncSession, c: Collaboration) -> CollaborationDetail:
    messages = list(
        await session.scalars(
            select(Message)
            .where(Message.collaboration_id == c.id)
            .order_by(Message.created_at, Message.id)
            .limit(MAX_LISTED_MESSAGES)
        )
    )
    progress = c.progress or {}
    states = progress.get("participants") or {}
    participants = [
        {**p, **{k: v for k, v in states.get(p["sandbox_id"], {}).items() if k != "name"}}
        for p in c.participants
    ]
    for p in participants:
        p.setdefault("status", "idle")
        p.setdefault("messages_exchanged", 0)
    return CollaborationDetail(
        collaboration_id=c.id,
        workspace_id=c.workspace_id,
        task=c.task,
        collaboration_mode=c.mode,  # type: ignore[arg-type]
        orchestrator={"sandbox_id": c.orchestrator_sandbox_id, "agent": c.orchestrator_agent},
        status=c.status,  # type: ignore[arg-type]
        progress={
            "percentage": progress.get("percentage", 0),
            "current_step": progress.get("current_step"),
            "completed_steps": progress.get("completed_steps", []),
            "remaining_steps": progress.get("remaining_steps", []),
        },
        participants=participants,
        steps=c.steps or [],
        messages=[
            CollaborationMessage(
                message_id=m.id,
                from_=m.from_sandbox_id,
                to=m.to_sandbox_id,
                from_agent=m.from_agent,
                to_agent=m.to_agent,
                message_type=m.message_type,
                status=m.status,
                step=(m.content or {}).get("step"),
                content=m.content or {},
                timestamp=iso(m.created_at) or "",
            )
            for m in messages
        ],
        deliverables=c.deliverables or {},
        result=c.result,
        error=c.error,
        timeout=c.timeout_seconds,
        created_at=iso(c.created_at) or "",
        started_at=iso(c.started_at),
        estimated_completion=_estimated_completion(c),
        completed_at=iso(c.completed_at),
    )


def summary(c: Collaboration) -> CollaborationSummary:
    result = c.result if isinstance(c.result, dict) else {}
    warnings = result.get("warnings")
    return CollaborationSummary(
        collaboration_id=c.id,
        workspace_id=c.workspace_id,
        task=c.task,
        collaboration_mode=c.mode,  # type: ignore[arg-type]
        orchestrator={"sandbox_id": c.orchestrator_sandbox_id, "agent": c.orchestrator_agent},
        status=c.status,  # type: ignore[arg-type]
        percentage=max(0, min(100, int((c.progress or {}).get("percentage") or 0))),
        participants=[str(p.get("sandbox_id")) for p in c.participants or []],
        plan_source=result.get("plan_source"),
        warnings=[str(w) for w in warnings] if isinstance(warnings, list) else [],
        error=c.error,  # type: ignore[arg-type]
        timeout=c.timeout_seconds,
        created_at=iso(c.created_at) or "",
        started_at=iso(c.started_at),
        completed_at=iso(c.completed_at),
    )


async def list_for_workspace(
    session: AsyncSession, ws: Workspace, pg: Pagination, statuses: list[str] | None
) -> tuple[list[CollaborationSummary], int]:
    """The workspace's collaborations, newest first by default (the caller checked that the
    user owns `ws`)."""
    if pg.sort not in collaboration_repo.SORTABLE:
        raise ValidationFailed(
            "Unsupported sort field",
            {
                "fields": [
                    {
                        "field": "sort",
                        "message": f"one of {sorted(collaboration_repo.SORTABLE)}",
                        "location": "query",
                    }
                ]
            },
        )
    rows, total = await collaboration_repo.list_for_workspace(
        session,
        ws.id,
        statuses=statuses,
        search=pg.search,
        sort=pg.sort,
        descending=pg.order == "desc",
        offset=pg.offset,
        limit=pg.per_page,
    )
    return [summary(c) for c in rows], total


async def cancel(
    temporal: TemporalGateway, c: Collaboration, reason: str | None
) -> CollaborationCancelled:
    if c.status in FINISHED:
        raise CollaborationFinished(
            f"the collaboration is already {c.status}", {"status": c.status}
        )
    client = await temporal_client(temporal)
    handle = client.get_workflow_handle(collaboration_workflow_id(c.id))
    try:
        update = await handle.start_update(
            "cancel",
            reason or "cancelled by the workspace owner",
            wait_for_stage=WorkflowUpdateStage.ACCEPTED,
            result_type=str,
        )
        # Usually done in a moment; a step that is slow to stop must not hold the request.
        try:
            status = await update.result(rpc_timeout=timedelta(seconds=CANCEL_WAIT_SECONDS))
        except RPCError as exc:
            # The wait ran out on the wire rather than in the SDK: the same "not yet".
            if exc.status in (RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED):
                raise _StillRunning from exc
            raise
    except (WorkflowUpdateRPCTimeoutOrCancelledError, _StillRunning):
        return CollaborationCancelled(collaboration_id=c.id, status=c.status, cancel_requested=True)  # type: ignore[arg-type]
    except WorkflowUpdateFailedError as exc:
        raise CollaborationFinished(
            "the collaboration has already finished", {"status": c.status}
        ) from exc
    except RPCError as exc:
        raise ServiceUnavailable("Temporal is unavailable; try again shortly") from exc
    return CollaborationCancelled(collaboration_id=c.id, status=status, cancel_requested=True)  # type: ignore[arg-type]
