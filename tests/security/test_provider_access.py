"""A workspace's provider config must not make the worker read its environment or reach, and
echo, internal services (issue #13, items 1 and 2).

The attacks: `"api_key": "${PATH}"` with a `base_url` of the attacker's server (the worker
sent its own PATH as the bearer token); a `base_url` on loopback, link-local or private
addresses, directly or through a name that resolves there; a provider's error body coming
back verbatim in the message's `status_reason`. Defaults only here: no host is allowed.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import uvicorn
from temporalio.exceptions import ApplicationError

from activities.llm import complete
from api.app import create_app
from domain.egress import HostAllowList, ProviderAccess, is_internal, parse_ip, url_refusal
from domain.llm import AgentTurnRequest, ChatMessage, LLMErrorType, LLMProviderConfig
from tests.conftest import Account, app_client, assert_error, make_settings, new_account
from tests.unit.test_llm_providers import FakeProvider, error_body, openai_reply

WS = "/api/v1/workspaces"


# -- the API refuses at PUT /config ------------------------------------------------------------


@pytest_asyncio.fixture(loop_scope="session")
async def strict_api(database_url: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The API as shipped: default `${VAR}` allow-list, no internal host allowed."""
    settings = make_settings(database_url, tmp_path, provider_allowed_hosts=[])
    async with app_client(create_app(settings)) as client:
        yield client


async def _workspace(client: httpx.AsyncClient) -> tuple[Account, str]:
    acc = await new_account(client, "Mallory")
    r = await client.post(WS, json={"name": "attack"}, headers=acc.headers)
    return acc, str(r.json()["data"]["workspace_id"])


@pytest.mark.parametrize("name", ["PATH", "AINTANDEM_DATABASE_URL", "AINTANDEM_JWT_SECRET", "HOME"])
async def test_env_reference_outside_the_allowlist_is_refused(
    strict_api: httpx.AsyncClient, name: str
) -> None:
    acc, wid = await _workspace(strict_api)
    body = {"llm_providers": [{"name": "openai", "api_key": f"${{{name}}}"}]}
    r = await strict_api.put(f"{WS}/{wid}/config", json=body, headers=acc.headers)
    err = assert_error(r, 422, "CONFIGURATION_INVALID")["error"]
    assert name in err["message"]
    assert err["details"]["fields"][0]["field"] == "llm_providers[0].api_key"
    # Nothing was stored.
    got = (await strict_api.get(f"{WS}/{wid}/config", headers=acc.headers)).json()["data"]
    assert got["llm_providers"] == []


async def test_mcp_env_reference_outside_the_allowlist_is_refused(
    strict_api: httpx.AsyncClient,
) -> None:
    acc, wid = await _workspace(strict_api)
    server = {"name": "fs", "command": "mcp-fs", "env": {"TOKEN": "${AINTANDEM_DATABASE_URL}"}}
    r = await strict_api.put(
        f"{WS}/{wid}/config", json={"mcp_servers": [server]}, headers=acc.headers
    )
    err = assert_error(r, 422, "CONFIGURATION_INVALID")["error"]
    assert err["details"]["fields"][0]["field"] == "mcp_servers[0].env.TOKEN"


async def test_allowlisted_reference_to_the_providers_own_endpoint_is_accepted(
    strict_api: httpx.AsyncClient,
) -> None:
    acc, wid = await _workspace(strict_api)
    body = {
        "llm_providers": [
            {"name": "openai", "api_key": "${OPENAI_API_KEY}"},
            {
                "name": "claude",
                "api_key": "${ANTHROPIC_API_KEY}",
                "base_url": "https://api.anthropic.com",
            },
            # A user's own key may go wherever the user likes (a public host).
            {"name": "qwen", "api_key": "sk-mine", "base_url": "https://llm.example.com/v1"},
        ]
    }
    r = await strict_api.put(f"{WS}/{wid}/config", json=body, headers=acc.headers)
    assert r.status_code == 200, r.text
    assert r.json()["data"]["llm_providers"][0]["api_key"] == "${OPENAI_API_KEY}"


