"""Workspaces: owner-scoped CRUD, the edition's workspace limit, partial settings merges."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from api.schemas.common import Pagination
from api.schemas.workspaces import (
    SandboxSummary,
    WorkspaceCreate,
    WorkspaceDetail,
    WorkspaceOut,
    WorkspaceSettings,
    WorkspaceSettingsPatch,
    WorkspaceUpdate,
)
from config.settings import Settings, get_settings
from domain.containers import EGRESS_INTERNET
from domain.errors import NotFound, ResourceExhausted, ValidationFailed
from domain.ids import Prefix, is_valid, new_id
from domain.timeutil import iso, utcnow
from store.models import User, Workspace
from store.repositories import workspaces as repo


def merge_settings(current: dict[str, Any], patch: WorkspaceSettingsPatch | None) -> dict[str, Any]:
    """Apply only the keys the client sent; nested resource_defaults merge the same way."""
    merged = dict(current)
    if patch is None:
        return merged
    changes = patch.model_dump(exclude_unset=True, exclude_none=True, mode="json")
    nested = changes.pop("resource_defaults", None)
    merged.update(changes)
    if nested:
        merged["resource_defaults"] = {**merged.get("resource_defaults", {}), **nested}
    return merged


def check_egress(patch: WorkspaceSettingsPatch | None, settings: Settings | None = None) -> None:
    """`egress: internet` only where the operator allows it (AINTANDEM_SANDBOX_INTERNET_EGRESS_
    ALLOWED); the worker refuses to start such a sandbox too, whatever the stored setting.
    `settings` None: the process's own (a caller without the app's settings at hand)."""
    if patch is None or patch.egress != EGRESS_INTERNET:
        return
    if (settings or get_settings()).sandbox_internet_egress_allowed:
        return
    raise ValidationFailed(
        "egress 'internet' is disabled on this installation",
        {
            "fields": [
                {
                    "field": "settings.egress",
                    "message": "egress 'internet' is disabled by the operator "
                    "(AINTANDEM_SANDBOX_INTERNET_EGRESS_ALLOWED=false); use 'none'",
                    "location": "body",
                }
            ]
        },
    )


def check_max_sandboxes(
    patch: WorkspaceSettingsPatch | None, settings: Settings | None = None
) -> None:
    """A `max_sandboxes` above the edition's per-workspace limit is refused, not silently
    capped: the workspace would promise sandboxes that creating them would refuse."""
    if patch is None or patch.max_sandboxes is None:
        return
    limit = (settings or get_settings()).max_sandboxes_per_workspace
    if patch.max_sandboxes <= limit:
        return
    edition = (settings or get_settings()).edition
    message = (
        f"max_sandboxes {patch.max_sandboxes} exceeds the {edition} edition's limit of {limit} "
        "sandboxes per workspace (max_sandboxes_per_workspace)"
    )
    raise ValidationFailed(
        message,
        {
            "fields": [{"field": "settings.max_sandboxes", "message": message, "location": "body"}],
            "limit": limit,
        },
    )


def effective_settings(ws: Workspace) -> WorkspaceSettings:
    stored = dict(ws.settings or {})
    stored["collaboration_policy"] = (ws.collaboration_policy or {}).get("mode", "allow_all")
    return WorkspaceSettings.model_validate(stored)


def to_out(ws: Workspace, sandbox_count: int) -> WorkspaceOut:
    return WorkspaceOut(
        workspace_id=ws.id,
        name=ws.name,
        description=ws.description,
        owner_id=ws.owner_id,
        settings=effective_settings(ws),
        sandbox_count=sandbox_count,
        created_at=iso(ws.created_at) or "",
        updated_at=iso(ws.updated_at) or "",
    )


def _split_policy(settings: dict[str, Any], policy: dict[str, Any]) -> dict[str, Any]:
    # The policy mode lives with its rules in `collaboration_policy`; settings only mirror it.
    mode = settings.pop("collaboration_policy", None)
    if mode is not None:
        return {**policy, "mode": mode, "rules": policy.get("rules", [])}
    return policy


async def get_owned(session: AsyncSession, workspace_id: str, user: User) -> Workspace:
    if not is_valid(Prefix.WORKSPACE, workspace_id):
        raise NotFound("workspace", workspace_id)
    ws = await repo.get_owned(session, workspace_id, user.id)
    if ws is None:
        raise NotFound("workspace", workspace_id)
    return ws


async def list_workspaces(
    session: AsyncSession, user: User, pg: Pagination
) -> tuple[list[WorkspaceOut], int]:
    if pg.sort not in repo.SORTABLE:
        raise ValidationFailed(
            "Unsupported sort field",
            {
                "fields": [
                    {
                        "field": "sort",
                        "message": f"one of {sorted(repo.SORTABLE)}",
                        "location": "query",
                    }
                ]
            },
        )
    rows, total = await repo.list_owned(
        session,
        user.id,
        search=pg.search,
        sort=pg.sort,
        descending=pg.order == "desc",
        offset=pg.offset,
        limit=pg.per_page,
    )
    return [to_out(ws, n) for ws, n in rows], total


async def create(
    session: AsyncSession, settings: Settings, user: User, body: WorkspaceCreate
) -> WorkspaceOut:
    # The count and the insert are one transaction that holds the owner's lock (row lock on
    # PostgreSQL, the write lock on SQLite): concurrent creates are counted one after another.
    # A refusal ends the request's session, whose rollback releases the lock.
    check_egress(body.settings, settings)
    check_max_sandboxes(body.settings, settings)
    await repo.lock_owner(session, user.id)
    if await repo.count_owned(session, user.id) >= settings.max_workspaces:
        raise ResourceExhausted(
            f"Workspace limit reached: the {settings.edition} edition allows "
            f"{settings.max_workspaces} workspaces per user",
            {"limit": settings.max_workspaces, "resource": "workspaces"},
        )
    defaults = WorkspaceSettings().model_dump(mode="json")
    # The default never promises more than the edition allows.
    defaults["max_sandboxes"] = min(defaults["max_sandboxes"], settings.max_sandboxes_per_workspace)
    stored = merge_settings(defaults, body.settings)
    policy = _split_policy(stored, {"mode": "allow_all", "rules": []})
    ws = Workspace(
        id=new_id(Prefix.WORKSPACE),
        owner_id=user.id,
        name=body.name,
        description=body.description,
        settings=stored,
        llm_providers=[],
        mcp_servers=[],
        collaboration_policy=policy,
    )
    session.add(ws)
    await session.commit()
    return to_out(ws, 0)


async def detail(session: AsyncSession, ws: Workspace) -> WorkspaceDetail:
    sandboxes = await repo.sandbox_summaries(session, ws.id)
    base = to_out(ws, len(sandboxes))
    return WorkspaceDetail(
        **base.model_dump(),
        sandboxes=[
            SandboxSummary(sandbox_id=s.id, name=s.name, status=s.status) for s in sandboxes
        ],
    )


def apply_settings_patch(
    ws: Workspace, patch: WorkspaceSettingsPatch | None, settings: Settings | None = None
) -> None:
    if patch is None:
        return
    check_egress(patch, settings)
    check_max_sandboxes(patch, settings)
    stored = merge_settings(ws.settings or {}, patch)
    ws.collaboration_policy = _split_policy(stored, dict(ws.collaboration_policy or {}))
    ws.settings = stored


async def update(
    session: AsyncSession, ws: Workspace, body: WorkspaceUpdate, settings: Settings | None = None
) -> WorkspaceDetail:
    if body.name is not None:
        ws.name = body.name
    if "description" in body.model_fields_set:
        ws.description = body.description
    apply_settings_patch(ws, body.settings, settings)
    ws.updated_at = utcnow()
    await session.commit()
    return await detail(session, ws)


async def delete(session: AsyncSession, ws: Workspace) -> None:
    # Rows cascade (sandboxes, messages, ...). Sandbox containers are torn down by their
    # workflows once the sandboxes capability exists.
    await session.delete(ws)
    await session.commit()
