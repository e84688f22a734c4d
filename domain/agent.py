"""An agent turn: the plan an LLM activity executes and the sandbox tools it may call (pure)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from domain.llm import AgentTurnRequest, ToolSpec

_PATH = {"type": "string", "description": "path relative to /workspace"}


def configured_agents(agent_config: dict[str, Any] | None) -> list[dict[str, Any]]:
    """A sandbox's agents from its `agent_config`, the primary first (unnamed entries skipped)."""
    cfg = agent_config or {}
    agents = [cfg.get("primary_agent") or {}, *(cfg.get("sub_agents") or [])]
    return [a for a in agents if isinstance(a, dict) and a.get("name")]


def agent_named(agent_config: dict[str, Any] | None, name: str | None) -> dict[str, Any]:
    """The agent called `name`, else the primary (an empty dict when none is configured)."""
    agents = configured_agents(agent_config)
    return next((a for a in agents if a["name"] == name), agents[0] if agents else {})


# The tools every agent has inside its own sandbox (executed by the agent runtime via exec).
SANDBOX_TOOLS = [
    ToolSpec(
        "read_file",
        "Read a text file from the sandbox workspace.",
        {"type": "object", "properties": {"path": _PATH}, "required": ["path"]},
    ),
    ToolSpec(
        "write_file",
        "Write (or append to) a file in the sandbox workspace.",
        {
            "type": "object",
            "properties": {
                "path": _PATH,
                "content": {"type": "string"},
                "append": {"type": "boolean"},
            },
            "required": ["path", "content"],
        },
    ),
    ToolSpec(
        "list_files",
        "List files in a workspace directory.",
        {"type": "object", "properties": {"path": _PATH, "recursive": {"type": "boolean"}}},
    ),
    ToolSpec(
        "run_command",
        "Run a shell command in the sandbox workspace.",
        {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]},
    ),
]
TOOL_NAMES = frozenset(t.name for t in SANDBOX_TOOLS)


@dataclass
class AgentTurnPlan:
    """Everything one reply needs, read from the database once at the start of the turn."""

    message_id: str
    sandbox_id: str
    agent_name: str
    request: AgentTurnRequest
    tool_timeout_seconds: int = 300


@dataclass(frozen=True)
class ToolInvocation:
    sandbox_id: str
    tool: str
    args: dict[str, Any] = field(default_factory=dict)
    timeout_seconds: int = 300


@dataclass(frozen=True)
class ResponseRecord:
    message_id: str
    agent_name: str
    content: str
    model: str
    provider: str
    input_tokens: int = 0
    output_tokens: int = 0
    steps: int = 1
    tool_calls: int = 0