async def test_the_operators_key_never_goes_to_a_users_server(
    strict_api: httpx.AsyncClient,
) -> None:
    """`${OPENAI_API_KEY}` + `base_url` of the attacker's server made the worker send the
    operator's key there. Refused, also when the key was stored before and only the URL
    changes (an omitted api_key keeps the stored reference)."""
    acc, wid = await _workspace(strict_api)
    evil = {"name": "openai", "api_key": "${OPENAI_API_KEY}", "base_url": "https://evil.example/v1"}
    r = await strict_api.put(
        f"{WS}/{wid}/config", json={"llm_providers": [evil]}, headers=acc.headers
    )
    err = assert_error(r, 422, "CONFIGURATION_INVALID")["error"]
    assert "OPENAI_API_KEY" in err["message"] and "evil.example" in err["message"]
    first = {"llm_providers": [{"name": "openai", "api_key": "${OPENAI_API_KEY}"}]}
    r = await strict_api.put(f"{WS}/{wid}/config", json=first, headers=acc.headers)
    assert r.status_code == 200, r.text
    moved = {"llm_providers": [{"name": "openai", "base_url": "https://evil.example/v1"}]}
    r = await strict_api.put(f"{WS}/{wid}/config", json=moved, headers=acc.headers)
    assert_error(r, 422, "CONFIGURATION_INVALID")
    got = (await strict_api.get(f"{WS}/{wid}/config", headers=acc.headers)).json()["data"]
    assert got["llm_providers"][0]["base_url"] is None  # nothing stored


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:5432/v1",
        "http://127.1/v1",
        "http://localhost:8000/api",
        "http://db.localhost/v1",
        "http://[::1]:7233/",
        "http://[::ffff:127.0.0.1]/",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.5/v1",
        "http://172.17.0.1:2375/",
        "http://192.168.1.1/",
        "http://100.64.0.1/",
        "http://0.0.0.0:8000/",
        "http://user:pw@api.example.com/v1",
    ],
)
async def test_internal_base_url_is_refused(strict_api: httpx.AsyncClient, url: str) -> None:
    acc, wid = await _workspace(strict_api)
    body = {"llm_providers": [{"name": "qwen", "api_key": "sk-x", "base_url": url}]}
    r = await strict_api.put(f"{WS}/{wid}/config", json=body, headers=acc.headers)
    err = assert_error(r, 422, "CONFIGURATION_INVALID")["error"]
    assert err["details"]["fields"][0]["field"] == "llm_providers[0].base_url"


async def test_a_name_resolving_to_loopback_is_refused(strict_api: httpx.AsyncClient) -> None:
    host = _internal_hostname()
    acc, wid = await _workspace(strict_api)
    body = {"llm_providers": [{"name": "qwen", "api_key": "k", "base_url": f"http://{host}:9/v1"}]}
    r = await strict_api.put(f"{WS}/{wid}/config", json=body, headers=acc.headers)
    err = assert_error(r, 422, "CONFIGURATION_INVALID")["error"]
    assert "internal address" in err["message"]


