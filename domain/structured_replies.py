"""Collaboration turns whose answer has a shape (plans, votes, end-of-turn markers), requested
as JSON that matches a schema, and turned back into the text the collaboration reads.

Asking a model to "reply with ONLY a JSON object" fails often with small models (the embedded
one answered with prose, echoed the prompt or wrote a plan whose dependencies name people
instead of steps). So the turn's `AgentTurnRequest` carries a `ResponseSchema` and the provider
is held to it (schema-constrained decoding for the embedded model). The collaboration workflow
is unchanged: `render` turns the JSON back into exactly the text it already parses — the plan
JSON, `VOTE: n`, the `DELIVERABLES COMPLETE` line — and a reply that is not the expected JSON
passes through untouched, handled as before (a re-asked plan, an abstaining vote).

Pure, deterministic; used by the `agent_prepare` and `message_record_response` activities.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from domain.collaboration import DONE_MARKER, MAX_PLAN_STEPS, CollaborationMode
from domain.llm import ResponseSchema

PLAN, VOTE, TURN = "plan", "vote", "turn"
PLAN_STEP = "task_breakdown"  # the workflow's name for the orchestrator's planning turn


@dataclass(frozen=True)
class ReplyFormat:
    kind: str  # plan | vote | turn
    schema: ResponseSchema


def step_ids(count: int) -> list[str]:
    return [f"step{i}" for i in range(1, count + 1)]


def plan_format(participants: list[str], deliverables: list[str]) -> ReplyFormat:
    """Step ids come from a fixed list, so `depends_on` can only name ids that may exist;
    assignees and deliverables are the collaboration's own."""
    # A step per deliverable (or participant) and one more: small models otherwise pad the
    # plan with near-duplicate steps, and every step is a turn someone waits for.
    ids = step_ids(min(MAX_PLAN_STEPS, max(len(deliverables), len(participants)) + 1))
    deliverable: dict[str, Any] = (
        {"type": "string", "enum": deliverables} if deliverables else {"type": "string"}
    )
    schema = {
        "type": "object",
        "properties": {
            "steps": {
                "type": "array",
                "minItems": 1,
                "maxItems": len(ids),
                "items": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string", "enum": ids},
                        "assignee": {"type": "string", "enum": participants},
                        "deliverable": deliverable,
                        "instructions": {"type": "string", "minLength": 1, "maxLength": 400},
                        # Bounded: greedy decoding of a small model can repeat one id
                        # until the token limit cuts the JSON off.
                        "depends_on": {
                            "type": "array",
                            "items": {"type": "string", "enum": ids},
                            "maxItems": len(ids) - 1,
                        },
                    },
                    "required": ["id", "assignee", "deliverable", "instructions", "depends_on"],
                    "additionalProperties": False,
                },
            }
        },
        "required": ["steps"],
        "additionalProperties": False,
    }
    return ReplyFormat(
        PLAN,
        ResponseSchema(
            "collaboration_plan",
            schema,
            "The plan: steps with an assignee, the deliverable it produces, instructions, and "
            "the ids of earlier steps whose output it needs (depends_on).",
        ),
    )


def vote_format(proposals: int) -> ReplyFormat:
    schema = {
        "type": "object",
        "properties": {
            "reason": {"type": "string", "minLength": 1},
            "vote": {"type": "integer", "minimum": 1, "maximum": max(1, proposals)},
        },
        "required": ["reason", "vote"],
        "additionalProperties": False,
    }
    return ReplyFormat(
        VOTE, ResponseSchema("collaboration_vote", schema, "Why, and the proposal number.")
    )


def turn_format() -> ReplyFormat:
    schema = {
        "type": "object",
        "properties": {
            "contribution": {"type": "string", "minLength": 1},
            "deliverables_complete": {"type": "boolean"},
        },
        "required": ["contribution", "deliverables_complete"],
        "additionalProperties": False,
    }
    return ReplyFormat(
        TURN,
        ResponseSchema(
            "collaboration_turn",
            schema,
            "Your contribution (deliverables under '## <name>' headings), and whether all "
            "deliverables are now complete.",
        ),
    )


