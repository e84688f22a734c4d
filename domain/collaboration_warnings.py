"""What a finished collaboration's `result.warnings` tells its user: the ways a run can reach
`completed` without having done its job well (pure).

A collaboration whose plan fell back to one step per deliverable, whose steps answered with
nothing or with their own instructions, whose swarm cast no valid vote, or whose peers never
declared the work complete still ends `completed` (every step was answered), but its result
must say so: the status alone would not tell the truth.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

# Text only a prompt contains: an output that holds it echoed its instructions back.
PROMPT_MARKERS = (
    "Produce the deliverable '",
    "Collaboration task:",
    "Your step '",
    "Reply with the deliverable itself",
)
SYSTEM_STEPS = ("task_breakdown", "integration")


def echoes_prompt(text: str) -> bool:
    if any(marker in text for marker in PROMPT_MARKERS):
        return True
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) >= 5:
        _, count = Counter(lines).most_common(1)[0]
        return count * 2 >= len(lines)  # one line is half the output: a loop, not an answer
    return False


def result_warnings(mode: str, result: dict[str, Any], steps: list[dict[str, Any]]) -> list[str]:
    warnings: list[str] = []
    source = str(result.get("plan_source", ""))
    if source.startswith("fallback"):
        warnings.append(f"the orchestrator's own plan was not used: {source}")
    for step in steps:
        if step.get("status") != "completed":
            continue
        name, output = step.get("step"), str(step.get("output") or "")
        if name == "task_breakdown":
            continue  # its output is the plan (JSON), judged by plan_source
        if not output.strip():
            warnings.append(f"step {name} produced an empty output")
        elif echoes_prompt(output):
            warnings.append(f"step {name} echoed its instructions instead of answering")
    votes = result.get("votes")
    if isinstance(votes, dict) and votes and all(v is None for v in votes.values()):
        warnings.append(
            f"no participant cast a valid vote: the winner was {result.get('decided_by')}"
        )
    if mode == "peer_to_peer" and result.get("ended_by") == "turn limit":
        warnings.append("the turn limit ended the conversation before anyone declared it complete")
    return warnings


def with_warnings(
    mode: str, result: dict[str, Any] | None, steps: list[dict[str, Any]]
) -> dict[str, Any] | None:
    """`result` with its `warnings` (a list, empty when there is nothing to say)."""
    if result is None:
        return None
    return {**result, "warnings": result_warnings(mode, result, steps)}
