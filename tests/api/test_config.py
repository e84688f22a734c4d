"""Workspace configuration: providers with write-only keys, MCP servers, collaboration policy."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import select

from config.settings import Settings
from store.db import create_engine, session_factory
from store.models import Workspace
from tests.conftest import Account, assert_error

WS = "/api/v1/workspaces"


@pytest.fixture
async def wid(client: httpx.AsyncClient, account: Account) -> str:
    r = await client.post(WS, json={"name": "cfg"}, headers=account.headers)
    return str(r.json()["data"]["workspace_id"])


async def _stored(settings: Settings, wid: str) -> Workspace:
    engine = create_engine(settings.resolved_database_url)
    async with session_factory(engine)() as s:
        ws = await s.scalar(select(Workspace).where(Workspace.id == wid))
    await engine.dispose()
    assert ws is not None
    return ws


async def test_defaults(client: httpx.AsyncClient, account: Account, wid: str) -> None:
    data = (await client.get(f"{WS}/{wid}/config", headers=account.headers)).json()["data"]
    assert data["workspace_id"] == wid
    assert (
        data["settings"]["max_sandboxes"] == 5  # the edition's limit
        and data["settings"]["default_llm_provider"] == "qwen"
    )
    assert data["llm_providers"] == [] and data["mcp_servers"] == []
    assert data["collaboration_policy"] == {"mode": "allow_all", "rules": []}


async def test_api_keys_are_write_only(
    client: httpx.AsyncClient, account: Account, wid: str, settings: Settings
) -> None:
    secret = "sk-live-very-secret-value-123"
    body = {
        "settings": {"max_sandboxes": 5},
        "llm_providers": [
            {
                "name": "claude",
                "api_key": "${ANTHROPIC_API_KEY}",
                "models": ["claude-3-5-sonnet-20241022"],
                "default_model": "claude-3-5-sonnet-20241022",
            },
            {
                "name": "openai",
                "api_key": secret,
                "base_url": "http://127.0.0.1:9999/v1",
                "models": ["gpt-4o"],
                "parameters": {"temperature": 0.2},
            },
        ],
    }
    r = await client.put(f"{WS}/{wid}/config", json=body, headers=account.headers)
    assert r.status_code == 200, r.text
    assert secret not in r.text
    got = await client.get(f"{WS}/{wid}/config", headers=account.headers)
    assert secret not in got.text
    providers = {p["name"]: p for p in got.json()["data"]["llm_providers"]}
    assert providers["claude"]["api_key"] == "${ANTHROPIC_API_KEY}"  # references stay references
    assert (
        providers["openai"]["api_key"] == "********" and providers["openai"]["api_key_set"] is True
    )
    assert got.json()["data"]["settings"]["max_sandboxes"] == 5

    # Round-tripping what GET returned (mask included) keeps the stored key.
    round_trip = {
        "llm_providers": [
            {k: v for k, v in p.items() if k not in {"api_key_set"} and v is not None}
            for p in got.json()["data"]["llm_providers"]
        ]
    }
    r = await client.put(f"{WS}/{wid}/config", json=round_trip, headers=account.headers)
    assert r.status_code == 200, r.text
    stored = {p["name"]: p for p in (await _stored(settings, wid)).llm_providers}
    assert stored["openai"]["api_key"] == secret
    assert stored["claude"]["api_key"] == "${ANTHROPIC_API_KEY}"
    # And the workspace's other views never show it either.
    assert secret not in (await client.get(f"{WS}/{wid}", headers=account.headers)).text
    assert secret not in (await client.get(WS, headers=account.headers)).text


async def test_mcp_servers_and_policy(
    client: httpx.AsyncClient, account: Account, wid: str
) -> None:
    body = {
        "mcp_servers": [
            {
                "name": "filesystem",
                "transport": "stdio",
                "command": "mcp-fs",
                "args": ["/workspace"],
                "env": {"TOKEN": "hunter2-secret", "KEY_REF": "${OPENAI_API_KEY}"},
            },
            {
                "name": "web-search",
                "transport": "sse",
                "url": "http://127.0.0.1:7000/sse",
                "enabled": False,
            },
        ],
        "collaboration_policy": {
            "mode": "allow_list",
            "rules": [
                {
                    "from": "frontend-team",
                    "to": ["backend-team"],
                    "message_types": ["request"],
                    "approval_required": True,
                }
            ],
        },
    }
    r = await client.put(f"{WS}/{wid}/config", json=body, headers=account.headers)
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    servers = {s["name"]: s for s in data["mcp_servers"]}
    assert (
        servers["filesystem"]["status"] == "enabled"
        and servers["web-search"]["status"] == "disabled"
    )
    assert servers["filesystem"]["env"] == {"TOKEN": "********", "KEY_REF": "${OPENAI_API_KEY}"}
    assert "hunter2-secret" not in r.text
    assert data["collaboration_policy"]["mode"] == "allow_list"
    assert data["collaboration_policy"]["rules"][0]["from"] == "frontend-team"
    assert data["settings"]["collaboration_policy"] == "allow_list"  # settings mirror the mode


@pytest.mark.parametrize(
    "body",
    [
        {"llm_providers": [{"name": "gemini"}]},
        {"llm_providers": [{"name": "qwen"}, {"name": "qwen"}]},
        {"llm_providers": [{"name": "qwen", "models": ["a"], "default_model": "b"}]},
        {"llm_providers": [{"name": "qwen", "base_url": "not a url"}]},
        {"llm_providers": [{"name": "qwen", "parameters": {"temperature": 3}}]},
        {"mcp_servers": [{"name": "fs", "transport": "stdio"}]},
        {"mcp_servers": [{"name": "fs", "transport": "sse"}]},
        {"mcp_servers": [{"name": "fs", "transport": "carrier-pigeon", "command": "x"}]},
        {"collaboration_policy": {"mode": "maybe"}},
        {
            "collaboration_policy": {
                "mode": "allow_list",
                "rules": [{"from": "a", "to": "b", "message_types": ["gossip"]}],
            }
        },
        {"settings": {"max_sandboxes": -1}},
        {"unknown_section": {}},
        {"llm_providers": [{"name": "qwen", "api_key": "nul\x00"}]},
    ],
)
async def test_invalid_config_is_422_configuration_invalid(
    client: httpx.AsyncClient, account: Account, wid: str, body: dict[str, object]
) -> None:
    before = (await client.get(f"{WS}/{wid}/config", headers=account.headers)).json()["data"]
    r = await client.put(f"{WS}/{wid}/config", json=body, headers=account.headers)
    body_json = assert_error(r, 422, "CONFIGURATION_INVALID")
    assert body_json["error"]["details"]["fields"]
    after = (await client.get(f"{WS}/{wid}/config", headers=account.headers)).json()["data"]
    assert after == before  # nothing partially written
