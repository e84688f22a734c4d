"""GET /workspaces/{id}/agents/discover on the real stack: declared and derived capabilities,
filters, statuses from real sandboxes and in-flight replies, metrics from real deliveries."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Account, assert_error
from tests.integration.conftest import Stack, eventually
from tests.unit.test_llm_providers import FakeProvider, fake_server, openai_reply

pytestmark = [pytest.mark.docker, pytest.mark.temporal]
__all__ = ["fake_server"]  # the loopback provider fixture, shared with the unit tests

PATH = "/workspaces/{workspace_id}/agents/discover"
DISCOVER = "/api/v1/workspaces/{wid}/agents/discover"
REPLY_DELAY_S = 1.5


async def _discover(stack: Stack, acc: Account, wid: str, **params: str) -> list[dict[str, Any]]:
    r = await stack.client.get(DISCOVER.format(wid=wid), headers=acc.headers, params=params)
    assert r.status_code == 200, r.text
    return list(r.json()["data"]["agents"])


def _by_name(found: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {a["agent_name"]: a for a in found}


async def _create(stack: Stack, acc: Account, wid: str, name: str, config: dict[str, Any]) -> str:
    r = await stack.client.post(
        f"/api/v1/workspaces/{wid}/sandboxes",
        headers=acc.headers,
        json={"name": name, "agent_config": config},
    )
    assert r.status_code == 201, r.text
    return str(r.json()["data"]["sandbox_id"])


async def _team(stack: Stack, acc: Account, fake: FakeProvider) -> tuple[str, str, str, str]:
    wid = await stack.workspace(acc, default_llm_provider="openai")
    r = await stack.client.put(
        f"/api/v1/workspaces/{wid}/config",
        headers=acc.headers,
        json={
            "llm_providers": [
                {
                    "name": "openai",
                    "api_key": "sk-test",
                    "base_url": f"{fake.base}/v1",
                    "models": ["gpt-test"],
                    "default_model": "gpt-test",
                }
            ]
        },
    )
    assert r.status_code == 200, r.text
    backend = await _create(
        stack,
        acc,
        wid,
        "backend-team",
        {
            "primary_agent": {
                "name": "backend-architect",
                "role": "Backend Architect",
                "system_prompt": "You design APIs.",
                "capabilities": ["api_design", "database_optimization"],
            },
            "sub_agents": [
                {
                    "name": "security-reviewer",
                    "role": "Security Engineer",
                    "system_prompt": "You review authentication and OAuth flows.",
                }
            ],
        },
    )
    frontend = await _create(
        stack,
        acc,
        wid,
        "frontend-team",
        {
            "primary_agent": {
                "name": "frontend-dev",
                "role": "Frontend Developer",
                "system_prompt": "Expert in React, TypeScript",
            }
        },
    )
    docs = await _create(
        stack,
        acc,
        wid,
        "docs-team",
        {
            "primary_agent": {
                "name": "api-writer",
                "role": "Technical Writer",
                "capabilities": ["REST API design and documentation"],
            }
        },
    )
    for sid in (backend, frontend, docs):
        await stack.wait_status(acc, sid, "running")
    return wid, backend, frontend, docs


async def test_discovery_capabilities_filters_statuses_and_metrics(
    stack: Stack, fake_server: FakeProvider
) -> None:
    fake = fake_server
    fake.reset()
    acc = await stack.account()
    wid, backend, frontend, docs = await _team(stack, acc, fake)

    # Every agent, primary and sub-agents, sorted by name; no score without a capability query.
    found = await _discover(stack, acc, wid)
    assert [a["agent_name"] for a in found] == [
        "api-writer",
        "backend-architect",
        "frontend-dev",
        "security-reviewer",
    ]
    agents_ = _by_name(found)
    architect = agents_["backend-architect"]
    assert architect == {
        "sandbox_id": backend,
        "sandbox_name": "backend-team",
        "agent_name": "backend-architect",
        "role": "Backend Architect",
        "capabilities": ["api_design", "database_optimization"],
        "capabilities_source": "declared",
        "status": "available",
        "metrics": {"messages_processed": 0, "avg_response_time_ms": None},
    }
    assert agents_["security-reviewer"]["sandbox_id"] == backend
    assert agents_["security-reviewer"]["capabilities_source"] == "derived"
    assert {"security", "oauth", "security_review"} <= set(
        agents_["security-reviewer"]["capabilities"]
    )
    dev = agents_["frontend-dev"]
    assert dev["capabilities_source"] == "derived"
    assert {"react", "typescript", "frontend"} <= set(dev["capabilities"])

    # Capability: more than string equality, best match first.
    found = await _discover(stack, acc, wid, capability="api design")
    # "api_design" is the query itself; "REST API design and documentation" is broader.
    assert [(a["agent_name"], a["match_score"]) for a in found] == [
        ("backend-architect", 1.0),
        ("api-writer", 0.667),
    ]
    found = await _discover(stack, acc, wid, capability="Frontend")  # derived: React → frontend
    assert [a["agent_name"] for a in found] == ["frontend-dev"]
    found = await _discover(stack, acc, wid, capability="authentication")  # auth ≡ security
    assert [a["agent_name"] for a in found] == ["security-reviewer"]
    assert await _discover(stack, acc, wid, capability="kubernetes") == []

    # Role: case-insensitive, part of the role.
    found = await _discover(stack, acc, wid, role="ARCHITECT")
    assert [a["agent_name"] for a in found] == ["backend-architect"]
    found = await _discover(stack, acc, wid, role="engineer", capability="security")
    assert [a["agent_name"] for a in found] == ["security-reviewer"]

    # sandbox_id: a filter (unknown → nothing), a malformed one is refused.
    found = await _discover(stack, acc, wid, sandbox_id=backend)
    assert [a["agent_name"] for a in found] == ["backend-architect", "security-reviewer"]
    assert await _discover(stack, acc, wid, sandbox_id="sb_0000000000") == []
    r = await stack.client.get(
        DISCOVER.format(wid=wid), headers=acc.headers, params={"sandbox_id": "backend-team"}
    )
    assert_error(r, 422, "VALIDATION_ERROR")
    r = await stack.client.get(
        DISCOVER.format(wid=wid), headers=acc.headers, params={"capability": " && "}
    )
    assert_error(r, 422, "VALIDATION_ERROR")

    # Someone else's workspace does not exist for them.
    other = await stack.account()
    r = await stack.client.get(DISCOVER.format(wid=wid), headers=other.headers)
    assert_error(r, 404, "RESOURCE_NOT_FOUND")
    r = await stack.client.get(DISCOVER.format(wid="ws_0000000000"), headers=acc.headers)
    assert_error(r, 404, "RESOURCE_NOT_FOUND")

    # A real reply: busy while the agent's turn runs, then metrics from the delivery.
    fake.then(200, openai_reply("Designed: POST /auth/login"), delay=REPLY_DELAY_S)
    r = await stack.client.post(
        f"/api/v1/sandboxes/{frontend}/messages",
        headers=acc.headers,
        json={
            "to_sandbox": "backend-team",
            "to_agent": "backend-architect",
            "content": {"task": "Design user authentication API"},
            "requires_response": True,
            "timeout": 60,
        },
    )
    assert r.status_code == 202, r.text
    mid = r.json()["data"]["message_id"]
    busy = await eventually(
        lambda: _discover(stack, acc, wid, sandbox_id=backend),
        lambda f: _by_name(f)["backend-architect"]["status"] == "busy",
        30,
        "backend-architect to be busy",
    )
    assert _by_name(busy)["security-reviewer"]["status"] == "available"
    await eventually(
        lambda: stack.client.get(f"/api/v1/messages/{mid}", headers=acc.headers),
        lambda r: r.json()["data"]["status"] == "responded",
        60,
        "the reply",
    )
    # A message with no agent named is the primary's.
    r = await stack.client.post(
        f"/api/v1/sandboxes/{docs}/messages",
        headers=acc.headers,
        json={"to_sandbox": backend, "content": {"note": "docs updated"}},
    )
    assert r.status_code == 202, r.text
    found = await eventually(
        lambda: _discover(stack, acc, wid),
        lambda f: _by_name(f)["backend-architect"]["metrics"]["messages_processed"] == 2,
        30,
        "the second delivery",
    )
    agents_ = _by_name(found)
    architect = agents_["backend-architect"]
    assert architect["status"] == "available"
    avg = architect["metrics"]["avg_response_time_ms"]
    # Measured from delivery to the stored reply, which waited on the provider's delay.
    assert REPLY_DELAY_S * 1000 <= avg < 60_000
    assert agents_["security-reviewer"]["metrics"] == {
        "messages_processed": 0,
        "avg_response_time_ms": None,
    }
    # The reply was delivered to the asking agent: received, never answered by it.
    assert agents_["frontend-dev"]["metrics"] == {
        "messages_processed": 1,
        "avg_response_time_ms": None,
    }

    # A stopped sandbox's agents are offline; the others are untouched.
    r = await stack.client.post(f"/api/v1/sandboxes/{frontend}/stop", headers=acc.headers)
    assert r.status_code == 202, r.text
    await stack.wait_status(acc, frontend, "stopped")
    agents_ = _by_name(await _discover(stack, acc, wid))
    assert agents_["frontend-dev"]["status"] == "offline"
    assert agents_["frontend-dev"]["metrics"]["messages_processed"] == 1
    assert agents_["backend-architect"]["status"] == "available"
    offline = await _discover(stack, acc, wid, capability="react")
    assert [(a["agent_name"], a["status"]) for a in offline] == [("frontend-dev", "offline")]
