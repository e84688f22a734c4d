"""Collaboration types and the pure rules of the three modes (spec section 5): plan validation
and its fallback, deliverable extraction, swarm vote tally, progress arithmetic.

Everything here is deterministic so `CollaborationWorkflow` can call it directly (replay-safe).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any


class CollaborationMode(StrEnum):
    ORCHESTRATED = "orchestrated"
    PEER_TO_PEER = "peer_to_peer"
    SWARM = "swarm"


class CollaborationStatus(StrEnum):
    INITIALIZING = "initializing"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINISHED = (
    CollaborationStatus.COMPLETED,
    CollaborationStatus.FAILED,
    CollaborationStatus.CANCELLED,
)

# A peer-to-peer turn ends the conversation with this line once the deliverables are done.
DONE_MARKER = "DELIVERABLES COMPLETE"
MAX_PLAN_STEPS = 20
PLAN_ATTEMPTS = 2  # the orchestrator is asked again once, then the fallback plan is used
STEP_ATTEMPTS = 2  # a participant step is retried once, then the collaboration fails


@dataclass(frozen=True)
class Participant:
    sandbox_id: str
    name: str
    agent: str  # the agent that works this participant's steps (its primary agent)
    role: str = ""


@dataclass
class CollaborationInput:
    collaboration_id: str
    workspace_id: str
    task: str
    mode: str
    participants: list[Participant]
    orchestrator: Participant  # the sandbox and agent that plans and integrates (or tie-breaks)
    deliverables: list[str]
    timeout_seconds: int = 300
    max_turns: int = 0  # peer_to_peer: 0 → two rounds of the participants
    max_wait_seconds: float = 300.0  # a step waits this long for a stopped participant
    approval_timeout_seconds: float = 3600.0


@dataclass(frozen=True)
class PlanStep:
    id: str
    assignee: str  # sandbox id of a participant
    deliverable: str
    instructions: str
    depends_on: tuple[str, ...] = ()


class PlanInvalid(ValueError):
    pass


_STEP_ID = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,63}$")


def plan_schema(participants: list[Participant], deliverables: list[str]) -> dict[str, Any]:
    """The JSON schema the orchestrator's plan must follow (shown to it, enforced by
    `parse_plan`)."""
    return {
        "type": "object",
        "required": ["steps"],
        "properties": {
            "steps": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_PLAN_STEPS,
                "items": {
                    "type": "object",
                    "required": ["id", "assignee", "deliverable", "instructions"],
                    "properties": {
                        "id": {"type": "string", "pattern": _STEP_ID.pattern},
                        "assignee": {"enum": [p.name for p in participants]},
                        "deliverable": {"type": "string"},
                        "instructions": {"type": "string"},
                        "depends_on": {"type": "array", "items": {"type": "string"}},
                    },
                },
            }
        },
        "x-required-deliverables": deliverables,
    }


def extract_json(text: str) -> Any:
    """The first JSON object in a model's reply (bare, or inside a ``` fence)."""
    fenced = re.search(r"```(?:json)?\s*(\{.*?\})\s*```", text, re.S)
    candidates = [fenced.group(1)] if fenced else []
    start = text.find("{")
    if start >= 0:
        candidates.append(text[start : text.rfind("}") + 1])
    for candidate in candidates:
        try:
            return json.loads(candidate)
        except ValueError:
            continue
    raise PlanInvalid("the reply holds no JSON object")


