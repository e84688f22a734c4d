"""Agent-turn activities: build the turn from the read model, run sandbox tools, store the reply."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import replace
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.docker_runtime import DockerRuntime, DockerRuntimeError
from activities.messaging import DELIVERIES, message_event_data, publish_to_both
from domain.agent import (
    SANDBOX_TOOLS,
    TOOL_NAMES,
    AgentTurnPlan,
    ResponseRecord,
    ToolInvocation,
    agent_named,
)
from domain.ids import Prefix, new_id
from domain.llm import (
    OFFLINE_PROVIDER,
    AgentTurnRequest,
    ChatMessage,
    LLMProviderConfig,
    offline_provider,
)
from domain.messages import MessageStatus
from domain.structured_replies import ReplyFormat, render, reply_format
from domain.timeutil import iso, utcnow
from store import events
from store.models import Collaboration, Message, Sandbox, Workspace

MAX_TOOL_OUTPUT = 16_000  # characters of a tool result handed back to the model


# The smallest token budget of a turn whose answer must be a whole JSON object (a plan of a
# few steps is ≈ 300 tokens; the embedded model's default budget is 512).
STRUCTURED_MIN_TOKENS = 1024
# Model calls a turn on the embedded model may make (tool rounds + the answer).
OFFLINE_MAX_STEPS = 3
OFFLINE_STEP_HINT = (
    "Write the content itself (the text, design or code, at least a few sentences), "
    "not its name and not a summary of what you would do."
)


def choose_provider(ws: Workspace, sandbox: Sandbox, agent: dict[str, object]) -> LLMProviderConfig:
    """The agent's provider/model, else the sandbox's, else the workspace default, else the
    offline model. A provider named but not configured in the workspace is a clear error."""
    cfg = sandbox.agent_config or {}
    configured = {p["name"]: p for p in ws.llm_providers or []}
    name = agent.get("llm_provider") or cfg.get("llm_provider")
    model = agent.get("llm_model") or cfg.get("llm_model")
    if name:
        if name not in configured:
            raise ApplicationError(
                f"agent uses LLM provider {name!r}, which the workspace does not configure",
                type="LLMConfigError",
                non_retryable=True,
            )
        return LLMProviderConfig.from_workspace(configured[str(name)], model=model)
    default = (ws.settings or {}).get("default_llm_provider")
    if default in configured:
        return LLMProviderConfig.from_workspace(configured[default], model=model)
    if len(configured) == 1:
        return LLMProviderConfig.from_workspace(next(iter(configured.values())), model=model)
    return offline_provider()


def _prompt(sandbox: Sandbox, agent: dict[str, object]) -> str:
    parts = [
        f"You are {agent.get('name')}, the {agent.get('role')} of the sandbox "
        f"'{sandbox.name}' in an AInTandem workspace."
    ]
    if agent.get("system_prompt"):
        parts.append(str(agent["system_prompt"]))
    if agent.get("capabilities"):
        parts.append("Your capabilities: " + ", ".join(map(str, agent["capabilities"])) + ".")
    parts.append(
        "You can use tools to read and write files and run commands in your sandbox's "
        "/workspace. Answer the incoming message concisely."
    )
    return "\n\n".join(parts)


class AgentActivities:
    """An agent's turn. Each step also writes a line to the sandbox's log (incoming message,
    every tool call and its outcome, the reply with model, tokens and duration), so its logs
    and `logs` stream show the agent's work, not only heartbeats."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], runtime: DockerRuntime) -> None:
        self._sessions = sessions
        self._docker = runtime
        # Tool calls run in executor threads; their log lines are written on the worker's loop.
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None

    @property
    def runtime(self) -> DockerRuntime:
        return self._docker

    @activity.defn(name="agent_prepare")
    async def prepare(self, message_id: str) -> AgentTurnPlan | None:
        """The target agent's turn for a delivered message (None when it no longer exists)."""
        async with self._sessions() as session:
            m = await session.get(Message, message_id)
            if m is None:
                return None
            sandbox = await session.get(Sandbox, m.to_sandbox_id)
            ws = await session.get(Workspace, m.workspace_id)
            if sandbox is None or ws is None:
                return None
            sender = await session.scalar(
                select(Sandbox.name).where(Sandbox.id == m.from_sandbox_id)
            )
            agent = agent_named(sandbox.agent_config, m.to_agent)
            _log(
                session,
                sandbox,
                f"{agent.get('name')} received a {m.message_type} from "
                f"{m.from_agent or 'an agent'} of {sender or m.from_sandbox_id}: "
                f"{_summary(m.content)}",
                message_id=m.id,
            )
            await session.commit()
            # A collaboration step carries its prompt as text; other content goes as JSON.
            text = (m.content or {}).get("text")
            incoming = (
                text
                if isinstance(text, str) and m.collaboration_id
                else json.dumps(m.content, ensure_ascii=False)
            )
            request = AgentTurnRequest(
                provider=choose_provider(ws, sandbox, agent),
                system_prompt=_prompt(sandbox, agent),
                messages=[
                    ChatMessage(
                        role="user",
                        content=(
                            f"A {m.message_type} from {m.from_agent or 'an agent'} of sandbox "
                            f"'{sender or m.from_sandbox_id}':\n{incoming}"
                        ),
                    )
                ],
                tools=list(SANDBOX_TOOLS) if (m.content or {}).get("tools", True) else [],
                response_schema=fmt.schema if (fmt := await _reply_format(session, m)) else None,
            )
            if request.provider.name == OFFLINE_PROVIDER:
                # The embedded model takes ~10 s a call on 2 cores: a turn of 8 tool rounds
                # would eat a collaboration's whole timeout (the last round must answer).
                request = replace(request, max_steps=OFFLINE_MAX_STEPS)
                if m.collaboration_id:
                    # A collaboration step's answer is its deliverable, as text. Given tools, the
                    # small model writes the work into files and answers with a one-line
                    # summary (measured: 'user authentication feature' as the backend_api);
                    # without, it writes the deliverable. Replies to plain messages keep tools.
                    # Told plainly, too: asked to "reply with the deliverable itself" it
                    # sometimes replied with the deliverable's name.
                    hint = [] if fmt is not None else [ChatMessage("user", OFFLINE_STEP_HINT)]
                    request = replace(request, tools=[], messages=[*request.messages, *hint])
            if fmt is not None and request.provider.max_tokens < STRUCTURED_MIN_TOKENS:
                # A JSON answer cut off at the token limit is no answer at all.
                provider = replace(request.provider, max_tokens=STRUCTURED_MIN_TOKENS)
                request = replace(request, provider=provider)
            return AgentTurnPlan(
                message_id=m.id,
                sandbox_id=sandbox.id,
                agent_name=str(agent.get("name")),
                request=request,
                tool_timeout_seconds=int(sandbox.resources.get("timeout_seconds", 300)),
            )

    @activity.defn(name="sandbox_tool")
    def run_tool(self, call: ToolInvocation) -> str:
        """Run one tool inside the sandbox; the result (or error) as text for the model."""
        if call.tool not in TOOL_NAMES:
            self._log_from_thread(call.sandbox_id, "warn", f"unknown tool {call.tool!r} refused")
            return json.dumps({"error": f"unknown tool {call.tool!r}"})
        started = time.monotonic()
        try:
            result = self._docker.exec_tool(
                call.sandbox_id, call.tool, call.args, timeout_seconds=call.timeout_seconds
            )
        except DockerRuntimeError as exc:
            self._log_tool(call, f"failed: {exc}", started, "error")
            return json.dumps({"error": str(exc)})
        if result.ok:
            self._log_tool(call, "ok", started)
            payload = result.result
        else:
            self._log_tool(call, f"{result.error_type}: {result.error_message}", started, "warn")
            payload = {"error": result.error_message, "type": result.error_type}
        return json.dumps(payload, ensure_ascii=False)[:MAX_TOOL_OUTPUT]

    def _log_tool(
        self, call: ToolInvocation, outcome: str, started: float, level: str = "info"
    ) -> None:
        # What the call touched (a path, a command), never file contents: they may be large
        # or secret, and the tool's own output goes to the model, not the log.
        target = call.args.get("path") or call.args.get("command") or ""
        self._log_from_thread(
            call.sandbox_id,
            level,
            f"tool {call.tool}({_clip(str(target), 120)}): {_clip(outcome, 200)} "
            f"in {time.monotonic() - started:.2f} s",
        )

    def _log_from_thread(self, sandbox_id: str, level: str, message: str) -> None:
        """A log line from an executor thread; never fails the tool call it describes."""
        if self._loop is None or self._loop.is_closed():
            return

        async def write() -> None:
            async with self._sessions() as session:
                sandbox = await session.get(Sandbox, sandbox_id)
                if sandbox is not None:
                    _log(session, sandbox, message, level=level)
                    await session.commit()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(write(), self._loop).result(timeout=10)

    @activity.defn(name="message_record_response")
    async def record_response(self, rec: ResponseRecord) -> str | None:
        """Store the reply as a linked message and mark the request responded (once). A reply
        asked for as JSON (a plan, a vote, a peer turn) is stored as the text the collaboration
        reads (`domain.structured_replies.render`)."""
        async with self._sessions() as session:
            m = await session.get(Message, rec.message_id)
            if m is None:
                return None
            if m.response_message_id:
                return m.response_message_id  # a retried activity: already recorded
            text = rec.content
            if (fmt := await _reply_format(session, m)) is not None:
                text = render(fmt.kind, text, await _participant_names(session, m))
            now = utcnow()
            reply = Message(
                id=new_id(Prefix.MESSAGE),
                workspace_id=m.workspace_id,
                from_sandbox_id=m.to_sandbox_id,
                from_agent=rec.agent_name,
                to_sandbox_id=m.from_sandbox_id or m.to_sandbox_id,
                to_agent=m.from_agent,
                message_type="response",
                content={
                    "text": text,
                    "model": rec.model,
                    "provider": rec.provider,
                    "usage": {"input_tokens": rec.input_tokens, "output_tokens": rec.output_tokens},
                    "steps": rec.steps,
                    "tool_calls": rec.tool_calls,
                },
                priority=m.priority,
                correlation_id=m.id,
                collaboration_id=m.collaboration_id,
                status=MessageStatus.DELIVERED,
                created_at=now,
                delivered_at=now,
            )
            session.add(reply)
            DELIVERIES.labels("responded").inc()
            m.status, m.responded_at, m.response_message_id = (
                MessageStatus.RESPONDED,
                now,
                reply.id,
            )
            data = {
                **message_event_data(m),
                "response_message_id": reply.id,
                "response": reply.content,
            }
            publish_to_both(session, m, "message_responded", data)
            target = await session.get(Sandbox, m.to_sandbox_id)
            if target is not None:
                took = _seconds_since(m.delivered_at, now)
                _log(
                    session,
                    target,
                    f"{rec.agent_name} replied to {m.id}: {_clip(text, 200)} ("
                    f"{rec.provider}/{rec.model}, {rec.input_tokens}+{rec.output_tokens} tokens, "
                    f"{rec.steps} step(s), {rec.tool_calls} tool call(s)"
                    + (f", {took:.1f} s)" if took is not None else ")"),
                    message_id=m.id,
                )
            await session.commit()
            return reply.id


