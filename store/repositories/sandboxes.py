"""Sandbox queries, always reached through the owning user's workspace."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from domain.timeutil import iso
from store.models import Event, MetricsSample, Sandbox, Workspace

SORTABLE = {
    "created_at": Sandbox.created_at,
    "updated_at": Sandbox.updated_at,
    "name": Sandbox.name,
    "status": Sandbox.status,
}
LEVEL_RANK = {"debug": 0, "info": 1, "warn": 2, "error": 3}


async def get_owned(session: AsyncSession, sandbox_id: str, owner_id: str) -> Sandbox | None:
    return await session.scalar(
        select(Sandbox)
        .join(Workspace, Workspace.id == Sandbox.workspace_id)
        .where(Sandbox.id == sandbox_id, Workspace.owner_id == owner_id)
    )


async def get_owned_with_workspace(
    session: AsyncSession, sandbox_id: str, owner_id: str
) -> tuple[Sandbox, Workspace] | None:
    """The sandbox and its workspace in one query (routes that need both)."""
    row = (
        await session.execute(
            select(Sandbox, Workspace)
            .join(Workspace, Workspace.id == Sandbox.workspace_id)
            .where(Sandbox.id == sandbox_id, Workspace.owner_id == owner_id)
        )
    ).first()
    return (row[0], row[1]) if row is not None else None


async def lock_workspace(session: AsyncSession, workspace_id: str) -> None:
    """Serialise, until this transaction ends, every transaction that checks the workspace's
    sandbox quota or a sandbox name before inserting a sandbox.

    A no-op UPDATE of the workspace row works on both backends: a row lock on PostgreSQL
    (FOR NO KEY UPDATE, so rows referencing the workspace can still be inserted meanwhile), and
    on SQLite the first statement of the driver's deferred transaction, so it takes the single
    write lock before anything is read (see workspaces.lock_owner).
    """
    await session.execute(
        update(Workspace)
        .where(Workspace.id == workspace_id)
        .values(updated_at=Workspace.updated_at)
        .execution_options(synchronize_session=False)
    )


async def count_in_workspace(session: AsyncSession, workspace_id: str) -> int:
    return (
        await session.scalar(
            select(func.count()).select_from(Sandbox).where(Sandbox.workspace_id == workspace_id)
        )
        or 0
    )


async def name_taken(session: AsyncSession, workspace_id: str, name: str) -> bool:
    return (
        await session.scalar(
            select(Sandbox.id).where(Sandbox.workspace_id == workspace_id, Sandbox.name == name)
        )
        is not None
    )


async def list_in_workspace(
    session: AsyncSession,
    workspace_id: str,
    *,
    status: str | None,
    search: str | None,
    sort: str,
    descending: bool,
    offset: int,
    limit: int,
) -> tuple[list[Sandbox], int]:
    conds: list[ColumnElement[bool]] = [Sandbox.workspace_id == workspace_id]
    if status:
        conds.append(Sandbox.status == status)
    if search:
        escaped = search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        conds.append(or_(func.lower(Sandbox.name).like(f"%{escaped}%", escape="\\")))
    total = await session.scalar(select(func.count()).select_from(Sandbox).where(*conds)) or 0
    column = SORTABLE[sort]
    rows = await session.scalars(
        select(Sandbox)
        .where(*conds)
        .order_by(
            column.desc() if descending else column.asc(),
            Sandbox.id.desc() if descending else Sandbox.id.asc(),
        )
        .offset(offset)
        .limit(limit)
    )
    return list(rows), total


async def in_workspace(session: AsyncSession, workspace_id: str) -> list[Sandbox]:
    return list(await session.scalars(select(Sandbox).where(Sandbox.workspace_id == workspace_id)))


async def latest_sample(session: AsyncSession, sandbox_id: str) -> MetricsSample | None:
    return await session.scalar(
        select(MetricsSample)
        .where(MetricsSample.sandbox_id == sandbox_id)
        .order_by(MetricsSample.sampled_at.desc(), MetricsSample.id.desc())
        .limit(1)
    )


async def logs(
    session: AsyncSession,
    sandbox_id: str,
    *,
    since: datetime | None,
    min_level: str | None,
    limit: int,
) -> tuple[list[Event], int]:
    """The newest `limit` log lines (returned oldest first) and how many match in total."""
    conds: list[ColumnElement[bool]] = [Event.sandbox_id == sandbox_id, Event.channel == "logs"]
    if since is not None:
        # Lines carry their own ISO-8601 UTC timestamps, which sort as strings.
        conds.append(Event.data["timestamp"].as_string() >= iso(since))
    if min_level:
        wanted = [lvl for lvl, rank in LEVEL_RANK.items() if rank >= LEVEL_RANK[min_level]]
        conds.append(Event.data["level"].as_string().in_(wanted))
    total = await session.scalar(select(func.count()).select_from(Event).where(*conds)) or 0
    rows = list(
        await session.scalars(select(Event).where(*conds).order_by(Event.id.desc()).limit(limit))
    )
    rows.reverse()
    return rows, total
