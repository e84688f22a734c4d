"""Aggregations over stored metrics samples, bucketed in SQL (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, literal_column, select
from sqlalchemy.ext.asyncio import AsyncSession

from store.models import Collaboration, Event, MetricsSample, Sandbox

_SQLITE_FORMAT = {
    "minute": "%Y-%m-%dT%H:%M:00Z",
    "hour": "%Y-%m-%dT%H:00:00Z",
    "day": "%Y-%m-%dT00:00:00Z",
}


def _bucket(session: AsyncSession, granularity: str) -> ColumnElement[str]:
    if session.bind.dialect.name == "postgresql":
        utc = func.timezone("UTC", MetricsSample.sampled_at)
        return func.to_char(
            func.date_trunc(granularity, utc), literal_column('\'YYYY-MM-DD"T"HH24:MI:SS"Z"\'')
        )
    return func.strftime(_SQLITE_FORMAT[granularity], MetricsSample.sampled_at)


async def series(
    session: AsyncSession, workspace_id: str, since: datetime, granularity: str
) -> list[dict[str, Any]]:
    bucket = _bucket(session, granularity).label("bucket")
    stmt = (
        select(
            MetricsSample.sandbox_id,
            bucket,
            func.avg(MetricsSample.cpu_percent),
            func.avg(MetricsSample.memory_percent),
            func.avg(MetricsSample.memory_mb),
            func.max(MetricsSample.memory_mb),
            func.max(MetricsSample.network_in_bytes),
            func.max(MetricsSample.network_out_bytes),
            func.count(),
        )
        .where(MetricsSample.workspace_id == workspace_id, MetricsSample.sampled_at >= since)
        .group_by(MetricsSample.sandbox_id, bucket)
        .order_by(MetricsSample.sandbox_id, bucket)
    )
    return [
        {
            "sandbox_id": r[0],
            "timestamp": r[1],
            "avg_cpu_usage": round(float(r[2]), 2),
            "avg_memory_usage": round(float(r[3]), 2),
            "avg_memory_mb": round(float(r[4]), 1),
            "max_memory_mb": round(float(r[5]), 1),
            "network_in_bytes": int(r[6]),
            "network_out_bytes": int(r[7]),
            "samples": int(r[8]),
        }
        for r in (await session.execute(stmt)).all()
    ]


async def overall(session: AsyncSession, workspace_id: str, since: datetime) -> tuple[float, float]:
    row = (
        await session.execute(
            select(
                func.avg(MetricsSample.cpu_percent), func.avg(MetricsSample.memory_percent)
            ).where(MetricsSample.workspace_id == workspace_id, MetricsSample.sampled_at >= since)
        )
    ).one()
    return round(float(row[0] or 0), 2), round(float(row[1] or 0), 2)


async def sandbox_counts(session: AsyncSession, workspace_id: str) -> dict[str, int]:
    rows = await session.execute(
        select(Sandbox.status, func.count())
        .where(Sandbox.workspace_id == workspace_id)
        .group_by(Sandbox.status)
    )
    return {status: int(n) for status, n in rows.all()}


async def message_events(session: AsyncSession, workspace_id: str, since: datetime) -> int:
    return (
        await session.scalar(
            select(func.count())
            .select_from(Event)
            .where(
                Event.workspace_id == workspace_id,
                Event.channel == "messages",
                Event.event == "message_queued",
                Event.created_at >= since,
            )
        )
        or 0
    )


async def sandboxes_by_status(session: AsyncSession) -> dict[str, int]:
    rows = await session.execute(select(Sandbox.status, func.count()).group_by(Sandbox.status))
    return {status: int(n) for status, n in rows.all()}


async def collaborations_by_status(session: AsyncSession) -> dict[str, int]:
    rows = await session.execute(
        select(Collaboration.status, func.count()).group_by(Collaboration.status)
    )
    return {status: int(n) for status, n in rows.all()}
