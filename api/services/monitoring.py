"""Workspace metrics aggregated from the samples the sandbox health loops store."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from domain.errors import ValidationFailed
from domain.timeutil import as_utc, iso, utcnow
from store.models import Workspace
from store.repositories import metrics as repo
from store.repositories import sandboxes as sandbox_repo


async def aggregate(
    session: AsyncSession, ws: Workspace, since: datetime | None, granularity: str
) -> dict[str, Any]:
    now = utcnow()
    start = as_utc(since) if since is not None else now - timedelta(hours=1)
    if start > now:
        raise ValidationFailed(
            "since must not be in the future",
            {
                "fields": [
                    {"field": "since", "message": "must not be in the future", "location": "query"}
                ]
            },
        )
    counts = await repo.sandbox_counts(session, ws.id)
    avg_cpu, avg_mem = await repo.overall(session, ws.id, start)
    names = {sb.id: sb.name for sb in await sandbox_repo.in_workspace(session, ws.id)}
    by_sandbox: dict[str, dict[str, Any]] = {}
    for point in await repo.series(session, ws.id, start, granularity):
        sid = point.pop("sandbox_id")
        entry = by_sandbox.setdefault(
            sid, {"sandbox_id": sid, "name": names.get(sid), "series": []}
        )
        entry["series"].append(point)
    return {
        "workspace_id": ws.id,
        "period": {"start": iso(start), "end": iso(now), "granularity": granularity},
        "summary": {
            "total_sandboxes": sum(counts.values()),
            "active_sandboxes": counts.get("running", 0),
            "total_messages": await repo.message_events(session, ws.id, start),
            "avg_cpu_usage": avg_cpu,
            "avg_memory_usage": avg_mem,
        },
        "by_sandbox": list(by_sandbox.values()),
    }
