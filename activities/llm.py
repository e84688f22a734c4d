"""Model calls through the providers' official SDKs: one call per activity attempt.

qwen, glm, openai (and the offline model) speak OpenAI Chat Completions through `openai`;
claude speaks Anthropic Messages through `anthropic`. SDK retries are off: Temporal owns
retries, so every attempt shows in the workflow history. SDK failures are mapped by type onto
`ApplicationError`s whose `type` is an `LLMErrorType` and whose `non_retryable` says whether
another attempt can help. `${ENV_VAR}` api keys are resolved here, from the worker's environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import json
import math
import os
import re
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, cast

import anthropic
import openai
from prometheus_client import Counter, Histogram
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.offline_llm import OfflineModelError, OfflineModelNotInstalled, OfflineModelServer
from activities.provider_http import guarded_http_client, refusal_in_chain
from domain.egress import (
    HostAllowList,
    ProviderAccess,
    env_ref_refusal,
    key_destination_refusal,
    url_refusal,
)
from domain.enums import LLMProviderName
from domain.llm import (
    ANTHROPIC_COMPATIBLE,
    DEFAULT_BASE_URLS,
    ENV_REF,
    OFFLINE_PROVIDER,
    OPENAI_COMPATIBLE,
    AgentTurnRequest,
    ChatMessage,
    LLMErrorType,
    LLMProviderConfig,
    LLMResult,
    ResponseSchema,
    ToolCall,
    ToolSpec,
)

__all__ = [
    "LLM_CALLS",
    "LLM_DURATION",
    "LLM_TOKENS",
    "LLMActivities",
    "LLMClients",
    "complete",
    "llm_error",
    "resolve_api_key",
]

# The dashboard reads these names; labels stay bounded (provider names, outcome kinds).
LLM_CALLS = Counter(
    "aintandem_llm_calls_total", "Model calls by provider and outcome", ["provider", "outcome"]
)
LLM_TOKENS = Counter(
    "aintandem_llm_tokens_total",
    "Tokens billed by provider, input or output",
    ["provider", "direction"],
)
LLM_DURATION = Histogram(
    "aintandem_llm_call_duration_seconds",
    "Latency of one model call (any outcome)",
    ["provider"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300),
)
OUTCOMES: dict[str, str] = {
    LLMErrorType.AUTH: "auth_error",
    LLMErrorType.BAD_REQUEST: "bad_request",
    LLMErrorType.CONFIG: "config_error",
    LLMErrorType.RATE_LIMITED: "rate_limited",
    LLMErrorType.UNAVAILABLE: "unavailable",
    LLMErrorType.TIMEOUT: "timeout",
}
KNOWN_PROVIDERS = OPENAI_COMPATIBLE | ANTHROPIC_COMPATIBLE

# A Retry-After beyond this is not honoured as is: the retry policy's backoff takes over.
MAX_RETRY_AFTER = timedelta(minutes=10)
HEARTBEAT_EVERY_SECONDS = 5.0

_OPENAI_FINISH = {"function_call": "tool_calls", "sensitive": "content_filter"}
_ANTHROPIC_STOP = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "tool_use": "tool_calls",
    "max_tokens": "length",
    "refusal": "content_filter",
}

# SDK exception classes by kind. Both SDKs raise the most specific class for a status; the
# generic APIStatusError (a status neither knows) falls back on the status code.
_TIMEOUT = (openai.APITimeoutError, anthropic.APITimeoutError, anthropic.RequestTimeoutError)
_CONNECTION = (openai.APIConnectionError, anthropic.APIConnectionError)
_AUTH = (
    openai.AuthenticationError,
    openai.PermissionDeniedError,
    anthropic.AuthenticationError,
    anthropic.PermissionDeniedError,
    anthropic.PaymentRequiredError,
)
_RATE_LIMITED = (openai.RateLimitError, anthropic.RateLimitError)
_SERVER = (openai.InternalServerError, anthropic.InternalServerError)
_BAD_REQUEST = (
    openai.BadRequestError,
    openai.NotFoundError,
    openai.UnprocessableEntityError,
    anthropic.BadRequestError,
    anthropic.NotFoundError,
    anthropic.UnprocessableEntityError,
    anthropic.RequestTooLargeError,
    anthropic.ContentTooLargeError,
)
_STATUS_ERRORS = (openai.APIStatusError, anthropic.APIStatusError)
SDK_ERRORS = (openai.APIError, anthropic.APIError)


# -- API keys --------------------------------------------------------------------------------------


def resolve_api_key(
    provider: LLMProviderConfig,
    env: Mapping[str, str] | None = None,
    access: ProviderAccess | None = None,
    offline_key: str | None = None,
) -> str:
    """The key to send: literal, or the `${NAME}` variable of the worker's environment when the
    operator allows that name (a config stored before the allow-list existed is refused here)."""
    value = provider.api_key
    if not value and provider.name == OFFLINE_PROVIDER:
        return offline_key or "offline"  # the worker's own server: its per-start key
    if not value:
        raise _config_error(f"LLM provider {provider.name!r} has no api_key")
    ref = ENV_REF.match(value)
    if ref is None:
        return value
    access = access or ProviderAccess()
    refusal = env_ref_refusal(ref.group(1), access.env_names) or key_destination_refusal(
        ref.group(1), provider.base_url, DEFAULT_BASE_URLS.get(provider.name), access.hosts
    )
    if refusal is not None:
        raise _config_error(f"LLM provider {provider.name!r}: api_key {refusal}")
    resolved = (os.environ if env is None else env).get(ref.group(1))
    if not resolved:
        raise _config_error(
            f"LLM provider {provider.name!r}: api_key refers to ${{{ref.group(1)}}}, "
            "which is not set in the worker's environment"
        )
    return resolved


def _config_error(message: str) -> ApplicationError:
    return ApplicationError(message, type=LLMErrorType.CONFIG.value, non_retryable=True)


# -- errors ----------------------------------------------------------------------------------------


def _classify(exc: Exception) -> LLMErrorType:
    if isinstance(exc, _TIMEOUT):
        return LLMErrorType.TIMEOUT
    if isinstance(exc, _CONNECTION):
        return LLMErrorType.UNAVAILABLE
    if isinstance(exc, _AUTH):
        return LLMErrorType.AUTH
    if isinstance(exc, _RATE_LIMITED):
        return LLMErrorType.RATE_LIMITED
    if isinstance(exc, _SERVER):
        return LLMErrorType.UNAVAILABLE
    if isinstance(exc, _BAD_REQUEST):
        return LLMErrorType.BAD_REQUEST
    if isinstance(exc, _STATUS_ERRORS):
        status = exc.status_code
        if status == 408:
            return LLMErrorType.TIMEOUT
        # 409 (concurrent request), 425, 499 and every 5xx are worth another attempt.
        if status in (409, 425, 499) or status >= 500:
            return LLMErrorType.UNAVAILABLE
        return LLMErrorType.BAD_REQUEST
    # A response that does not parse as the protocol's JSON: a broken proxy, maybe transient.
    return LLMErrorType.UNAVAILABLE


def retry_after(headers: Mapping[str, str] | None, now: datetime | None = None) -> timedelta | None:
    """The delay the server asked for (`retry-after-ms`, `retry-after` seconds or HTTP date)."""
    if not headers:
        return None
    seconds: float | None = None
    with contextlib.suppress(TypeError, ValueError):
        if (ms := headers.get("retry-after-ms")) is not None:
            seconds = float(ms) / 1000
    raw = headers.get("retry-after")
    if seconds is None and raw is not None:
        try:
            seconds = float(raw)
        except ValueError:
            with contextlib.suppress(TypeError, ValueError, IndexError):
                when = parsedate_to_datetime(raw)
                seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return None
    return min(timedelta(seconds=seconds), MAX_RETRY_AFTER)


def llm_error(exc: Exception, provider: str) -> ApplicationError:
    """The ApplicationError for an SDK failure (raise it `from exc`)."""
    kind = _classify(exc)
    status = getattr(exc, "status_code", None)
    delay = None
    if kind.retryable and isinstance(exc, _STATUS_ERRORS):
        delay = retry_after(exc.response.headers)
    return ApplicationError(
        _error_summary(exc, provider, status),
        {"provider": provider, "status_code": status},
        type=kind.value,
        non_retryable=not kind.retryable,
        next_retry_delay=delay,
    )


# What of a provider's error body may reach the user: its type and code, as identifiers. The
# body itself never does: a user-chosen base_url could be any server, and its answer is not
# ours to echo (it would turn the platform into a reader of internal services).
_SAFE_TOKEN = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


def _error_summary(exc: Exception, provider: str, status: int | None) -> str:
    """`openai HTTP 400 invalid_request_error/model_not_found`: status, type and code only."""
    body = getattr(exc, "body", None)
    error = body.get("error", body) if isinstance(body, dict) else None
    parts: list[str] = []
    if isinstance(error, dict):
        for key in ("type", "code"):
            value = error.get(key)
            if isinstance(value, (str, int)) and _SAFE_TOKEN.match(str(value)):
                parts.append(str(value))
    if status:
        detail = "/".join(dict.fromkeys(parts)) or _status_phrase(status)
        return f"{provider} HTTP {status}: {detail}"
    if isinstance(exc, _TIMEOUT):
        return f"{provider}: request timed out"
    if isinstance(exc, _CONNECTION):
        return f"{provider}: connection failed"
    return f"{provider}: {type(exc).__name__}"


def _status_phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "error"


# -- clients ---------------------------------------------------------------------------------------


class LLMClients:
    """SDK clients, one per (protocol, base URL, key, guard), so calls reuse connection pools.

    `guard` is the operator's host allow-list for a user-chosen base URL: such a client
    connects only to addresses it allows (`activities.provider_http`); None for the platform's
    own URLs (public provider endpoints, the worker's offline model)."""

    def __init__(self) -> None:
        self._clients: dict[tuple[str, str, str, HostAllowList | None], Any] = {}

    def _get(
        self, sdk: Any, base_url: str, api_key: str, timeout: float, guard: HostAllowList | None
    ) -> Any:
        key = (sdk.__name__, base_url, api_key, guard)
        if key not in self._clients:
            self._clients[key] = sdk(
                base_url=base_url,
                api_key=api_key,
                max_retries=0,
                timeout=timeout,
                http_client=guarded_http_client(guard) if guard is not None else None,
            )
        return self._clients[key]

    def openai(
        self, base_url: str, api_key: str, timeout: float, guard: HostAllowList | None = None
    ) -> openai.AsyncOpenAI:
        return cast(
            openai.AsyncOpenAI, self._get(openai.AsyncOpenAI, base_url, api_key, timeout, guard)
        )

    def anthropic(
        self, base_url: str, api_key: str, timeout: float, guard: HostAllowList | None = None
    ) -> anthropic.AsyncAnthropic:
        client = self._get(anthropic.AsyncAnthropic, base_url, api_key, timeout, guard)
        return cast(anthropic.AsyncAnthropic, client)

    async def aclose(self) -> None:
        clients = list(self._clients.values())
        self._clients.clear()
        for client in clients:
            await client.close()


def _base_url(cfg: LLMProviderConfig, offline_base_url: str | None) -> str:
    url = (cfg.base_url or DEFAULT_BASE_URLS.get(cfg.name) or "").rstrip("/")
    if not url and cfg.name == OFFLINE_PROVIDER and offline_base_url:
        url = offline_base_url.rstrip("/") + ("" if cfg.protocol == "anthropic" else "/v1")
    if not url:
        raise _config_error(f"LLM provider {cfg.name!r} needs a base_url")
    if cfg.protocol == "anthropic" and url.endswith("/v1"):
        # The Anthropic SDK appends /v1/messages; a base URL pasted with /v1 would double it.
        url = url[: -len("/v1")]
    return url


# -- OpenAI Chat Completions -----------------------------------------------------------------------


def _openai_messages(req: AgentTurnRequest) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if req.system_prompt:
        out.append({"role": "system", "content": req.system_prompt})
    for m in req.messages:
        if m.role == "tool":
            out.append({"role": "tool", "tool_call_id": m.tool_call_id or "", "content": m.content})
        elif m.role == "assistant" and m.tool_calls:
            out.append(
                {
                    "role": "assistant",
                    "content": m.content or None,
                    "tool_calls": [
                        {
                            "id": tc.id,
                            "type": "function",
                            "function": {"name": tc.name, "arguments": json.dumps(tc.arguments)},
                        }
                        for tc in m.tool_calls
                    ],
                }
            )
        else:
            out.append({"role": m.role, "content": m.content})
    return out


def _openai_tools(tools: list[ToolSpec]) -> list[dict[str, Any]]:
    return [
        {
            "type": "function",
            "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
        }
        for t in tools
    ]


def _parse_arguments(raw: object) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    try:
        parsed = json.loads(raw or "{}") if isinstance(raw, str) else None
    except json.JSONDecodeError:
        parsed = None
    # Malformed arguments go back to the caller as they came, so the tool can answer with an
    # error the model can correct, instead of failing the whole turn.
    return parsed if isinstance(parsed, dict) else {"_raw_arguments": raw}


# -- structured answers ----------------------------------------------------------------------------


def _schema_instruction(schema: ResponseSchema, *, enforced: bool) -> str:
    """Told to every model: one held to the schema by its server only needs the meaning (a
    short prompt: the embedded model reads ≈ 35-66 tokens/s); one in plain JSON mode needs the
    schema itself (DashScope's JSON mode also wants the word JSON in the prompt)."""
    about = f" ({schema.description})" if schema.description else ""
    if enforced:
        fields = ", ".join(schema.schema.get("properties", {}))
        return f"Your final answer is one JSON object{about} with the fields: {fields}."
    compact = json.dumps(schema.schema, separators=(",", ":"))
    return f"Your final answer is one JSON object{about} matching this JSON schema: {compact}"


def _response_format(cfg: LLMProviderConfig, req: AgentTurnRequest) -> dict[str, Any] | None:
    """OpenAI-protocol `response_format` for a turn that asks for a schema: the schema itself
    where the server enforces it (llama.cpp's grammar for the embedded model, OpenAI's
    structured outputs), JSON mode for qwen/glm, nothing beside tools there."""
    rs = req.response_schema
    if rs is None:
        return None
    if cfg.name in (OFFLINE_PROVIDER, LLMProviderName.OPENAI):
        return {
            "type": "json_schema",
            "json_schema": {"name": rs.name, "schema": rs.schema, "strict": False},
        }
    return None if req.tools else {"type": "json_object"}


# The embedded model writes tool calls as JSON text instead of native `tool_calls`, so its
# tool loop is schema-constrained too: each reply is exactly one action object.
_ACTION_FORMAT_HELP = (
    "Work in steps. Each of your replies is exactly one JSON object: "
    '{"tool": <tool name>, "arguments": {...}} to use a tool (its result comes back to you), '
    'or {"final": <your answer>} when you are done. Tools:\n'
)


def _offline_action_format(req: AgentTurnRequest) -> dict[str, Any]:
    final: dict[str, Any] = (
        req.response_schema.schema if req.response_schema else {"type": "string", "minLength": 1}
    )
    options: list[dict[str, Any]] = [
        {
            "type": "object",
            "properties": {"tool": {"const": t.name}, "arguments": t.parameters},
            "required": ["tool", "arguments"],
        }
        for t in req.tools
    ]
    options.append({"type": "object", "properties": {"final": final}, "required": ["final"]})
    return {"type": "json_schema", "json_schema": {"name": "action", "schema": {"anyOf": options}}}


def _offline_action_messages(req: AgentTurnRequest) -> list[dict[str, Any]]:
    """The conversation in the action protocol's own words: past tool calls as the JSON the
    model wrote, their results as user turns."""
    tools = "\n".join(f"- {t.name}: {t.description}" for t in req.tools)
    system = "\n\n".join(p for p in (req.system_prompt, _ACTION_FORMAT_HELP + tools) if p)
    out: list[dict[str, Any]] = [{"role": "system", "content": system}]
    names: dict[str, str] = {}
    for m in req.messages:
        if m.role == "assistant" and m.tool_calls:
            for tc in m.tool_calls:
                names[tc.id] = tc.name
                action = {"tool": tc.name, "arguments": tc.arguments}
                out.append({"role": "assistant", "content": json.dumps(action)})
        elif m.role == "tool":
            tool = names.get(m.tool_call_id or "", "the tool")
            out.append({"role": "user", "content": f"Result of {tool}:\n{m.content}"})
        else:
            out.append({"role": m.role, "content": m.content})
    return out


def _offline_action_result(content: str, req: AgentTurnRequest) -> tuple[str, list[ToolCall]]:
    """(final text, tool calls) from one action object; text that is no action is the answer."""
    try:
        action = json.loads(content)
    except ValueError:
        return content, []
    if isinstance(action, dict) and isinstance(action.get("tool"), str):
        call_id = f"call_{len(req.messages)}"
        return "", [ToolCall(call_id, action["tool"], _parse_arguments(action.get("arguments")))]
    if isinstance(action, dict) and "final" in action:
        final = action["final"]
        return (final if isinstance(final, str) else json.dumps(final, ensure_ascii=False)), []
    return content, []


async def _openai_call(
    client: openai.AsyncOpenAI, req: AgentTurnRequest, official: bool
) -> LLMResult:
    cfg = req.provider
    kwargs: dict[str, Any] = {}
    actions = cfg.name == OFFLINE_PROVIDER and bool(req.tools)
    messages = _offline_action_messages(req) if actions else _openai_messages(req)
    if req.response_schema is not None and not actions:
        fmt = _response_format(cfg, req)
        enforced = fmt is not None and fmt["type"] == "json_schema"
        instruction = _schema_instruction(req.response_schema, enforced=enforced)
        if messages and messages[0]["role"] == "system":
            messages[0] = {**messages[0], "content": f"{messages[0]['content']}\n\n{instruction}"}
        else:
            messages.insert(0, {"role": "system", "content": instruction})
    if actions:
        kwargs["response_format"] = _offline_action_format(req)
    elif (fmt := _response_format(cfg, req)) is not None:
        kwargs["response_format"] = fmt
    if req.tools and not actions:
        kwargs["tools"] = _openai_tools(req.tools)
    if cfg.temperature is not None:
        kwargs["temperature"] = cfg.temperature
    if cfg.top_p is not None:
        kwargs["top_p"] = cfg.top_p
    # OpenAI's reasoning models refuse `max_tokens`; compatible servers (DashScope, Zhipu,
    # llama.cpp, vLLM, ...) all understand it, not all understand `max_completion_tokens`.
    kwargs["max_completion_tokens" if official else "max_tokens"] = cfg.max_tokens
    started = time.perf_counter()
    resp = await client.chat.completions.create(
        model=cfg.model,
        messages=messages,  # type: ignore[arg-type]
        timeout=cfg.timeout_seconds,
        **kwargs,
    )
    elapsed = time.perf_counter() - started
    if not resp.choices:
        raise ApplicationError(
            f"{cfg.name}: the response has no choices", type=LLMErrorType.UNAVAILABLE.value
        )
    choice = resp.choices[0]
    calls = []
    for tc in choice.message.tool_calls or []:
        fn = getattr(tc, "function", None)
        if fn is not None:
            calls.append(ToolCall(id=tc.id, name=fn.name, arguments=_parse_arguments(fn.arguments)))
    content = choice.message.content or ""
    if actions:
        content, calls = _offline_action_result(content, req)
    finish = choice.finish_reason or ("tool_calls" if calls else "stop")
    if calls and finish == "stop":
        finish = "tool_calls"
    usage = resp.usage
    return LLMResult(
        content=content,
        tool_calls=calls,
        finish_reason=_OPENAI_FINISH.get(finish, finish),
        input_tokens=usage.prompt_tokens if usage else 0,
        output_tokens=usage.completion_tokens if usage else 0,
        model=resp.model or cfg.model,
        provider=cfg.name,
        latency_ms=round(elapsed * 1000),
    )


# -- Anthropic Messages ----------------------------------------------------------------------------


def _anthropic_blocks(m: ChatMessage) -> list[dict[str, Any]]:
    if m.role == "tool":
        return [{"type": "tool_result", "tool_use_id": m.tool_call_id or "", "content": m.content}]
    blocks: list[dict[str, Any]] = []
    if m.content:  # Anthropic refuses empty text blocks
        blocks.append({"type": "text", "text": m.content})
    for tc in m.tool_calls or []:
        blocks.append({"type": "tool_use", "id": tc.id, "name": tc.name, "input": tc.arguments})
    return blocks


def _anthropic_messages(req: AgentTurnRequest) -> tuple[str, list[dict[str, Any]]]:
    """System text and messages; tool results travel in user turns, and consecutive turns of
    one role merge (the results of parallel tool calls must share one user turn)."""
    system = [req.system_prompt] if req.system_prompt else []
    out: list[dict[str, Any]] = []
    for m in req.messages:
        if m.role == "system":
            system.append(m.content)
            continue
        role = "assistant" if m.role == "assistant" else "user"
        blocks = _anthropic_blocks(m)
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    return "\n\n".join(s for s in system if s), out


async def _anthropic_call(client: anthropic.AsyncAnthropic, req: AgentTurnRequest) -> LLMResult:
    cfg = req.provider
    system, messages = _anthropic_messages(req)
    kwargs: dict[str, Any] = {}
    rs = req.response_schema
    if rs is not None:
        system = "\n\n".join(p for p in (system, _schema_instruction(rs, enforced=True)) if p)
    if system:
        kwargs["system"] = system
    tools = [
        {"name": t.name, "description": t.description, "input_schema": t.parameters}
        for t in req.tools
    ]
    if rs is not None:
        # Claude's structured answer: the input of a tool it must call (alone: forced; beside
        # the sandbox tools: any tool, and calling this one ends the turn).
        tools.append(
            {"name": rs.name, "description": rs.description or rs.name, "input_schema": rs.schema}
        )
        kwargs["tool_choice"] = (
            {"type": "tool", "name": rs.name} if not req.tools else {"type": "any"}
        )
    if tools:
        kwargs["tools"] = tools
    # anthropic>=1 dropped these arguments from create(); the API still reads them from the body.
    # Recent Claude models reject temperature and top_p together: temperature wins.
    sampling: dict[str, Any] = {}
    if cfg.temperature is not None:
        sampling["temperature"] = cfg.temperature
    elif cfg.top_p is not None:
        sampling["top_p"] = cfg.top_p
    if sampling:
        kwargs["extra_body"] = sampling
    started = time.perf_counter()
    resp = await client.messages.create(
        model=cfg.model,
        max_tokens=cfg.max_tokens,
        messages=messages,  # type: ignore[arg-type]
        timeout=cfg.timeout_seconds,
        **kwargs,
    )
    elapsed = time.perf_counter() - started
    texts: list[str] = []
    calls: list[ToolCall] = []
    for block in resp.content:
        if block.type == "text":
            texts.append(block.text)
        elif block.type == "tool_use" and rs is not None and block.name == rs.name:
            texts = [json.dumps(block.input, ensure_ascii=False)]  # the answer itself
            calls = []
            break
        elif block.type == "tool_use":
            calls.append(
                ToolCall(id=block.id, name=block.name, arguments=_parse_arguments(block.input))
            )
    usage = resp.usage
    # input_tokens excludes what the prompt cache wrote or read: the prompt is all three.
    prompt = (
        usage.input_tokens
        + (getattr(usage, "cache_creation_input_tokens", 0) or 0)
        + (getattr(usage, "cache_read_input_tokens", 0) or 0)
    )
    stop = resp.stop_reason or ("tool_calls" if calls else "stop")
    if rs is not None and not calls and stop == "tool_use":
        stop = "end_turn"  # the answer tool ends the turn
    return LLMResult(
        content="".join(texts),
        tool_calls=calls,
        finish_reason=_ANTHROPIC_STOP.get(stop, stop),
        input_tokens=prompt,
        output_tokens=usage.output_tokens,
        model=resp.model or cfg.model,
        provider=cfg.name,
        latency_ms=round(elapsed * 1000),
    )


# -- entry points ----------------------------------------------------------------------------------


async def complete(
    req: AgentTurnRequest,
    *,
    env: Mapping[str, str] | None = None,
    clients: LLMClients | None = None,
    offline_base_url: str | None = None,
    access: ProviderAccess | None = None,
    offline_key: str | None = None,
) -> LLMResult:
    """One model call for `req` (no retries, no tool execution).

    `env` resolves `${VAR}` api keys (default: this process's environment); `clients` reuses
    SDK clients across calls (default: a client for this call only); `offline_base_url` is where
    the `offline` provider listens when its config names no URL; `access` is the operator's
    allow-list of `${VAR}` names and internal hosts (default: provider key names, no internal
    host). A base URL the config names (a user's choice) is checked before the call and at
    every connection; the platform's own URLs are not. Failures raise
    `ApplicationError` with an `LLMErrorType` as type, non-retryable when retrying cannot help.
    """
    cfg = req.provider
    if cfg.name not in KNOWN_PROVIDERS:
        raise _config_error(f"unknown LLM provider {cfg.name!r}")
    if not cfg.model:
        raise _config_error(f"LLM provider {cfg.name!r} has no model")
    req = _last_step_answers(req)
    access = access or ProviderAccess()
    api_key = resolve_api_key(cfg, env, access, offline_key)
    base_url = _base_url(cfg, offline_base_url)
    guard: HostAllowList | None = None
    if cfg.base_url:
        guard = access.hosts
        if (refusal := url_refusal(base_url, guard)) is not None:
            raise _config_error(f"LLM provider {cfg.name!r}: base_url {refusal}")
    pool = clients or LLMClients()
    try:
        if cfg.protocol == "anthropic":
            client_a = pool.anthropic(base_url, api_key, cfg.timeout_seconds, guard)
            result = await _anthropic_call(client_a, req)
        else:
            official = (
                cfg.name == LLMProviderName.OPENAI
                and base_url == DEFAULT_BASE_URLS[LLMProviderName.OPENAI]
            )
            client_o = pool.openai(base_url, api_key, cfg.timeout_seconds, guard)
            result = await _openai_call(client_o, req, official)
    except SDK_ERRORS as exc:
        if (refused := refusal_in_chain(exc)) is not None:
            raise _config_error(f"LLM provider {cfg.name!r}: base_url {refused}") from exc
        raise llm_error(exc, cfg.name) from exc
    finally:
        if clients is None:
            await pool.aclose()
    return result


def _last_step_answers(req: AgentTurnRequest) -> AgentTurnRequest:
    """The turn's last allowed model call gets no tools, so it must answer: a turn that ends
    on a tool call would leave the reply empty (a small model can use every step on tools)."""
    steps_taken = sum(1 for m in req.messages if m.role == "assistant" and m.tool_calls)
    if not req.tools or steps_taken < req.max_steps - 1:
        return req
    note = "You have used all your tool calls: give your final answer now."
    return replace(req, tools=[], messages=[*req.messages, ChatMessage("user", note)])


def _provider_label(name: str) -> str:
    return name if name in KNOWN_PROVIDERS else "other"


@contextlib.asynccontextmanager
async def _heartbeating() -> AsyncIterator[None]:
    """Heartbeat while a long call is in flight, so a heartbeat timeout can detect a dead
    worker and a cancellation reaches the call."""

    async def beat() -> None:
        while True:
            activity.heartbeat()
            await asyncio.sleep(HEARTBEAT_EVERY_SECONDS)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class LLMActivities:
    """The `llm_complete` activity. Owns the SDK clients (`aclose` closes them). `offline` is
    this worker's offline model server: started on the first `offline` call, and restarted if
    it died; stopping it is left to whoever created it."""

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        offline: OfflineModelServer | None = None,
        access: ProviderAccess | None = None,
    ) -> None:
        self._env = env
        self._clients = LLMClients()
        self._offline = offline
        self._access = access or ProviderAccess()

    async def aclose(self) -> None:
        await self._clients.aclose()

    def _offline_request(self, req: AgentTurnRequest) -> AgentTurnRequest:
        """A request for the offline provider names the model this worker really serves."""
        cfg = req.provider
        if cfg.name != OFFLINE_PROVIDER or cfg.base_url or self._offline is None:
            return req
        return replace(req, provider=replace(cfg, model=self._offline.model_name))

    async def _offline_url(self, cfg: LLMProviderConfig) -> str | None:
        if cfg.name != OFFLINE_PROVIDER or cfg.base_url or self._offline is None:
            return None
        try:
            return await asyncio.to_thread(self._offline.start)
        except OfflineModelNotInstalled as exc:
            raise _config_error(str(exc)) from exc
        except OfflineModelError as exc:
            raise ApplicationError(str(exc), type=LLMErrorType.UNAVAILABLE.value) from exc

    @activity.defn(name="llm_complete")
    async def complete(self, req: AgentTurnRequest) -> LLMResult:
        """One model call: the assistant's reply or tool calls, with token usage."""
        provider = _provider_label(req.provider.name)
        outcome = "error"
        started = time.perf_counter()
        try:
            async with _heartbeating():
                offline_url = await self._offline_url(req.provider)
                result = await complete(
                    self._offline_request(req),
                    env=self._env,
                    clients=self._clients,
                    offline_base_url=offline_url,
                    access=self._access,
                    offline_key=self._offline.api_key if offline_url and self._offline else None,
                )
            outcome = "ok"
            LLM_TOKENS.labels(provider, "input").inc(result.input_tokens)
            LLM_TOKENS.labels(provider, "output").inc(result.output_tokens)
            return result
        except ApplicationError as exc:
            outcome = OUTCOMES.get(exc.type or "", "error")
            raise
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        finally:
            LLM_CALLS.labels(provider, outcome).inc()
            LLM_DURATION.labels(provider).observe(time.perf_counter() - started)