def reply_format(
    mode: str, step: str, tools: bool, participants: list[str], deliverables: list[str]
) -> ReplyFormat | None:
    """The shape a collaboration turn's answer must have, from what its message records (the
    step name and whether it has tools; plan steps the orchestrator invents never collide: the
    planning turn and votes are the only tool-less turns of their modes)."""
    if mode == CollaborationMode.ORCHESTRATED and step == PLAN_STEP and not tools:
        return plan_format(participants, deliverables)
    if mode == CollaborationMode.SWARM and step.startswith("vote_") and not tools:
        return vote_format(len(participants))
    if mode == CollaborationMode.PEER_TO_PEER and step.startswith("turn_"):
        return turn_format()
    return None


def render(kind: str, text: str, participants: list[str] | None = None) -> str:
    """The text the collaboration workflow parses, from the JSON reply; `text` unchanged when
    it is not the expected object (the workflow then treats it as it always did)."""
    try:
        data = json.loads(text)
    except ValueError:
        return text
    if not isinstance(data, dict):
        return text
    if kind == PLAN:
        return json.dumps(repair_plan(data, participants or []), ensure_ascii=False)
    if kind == VOTE and isinstance(data.get("vote"), int):
        return f"{str(data.get('reason', '')).strip()}\nVOTE: {data['vote']}".strip()
    if kind == TURN and isinstance(data.get("contribution"), str):
        done = data.get("deliverables_complete") is True
        return data["contribution"].strip() + (f"\n\n{DONE_MARKER}" if done else "")
    return text


def repair_plan(plan: dict[str, Any], participants: list[str]) -> dict[str, Any]:
    """Resolve what a small model gets wrong in dependencies, and say so in `repairs`: a
    dependency that names a participant means that participant's (other) steps; one on the
    step itself or on an id no step has is dropped, and so is one that would close a cycle.
    Everything else is the model's plan as it wrote it."""
    steps = plan.get("steps")
    if not isinstance(steps, list) or not all(isinstance(s, dict) for s in steps):
        return plan
    ids = [s.get("id") for s in steps]
    by_assignee: dict[str, list[str]] = {}
    for s in steps:
        if isinstance(s.get("assignee"), str) and isinstance(s.get("id"), str):
            by_assignee.setdefault(s["assignee"], []).append(s["id"])
    repairs: list[str] = []
    edges: dict[str, list[str]] = {}
    fixed_steps = []
    for s in steps:
        sid, deps = s.get("id"), s.get("depends_on")
        if not isinstance(sid, str) or not isinstance(deps, list):
            fixed_steps.append(s)
            continue
        fixed: list[str] = []
        for dep in deps:
            targets = [dep]
            if dep not in ids and dep in participants:
                targets = [t for t in by_assignee.get(dep, []) if t != sid]
                repairs.append(f"{sid}: '{dep}' read as the steps of {dep}")
            for target in targets:
                if target == sid or target not in ids:
                    repairs.append(f"{sid}: dropped dependency on unknown step '{target}'")
                elif _reaches(edges, target, sid):
                    repairs.append(f"{sid}: dropped dependency on '{target}' (a cycle)")
                elif target not in fixed:
                    fixed.append(target)
                    edges.setdefault(sid, []).append(target)
        fixed_steps.append({**s, "depends_on": fixed})
    out = {**plan, "steps": fixed_steps}
    if repairs:
        out["repairs"] = repairs
    return out


def _reaches(edges: dict[str, list[str]], start: str, goal: str) -> bool:
    """Whether `start` already depends on `goal` (so goal → start would close a cycle)."""
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        if node == goal:
            return True
        if node not in seen:
            seen.add(node)
            todo.extend(edges.get(node, []))
    return False
