"""LLM call types: one model call's input and result, provider config, error types (pure).

Plain dataclasses so they travel through Temporal's default data converter: the delivery
workflow builds an `AgentTurnRequest`, the `llm_complete` activity returns an `LLMResult`.
Fields added later get defaults, so histories recorded before stay readable.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from domain.enums import LLMProviderName
from domain.offline_models import DEFAULT_OFFLINE_MODEL

# An api_key written as `${NAME}` is read from the worker's environment when the call is made,
# so the secret is never stored nor returned by the API.
ENV_REF = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")

# The local model the worker runs when a workspace configures no provider (OpenAI protocol,
# its own name so metrics and results tell it apart from the real OpenAI).
OFFLINE_PROVIDER = "offline"
# The model requests name; the worker's server answers with the model it really runs
# (`AINTANDEM_OFFLINE_MODEL`, domain/offline_models.py) and results report that one.
OFFLINE_MODEL = DEFAULT_OFFLINE_MODEL

# Providers speaking the OpenAI Chat Completions protocol; `claude` speaks Anthropic Messages.
OPENAI_COMPATIBLE: frozenset[str] = frozenset(
    {LLMProviderName.OPENAI, LLMProviderName.QWEN, LLMProviderName.GLM, OFFLINE_PROVIDER}
)
ANTHROPIC_COMPATIBLE: frozenset[str] = frozenset({LLMProviderName.CLAUDE})

DEFAULT_BASE_URLS: dict[str, str] = {
    LLMProviderName.OPENAI: "https://api.openai.com/v1",
    # DashScope's OpenAI-compatible mode (international users may set dashscope-intl instead).
    LLMProviderName.QWEN: "https://dashscope.aliyuncs.com/compatible-mode/v1",
    LLMProviderName.GLM: "https://open.bigmodel.cn/api/paas/v4",
    # The Anthropic SDK appends /v1/messages itself.
    LLMProviderName.CLAUDE: "https://api.anthropic.com",
}

# Used only when a workspace lists a provider without any model.
DEFAULT_MODELS: dict[str, str] = {
    LLMProviderName.OPENAI: "gpt-4o-mini",
    LLMProviderName.QWEN: "qwen-plus",
    LLMProviderName.GLM: "glm-4-flash",
    LLMProviderName.CLAUDE: "claude-sonnet-4-5",
}

DEFAULT_MAX_TOKENS = 1024
DEFAULT_TIMEOUT_SECONDS = 120.0
# The offline model runs on the worker's CPU: a full 512-token answer takes minutes on a
# loaded 2-core machine, and a timed-out call only starts the same work again.
OFFLINE_TIMEOUT_SECONDS = 600.0

Role = Literal["system", "user", "assistant", "tool"]


class LLMErrorType(StrEnum):
    """`ApplicationError.type` of a failed model call; pass the non-retryable ones to a retry
    policy's `non_retryable_error_types` (the activity also marks them non-retryable)."""

    AUTH = "LLMAuthError"  # 401/402/403: wrong, revoked or unpaid key
    BAD_REQUEST = "LLMBadRequest"  # 400/404/422: unknown model, malformed request, too long
    CONFIG = "LLMConfigError"  # unknown provider, no key, `${VAR}` not set on the worker
    RATE_LIMITED = "LLMRateLimited"  # 429 (the server's Retry-After becomes the next delay)
    UNAVAILABLE = "LLMUnavailable"  # 5xx, 529 overloaded, connection refused or reset
    TIMEOUT = "LLMTimeout"  # no answer within `timeout_seconds`

    @property
    def retryable(self) -> bool:
        return self not in NON_RETRYABLE_LLM_ERRORS


NON_RETRYABLE_LLM_ERRORS: frozenset[LLMErrorType] = frozenset(
    {LLMErrorType.AUTH, LLMErrorType.BAD_REQUEST, LLMErrorType.CONFIG}
)