async def test_operator_allowed_host_is_accepted(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(database_url, tmp_path, provider_allowed_hosts=["127.0.0.0/8"])
    async with app_client(create_app(settings)) as client:
        acc, wid = await _workspace(client)
        body = {"llm_providers": [{"name": "qwen", "base_url": "http://127.0.0.1:8080/v1"}]}
        r = await client.put(f"{WS}/{wid}/config", json=body, headers=acc.headers)
        assert r.status_code == 200, r.text


# -- the worker refuses at call time (configs stored before, DNS, redirects) --------------------


def _internal_hostname() -> str:
    """A name (not a literal, not `localhost`) that resolves to an internal address here."""
    host = socket.gethostname()
    ips = {parse_ip(info[4][0]) for info in socket.getaddrinfo(host, None)}
    if not ips or not all(ip is not None and is_internal(ip) for ip in ips):
        pytest.skip(f"{host} does not resolve to an internal address on this machine")
    return host


@pytest_asyncio.fixture(loop_scope="session")
async def listener() -> AsyncIterator[FakeProvider]:
    """A provider on every interface: if the worker connected, it would answer (so a refusal
    in these tests is the guard's doing, not a closed port)."""
    fake = FakeProvider()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("0.0.0.0", 0))
    fake.base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(
        uvicorn.Config(fake.app, log_level="warning", lifespan="off", ws="none")
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:  # noqa: ASYNC110 - uvicorn exposes a flag, not an event
        await asyncio.sleep(0.01)
    try:
        yield fake
    finally:
        server.should_exit = True
        await task


def _turn(base_url: str, api_key: str = "sk-test") -> AgentTurnRequest:
    cfg = LLMProviderConfig(name="openai", api_key=api_key, base_url=base_url, model="m")
    return AgentTurnRequest(provider=cfg, messages=[ChatMessage("user", "hi")])


async def _refused(req: AgentTurnRequest, **kwargs: Any) -> ApplicationError:
    with pytest.raises(ApplicationError) as info:
        await complete(req, **kwargs)
    return info.value


async def test_stored_env_reference_is_not_resolved(listener: FakeProvider) -> None:
    listener.reset()
    listener.then(200, openai_reply())
    loopback = ProviderAccess(hosts=HostAllowList.parse(["127.0.0.1"]))
    err = await _refused(_turn(f"{listener.base}/v1", "${PATH}"), access=loopback)
    assert err.type == LLMErrorType.CONFIG.value and err.non_retryable
    assert "PATH" in str(err)
    assert listener.requests == []  # the worker's PATH never left it


async def test_literal_internal_base_url_is_not_called(listener: FakeProvider) -> None:
    listener.reset()
    listener.then(200, openai_reply())
    err = await _refused(_turn(f"{listener.base}/v1"))
    assert err.type == LLMErrorType.CONFIG.value and err.non_retryable
    assert listener.requests == []


async def test_name_resolving_to_an_internal_address_is_not_called(
    listener: FakeProvider,
) -> None:
    host = _internal_hostname()
    port = listener.base.rsplit(":", 1)[1]
    assert url_refusal(f"http://{host}:{port}/v1", HostAllowList()) is None  # static check passes
    listener.reset()
    listener.then(200, openai_reply())
    err = await _refused(_turn(f"http://{host}:{port}/v1"))
    assert err.type == LLMErrorType.CONFIG.value and err.non_retryable
    assert "internal address" in str(err)
    assert listener.requests == []
    # The same call with the host allowed reaches the server: the refusal above was the guard.
    allowed = ProviderAccess(hosts=HostAllowList.parse([host]))
    listener.reset()
    listener.then(200, openai_reply("hello"))
    assert (await complete(_turn(f"http://{host}:{port}/v1"), access=allowed)).content == "hello"


async def test_provider_error_body_is_not_echoed(listener: FakeProvider) -> None:
    """An allowed server answering 400 with an internal page: the user sees status and the
    error's type/code, never the body."""
    listener.reset()
    body = error_body("openai", "invalid_request_error", "root:x:0:0 SECRET-INTERNAL-PAGE")
    body["detail"] = "SECRET-INTERNAL-PAGE " * 20
    listener.then(400, body)
    allowed = ProviderAccess(hosts=HostAllowList.parse(["127.0.0.1"]))
    err = await _refused(_turn(f"{listener.base}/v1"), access=allowed)
    assert "SECRET-INTERNAL-PAGE" not in str(err) and "root:x" not in str(err)
    assert "HTTP 400" in str(err) and "invalid_request_error" in str(err)
    assert err.type == LLMErrorType.BAD_REQUEST.value


async def test_worker_never_sends_the_operators_key_to_another_host(
    listener: FakeProvider,
) -> None:
    """A config stored before the rule: the worker refuses before any request leaves."""
    host = _internal_hostname()
    port = listener.base.rsplit(":", 1)[1]
    listener.reset()
    listener.then(200, openai_reply())
    reachable = ProviderAccess(hosts=HostAllowList.parse(["127.0.0.0/8"]))  # the host is fine
    err = await _refused(
        _turn(f"http://{host}:{port}/v1", "${OPENAI_API_KEY}"),
        env={"OPENAI_API_KEY": "sk-OPERATOR"},
        access=reachable,
    )
    assert err.type == LLMErrorType.CONFIG.value and "operator's key" in str(err)
    assert listener.requests == []
