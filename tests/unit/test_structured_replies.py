"""Collaboration turns asked for as JSON: which turns, and the text the workflow reads back."""

from __future__ import annotations

import json

from domain.collaboration import DONE_MARKER, Participant, parse_plan, parse_vote
from domain.structured_replies import (
    PLAN,
    TURN,
    VOTE,
    render,
    repair_plan,
    reply_format,
)

NAMES = ["frontend", "backend", "security"]
TEAM = [Participant(f"sb_{n[:10]:a<10}", n, f"{n}-agent") for n in NAMES]
DELIVERABLES = ["ui", "api", "review"]


def test_only_shaped_turns_get_a_format() -> None:
    plan = reply_format("orchestrated", "task_breakdown", False, NAMES, DELIVERABLES)
    assert plan is not None and plan.kind == PLAN
    items = plan.schema.schema["properties"]["steps"]["items"]["properties"]
    assert items["assignee"]["enum"] == NAMES and items["deliverable"]["enum"] == DELIVERABLES
    assert items["depends_on"]["items"]["enum"] == items["id"]["enum"]
    vote = reply_format("swarm", "vote_backend", False, NAMES, DELIVERABLES)
    assert vote is not None and vote.kind == VOTE
    assert vote.schema.schema["properties"]["vote"]["maximum"] == 3
    turn = reply_format("peer_to_peer", "turn_2_backend", True, NAMES, DELIVERABLES)
    assert turn is not None and turn.kind == TURN
    # A plan step the orchestrator named like a system step has tools: not a planning turn.
    assert reply_format("orchestrated", "task_breakdown", True, NAMES, DELIVERABLES) is None
    assert reply_format("orchestrated", "integration", False, NAMES, DELIVERABLES) is None
    assert reply_format("swarm", "proposal_backend", True, NAMES, DELIVERABLES) is None
    assert reply_format("orchestrated", "vote_x", False, NAMES, DELIVERABLES) is None


def test_vote_and_turn_render_to_what_the_workflow_parses() -> None:
    text = render(VOTE, json.dumps({"reason": "most complete", "vote": 2}))
    assert parse_vote(text, 3) == 2 and text.startswith("most complete")
    done = render(
        TURN, json.dumps({"contribution": "## ui\nA form", "deliverables_complete": True})
    )
    assert done.endswith(DONE_MARKER) and done.startswith("## ui")
    more = render(TURN, json.dumps({"contribution": "draft", "deliverables_complete": False}))
    assert DONE_MARKER not in more
    # Not the expected JSON: unchanged, handled as before.
    assert render(VOTE, "I pick VOTE: 1") == "I pick VOTE: 1"
    assert render(TURN, '{"other": 1}') == '{"other": 1}'
    assert render(PLAN, "no json here") == "no json here"


def _plan(*steps: tuple[str, str, str, list[str]]) -> str:
    return json.dumps(
        {
            "steps": [
                {"id": i, "assignee": a, "deliverable": d, "instructions": "do it", "depends_on": x}
                for i, a, d, x in steps
            ]
        }
    )


def test_a_plan_whose_dependencies_name_people_is_repaired_and_valid() -> None:
    # What the embedded model wrote in a real run: dependencies on assignees, and a cycle.
    raw = _plan(
        ("step1", "frontend", "ui", ["backend"]),
        ("step2", "backend", "api", ["frontend"]),
        ("step3", "security", "review", ["backend"]),
    )
    text = render(PLAN, raw, NAMES)
    steps = parse_plan(text, TEAM, DELIVERABLES)  # raises PlanInvalid if still broken
    deps = {s.id: s.depends_on for s in steps}
    assert deps == {"step1": ("step2",), "step2": (), "step3": ("step2",)}
    repairs = json.loads(text)["repairs"]
    assert any("read as the steps of backend" in r for r in repairs)
    assert any("a cycle" in r for r in repairs)


def test_repair_drops_self_and_unknown_and_keeps_a_good_plan_as_is() -> None:
    fixed = repair_plan(json.loads(_plan(("step1", "frontend", "ui", ["step1", "step9"]))), NAMES)
    assert fixed["steps"][0]["depends_on"] == [] and len(fixed["repairs"]) == 2
    good = json.loads(
        _plan(("step1", "backend", "api", []), ("step2", "frontend", "ui", ["step1"]))
    )
    assert repair_plan(good, NAMES) == good  # nothing to say, nothing added
