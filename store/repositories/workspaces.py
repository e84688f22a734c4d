"""Workspace queries: always scoped to the owner, so a foreign id is simply not found."""

from __future__ import annotations

from sqlalchemy import ColumnElement, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from store.models import Sandbox, User, Workspace

SORTABLE = {
    "created_at": Workspace.created_at,
    "updated_at": Workspace.updated_at,
    "name": Workspace.name,
}


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _filters(owner_id: str, search: str | None) -> list[ColumnElement[bool]]:
    conds: list[ColumnElement[bool]] = [Workspace.owner_id == owner_id]
    if search:
        pattern = f"%{_escape_like(search.lower())}%"
        conds.append(
            or_(
                func.lower(Workspace.name).like(pattern, escape="\\"),
                func.lower(func.coalesce(Workspace.description, "")).like(pattern, escape="\\"),
            )
        )
    return conds


async def lock_owner(session: AsyncSession, owner_id: str) -> None:
    """Serialise, until this transaction ends, every transaction that counts the owner's
    workspaces before inserting one (the per-user quota).

    A no-op UPDATE of the owner's row does it on both backends with one code path: PostgreSQL
    takes the row lock (FOR NO KEY UPDATE: inserts referencing the user are not blocked), and
    SQLite's driver opens its deferred transaction at the first write, so this statement is the
    first of the transaction and takes the database's single write lock before the count
    reads anything (a SELECT first would pin a snapshot that a later write could not upgrade).
    """
    await session.execute(
        update(User)
        .where(User.id == owner_id)
        .values(updated_at=User.updated_at)
        .execution_options(synchronize_session=False)
    )


async def count_owned(session: AsyncSession, owner_id: str) -> int:
    return (
        await session.scalar(
            select(func.count()).select_from(Workspace).where(Workspace.owner_id == owner_id)
        )
        or 0
    )


async def list_owned(
    session: AsyncSession,
    owner_id: str,
    *,
    search: str | None,
    sort: str,
    descending: bool,
    offset: int,
    limit: int,
) -> tuple[list[tuple[Workspace, int]], int]:
    """One page of the owner's workspaces with their sandbox counts, and the total."""
    conds = _filters(owner_id, search)
    total = await session.scalar(select(func.count()).select_from(Workspace).where(*conds)) or 0
    column = SORTABLE[sort]
    counts = (
        select(Sandbox.workspace_id, func.count().label("n"))
        .group_by(Sandbox.workspace_id)
        .subquery()
    )
    stmt = (
        select(Workspace, func.coalesce(counts.c.n, 0))
        .outerjoin(counts, counts.c.workspace_id == Workspace.id)
        .where(*conds)
        # id as a tie-breaker keeps pages stable when many rows share a timestamp.
        .order_by(
            column.desc() if descending else column.asc(),
            Workspace.id.desc() if descending else Workspace.id.asc(),
        )
        .offset(offset)
        .limit(limit)
    )
    rows = (await session.execute(stmt)).all()
    return [(row[0], int(row[1])) for row in rows], total


async def get_owned(session: AsyncSession, workspace_id: str, owner_id: str) -> Workspace | None:
    return await session.scalar(
        select(Workspace).where(Workspace.id == workspace_id, Workspace.owner_id == owner_id)
    )


async def sandbox_summaries(session: AsyncSession, workspace_id: str) -> list[Sandbox]:
    return list(
        await session.scalars(
            select(Sandbox).where(Sandbox.workspace_id == workspace_id).order_by(Sandbox.created_at)
        )
    )
