"""The provider layer with the real `openai` and `anthropic` SDKs against a loopback server that
speaks their wire formats (both SDKs use httpx2, which respx cannot intercept).

The fake answers with whatever each test scripts and records every request, so the tests check
both what we send (messages, tools, tool results, sampling, auth headers) and what we make of
the answer (content, tool calls, usage, errors mapped onto Temporal's ApplicationError).
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio
import uvicorn
from prometheus_client import REGISTRY
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from temporalio.converter import DataConverter
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities import llm
from activities.llm import LLMActivities, LLMClients, retry_after
from domain.egress import HostAllowList, ProviderAccess
from domain.llm import (
    DEFAULT_BASE_URLS,
    NON_RETRYABLE_LLM_ERRORS,
    AgentTurnRequest,
    ChatMessage,
    LLMErrorType,
    LLMProviderConfig,
    LLMResult,
    ToolCall,
    ToolSpec,
    offline_provider,
)

# The fake provider listens on loopback and these tests name their own variables: the access an
# operator grants for that (the defaults refuse both; tests/security attacks them).
TEST_ACCESS = ProviderAccess(
    env_names=frozenset(
        {"AINTANDEM_TEST_OPENAI_KEY", "AINTANDEM_TEST_UNSET_KEY", "CLAUDE_KEY", "K"}
    ),
    hosts=HostAllowList.parse(["127.0.0.1", "localhost"]),
)


async def complete(req: AgentTurnRequest, **kwargs: Any) -> LLMResult:
    kwargs.setdefault("access", TEST_ACCESS)
    return await llm.complete(req, **kwargs)


OPENAI_PATH = "/v1/chat/completions"
ANTHROPIC_PATH = "/v1/messages"
WEATHER = ToolSpec(
    name="get_weather",
    description="Current weather of a city",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


# -- the fake provider ----------------------------------------------------------------------------


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class Scripted:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


class FakeProvider:
    """OpenAI /v1/chat/completions and Anthropic /v1/messages, answering from a script, or
    from a responder function of the request body when the script is empty (for parallel
    turns, whose order is not fixed)."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.script: deque[Scripted] = deque()
        self.responder: Callable[[dict[str, Any]], Scripted] | None = None
        self.base = ""
        self.app = Starlette(
            routes=[
                Route(OPENAI_PATH, self._handle, methods=["POST"]),
                Route(ANTHROPIC_PATH, self._handle, methods=["POST"]),
            ]
        )

    def reset(self) -> None:
        self.requests.clear()
        self.script.clear()
        self.responder = None

    def then(
        self,
        status: int,
        body: dict[str, Any],
        headers: dict[str, str] | None = None,
        delay: float = 0.0,
    ) -> None:
        self.script.append(Scripted(status, body, headers or {}, delay))

    async def _handle(self, request: Request) -> JSONResponse:
        body = await request.json()
        self.requests.append(Recorded(request.url.path, dict(request.headers), body))
        if self.script:
            step = self.script.popleft()
        elif self.responder is not None:
            step = self.responder(body)
        else:
            step = Scripted(500, {"error": {"message": "nothing scripted"}})
        if step.delay:
            await asyncio.sleep(step.delay)
        return JSONResponse(step.body, status_code=step.status, headers=step.headers)


def openai_reply(
    content: str | None = "Hello!",
    *,
    tool_calls: list[dict[str, Any]] | None = None,
    prompt_tokens: int = 11,
    completion_tokens: int = 3,
    model: str = "gpt-test",
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = [
            {
                "id": tc["id"],
                "type": "function",
                "function": {"name": tc["name"], "arguments": json.dumps(tc["arguments"])},
            }
            for tc in tool_calls
        ]
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": "tool_calls" if tool_calls else "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def anthropic_reply(
    text: str | None = "Hello!",
    *,
    tool_uses: list[dict[str, Any]] | None = None,
    input_tokens: int = 11,
    output_tokens: int = 3,
    cache_read: int = 0,
    model: str = "claude-test",
) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    for tu in tool_uses or []:
        content.append(
            {"type": "tool_use", "id": tu["id"], "name": tu["name"], "input": tu["arguments"]}
        )
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": "tool_use" if tool_uses else "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cache_read_input_tokens": cache_read,
            "cache_creation_input_tokens": 0,
        },
    }