async def _collaboration(session: AsyncSession, m: Message) -> Collaboration | None:
    return await session.get(Collaboration, m.collaboration_id) if m.collaboration_id else None


async def _participant_names(session: AsyncSession, m: Message) -> list[str]:
    col = await _collaboration(session, m)
    return [str(p.get("name")) for p in (col.participants if col else [])]


async def _reply_format(session: AsyncSession, m: Message) -> ReplyFormat | None:
    """The JSON shape this message's answer must have: only collaboration turns have one."""
    col = await _collaboration(session, m)
    if col is None:
        return None
    content = m.content or {}
    return reply_format(
        col.mode,
        str(content.get("step", "")),
        bool(content.get("tools", True)),
        [str(p.get("name")) for p in col.participants],
        list(col.requested_deliverables or []),
    )


def _seconds_since(then: datetime | None, now: datetime) -> float | None:
    """SQLite hands timestamps back without a zone (they are UTC), PostgreSQL with one."""
    if then is None:
        return None
    return (now.replace(tzinfo=None) - then.replace(tzinfo=None)).total_seconds()


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _summary(content: object) -> str:
    if isinstance(content, dict) and isinstance(content.get("text"), str):
        return _clip(content["text"], 200)
    return _clip(json.dumps(content, ensure_ascii=False), 200)


def _log(
    session: AsyncSession, sandbox: Sandbox, message: str, *, level: str = "info", **fields: str
) -> None:
    """Stage one agent log line for `sandbox` (its logs and its `logs` stream)."""
    events.append(
        session,
        channel="logs",
        event="log",
        data={
            "timestamp": iso(utcnow()),
            "level": level,
            "message": message,
            "stream": "agent",
            **fields,
        },
        workspace_id=sandbox.workspace_id,
        sandbox_id=sandbox.id,
    )
