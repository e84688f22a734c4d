"""Workspace configuration: providers (keys write-only), MCP servers, collaboration policy."""

from __future__ import annotations

import asyncio
import socket
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.ext.asyncio import AsyncSession

from api.schemas.config import (
    MASK,
    EffectiveLLM,
    LLMProviderOut,
    McpServerOut,
    WorkspaceConfigOut,
    WorkspaceConfigUpdate,
)
from api.services.workspaces import apply_settings_patch, effective_settings
from config.settings import Settings, get_settings
from domain.egress import (
    ProviderAccess,
    env_ref_refusal,
    key_destination_refusal,
    parse_ip,
    url_refusal,
)
from domain.errors import ConfigurationInvalid
from domain.llm import DEFAULT_BASE_URLS, ENV_REF, OFFLINE_PROVIDER, LLMProviderConfig
from domain.timeutil import utcnow
from store.models import Workspace


def _mask(value: str | None) -> str | None:
    if value is None:
        return None
    # A ${ENV_VAR} reference is not a secret: showing it tells the user where the key comes from.
    return value if ENV_REF.match(value) else MASK


def _provider_out(raw: dict[str, Any]) -> LLMProviderOut:
    return LLMProviderOut(
        name=raw["name"],
        api_key=_mask(raw.get("api_key")),
        api_key_set=bool(raw.get("api_key")),
        base_url=raw.get("base_url"),
        models=raw.get("models", []),
        default_model=raw.get("default_model"),
        parameters=raw.get("parameters"),
    )


def _mcp_out(raw: dict[str, Any]) -> McpServerOut:
    enabled = raw.get("enabled", True)
    return McpServerOut(
        name=raw["name"],
        status="enabled" if enabled else "disabled",
        transport=raw.get("transport", "stdio"),
        command=raw.get("command"),
        args=raw.get("args", []),
        url=raw.get("url"),
        env={k: _mask(v) or "" for k, v in (raw.get("env") or {}).items()},
        enabled=enabled,
    )


# The same words as /system/info's `offline_llm.used_when`.
OFFLINE_REASON = "the embedded model: used when a workspace configures no LLM provider"


def effective_llm(ws: Workspace, settings: Settings) -> EffectiveLLM:
    """What the worker's `choose_provider` (activities/agent.py) picks for an agent that names
    no provider: the configured default, else the only configured provider, else the offline
    model this installation serves (AINTANDEM_OFFLINE_MODEL)."""
    configured = {p["name"]: p for p in ws.llm_providers or []}
    default = (ws.settings or {}).get("default_llm_provider")
    chosen, source = None, "offline"
    if default in configured:
        chosen, source = configured[default], "default_llm_provider"
    elif len(configured) == 1:
        chosen, source = next(iter(configured.values())), "only_provider"
    if chosen is None:
        reason = OFFLINE_REASON
        if configured:
            reason = (
                f"the embedded model: default_llm_provider {default!r} is not configured and "
                f"{len(configured)} providers are, so none is chosen"
            )
        return EffectiveLLM(
            provider=OFFLINE_PROVIDER, model=settings.offline_model, source="offline", reason=reason
        )
    cfg = LLMProviderConfig.from_workspace(chosen)
    reason = (
        f"default_llm_provider {default!r} is configured"
        if source == "default_llm_provider"
        else f"the only configured provider (default_llm_provider {default!r} is not)"
    )
    return EffectiveLLM(provider=cfg.name, model=cfg.model, source=source, reason=reason)  # type: ignore[arg-type]


def to_out(ws: Workspace, settings: Settings | None = None) -> WorkspaceConfigOut:
    """`settings` None: the process's own (the caller has no app settings at hand)."""
    return WorkspaceConfigOut(
        workspace_id=ws.id,
        settings=effective_settings(ws),
        llm_providers=[_provider_out(p) for p in ws.llm_providers or []],
        mcp_servers=[_mcp_out(s) for s in ws.mcp_servers or []],
        collaboration_policy=ws.collaboration_policy or {"mode": "allow_all", "rules": []},
        effective_llm=effective_llm(ws, settings or get_settings()),
    )


def _merge_providers(
    stored: list[dict[str, Any]], incoming: WorkspaceConfigUpdate
) -> list[dict[str, Any]]:
    previous = {p["name"]: p for p in stored}
    result = []
    for provider in incoming.llm_providers or []:
        raw = provider.model_dump(mode="json", exclude_none=True)
        # GET returns the mask; sending it back (or nothing) must not erase the stored key.
        if raw.get("api_key") in (None, MASK):
            raw.pop("api_key", None)
            if previous.get(raw["name"], {}).get("api_key"):
                raw["api_key"] = previous[raw["name"]]["api_key"]
        result.append(raw)
    return result