def sent_key(rec: Recorded) -> str:
    """The api key a request carried (the Anthropic SDK sends it as x-api-key or a bearer)."""
    return rec.headers.get("x-api-key") or rec.headers["authorization"].removeprefix("Bearer ")


def error_body(protocol: str, kind: str, message: str) -> dict[str, Any]:
    if protocol == "anthropic":
        return {"type": "error", "error": {"type": kind, "message": message}}
    return {"error": {"message": message, "type": kind, "code": kind}}


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def fake_server() -> AsyncIterator[FakeProvider]:
    fake = FakeProvider()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    fake.base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(
        uvicorn.Config(
            fake.app,
            log_level="warning",
            lifespan="off",
            ws="none",
            timeout_graceful_shutdown=1,
        )
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:  # noqa: ASYNC110 - uvicorn exposes a flag, not an event
        await asyncio.sleep(0.01)
    try:
        yield fake
    finally:
        server.should_exit = True
        await task
        sock.close()


@pytest.fixture
def fake(fake_server: FakeProvider) -> FakeProvider:
    fake_server.reset()
    return fake_server


def provider(fake: FakeProvider, name: str = "openai", **overrides: Any) -> LLMProviderConfig:
    values: dict[str, Any] = {
        "name": name,
        "api_key": "sk-test",
        # The OpenAI SDK is given the /v1 prefix; the Anthropic SDK adds it itself.
        "base_url": fake.base if name == "claude" else f"{fake.base}/v1",
        "model": "claude-test" if name == "claude" else "gpt-test",
        "max_tokens": 64,
        "timeout_seconds": 5.0,
    }
    values.update(overrides)
    return LLMProviderConfig(**values)


def turn(
    cfg: LLMProviderConfig,
    *messages: ChatMessage,
    tools: list[ToolSpec] | None = None,
    system: str = "You are a helpful agent.",
) -> AgentTurnRequest:
    return AgentTurnRequest(
        provider=cfg,
        system_prompt=system,
        messages=list(messages) or [ChatMessage("user", "Say hello")],
        tools=tools or [],
    )


def protocol_of(name: str) -> str:
    return "anthropic" if name == "claude" else "openai"


def reply(name: str, text: str = "Hello!") -> dict[str, Any]:
    return anthropic_reply(text) if name == "claude" else openai_reply(text)


async def failure(req: AgentTurnRequest, **kwargs: Any) -> ApplicationError:
    with pytest.raises(ApplicationError) as info:
        await complete(req, **kwargs)
    return info.value


# -- plain completions ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["openai", "qwen", "glm"])
async def test_openai_protocol_completion_with_usage(fake: FakeProvider, name: str) -> None:
    fake.then(200, openai_reply("Hello there", prompt_tokens=21, completion_tokens=4))
    cfg = provider(fake, name, temperature=0.2, top_p=0.9)

    result = await complete(turn(cfg))

    assert result == LLMResult(
        content="Hello there",
        tool_calls=[],
        finish_reason="stop",
        input_tokens=21,
        output_tokens=4,
        model="gpt-test",
        provider=name,
        latency_ms=result.latency_ms,
    )
    assert result.latency_ms >= 0
    [sent] = fake.requests
    assert sent.path == OPENAI_PATH
    assert sent_key(sent) == "sk-test"
    assert sent.body["model"] == "gpt-test"
    assert sent.body["messages"] == [
        {"role": "system", "content": "You are a helpful agent."},
        {"role": "user", "content": "Say hello"},
    ]
    assert sent.body["temperature"] == 0.2 and sent.body["top_p"] == 0.9
    # A compatible server (any base_url) gets the widely understood max_tokens.
    assert sent.body["max_tokens"] == 64 and "max_completion_tokens" not in sent.body
    assert "tools" not in sent.body
    # Temporal owns retries: the SDK made exactly one attempt.
    assert sent.headers.get("x-stainless-retry-count", "0") == "0"


@pytest.mark.parametrize("base_suffix", ["", "/v1", "/v1/"])
async def test_anthropic_completion_with_usage(fake: FakeProvider, base_suffix: str) -> None:
    fake.then(200, anthropic_reply("Hi!", input_tokens=5, output_tokens=2, cache_read=30))
    cfg = provider(fake, "claude", base_url=fake.base + base_suffix, temperature=0.0, top_p=0.5)

    result = await complete(turn(cfg))

    assert (result.content, result.finish_reason, result.provider) == ("Hi!", "stop", "claude")
    assert (result.input_tokens, result.output_tokens) == (35, 2)  # cache reads are prompt too
    assert result.model == "claude-test" and result.tool_calls == []
    [sent] = fake.requests
    assert sent.path == ANTHROPIC_PATH  # a base URL given with /v1 is not doubled
    assert sent_key(sent) == "sk-test"
    assert sent.body["system"] == "You are a helpful agent."
    assert sent.body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Say hello"}]}
    ]
    assert sent.body["max_tokens"] == 64
    # Sent through extra_body; temperature wins over top_p (newer Claude models refuse both).
    assert sent.body["temperature"] == 0.0 and "top_p" not in sent.body


