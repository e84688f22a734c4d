"""Collaboration list queries (one workspace's, for operators); the workspace's ownership is
checked by the caller, so every query here is scoped to that workspace."""

from __future__ import annotations

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from store.models import Collaboration

SORTABLE = {
    "created_at": Collaboration.created_at,
    "updated_at": Collaboration.updated_at,
}


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _filters(
    workspace_id: str, statuses: list[str] | None, search: str | None
) -> list[ColumnElement[bool]]:
    conds: list[ColumnElement[bool]] = [Collaboration.workspace_id == workspace_id]
    if statuses:
        conds.append(Collaboration.status.in_(statuses))
    if search:
        pattern = f"%{_escape_like(search.lower())}%"
        conds.append(func.lower(Collaboration.task).like(pattern, escape="\\"))
    return conds


async def list_for_workspace(
    session: AsyncSession,
    workspace_id: str,
    *,
    statuses: list[str] | None,
    search: str | None,
    sort: str,
    descending: bool,
    offset: int,
    limit: int,
) -> tuple[list[Collaboration], int]:
    """One page of the workspace's collaborations, and how many match in all. Ties on the
    sort column are broken by id, so pages neither repeat nor skip a row."""
    conds = _filters(workspace_id, statuses, search)
    total = await session.scalar(select(func.count()).select_from(Collaboration).where(*conds)) or 0
    column = SORTABLE[sort]
    order = (
        (column.desc(), Collaboration.id.desc())
        if descending
        else (column.asc(), Collaboration.id.asc())
    )
    rows = await session.scalars(
        select(Collaboration).where(*conds).order_by(*order).offset(offset).limit(limit)
    )
    return list(rows), total