def _merge_mcp(
    stored: list[dict[str, Any]], incoming: WorkspaceConfigUpdate
) -> list[dict[str, Any]]:
    previous = {s["name"]: s.get("env", {}) for s in stored}
    result = []
    for server in incoming.mcp_servers or []:
        raw = server.model_dump(mode="json", exclude_none=True)
        old_env = previous.get(raw["name"], {})
        raw["env"] = {k: old_env.get(k, v) if v == MASK else v for k, v in raw["env"].items()}
        result.append(raw)
    return result


# -- what a config may make the worker read and reach -----------------------------------------

# How long PUT /config waits for DNS to judge a base_url host; past that the name is let
# through and the worker's connection-time check decides.
DNS_CHECK_SECONDS = 2.0


def _invalid(field: str, message: str) -> ConfigurationInvalid:
    return ConfigurationInvalid(
        f"{field}: {message}",
        {"fields": [{"field": field, "message": message, "location": "body"}]},
    )


def _check_env_ref(field: str, value: str | None, access: ProviderAccess) -> None:
    ref = ENV_REF.match(value or "")
    if ref is not None and (refusal := env_ref_refusal(ref.group(1), access.env_names)):
        raise _invalid(field, refusal)


async def _resolves_internal(url: str, access: ProviderAccess) -> str | None:
    """The first internal, not allowed address a base_url's host name resolves to, if any."""
    host = urlsplit(url).hostname or ""
    if parse_ip(host) is not None or access.hosts.allows_name(host):
        return None
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, None, type=socket.SOCK_STREAM), DNS_CHECK_SECONDS
        )
    except (OSError, TimeoutError):
        return None  # unknown here; the worker checks every connection anyway
    for *_, sockaddr in infos:
        ip = parse_ip(str(sockaddr[0]).split("%")[0])
        if ip is not None and not access.hosts.allows_address(host, ip):
            return str(ip)
    return None


async def check_access(body: WorkspaceConfigUpdate, access: ProviderAccess) -> None:
    """Refuse (422 CONFIGURATION_INVALID, naming the field) a config that would make the worker
    read a variable or reach a host the operator did not allow. Nothing is stored before."""
    for i, provider in enumerate(body.llm_providers or []):
        _check_env_ref(f"llm_providers[{i}].api_key", provider.api_key, access)
        if provider.base_url is None:
            continue
        field = f"llm_providers[{i}].base_url"
        url = str(provider.base_url)
        if (refusal := url_refusal(url, access.hosts)) is not None:
            raise _invalid(field, f"{url} {refusal}")
        if (internal := await _resolves_internal(url, access)) is not None:
            raise _invalid(
                field,
                f"{url} resolves to an internal address ({internal}); an operator may allow it "
                "with AINTANDEM_PROVIDER_ALLOWED_HOSTS",
            )
    for i, server in enumerate(body.mcp_servers or []):
        for key, value in server.env.items():
            _check_env_ref(f"mcp_servers[{i}].env.{key}", value, access)


def check_key_destinations(providers: list[dict[str, Any]], access: ProviderAccess) -> None:
    """A `${VAR}` key (the operator's) goes only to its provider's own endpoint or a host the
    operator allows. Checked on the merged providers: a key kept from before (an omitted or
    masked api_key) must not follow a newly set base_url either."""
    for i, provider in enumerate(providers):
        ref = ENV_REF.match(str(provider.get("api_key") or ""))
        if ref is None:
            continue
        refusal = key_destination_refusal(
            ref.group(1),
            provider.get("base_url"),
            DEFAULT_BASE_URLS.get(str(provider.get("name"))),
            access.hosts,
        )
        if refusal is not None:
            raise _invalid(f"llm_providers[{i}].base_url", refusal)


async def update(
    session: AsyncSession,
    ws: Workspace,
    body: WorkspaceConfigUpdate,
    access: ProviderAccess | None = None,
    settings: Settings | None = None,
) -> WorkspaceConfigOut:
    """`settings`: the app's (edition limit, egress switch); None: the process's own."""
    access = access or ProviderAccess()
    await check_access(body, access)
    providers = None
    if body.llm_providers is not None:
        providers = _merge_providers(ws.llm_providers or [], body)
        check_key_destinations(providers, access)
    apply_settings_patch(ws, body.settings, settings)
    if providers is not None:
        ws.llm_providers = providers
    if body.mcp_servers is not None:
        ws.mcp_servers = _merge_mcp(ws.mcp_servers or [], body)
    if body.collaboration_policy is not None:
        policy = body.collaboration_policy.model_dump(mode="json", by_alias=True)
        ws.collaboration_policy = policy
    ws.updated_at = utcnow()
    await session.commit()
    return to_out(ws)
