"""Messages that require a response: the target agent's turn through real LLM SDKs — a scripted
loopback provider (tool calls included) and the real offline model — on the real stack."""

from __future__ import annotations

from typing import Any

import pytest

from domain.containers import container_name
from tests.conftest import Account
from tests.integration.conftest import Stack, eventually
from tests.unit.test_llm_providers import FakeProvider, fake_server, openai_reply

pytestmark = [pytest.mark.docker, pytest.mark.temporal]
__all__ = ["fake_server"]  # the loopback provider fixture, shared with the unit tests


async def _setup(
    stack: Stack,
    acc: Account,
    providers: list[dict[str, Any]] | None,
) -> tuple[str, str]:
    wid = await stack.workspace(acc, default_llm_provider="openai")
    if providers is not None:
        r = await stack.client.put(
            f"/api/v1/workspaces/{wid}/config",
            headers=acc.headers,
            json={"llm_providers": providers},
        )
        assert r.status_code == 200, r.text
    a = await stack.sandbox(acc, wid, name="frontend-team")
    r = await stack.client.post(
        f"/api/v1/workspaces/{wid}/sandboxes",
        headers=acc.headers,
        json={
            "name": "backend-team",
            "agent_config": {
                "primary_agent": {
                    "name": "backend-architect",
                    "role": "Backend Architect",
                    "system_prompt": "You design APIs.",
                    "capabilities": ["api_design"],
                }
            },
        },
    )
    b = r.json()["data"]["sandbox_id"]
    await stack.wait_status(acc, a, "running")
    await stack.wait_status(acc, b, "running")
    return a, b


async def _ask(stack: Stack, acc: Account, a: str, timeout: int = 60) -> str:
    r = await stack.client.post(
        f"/api/v1/sandboxes/{a}/messages",
        headers=acc.headers,
        json={
            "to_sandbox": "backend-team",
            "to_agent": "backend-architect",
            "message_type": "request",
            "content": {"task": "Design user authentication API"},
            "requires_response": True,
            "timeout": timeout,
        },
    )
    assert r.status_code == 202, r.text
    return str(r.json()["data"]["message_id"])


async def _message(stack: Stack, acc: Account, mid: str) -> dict[str, Any]:
    return dict(
        (await stack.client.get(f"/api/v1/messages/{mid}", headers=acc.headers)).json()["data"]
    )


def _fake_provider(fake: FakeProvider) -> list[dict[str, Any]]:
    return [
        {
            "name": "openai",
            "api_key": "sk-test",
            "base_url": f"{fake.base}/v1",
            "models": ["gpt-test"],
            "default_model": "gpt-test",
        }
    ]


async def test_reply_with_a_tool_call_inside_the_sandbox(
    stack: Stack, fake_server: FakeProvider
) -> None:
    fake = fake_server
    fake.reset()
    acc = await stack.account()
    a, b = await _setup(stack, acc, _fake_provider(fake))
    fake.then(
        200,
        openai_reply(
            None,
            tool_calls=[
                {
                    "id": "call_1",
                    "name": "write_file",
                    "arguments": {
                        "path": "design/auth.md",
                        "content": "# Auth API\nPOST /auth/login",
                    },
                }
            ],
        ),
    )
    fake.then(
        200, openai_reply("Designed it: see design/auth.md", prompt_tokens=40, completion_tokens=9)
    )
    mid = await _ask(stack, acc, a)
    m = await eventually(
        lambda: _message(stack, acc, mid), lambda m: m["status"] == "responded", 60, "a reply"
    )
    assert (
        m["responded_at"] and m["response"]["content"]["text"] == "Designed it: see design/auth.md"
    )
    assert m["response"]["content"]["tool_calls"] == 1
    assert m["response"]["content"]["usage"] == {"input_tokens": 51, "output_tokens": 12}
    # The tool really ran in the target's container, and the model saw its result.
    out = stack.docker.containers.get(container_name(b)).exec_run(
        ["cat", "/workspace/design/auth.md"]
    )
    assert out.output.decode().startswith("# Auth API")
    second = fake.requests[1].body
    assert (
        second["messages"][0]["role"] == "system"
        and "Backend Architect" in second["messages"][0]["content"]
    )
    assert any(
        msg.get("role") == "tool" and msg.get("tool_call_id") == "call_1"
        for msg in second["messages"]
    )
    assert {t["function"]["name"] for t in second["tools"]} >= {
        "read_file",
        "write_file",
        "run_command",
    }
    reply = await _message(stack, acc, m["response"]["message_id"])
    assert reply["message_type"] == "response" and reply["correlation_id"] == mid
    assert reply["from_sandbox"] == b and reply["to_sandbox"] == a
    # The agent's work is in the target's logs (not only heartbeats, which are debug-level and
    # hidden unless asked for): the message, the tool call and its outcome, the reply.
    r = await stack.client.get(f"/api/v1/sandboxes/{b}/logs", headers=acc.headers)
    lines = [line["message"] for line in r.json()["data"]["logs"]]
    work = [line for line in lines if "Heartbeat" not in line]
    assert any("received a request" in line and "Design" in line for line in work), lines
    assert any("tool write_file(design/auth.md): ok in" in line for line in work), lines
    assert any(
        f"replied to {mid}: Designed it" in line
        and "51+12 tokens" in line
        and "1 tool call" in line
        for line in work
    ), lines
    assert not any("Heartbeat" in line for line in lines)  # debug: hidden by default


async def test_slow_agent_times_out_and_bad_key_fails(
    stack: Stack, fake_server: FakeProvider
) -> None:
    fake = fake_server
    fake.reset()
    acc = await stack.account()
    a, _ = await _setup(stack, acc, _fake_provider(fake))
    fake.then(200, openai_reply("too late"), delay=6)
    mid = await _ask(stack, acc, a, timeout=2)
    m = await eventually(
        lambda: _message(stack, acc, mid), lambda m: m["status"] == "timeout", 30, "timeout"
    )
    assert "no response within 2 s" in m["status_reason"]

    fake.reset()
    fake.then(401, {"error": {"message": "invalid api key", "type": "invalid_request_error"}})
    mid = await _ask(stack, acc, a)
    m = await eventually(
        lambda: _message(stack, acc, mid), lambda m: m["status"] == "failed", 30, "failure"
    )
    assert "could not answer" in m["status_reason"]
    assert len(fake.requests) == 1  # an auth error is not retried
    r = await stack.client.post(f"/api/v1/messages/{mid}/retry", headers=acc.headers)
    assert r.status_code == 202


async def test_reply_from_the_real_offline_model(stack: Stack) -> None:
    acc = await stack.account()
    a, _ = await _setup(stack, acc, None)
    mid = await _ask(stack, acc, a, timeout=120)
    m = await eventually(
        lambda: _message(stack, acc, mid),
        lambda m: m["status"] in ("responded", "failed", "timeout"),
        150,
        "a reply",
    )
    assert m["status"] == "responded", m
    content = m["response"]["content"]
    assert content["provider"] == "offline" and content["text"].strip()
    assert content["usage"]["output_tokens"] > 0
