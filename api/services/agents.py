"""Agent discovery: every agent of a workspace's sandboxes, with capabilities, status, metrics."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from api.schemas.agents import AgentMetrics, AgentStatus, DiscoveredAgent, DiscoveredAgents
from domain import capabilities
from domain.agent import configured_agents
from domain.enums import SandboxStatus
from domain.errors import ValidationFailed
from domain.ids import Prefix, is_valid
from store.models import Sandbox, Workspace
from store.repositories import agents as repo


def _query_error(field_name: str, message: str) -> ValidationFailed:
    return ValidationFailed(
        message, {"fields": [{"field": field_name, "message": message, "location": "query"}]}
    )


@dataclass
class _Tally:
    processed: int = 0
    in_flight: int = 0
    responded: int = 0
    response_ms_total: float = 0.0

    def add(self, row: repo.DeliveryStats) -> None:
        self.processed += row.processed
        self.in_flight += row.in_flight
        self.responded += row.responded
        self.response_ms_total += row.response_ms_total


@dataclass
class _SandboxTallies:
    by_agent: dict[str, _Tally] = field(default_factory=dict)

    def get(self, name: str) -> _Tally:
        return self.by_agent.get(name) or _Tally()


def _agents(sb: Sandbox) -> list[dict[str, Any]]:
    return configured_agents(sb.agent_config)


def _tallies(
    sandboxes: list[Sandbox], rows: list[repo.DeliveryStats]
) -> dict[str, _SandboxTallies]:
    by_sandbox = {sb.id: _SandboxTallies() for sb in sandboxes}
    names = {sb.id: [str(a["name"]) for a in _agents(sb)] for sb in sandboxes}
    for row in rows:
        known = names.get(row.sandbox_id)
        if not known:
            continue  # a message to a sandbox filtered out or since deleted
        # No agent named (or one no longer configured) is the primary's, as the runtime does.
        name = row.to_agent if row.to_agent in known else known[0]
        by_sandbox[row.sandbox_id].by_agent.setdefault(name, _Tally()).add(row)
    return by_sandbox


def _status(sb: Sandbox, tally: _Tally) -> AgentStatus:
    if sb.status != SandboxStatus.RUNNING:
        return "offline"
    return "busy" if tally.in_flight else "available"


def _metrics(tally: _Tally) -> AgentMetrics:
    avg = round(tally.response_ms_total / tally.responded, 1) if tally.responded else None
    return AgentMetrics(messages_processed=tally.processed, avg_response_time_ms=avg)


def _clean(value: str | None) -> str | None:
    value = value.strip() if value is not None else None
    return value or None


async def discover(
    session: AsyncSession,
    ws: Workspace,
    *,
    capability: str | None,
    role: str | None,
    sandbox_id: str | None,
) -> DiscoveredAgents:
    """Agents of the workspace that pass the filters; best capability match first, then by name.

    An unknown (well-formed) sandbox_id filters everything out; a malformed one is a 422, as is a
    capability with no meaningful word (only stop words or punctuation)."""
    capability, role, sandbox_id = _clean(capability), _clean(role), _clean(sandbox_id)
    if sandbox_id is not None and not is_valid(Prefix.SANDBOX, sandbox_id):
        raise _query_error("sandbox_id", "must be a sandbox id (sb_ followed by 10 characters)")
    if capability is not None and not capabilities.is_meaningful(capability):
        raise _query_error("capability", "must contain at least one word to match")
    sandboxes = await repo.sandboxes(session, ws.id, sandbox_id)
    tallies = _tallies(sandboxes, await repo.delivery_stats(session, ws.id, sandbox_id))
    found: list[DiscoveredAgent] = []
    for sb in sandboxes:
        for agent in _agents(sb):
            agent_role = str(agent.get("role") or "")
            if role is not None and not capabilities.role_matches(role, agent_role):
                continue
            caps, source = capabilities.capabilities_of(agent)
            score = None
            if capability is not None:
                score = capabilities.match_score(capability, caps)
                if score is None:
                    continue
            tally = tallies[sb.id].get(str(agent["name"]))
            found.append(
                DiscoveredAgent(
                    sandbox_id=sb.id,
                    sandbox_name=sb.name,
                    agent_name=str(agent["name"]),
                    role=agent_role,
                    capabilities=caps,
                    capabilities_source=source,
                    status=_status(sb, tally),
                    metrics=_metrics(tally),
                    match_score=score,
                )
            )
    found.sort(
        key=lambda a: (-(a.match_score or 0.0), a.agent_name.lower(), a.sandbox_name, a.sandbox_id)
    )
    return DiscoveredAgents(agents=found)