@dataclass(frozen=True)
class LLMProviderConfig:
    """Everything one call needs to reach a model.

    `api_key` is either the key or a `${ENV_VAR}` reference; prefer the reference, since the
    activity input (this object) is recorded in workflow history. `base_url` None means the
    provider's public endpoint (`DEFAULT_BASE_URLS`).
    """

    name: str  # qwen | glm | openai | claude | offline
    api_key: str | None = field(repr=False)
    base_url: str | None
    model: str
    temperature: float | None = None
    max_tokens: int = DEFAULT_MAX_TOKENS
    top_p: float | None = None
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS

    @property
    def protocol(self) -> Literal["openai", "anthropic"]:
        return "anthropic" if self.name in ANTHROPIC_COMPATIBLE else "openai"

    @classmethod
    def from_workspace(
        cls,
        provider: Mapping[str, Any],
        *,
        model: str | None = None,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> LLMProviderConfig:
        """From one stored `llm_providers` entry of a workspace config (api_key unresolved)."""
        name = str(provider["name"])
        models = list(provider.get("models") or [])
        chosen = model or provider.get("default_model") or (models[0] if models else None)
        params = provider.get("parameters") or {}
        return cls(
            name=name,
            model=chosen or DEFAULT_MODELS.get(name, ""),
            api_key=provider.get("api_key"),
            base_url=str(provider["base_url"]) if provider.get("base_url") else None,
            temperature=params.get("temperature"),
            max_tokens=params.get("max_tokens") or DEFAULT_MAX_TOKENS,
            top_p=params.get("top_p"),
            timeout_seconds=timeout_seconds,
        )


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    parameters: dict[str, Any] = field(
        default_factory=lambda: {"type": "object", "properties": {}}
    )  # JSON schema of the arguments object


@dataclass(frozen=True)
class ToolCall:
    id: str  # the provider's id, echoed back in the tool result
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ChatMessage:
    """One turn of the conversation.

    `assistant` turns may carry `tool_calls`; each call is answered by a `tool` turn whose
    `tool_call_id` names it and whose `content` is the tool's output (text, often JSON).
    """

    role: Role
    content: str = ""
    tool_call_id: str | None = None
    tool_calls: list[ToolCall] | None = None


@dataclass(frozen=True)
class ResponseSchema:
    """The final answer must be one JSON object matching `schema` (JSON Schema). Providers get
    it the strongest way they support: the offline model through llama.cpp's schema-constrained
    decoding, OpenAI through structured outputs, qwen/glm as a JSON object, Claude as the input
    of a tool it must call. The reply's content is then that object as JSON text."""

    name: str  # [a-zA-Z0-9_-]{1,64}: the schema's (and Claude's tool's) name
    schema: dict[str, Any]
    description: str = ""


@dataclass(frozen=True)
class AgentTurnRequest:
    provider: LLMProviderConfig
    system_prompt: str = ""
    messages: list[ChatMessage] = field(default_factory=list)
    tools: list[ToolSpec] = field(default_factory=list)
    # Bound on the caller's model→tool→model loop; one `llm_complete` call is one step.
    max_steps: int = 8
    response_schema: ResponseSchema | None = None


@dataclass(frozen=True)
class LLMResult:
    content: str
    tool_calls: list[ToolCall]
    # Normalised across protocols: stop | tool_calls | length | content_filter | <provider's own>
    finish_reason: str
    input_tokens: int
    output_tokens: int
    model: str  # as reported by the provider
    provider: str
    latency_ms: int

    def as_message(self) -> ChatMessage:
        """The assistant turn to append to the conversation before sending tool results."""
        return ChatMessage(
            role="assistant", content=self.content, tool_calls=list(self.tool_calls) or None
        )


def offline_provider(
    *,
    max_tokens: int = 512,
    temperature: float | None = 0.0,
    timeout_seconds: float = OFFLINE_TIMEOUT_SECONDS,
) -> LLMProviderConfig:
    """The provider for a workspace that configures none: the worker's local model. It names
    no URL: the port changes when a worker restarts and each worker runs its own server, so
    the `llm_complete` activity finds the server of the worker it runs on."""
    return LLMProviderConfig(
        name=OFFLINE_PROVIDER,
        api_key=None,
        base_url=None,
        model=OFFLINE_MODEL,
        temperature=temperature,
        max_tokens=max_tokens,
        timeout_seconds=timeout_seconds,
    )