def parse_plan(
    text: str, participants: list[Participant], deliverables: list[str]
) -> list[PlanStep]:
    """Validate the orchestrator's plan against the schema and the collaboration: known
    assignees, unique ids, known dependencies without cycles, every deliverable produced."""
    data = extract_json(text)
    raw = data.get("steps") if isinstance(data, dict) else None
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_PLAN_STEPS:
        raise PlanInvalid(f"'steps' must be a list of 1 to {MAX_PLAN_STEPS} steps")
    by_name = {p.name: p for p in participants} | {p.sandbox_id: p for p in participants}
    steps: list[PlanStep] = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise PlanInvalid(f"step {i + 1} is not an object")
        sid, who = item.get("id"), item.get("assignee")
        deliverable, instructions = item.get("deliverable"), item.get("instructions")
        deps = item.get("depends_on") or []
        if not isinstance(sid, str) or not _STEP_ID.match(sid):
            raise PlanInvalid(f"step {i + 1}: 'id' must match {_STEP_ID.pattern}")
        if who not in by_name:
            raise PlanInvalid(f"step {sid}: assignee {who!r} is not a participant")
        if not isinstance(deliverable, str) or not deliverable.strip():
            raise PlanInvalid(f"step {sid}: 'deliverable' must be a non-empty string")
        if not isinstance(instructions, str) or not instructions.strip():
            raise PlanInvalid(f"step {sid}: 'instructions' must be a non-empty string")
        if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
            raise PlanInvalid(f"step {sid}: 'depends_on' must be a list of step ids")
        steps.append(
            PlanStep(sid, by_name[who].sandbox_id, deliverable.strip(), instructions, tuple(deps))
        )
    ids = [s.id for s in steps]
    if len(set(ids)) != len(ids):
        raise PlanInvalid("step ids must be unique")
    for s in steps:
        unknown = set(s.depends_on) - set(ids)
        if unknown:
            raise PlanInvalid(f"step {s.id} depends on unknown steps {sorted(unknown)}")
    if _has_cycle(steps):
        raise PlanInvalid("the step dependencies form a cycle")
    missing = [d for d in deliverables if d not in {s.deliverable for s in steps}]
    if missing:
        raise PlanInvalid(f"no step produces {missing}")
    return steps


def _has_cycle(steps: list[PlanStep]) -> bool:
    deps = {s.id: set(s.depends_on) for s in steps}
    done: set[str] = set()
    while deps:
        ready = [sid for sid, d in deps.items() if d <= done]
        if not ready:
            return True
        for sid in ready:
            done.add(sid)
            del deps[sid]
    return False


def fallback_plan(
    task: str, participants: list[Participant], deliverables: list[str]
) -> list[PlanStep]:
    """One independent step per deliverable, assigned round-robin (one per participant when
    no deliverables were asked for)."""
    names = deliverables or [f"{p.name}_contribution" for p in participants]
    return [
        PlanStep(
            id=_slug(name, i),
            assignee=participants[i % len(participants)].sandbox_id,
            deliverable=name,
            instructions=f"Produce the deliverable '{name}' for the task: {task}",
        )
        for i, name in enumerate(names)
    ]


def _slug(name: str, i: int) -> str:
    s = re.sub(r"[^a-z0-9_\-]+", "_", name.lower()).strip("_-")[:60]
    return s if s and _STEP_ID.match(s) else f"step_{i + 1}"


def ready_steps(steps: list[PlanStep], done: set[str], started: set[str]) -> list[PlanStep]:
    """Steps whose dependencies are all done and that have not started, in plan order."""
    return [s for s in steps if s.id not in started and set(s.depends_on) <= done]


def sections(text: str, names: list[str]) -> dict[str, str]:
    """Markdown sections `## <deliverable>` in a reply, by deliverable name."""
    found: dict[str, str] = {}
    parts = re.split(r"(?m)^#{1,3}\s*(.+?)\s*$", text)
    for heading, body in zip(parts[1::2], parts[2::2], strict=False):
        key = heading.strip().strip("*`").strip()
        for name in names:
            if key.lower() == name.lower() and body.strip():
                found[name] = body.strip()
    return found


_VOTE = re.compile(r"VOTE\s*[:=]\s*#?\s*(\d+)", re.I)


def parse_vote(text: str, proposals: int) -> int | None:
    """The proposal number (1-based) a participant voted for, or None (an abstention)."""
    m = _VOTE.search(text)
    if m is None:
        return None
    n = int(m.group(1))
    return n if 1 <= n <= proposals else None


def tally(votes: dict[str, int | None], order: list[str], tie_breaker: str) -> tuple[int, str]:
    """Majority of the votes (1-based proposal numbers by voter sandbox id). Ties go to the
    tie-breaker's own vote when it is among the tied, else to the earliest proposal. Returns
    (winning proposal number, how it was decided)."""
    counts: dict[int, int] = {}
    for choice in votes.values():
        if choice is not None:
            counts[choice] = counts.get(choice, 0) + 1
    if not counts:
        return 1, "no valid votes: the first participant's proposal"
    best = max(counts.values())
    tied = sorted(n for n, c in counts.items() if c == best)
    if len(tied) == 1:
        return tied[0], f"majority ({best} of {len(order)} votes)"
    breaker = votes.get(tie_breaker)
    if breaker in tied:
        return breaker, f"tie between {tied} broken by the orchestrator's vote"
    return tied[0], f"tie between {tied} broken by participant order"


