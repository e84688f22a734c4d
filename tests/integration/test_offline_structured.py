"""The default embedded model (Qwen2.5-Coder-0.5B on llama.cpp) answers collaboration turns in
the shape they need: a plan the collaboration accepts as the model's own (no fallback), a
valid vote, and tool calls through the schema-constrained action loop.

Real model, real server, the same prompts the collaboration workflow sends (temperature 0, so
each run is the same run).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from activities.llm import complete
from activities.offline_llm import OfflineModelServer
from domain.agent import SANDBOX_TOOLS
from domain.collaboration import CollaborationInput, Participant, parse_plan, parse_vote
from domain.collaboration_prompts import plan as plan_prompt
from domain.collaboration_prompts import vote as vote_prompt
from domain.llm import AgentTurnRequest, ChatMessage, offline_provider
from domain.offline_models import QWEN_CODER_05B
from domain.structured_replies import PLAN, VOTE, plan_format, render, vote_format
from tests.integration.test_offline_llm import serving

TEAM = [
    Participant("sb_frontend0", "frontend-team", "frontend-architect", "Frontend Architect"),
    Participant("sb_backend00", "backend-team", "backend-architect", "Backend Architect"),
    Participant("sb_security0", "security-team", "security-analyst", "Security Analyst"),
]
DELIVERABLES = ["frontend_components", "backend_api", "security_review"]
INPUT = CollaborationInput(
    collaboration_id="col_test000000",
    workspace_id="ws_test0000000",
    task="Implement user authentication feature",
    mode="orchestrated",
    participants=TEAM,
    orchestrator=TEAM[0],
    deliverables=DELIVERABLES,
)


@pytest.fixture(scope="module")
def server() -> Iterator[OfflineModelServer]:
    yield from serving(QWEN_CODER_05B)


async def _ask(server: OfflineModelServer, req: AgentTurnRequest) -> str:
    result = await complete(req, offline_base_url=server.base_url, offline_key=server.api_key)
    return result.content


async def test_plan_is_the_models_own_and_valid(server: OfflineModelServer) -> None:
    fmt = plan_format([p.name for p in TEAM], DELIVERABLES)
    req = AgentTurnRequest(
        provider=offline_provider(max_tokens=700),
        system_prompt="You are frontend-architect, the orchestrator of the team.",
        messages=[ChatMessage("user", plan_prompt(INPUT))],
        response_schema=fmt.schema,
    )
    raw = await _ask(server, req)
    json.loads(raw)  # constrained decoding: always JSON
    steps = parse_plan(render(PLAN, raw, [p.name for p in TEAM]), TEAM, DELIVERABLES)
    assert {s.deliverable for s in steps} >= set(DELIVERABLES)
    assert {s.assignee for s in steps} <= {p.sandbox_id for p in TEAM}
    assert all(s.instructions.strip() for s in steps)


async def test_vote_is_valid(server: OfflineModelServer) -> None:
    proposals = [
        ("frontend-team", "Use sessions stored server-side with CSRF tokens."),
        ("backend-team", "Use JWT access tokens with refresh token rotation and argon2id."),
        ("security-team", "Write the passwords to a text file."),
    ]
    req = AgentTurnRequest(
        provider=offline_provider(max_tokens=200),
        system_prompt="You are security-analyst of the team.",
        messages=[ChatMessage("user", vote_prompt(INPUT, proposals))],
        response_schema=vote_format(len(proposals)).schema,
    )
    text = render(VOTE, await _ask(server, req))
    assert parse_vote(text, len(proposals)) in (1, 2, 3)


async def test_tool_call_through_the_action_loop(server: OfflineModelServer) -> None:
    req = AgentTurnRequest(
        provider=offline_provider(max_tokens=200),
        system_prompt="You are a backend engineer working in /workspace.",
        messages=[ChatMessage("user", "Create the file /workspace/hello.py that prints hello.")],
        tools=list(SANDBOX_TOOLS),
    )
    result = await complete(req, offline_base_url=server.base_url, offline_key=server.api_key)
    assert result.finish_reason == "tool_calls", result
    call = result.tool_calls[0]
    assert call.name in ("write_file", "run_command")
    assert "hello" in json.dumps(call.arguments)
