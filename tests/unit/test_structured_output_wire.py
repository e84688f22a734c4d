"""What each provider is sent for a turn that asks for a schema, and what comes back (fake
provider on loopback speaking both wire formats, through the real SDKs)."""

from __future__ import annotations

import json

import pytest

from domain.agent import SANDBOX_TOOLS
from domain.llm import AgentTurnRequest, ChatMessage, ResponseSchema, ToolCall, offline_provider
from domain.structured_replies import vote_format
from tests.unit.test_llm_providers import (
    FakeProvider,
    anthropic_reply,
    complete,
    fake_server,  # noqa: F401 - the session fixture
    openai_reply,
    provider,
)

VOTE = vote_format(3).schema


@pytest.fixture
def wire(request: pytest.FixtureRequest) -> FakeProvider:
    server: FakeProvider = request.getfixturevalue("fake_server")
    server.reset()
    return server


ANSWER = {"reason": "the most complete", "vote": 2}


def _turn(
    cfg: object, schema: ResponseSchema | None = VOTE, tools: bool = False
) -> AgentTurnRequest:
    return AgentTurnRequest(
        provider=cfg,  # type: ignore[arg-type]
        system_prompt="You vote.",
        messages=[ChatMessage("user", "Proposals: ...")],
        tools=list(SANDBOX_TOOLS) if tools else [],
        response_schema=schema,
    )


async def test_offline_model_gets_the_schema_as_a_grammar(wire: FakeProvider) -> None:
    wire.then(200, openai_reply(json.dumps(ANSWER)))
    result = await complete(_turn(offline_provider()), offline_base_url=wire.base)
    sent = wire.requests[0].body
    assert sent["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": VOTE.name, "schema": VOTE.schema, "strict": False},
    }
    # Its meaning is told too, briefly: the grammar holds the model to the schema itself.
    assert sent["messages"][0]["content"].endswith("with the fields: reason, vote.")
    assert json.loads(result.content) == ANSWER


async def test_openai_uses_structured_outputs_qwen_json_mode(wire: FakeProvider) -> None:
    wire.then(200, openai_reply(json.dumps(ANSWER)))
    wire.then(200, openai_reply(json.dumps(ANSWER)))
    await complete(_turn(provider(wire, "openai")))
    await complete(_turn(provider(wire, "qwen")))
    assert wire.requests[0].body["response_format"]["type"] == "json_schema"
    assert wire.requests[1].body["response_format"] == {"type": "json_object"}
    # JSON mode alone does not hold qwen to the schema: the prompt carries it.
    assert (
        json.dumps(VOTE.schema, separators=(",", ":"))
        in wire.requests[1].body["messages"][0]["content"]
    )


async def test_no_schema_no_response_format(wire: FakeProvider) -> None:
    wire.then(200, openai_reply("hi"))
    await complete(_turn(provider(wire, "glm"), schema=None))
    assert "response_format" not in wire.requests[0].body


async def test_claude_answers_through_a_forced_tool(wire: FakeProvider) -> None:
    wire.then(
        200,
        anthropic_reply(None, tool_uses=[{"id": "tu_1", "name": VOTE.name, "arguments": ANSWER}]),
    )
    result = await complete(_turn(provider(wire, "claude")))
    sent = wire.requests[0].body
    assert sent["tool_choice"] == {"type": "tool", "name": VOTE.name}
    assert sent["tools"][-1]["input_schema"] == VOTE.schema
    assert json.loads(result.content) == ANSWER
    assert result.tool_calls == [] and result.finish_reason == "stop"


async def test_offline_tool_loop_is_schema_constrained(wire: FakeProvider) -> None:
    """The embedded model writes tool calls as JSON text: its replies are held to one action
    object per step, and come back as real tool calls."""
    action = {"tool": "write_file", "arguments": {"path": "a.txt", "content": "hi"}}
    wire.then(200, openai_reply(json.dumps(action)))
    wire.then(200, openai_reply(json.dumps({"final": "wrote a.txt"})))
    req = _turn(offline_provider(), schema=None, tools=True)
    first = await complete(req, offline_base_url=wire.base)
    sent = wire.requests[0].body
    assert "tools" not in sent
    options = sent["response_format"]["json_schema"]["schema"]["anyOf"]
    assert [o["properties"].get("tool", {}).get("const") for o in options][:4] == [
        t.name for t in SANDBOX_TOOLS
    ]
    assert first.finish_reason == "tool_calls" and first.content == ""
    assert first.tool_calls == [ToolCall(first.tool_calls[0].id, "write_file", action["arguments"])]

    req.messages.append(first.as_message())
    req.messages.append(ChatMessage("tool", '{"ok": true}', tool_call_id=first.tool_calls[0].id))
    second = await complete(req, offline_base_url=wire.base)
    history = wire.requests[1].body["messages"]
    assert json.loads(history[-2]["content"]) == action  # the call, in the model's own words
    assert history[-1] == {"role": "user", "content": 'Result of write_file:\n{"ok": true}'}
    assert second.content == "wrote a.txt" and second.tool_calls == []


async def test_the_last_allowed_step_must_answer(wire: FakeProvider) -> None:
    """A turn that used all but one of its steps on tools is asked for its answer without
    tools: a small model could otherwise end the turn on a tool call, leaving no reply."""
    req = _turn(provider(wire, "openai"), schema=None, tools=True)
    for i in range(req.max_steps - 1):
        call = ToolCall(f"c{i}", "list_files", {})
        req.messages.append(ChatMessage("assistant", "", tool_calls=[call]))
        req.messages.append(ChatMessage("tool", "[]", tool_call_id=f"c{i}"))
    wire.then(200, openai_reply("here is my answer"))
    result = await complete(req)
    sent = wire.requests[0].body
    assert "tools" not in sent and "final answer now" in sent["messages"][-1]["content"]
    assert result.content == "here is my answer"
    # One step earlier the tools are still offered.
    req.messages[-2:] = []
    wire.then(200, openai_reply("x"))
    await complete(req)
    assert "tools" in wire.requests[1].body
