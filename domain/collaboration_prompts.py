"""The text of each collaboration turn (what the agents read). Pure, so the workflow builds it."""

from __future__ import annotations

import json

from domain.collaboration import (
    DONE_MARKER,
    CollaborationInput,
    Participant,
    PlanStep,
    plan_schema,
)

MAX_QUOTED = 4000  # characters of another agent's output quoted into a prompt


def _clip(text: str) -> str:
    return text if len(text) <= MAX_QUOTED else text[:MAX_QUOTED] + "\n[…truncated]"


def _team(participants: list[Participant]) -> str:
    return "\n".join(
        f"- {p.name} (agent {p.agent}{', ' + p.role if p.role else ''})" for p in participants
    )


def _deliverables(inp: CollaborationInput) -> str:
    if not inp.deliverables:
        return "No named deliverables were requested; produce what the task needs."
    return "Deliverables: " + ", ".join(inp.deliverables) + "."


def plan(inp: CollaborationInput, feedback: str | None = None) -> str:
    schema = json.dumps(plan_schema(inp.participants, inp.deliverables), indent=1)
    parts = [
        f"You orchestrate a collaboration. Task: {inp.task}",
        "Team (assign every step to one of these names):\n" + _team(inp.participants),
        _deliverables(inp),
        "Break the task into steps. Reply with ONLY a JSON object matching this schema "
        "(each step: id, assignee, deliverable, instructions, depends_on = ids of steps whose "
        "output it needs; steps without dependencies run in parallel; every requested "
        f"deliverable must be produced by a step):\n{schema}",
    ]
    if feedback:
        parts.append(f"Your previous plan was rejected: {feedback}. Send a corrected plan.")
    return "\n\n".join(parts)


def step(task: str, s: PlanStep, inputs: dict[str, str]) -> str:
    parts = [
        f"Collaboration task: {task}",
        f"Your step '{s.id}': {s.instructions}",
        f"Produce the deliverable '{s.deliverable}'. Reply with the deliverable itself.",
    ]
    for dep, output in inputs.items():
        parts.append(f"Output of step '{dep}' you build on:\n{_clip(output)}")
    return "\n\n".join(parts)


def integrate(task: str, deliverables: dict[str, str]) -> str:
    body = "\n\n".join(f"## {name}\n{_clip(text)}" for name, text in deliverables.items())
    return (
        f"Collaboration task: {task}\n\nYour team produced these deliverables:\n\n{body}\n\n"
        "Integrate them into the final result: a concise summary of what was delivered, how "
        "the parts fit together, and any open issue."
    )


def peer_turn(
    inp: CollaborationInput, speaker: Participant, transcript: list[tuple[str, str]]
) -> str:
    so_far = "\n\n".join(f"[{who}]\n{_clip(text)}" for who, text in transcript)
    headings = " ".join(f"'## {d}'" for d in inp.deliverables)
    return "\n\n".join(
        [
            f"You are {speaker.name} in a peer-to-peer collaboration. Task: {inp.task}",
            "Participants:\n" + _team(inp.participants),
            _deliverables(inp),
            f"Conversation so far:\n{so_far}" if so_far else "You take the first turn.",
            "Contribute your part and build on the others. Write each deliverable under a "
            f"heading {headings or '## result'}. When all deliverables are complete, end "
            f"your reply with the line {DONE_MARKER}.",
        ]
    )


def proposal(inp: CollaborationInput) -> str:
    return "\n\n".join(
        [
            f"Task: {inp.task}",
            _deliverables(inp),
            "Analyse the task independently and propose a complete solution. Write each "
            "deliverable under its own '## <deliverable>' heading.",
        ]
    )


def vote(inp: CollaborationInput, proposals: list[tuple[str, str]]) -> str:
    listed = "\n\n".join(
        f"Proposal {i} (by {who}):\n{_clip(text)}" for i, (who, text) in enumerate(proposals, 1)
    )
    return (
        f"Task: {inp.task}\n\nThe team's proposals:\n\n{listed}\n\n"
        "Rank the proposals on their merit for the task. Reply with your ranking and the "
        "reason, and put your choice on its own line as 'VOTE: <number>'."
    )
