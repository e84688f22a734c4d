"""A `completed` collaboration's result says what went wrong on the way (issue #14: statuses
that tell the truth), from what the embedded SmolLM2 really produced."""

from __future__ import annotations

from domain.collaboration_warnings import echoes_prompt, result_warnings, with_warnings


def _step(name: str, output: str, status: str = "completed") -> dict[str, object]:
    return {"step": name, "status": status, "output": output}


def test_a_good_run_has_no_warnings() -> None:
    steps = [
        _step("task_breakdown", '{"steps": []}'),
        _step("api", "POST /auth/login returns a token pair."),
        _step("integration", "The API and the form fit together."),
    ]
    result = {"summary": "done", "plan_source": "orchestrator", "steps": 1}
    assert with_warnings("orchestrated", result, steps) == {**result, "warnings": []}
    assert with_warnings("orchestrated", None, steps) is None


def test_fallback_plan_empty_and_echoed_outputs_are_named() -> None:
    echo = "Produce the deliverable 'security_review' for the task: Implement auth\n" * 30
    steps = [
        _step("security_review", echo),
        _step("backend_api", "  "),
        _step("frontend_components", "A login form.", status="cancelled"),  # not judged
    ]
    result = {"plan_source": "fallback (the orchestrator's plan was invalid: no JSON)"}
    warnings = result_warnings("orchestrated", result, steps)
    assert warnings == [
        "the orchestrator's own plan was not used: fallback (the orchestrator's plan was "
        "invalid: no JSON)",
        "step security_review echoed its instructions instead of answering",
        "step backend_api produced an empty output",
    ]


def test_swarm_without_valid_votes_and_peers_cut_off_by_the_turn_limit() -> None:
    swarm = {"votes": {"sb_a": None, "sb_b": None}, "decided_by": "participant order"}
    assert result_warnings("swarm", swarm, []) == [
        "no participant cast a valid vote: the winner was participant order"
    ]
    assert result_warnings("swarm", {"votes": {"sb_a": 1, "sb_b": None}}, []) == []
    peers = {"ended_by": "turn limit"}
    assert len(result_warnings("peer_to_peer", peers, [])) == 1
    assert result_warnings("peer_to_peer", {"ended_by": "a declared it complete"}, []) == []


def test_echo_detection() -> None:
    assert echoes_prompt("Collaboration task: x\n\nYour step 'a': do it")
    assert echoes_prompt("I will now\n" + "repeat\n" * 6)
    assert not echoes_prompt("## frontend\nA form with email and password fields.\nValidation.")