@dataclass
class Progress:
    """What GET /collaborations/{id} and the stream show; kept by the workflow (query) and
    mirrored into the read model on each change. `percentage` never goes down."""

    percentage: int = 0
    current_step: str | None = None
    completed_steps: list[str] = field(default_factory=list)
    remaining_steps: list[str] = field(default_factory=list)
    # sandbox id → {"status": idle|active|failed, "messages_exchanged": n}
    participants: dict[str, dict[str, Any]] = field(default_factory=dict)

    def advance(self, percentage: float) -> None:
        self.percentage = max(self.percentage, min(100, int(percentage)))


def step_counts(progress: dict[str, Any]) -> tuple[int, int]:
    """(steps completed, steps in all) of a progress dict: the total counts each step once,
    whether completed, remaining or the one in progress."""
    completed = list(progress.get("completed_steps") or [])
    names = set(completed) | set(progress.get("remaining_steps") or [])
    if progress.get("current_step"):
        names.add(str(progress["current_step"]))
    return len(completed), len(names)


def estimate_completion(
    *,
    created_at: datetime,
    started_at: datetime | None,
    progressed_at: datetime | None,
    progress: dict[str, Any],
    estimated_duration_seconds: float,
    timeout_seconds: float,
    now: datetime,
) -> datetime:
    """When a running collaboration should end.

    From the pace measured so far once a step has completed: the time from the start to the
    last change (`progressed_at`) per completed step, times the steps in all (a step counts,
    not a percentage point: the plan's jump to 10 % says little about how long a step takes);
    a percentage without step counts is used the same way. Before the first step completes,
    the estimate made at the start (the workspace's measured turn time, else the embedded
    model's measured speed). Never in the past, never after the deadline.
    """
    deadline = (started_at or created_at) + timedelta(seconds=timeout_seconds)
    done, total = step_counts(progress)
    pct = int(progress.get("percentage") or 0)
    end = created_at + timedelta(seconds=estimated_duration_seconds)
    if started_at is not None and progressed_at is not None and progressed_at > started_at:
        elapsed = (progressed_at - started_at).total_seconds()
        if done > 0 and total >= done:
            end = started_at + timedelta(seconds=elapsed * total / done)
        elif 0 < pct < 100:
            end = started_at + timedelta(seconds=elapsed * 100 / pct)
    return min(max(end, now), deadline)


def turn_seconds_from_speed(turns: list[tuple[float, int]]) -> float | None:
    """A turn's expected duration from measured turns (seconds, output tokens): the model's
    speed (tokens/s over all of them) applied to the tokens a turn writes (their median, so
    one runaway reply does not set it). None without a usable measurement."""
    usable = [(s, n) for s, n in turns if s > 0 and n > 0]
    if not usable:
        return None
    speed = sum(n for _, n in usable) / sum(s for s, _ in usable)
    tokens = sorted(n for _, n in usable)[len(usable) // 2]
    return tokens / speed


def weighted_percentage(phases: list[tuple[float, int, int]]) -> float:
    """Sum over phases of weight * done / total (a phase of unknown size counts 0)."""
    return sum(w * (done / total) for w, done, total in phases if total)


@dataclass(frozen=True)
class StepMessage:
    """One turn of a collaboration, sent as a real message (a `MessageDeliveryWorkflow` child)."""

    collaboration_id: str
    workspace_id: str
    message_id: str
    step: str
    from_sandbox_id: str
    from_agent: str
    to_sandbox_id: str
    to_agent: str
    text: str
    timeout_seconds: int
    # Planning, integrating and voting need no sandbox tools; without them small models answer
    # in one call instead of wandering through tool calls.
    tools: bool = True


@dataclass(frozen=True)
class StepSent:
    message_id: str
    needs_approval: bool


@dataclass(frozen=True)
class StepReply:
    status: str  # the message's status: responded, failed, timeout, …
    text: str | None = None
    reason: str | None = None
    agent: str | None = None


@dataclass
class Snapshot:
    """The workflow's state written to the read model (guarded by `version`)."""

    collaboration_id: str
    workspace_id: str
    version: int
    status: str
    event: str | None
    progress: Progress
    steps: list[dict[str, Any]] = field(default_factory=list)
    deliverables: dict[str, str] = field(default_factory=dict)
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    event_data: dict[str, Any] = field(default_factory=dict)
    finished: bool = False  # final: also fails the collaboration's messages still in flight
