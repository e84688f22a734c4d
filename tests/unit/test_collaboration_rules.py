"""The pure rules of collaborations: plan validation and fallback, scheduling, sections, votes,
progress arithmetic, prompts."""

from __future__ import annotations

import json

import pytest

from domain import collaboration_prompts as prompts
from domain.collaboration import (
    DONE_MARKER,
    CollaborationInput,
    Participant,
    PlanInvalid,
    Progress,
    fallback_plan,
    parse_plan,
    parse_vote,
    ready_steps,
    sections,
    tally,
    weighted_percentage,
)

TEAM = [
    Participant("sb_aaaaaaaaaa", "frontend-team", "fe", "Frontend"),
    Participant("sb_bbbbbbbbbb", "backend-team", "be", "Backend"),
    Participant("sb_cccccccccc", "security-team", "sec", "Security"),
]


def _plan(*steps: dict[str, object]) -> str:
    return json.dumps({"steps": list(steps)})


def _step(sid: str, who: str, deliverable: str, deps: list[str] | None = None) -> dict[str, object]:
    return {
        "id": sid,
        "assignee": who,
        "deliverable": deliverable,
        "instructions": f"do {sid}",
        "depends_on": deps or [],
    }


def test_a_valid_plan_resolves_assignees_by_name_or_id_and_keeps_dependencies() -> None:
    text = (
        "Here is the plan:\n```json\n"
        + _plan(
            _step("api", "backend-team", "backend_api"),
            _step("ui", "sb_aaaaaaaaaa", "frontend_components", ["api"]),
        )
        + "\n```"
    )
    steps = parse_plan(text, TEAM, ["backend_api", "frontend_components"])
    assert [(s.id, s.assignee, s.depends_on) for s in steps] == [
        ("api", "sb_bbbbbbbbbb", ()),
        ("ui", "sb_aaaaaaaaaa", ("api",)),
    ]


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("no json at all", "no JSON"),
        (json.dumps({"steps": []}), "1 to 20"),
        (json.dumps({"plan": "x"}), "'steps'"),
        (_plan(_step("a", "nobody", "backend_api")), "not a participant"),
        (_plan(_step("A B", "backend-team", "backend_api")), "'id'"),
        (
            _plan(_step("a", "backend-team", "backend_api"), _step("a", "backend-team", "x")),
            "unique",
        ),
        (_plan(_step("a", "backend-team", "backend_api", ["zzz"])), "unknown steps"),
        (
            _plan(
                _step("a", "backend-team", "backend_api", ["b"]),
                _step("b", "backend-team", "x", ["a"]),
            ),
            "cycle",
        ),
        (_plan(_step("a", "backend-team", "something_else")), "no step produces"),
        (
            _plan({"id": "a", "assignee": "backend-team", "deliverable": "backend_api"}),
            "instructions",
        ),
    ],
)
def test_an_invalid_plan_is_rejected_with_the_reason(text: str, why: str) -> None:
    with pytest.raises(PlanInvalid, match=why):
        parse_plan(text, TEAM, ["backend_api"])


def test_the_fallback_is_one_step_per_deliverable_round_robin_and_valid() -> None:
    steps = fallback_plan("build it", TEAM, ["api spec", "ui", "review", "docs"])
    assert [s.assignee for s in steps] == [p.sandbox_id for p in TEAM] + [TEAM[0].sandbox_id]
    assert [s.id for s in steps] == ["api_spec", "ui", "review", "docs"]
    assert all(not s.depends_on for s in steps)
    # Without deliverables: one contribution per participant.
    assert [s.deliverable for s in fallback_plan("t", TEAM, [])] == [
        "frontend-team_contribution",
        "backend-team_contribution",
        "security-team_contribution",
    ]


def test_ready_steps_follow_dependencies_and_allow_parallel_branches() -> None:
    steps = parse_plan(
        _plan(
            _step("api", "backend-team", "a"),
            _step("ui", "frontend-team", "b", ["api"]),
            _step("review", "security-team", "c", ["api"]),
            _step("ship", "backend-team", "d", ["ui", "review"]),
        ),
        TEAM,
        [],
    )
    assert [s.id for s in ready_steps(steps, set(), set())] == ["api"]
    assert [s.id for s in ready_steps(steps, {"api"}, {"api"})] == ["ui", "review"]
    assert ready_steps(steps, {"api", "ui"}, {"api", "ui", "review"}) == []
    assert [s.id for s in ready_steps(steps, {"api", "ui", "review"}, {"api", "ui", "review"})] == [
        "ship"
    ]


def test_sections_pick_deliverables_by_heading() -> None:
    text = "intro\n## Backend_API\nGET /users\n\n## notes\nx\n### frontend_components\n<App/>\n"
    assert sections(text, ["backend_api", "frontend_components", "missing"]) == {
        "backend_api": "GET /users",
        "frontend_components": "<App/>",
    }


def test_votes_parse_and_tally_with_tie_breaks() -> None:
    assert parse_vote("I rank 2 > 1.\nVOTE: 2", 3) == 2
    assert parse_vote("vote = #3", 3) == 3
    assert parse_vote("VOTE: 7", 3) is None  # out of range: an abstention
    assert parse_vote("no idea", 3) is None
    order = ["a", "b", "c"]
    assert tally({"a": 2, "b": 2, "c": 1}, order, "a")[0] == 2
    winner, how = tally({"a": 1, "b": 2, "c": None}, order, "b")
    assert (winner, "orchestrator" in how) == (2, True)
    winner, how = tally({"a": 3, "b": 2, "c": None}, order, "c")
    assert (winner, "participant order" in how) == (2, True)
    assert tally({"a": None, "b": None}, order, "a")[0] == 1


def test_progress_never_goes_down() -> None:
    p = Progress()
    p.advance(weighted_percentage([(80, 1, 4)]))
    assert p.percentage == 20
    p.advance(10)
    assert p.percentage == 20
    p.advance(250)
    assert p.percentage == 100
    assert weighted_percentage([(45, 3, 3), (45, 0, 3), (10, 0, 0)]) == 45


def test_prompts_carry_schema_feedback_inputs_and_the_done_marker() -> None:
    inp = CollaborationInput("col_x", "ws_x", "Build auth", "orchestrated", TEAM, TEAM[0], ["api"])
    plan = prompts.plan(inp, feedback="step a: assignee 'x' is not a participant")
    assert '"frontend-team"' in plan and "rejected" in plan and "api" in plan
    step = fallback_plan("Build auth", TEAM, ["api"])[0]
    text = prompts.step("Build auth", step, {"design": "D" * 5000})
    assert "Output of step 'design'" in text and "[…truncated]" in text
    assert DONE_MARKER in prompts.peer_turn(inp, TEAM[1], [("frontend-team", "hi")])
    assert "VOTE: <number>" in prompts.vote(inp, [("a", "p1"), ("b", "p2")])