async def test_official_openai_endpoint_gets_max_completion_tokens(fake: FakeProvider) -> None:
    fake.then(200, openai_reply())
    # Pretend the fake is api.openai.com: the official endpoint gets max_completion_tokens.
    official = DEFAULT_BASE_URLS["openai"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(DEFAULT_BASE_URLS, "openai", f"{fake.base}/v1")
        await complete(turn(provider(fake, base_url=None)))
    assert DEFAULT_BASE_URLS["openai"] == official
    [sent] = fake.requests
    assert sent.body["max_completion_tokens"] == 64 and "max_tokens" not in sent.body


# -- tool calls -----------------------------------------------------------------------------------


async def test_openai_tool_call_round_trip(fake: FakeProvider) -> None:
    fake.then(
        200,
        openai_reply(
            None,
            tool_calls=[{"id": "call_1", "name": "get_weather", "arguments": {"city": "Paris"}}],
        ),
    )
    fake.then(200, openai_reply("It is sunny in Paris.", prompt_tokens=40, completion_tokens=6))
    cfg = provider(fake)
    question = ChatMessage("user", "Weather in Paris?")

    first = await complete(turn(cfg, question, tools=[WEATHER]))
    assert first.finish_reason == "tool_calls" and first.content == ""
    assert first.tool_calls == [ToolCall("call_1", "get_weather", {"city": "Paris"})]

    answer = ChatMessage("tool", '{"sky": "sunny", "celsius": 21}', tool_call_id="call_1")
    second = await complete(turn(cfg, question, first.as_message(), answer, tools=[WEATHER]))
    assert second.content == "It is sunny in Paris." and second.finish_reason == "stop"
    assert (second.input_tokens, second.output_tokens) == (40, 6)

    tools = fake.requests[0].body["tools"]
    assert tools == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Current weather of a city",
                "parameters": WEATHER.parameters,
            },
        }
    ]
    assert fake.requests[1].body["messages"][1:] == [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"sky": "sunny", "celsius": 21}'},
    ]


async def test_anthropic_tool_use_round_trip(fake: FakeProvider) -> None:
    fake.then(
        200,
        anthropic_reply(
            "Let me check.",
            tool_uses=[
                {"id": "toolu_1", "name": "get_weather", "arguments": {"city": "Paris"}},
                {"id": "toolu_2", "name": "get_weather", "arguments": {"city": "Lyon"}},
            ],
        ),
    )
    fake.then(200, anthropic_reply("Sunny in both."))
    cfg = provider(fake, "claude")
    question = ChatMessage("user", "Weather in Paris and Lyon?")

    first = await complete(turn(cfg, question, tools=[WEATHER]))
    assert first.finish_reason == "tool_calls" and first.content == "Let me check."
    assert [tc.arguments["city"] for tc in first.tool_calls] == ["Paris", "Lyon"]

    answers = [
        ChatMessage("tool", "sunny", tool_call_id="toolu_1"),
        ChatMessage("tool", "sunny too", tool_call_id="toolu_2"),
    ]
    second = await complete(turn(cfg, question, first.as_message(), *answers, tools=[WEATHER]))
    assert second.content == "Sunny in both." and second.finish_reason == "stop"

    assert fake.requests[0].body["tools"] == [
        {
            "name": "get_weather",
            "description": "Current weather of a city",
            "input_schema": WEATHER.parameters,
        }
    ]
    assert fake.requests[1].body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris and Lyon?"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me check."},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
                {
                    "type": "tool_use",
                    "id": "toolu_2",
                    "name": "get_weather",
                    "input": {"city": "Lyon"},
                },
            ],
        },
        # Both results in one user turn, as the Messages API requires.
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "sunny too"},
            ],
        },
    ]


async def test_malformed_tool_arguments_reach_the_caller(fake: FakeProvider) -> None:
    body = openai_reply(None, tool_calls=[{"id": "c", "name": "get_weather", "arguments": {}}])
    body["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] = "{city: Paris"
    fake.then(200, body)
    result = await complete(turn(provider(fake), tools=[WEATHER]))
    assert result.tool_calls == [ToolCall("c", "get_weather", {"_raw_arguments": "{city: Paris"})]


# -- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["openai", "claude"])
@pytest.mark.parametrize(
    ("status", "kind", "expected"),
    [
        (401, "authentication_error", LLMErrorType.AUTH),
        (403, "permission_error", LLMErrorType.AUTH),
        (400, "invalid_request_error", LLMErrorType.BAD_REQUEST),
        (404, "not_found_error", LLMErrorType.BAD_REQUEST),
    ],
)
async def test_client_errors_are_not_retried(
    fake: FakeProvider, name: str, status: int, kind: str, expected: LLMErrorType
) -> None:
    fake.then(status, error_body(protocol_of(name), kind, "model `nope` does not exist"))
    err = await failure(turn(provider(fake, name, model="nope")))
    assert err.type == expected and err.non_retryable
    assert err.next_retry_delay is None
    assert f"HTTP {status}" in str(err)
    assert err.details[0] == {"provider": name, "status_code": status}
    assert len(fake.requests) == 1  # no SDK retry


@pytest.mark.parametrize("name", ["openai", "claude"])
@pytest.mark.parametrize(
    ("headers", "delay"),
    [
        ({"retry-after": "7"}, timedelta(seconds=7)),
        ({"retry-after-ms": "1500"}, timedelta(seconds=1.5)),
        ({}, None),
    ],
)
async def test_rate_limit_is_retried_after_the_servers_delay(
    fake: FakeProvider,
    name: str,
    headers: dict[str, str],
    delay: timedelta | None,
) -> None:
    fake.then(429, error_body(protocol_of(name), "rate_limit_error", "slow down"), headers)
    err = await failure(turn(provider(fake, name)))
    assert err.type == LLMErrorType.RATE_LIMITED and not err.non_retryable
    assert err.next_retry_delay == delay
    assert len(fake.requests) == 1


@pytest.mark.parametrize("name", ["openai", "claude"])
@pytest.mark.parametrize("status", [500, 502, 503, 529])
async def test_server_errors_are_retried(fake: FakeProvider, name: str, status: int) -> None:
    fake.then(status, error_body(protocol_of(name), "api_error", "boom"))
    err = await failure(turn(provider(fake, name)))
    assert err.type == LLMErrorType.UNAVAILABLE and not err.non_retryable
    assert len(fake.requests) == 1


@pytest.mark.parametrize("name", ["openai", "claude"])
async def test_timeout_is_retried(fake: FakeProvider, name: str) -> None:
    fake.then(200, reply(name), delay=2.0)
    err = await failure(turn(provider(fake, name, timeout_seconds=0.3)))
    assert err.type == LLMErrorType.TIMEOUT and not err.non_retryable


@pytest.mark.parametrize("name", ["openai", "claude"])
async def test_connection_refused_is_retried(name: str) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = LLMProviderConfig(
        name=name, api_key="k", base_url=f"http://127.0.0.1:{port}", model="m", timeout_seconds=2.0
    )
    err = await failure(turn(cfg))
    assert err.type == LLMErrorType.UNAVAILABLE and not err.non_retryable


def test_retry_after_parsing() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert retry_after({"retry-after": "Thu, 01 Jan 2026 12:00:30 GMT"}, now) == timedelta(
        seconds=30
    )
    assert retry_after({"retry-after": "3600"}) == timedelta(minutes=10)  # capped
    assert retry_after({"retry-after": "soon"}) is None
    assert retry_after({"retry-after": "-1"}) is None
    assert retry_after(None) is None


def test_error_types_retryability() -> None:
    assert (
        {t for t in LLMErrorType if not t.retryable}
        == NON_RETRYABLE_LLM_ERRORS
        == {LLMErrorType.AUTH, LLMErrorType.BAD_REQUEST, LLMErrorType.CONFIG}
    )
    assert LLMErrorType.AUTH.value == "LLMAuthError"
    assert LLMErrorType.BAD_REQUEST.value == "LLMBadRequest"


# -- configuration --------------------------------------------------------------------------------


async def test_env_var_api_key_is_resolved_on_the_worker(
    fake: FakeProvider,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake.then(200, openai_reply())
    fake.then(200, anthropic_reply())
    monkeypatch.setenv("AINTANDEM_TEST_OPENAI_KEY", "sk-from-process-env")
    await complete(turn(provider(fake, api_key="${AINTANDEM_TEST_OPENAI_KEY}")))
    await complete(
        turn(provider(fake, "claude", api_key="${CLAUDE_KEY}")),
        env={"CLAUDE_KEY": "sk-ant-from-env"},
    )
    assert fake.requests[0].headers["authorization"] == "Bearer sk-from-process-env"
    assert sent_key(fake.requests[1]) == "sk-ant-from-env"


@pytest.mark.parametrize("api_key", ["${AINTANDEM_TEST_UNSET_KEY}", None, ""])
async def test_missing_key_is_a_non_retryable_config_error(
    fake: FakeProvider,
    monkeypatch: pytest.MonkeyPatch,
    api_key: str | None,
) -> None:
    monkeypatch.delenv("AINTANDEM_TEST_UNSET_KEY", raising=False)
    err = await failure(turn(provider(fake, api_key=api_key)))
    assert err.type == LLMErrorType.CONFIG and err.non_retryable
    if api_key:
        assert "AINTANDEM_TEST_UNSET_KEY" in str(err) and "not set" in str(err)
    assert fake.requests == []


@pytest.mark.parametrize(
    "cfg",
    [
        LLMProviderConfig(name="gemini", api_key="k", base_url="http://127.0.0.1:1", model="m"),
        LLMProviderConfig(name="openai", api_key="k", base_url=None, model=""),
        LLMProviderConfig(name="offline", api_key=None, base_url=None, model="m"),
    ],
)
async def test_unusable_configs_are_config_errors(cfg: LLMProviderConfig) -> None:
    err = await failure(turn(cfg))
    assert err.type == LLMErrorType.CONFIG and err.non_retryable


def test_provider_config_from_a_workspace_entry() -> None:
    stored = {
        "name": "qwen",
        "api_key": "${DASHSCOPE_API_KEY}",
        "base_url": None,
        "models": ["qwen-max", "qwen-plus"],
        "default_model": "qwen-plus",
        "parameters": {"temperature": 0.3, "max_tokens": 2000, "top_p": 0.8},
    }
    cfg = LLMProviderConfig.from_workspace(stored)
    assert cfg == LLMProviderConfig(
        name="qwen",
        api_key="${DASHSCOPE_API_KEY}",
        base_url=None,
        model="qwen-plus",
        temperature=0.3,
        max_tokens=2000,
        top_p=0.8,
    )
    assert cfg.protocol == "openai"
    assert "DASHSCOPE" not in repr(cfg)  # keys stay out of logs
    bare = LLMProviderConfig.from_workspace({"name": "claude", "api_key": "k"})
    assert (bare.model, bare.max_tokens, bare.protocol) == ("claude-sonnet-4-5", 1024, "anthropic")


def test_types_survive_temporals_data_converter() -> None:
    converter = DataConverter.default.payload_converter
    call = ToolCall("c1", "f", {"a": [1, {"b": None}]})
    req = turn(
        provider_placeholder(),
        ChatMessage("user", "hi"),
        ChatMessage("assistant", "", tool_calls=[call]),
        ChatMessage("tool", "done", tool_call_id="c1"),
        tools=[WEATHER],
    )
    result = LLMResult("ok", [ToolCall("c2", "g", {"x": 1})], "tool_calls", 10, 2, "m", "glm", 5)
    for value in (req, result):
        [payload] = converter.to_payloads([value])
        assert converter.from_payloads([payload], [type(value)]) == [value]


def provider_placeholder() -> LLMProviderConfig:
    return LLMProviderConfig(
        name="glm", api_key="${GLM_KEY}", base_url=None, model="glm-4-flash", temperature=0.1
    )


# -- the activity ---------------------------------------------------------------------------------


def sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_activity_records_metrics(fake: FakeProvider) -> None:
    acts = LLMActivities(env={"K": "sk-env"}, access=TEST_ACCESS)
    env = ActivityEnvironment()
    before = {
        "ok": sample("aintandem_llm_calls_total", {"provider": "glm", "outcome": "ok"}),
        "auth": sample("aintandem_llm_calls_total", {"provider": "glm", "outcome": "auth_error"}),
        "rate": sample(
            "aintandem_llm_calls_total", {"provider": "claude", "outcome": "rate_limited"}
        ),
        "in": sample("aintandem_llm_tokens_total", {"provider": "glm", "direction": "input"}),
        "out": sample("aintandem_llm_tokens_total", {"provider": "glm", "direction": "output"}),
        "n": sample("aintandem_llm_call_duration_seconds_count", {"provider": "glm"}),
    }
    try:
        fake.then(200, openai_reply(prompt_tokens=100, completion_tokens=7))
        fake.then(200, openai_reply(prompt_tokens=50, completion_tokens=3))
        fake.then(401, error_body("openai", "invalid_api_key", "bad key"))
        fake.then(429, error_body("anthropic", "rate_limit_error", "slow"), {"retry-after": "2"})
        glm = provider(fake, "glm", api_key="${K}")
        await env.run(acts.complete, turn(glm))
        await env.run(acts.complete, turn(glm))
        with pytest.raises(ApplicationError):
            await env.run(acts.complete, turn(glm))
        with pytest.raises(ApplicationError) as info:
            await env.run(acts.complete, turn(provider(fake, "claude")))
        assert info.value.next_retry_delay == timedelta(seconds=2)
    finally:
        await acts.aclose()

    assert (
        sample("aintandem_llm_calls_total", {"provider": "glm", "outcome": "ok"}) - before["ok"]
        == 2
    )
    assert (
        sample("aintandem_llm_calls_total", {"provider": "glm", "outcome": "auth_error"})
        - before["auth"]
        == 1
    )
    assert (
        sample("aintandem_llm_calls_total", {"provider": "claude", "outcome": "rate_limited"})
        - before["rate"]
        == 1
    )
    assert (
        sample("aintandem_llm_tokens_total", {"provider": "glm", "direction": "input"})
        - before["in"]
        == 150
    )
    assert (
        sample("aintandem_llm_tokens_total", {"provider": "glm", "direction": "output"})
        - before["out"]
        == 10
    )
    assert (
        sample("aintandem_llm_call_duration_seconds_count", {"provider": "glm"}) - before["n"] == 3
    )
    assert fake.requests[0].headers["authorization"] == "Bearer sk-env"


async def test_activity_reuses_clients(fake: FakeProvider) -> None:
    clients = LLMClients()
    try:
        for _ in range(2):
            fake.then(200, openai_reply())
            await complete(turn(provider(fake)), clients=clients)
        assert len(clients._clients) == 1
    finally:
        await clients.aclose()
    assert clients._clients == {}


class StubOffline:
    """Stands in for OfflineModelServer: 'starts' by pointing at the fake."""

    model_name = "served-model"
    api_key = "per-start-key"

    def __init__(self, base: str) -> None:
        self.base, self.starts, self.stopped = base, 0, False

    def start(self) -> str:
        self.starts += 1
        return self.base

    def stop(self) -> None:
        self.stopped = True


async def test_offline_provider_resolves_to_the_workers_server(fake: FakeProvider) -> None:
    stub = StubOffline(fake.base)
    acts = LLMActivities(offline=stub)  # type: ignore[arg-type]
    offline = offline_provider(max_tokens=32)  # what a workflow passes: no URL, no key
    try:
        for _ in range(2):
            fake.then(200, openai_reply("offline hello", model="smollm2-135m-instruct"))
            result = await ActivityEnvironment().run(acts.complete, turn(offline))
            assert (result.content, result.provider) == ("offline hello", "offline")
    finally:
        await acts.aclose()
    # start() is the server's idempotent ensure-running; the server stays up for its owner.
    assert stub.starts == 2 and not stub.stopped
    assert [r.path for r in fake.requests] == [OPENAI_PATH, OPENAI_PATH]
    # The request names the model the server runs, with the server's own key.
    assert fake.requests[0].body["model"] == "served-model"
    assert fake.requests[0].headers["authorization"] == "Bearer per-start-key"
