"""The client's resource namespaces and the `Sandbox` / `Collaboration` handles."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from ._errors import (
    AInTandemError,
    CollaborationFailed,
    RateLimitExceeded,
    SandboxNotReady,
    ServiceUnavailable,
    WaitTimeout,
)
from ._http import HTTPCore
from ._models import (
    AggregateMetrics,
    BroadcastResult,
    CollaborationCancelled,
    CollaborationInfo,
    CollaborationStarted,
    CollaborationSummary,
    DiscoveredAgent,
    LifecycleResult,
    LoginResult,
    Logs,
    Message,
    MessageAccepted,
    MessageAction,
    SandboxConfig,
    SandboxInfo,
    SandboxMetrics,
    SandboxStatus,
    SystemHealth,
    SystemInfo,
    TokenRefresh,
    User,
    Workspace,
    WorkspaceConfig,
)
from ._pagination import Paginator
from ._streams import EventStream


def _body(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


def _many(value: str | Sequence[str] | None) -> list[str] | None:
    """A filter given as one value or several (sent as a repeated query parameter)."""
    if value is None:
        return None
    return [value] if isinstance(value, str) else list(value)


# -- auth ----------------------------------------------------------------------------------------


class AuthResource:
    """`/auth`: register, login, refresh, logout. Login and refresh update the client's token."""

    def __init__(self, core: HTTPCore) -> None:
        self._core = core

    async def register(
        self, email: str, password: str, name: str, organization: str | None = None
    ) -> User:
        """Create an account (does not log in)."""
        ans = await self._core.request(
            "POST",
            "auth/register",
            json=_body(email=email, password=password, name=name, organization=organization),
            auth=False,
        )
        return User.model_validate(ans.data)

    async def login(self, email: str, password: str) -> LoginResult:
        """Log in; the client then uses (and automatically refreshes) the tokens."""
        return await self._core.login(email, password)

    async def refresh(self) -> TokenRefresh:
        """Exchange the refresh token for new tokens now (the SDK also does this by itself)."""
        return await self._core.refresh()

    async def logout(self) -> None:
        """Revoke the session on the server and forget the tokens."""
        try:
            await self._core.request("POST", "auth/logout")
        finally:
            self._core.tokens.clear()
            self._core.email = None


# -- workspaces ----------------------------------------------------------------------------------


class WorkspacesResource:
    """`/workspaces`: CRUD, configuration, metrics, agent discovery, broadcast."""

    def __init__(self, core: HTTPCore, client: Any) -> None:
        self._core = core
        self._client = client

    async def create(
        self,
        name: str,
        description: str | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> Workspace:
        ans = await self._core.request(
            "POST",
            "workspaces",
            json=_body(name=name, description=description, settings=settings),
        )
        return Workspace.model_validate(ans.data)

    def list(
        self,
        *,
        per_page: int = 20,
        sort: str | None = None,
        order: str | None = None,
        search: str | None = None,
        limit: int | None = None,
    ) -> Paginator[Workspace]:
        """All workspaces, page by page: ``async for ws in ...`` or ``await ...`` for a list."""
        return Paginator(
            self._core,
            "workspaces",
            Workspace.model_validate,
            {"sort": sort, "order": order, "search": search},
            per_page=per_page,
            limit=limit,
        )

    async def get(self, workspace_id: str) -> Workspace:
        ans = await self._core.request("GET", f"workspaces/{workspace_id}")
        return Workspace.model_validate(ans.data)

    async def update(
        self,
        workspace_id: str,
        *,
        name: str | None = None,
        description: str | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> Workspace:
        ans = await self._core.request(
            "PUT",
            f"workspaces/{workspace_id}",
            json=_body(name=name, description=description, settings=settings),
        )
        return Workspace.model_validate(ans.data)

    async def delete(self, workspace_id: str) -> None:
        """Delete the workspace with its sandboxes (containers included)."""
        await self._core.request("DELETE", f"workspaces/{workspace_id}")

    def list_sandboxes(
        self, workspace_id: str, *, status: str | None = None, per_page: int = 20
    ) -> Paginator[Sandbox]:
        """The workspace's sandboxes as `Sandbox` handles (iterate, or await for a list)."""
        return Paginator(
            self._core,
            f"workspaces/{workspace_id}/sandboxes",
            lambda item: Sandbox(self._client, SandboxInfo.model_validate(item)),
            {"status": status},
            per_page=per_page,
        )

    async def broadcast(
        self,
        workspace_id: str,
        *,
        from_sandbox: str,
        content: Mapping[str, Any],
        message_type: str = "notification",
        priority: int | None = None,
        exclude_self: bool | None = None,
        idempotency_key: str | None = None,
    ) -> BroadcastResult:
        ans = await self._core.request(
            "POST",
            f"workspaces/{workspace_id}/broadcast",
            json=_body(
                from_sandbox=from_sandbox,
                content=dict(content),
                message_type=message_type,
                priority=priority,
                exclude_self=exclude_self,
            ),
            idempotency_key=idempotency_key,
        )
        return BroadcastResult.model_validate(ans.data)

    async def get_config(self, workspace_id: str) -> WorkspaceConfig:
        ans = await self._core.request("GET", f"workspaces/{workspace_id}/config")
        return WorkspaceConfig.model_validate(ans.data)

    async def update_config(
        self,
        workspace_id: str,
        *,
        settings: Mapping[str, Any] | None = None,
        llm_providers: Sequence[Mapping[str, Any]] | None = None,
        mcp_servers: Sequence[Mapping[str, Any]] | None = None,
        collaboration_policy: Mapping[str, Any] | None = None,
    ) -> WorkspaceConfig:
        ans = await self._core.request(
            "PUT",
            f"workspaces/{workspace_id}/config",
            json=_body(
                settings=settings,
                llm_providers=llm_providers,
                mcp_servers=mcp_servers,
                collaboration_policy=collaboration_policy,
            ),
        )
        return WorkspaceConfig.model_validate(ans.data)

    async def metrics(
        self,
        workspace_id: str,
        *,
        since: datetime | str | None = None,
        granularity: str | None = None,
    ) -> AggregateMetrics:
        """Aggregated metrics of all the workspace's sandboxes."""
        ans = await self._core.request(
            "GET",
            f"workspaces/{workspace_id}/metrics/aggregate",
            params={"since": since, "granularity": granularity},
        )
        return AggregateMetrics.model_validate(ans.data)

    async def discover_agents(
        self,
        workspace_id: str,
        *,
        capability: str | None = None,
        role: str | None = None,
        sandbox_id: str | None = None,
    ) -> list[DiscoveredAgent]:
        ans = await self._core.request(
            "GET",
            f"workspaces/{workspace_id}/agents/discover",
            params={"capability": capability, "role": role, "sandbox_id": sandbox_id},
        )
        return [DiscoveredAgent.model_validate(a) for a in (ans.data or {}).get("agents", [])]

    async def list_messages(
        self,
        workspace_id: str,
        *,
        status: str | Sequence[str] | None = None,
        sandbox_id: str | None = None,
        since: datetime | str | None = None,
        limit: int | None = None,
    ) -> list[Message]:
        """Every message of the workspace, newest first (same as `client.messages.list`)."""
        return await self._client.messages.list(
            workspace_id, status=status, sandbox_id=sandbox_id, since=since, limit=limit
        )

    def list_collaborations(
        self,
        workspace_id: str,
        *,
        status: str | Sequence[str] | None = None,
        search: str | None = None,
        order: str | None = None,
        per_page: int = 20,
        limit: int | None = None,
    ) -> Paginator[CollaborationSummary]:
        """The workspace's collaborations, newest first, page by page (iterate, or await for a
        list); `search` matches the task."""
        return Paginator(
            self._core,
            f"workspaces/{workspace_id}/collaborations",
            CollaborationSummary.model_validate,
            {"status": _many(status), "search": search, "order": order},
            per_page=per_page,
            limit=limit,
        )


# -- sandboxes -----------------------------------------------------------------------------------

SANDBOX_COMING_UP = frozenset({"provisioning", "starting", "restarting", "running"})


class Sandbox:
    """A handle on one sandbox: its last known state (`info`) and the operations on it.

    Attributes of `info` are readable on the handle (`sandbox.status`, `sandbox.name`, ...);
    `refresh()` re-reads them. Lifecycle calls return as soon as the server accepted them
    (202); use `wait_until("running")` to wait for the outcome.
    """

    def __init__(self, client: Any, info: SandboxInfo) -> None:
        self._client = client
        self._core: HTTPCore = client._core
        self.info = info

    @property
    def id(self) -> str:
        return self.info.sandbox_id

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name == "info":
            raise AttributeError(name)
        return getattr(self.info, name)

    def __repr__(self) -> str:
        return f"Sandbox(id={self.id!r}, name={self.info.name!r}, status={self.info.status!r})"

    def _path(self, suffix: str = "") -> str:
        return f"sandboxes/{self.id}{suffix}"

    async def refresh(self) -> Sandbox:
        """Re-read the sandbox's details (status, health, metrics summary)."""
        ans = await self._core.request("GET", self._path())
        self.info = SandboxInfo.model_validate(ans.data)
        return self

    async def _lifecycle(self, op: str) -> LifecycleResult:
        ans = await self._core.request("POST", self._path(f"/{op}"))
        result = LifecycleResult.model_validate(ans.data)
        self.info.status = result.status
        return result

    async def start(self, *, wait: bool = True, timeout: float = 120.0) -> LifecycleResult:
        """Start the sandbox and, unless `wait=False`, return once it is running (so the next
        line can message it or put it in a collaboration). Idempotent: a sandbox already
        running or on its way up (provisioning, starting, restarting) is not started again."""
        try:
            result = await self._lifecycle("start")
        except SandboxNotReady:
            await self.refresh()
            if self.info.status not in SANDBOX_COMING_UP:
                raise
            result = LifecycleResult(sandbox_id=self.id, status=self.info.status or "")
        if wait:
            await self.wait_until("running", timeout=timeout)
            result = LifecycleResult(sandbox_id=self.id, status=self.info.status or "running")
        return result

    async def stop(self) -> LifecycleResult:
        return await self._lifecycle("stop")

    async def restart(self) -> LifecycleResult:
        return await self._lifecycle("restart")

    async def delete(self) -> None:
        """Delete the sandbox and its container."""
        await self._core.request("DELETE", self._path())

    async def get_status(self) -> SandboxStatus:
        ans = await self._core.request("GET", self._path("/status"))
        status = SandboxStatus.model_validate(ans.data)
        self.info.status = status.status
        return status

    async def get_logs(
        self,
        *,
        limit: int | None = None,
        since: datetime | str | None = None,
        level: str | None = None,
    ) -> Logs:
        ans = await self._core.request(
            "GET", self._path("/logs"), params={"limit": limit, "since": since, "level": level}
        )
        return Logs.model_validate(ans.data)

    async def get_metrics(self) -> SandboxMetrics:
        ans = await self._core.request("GET", self._path("/metrics"))
        return SandboxMetrics.model_validate(ans.data)

    async def get_config(self) -> SandboxConfig:
        ans = await self._core.request("GET", self._path("/config"))
        return SandboxConfig.model_validate(ans.data)

    async def update_config(
        self,
        *,
        agent_config: Mapping[str, Any] | None = None,
        resources: Mapping[str, Any] | None = None,
        mcp_servers: Sequence[str] | None = None,
        environment_variables: Mapping[str, str] | None = None,
    ) -> SandboxConfig:
        ans = await self._core.request(
            "PUT",
            self._path("/config"),
            json=_body(
                agent_config=agent_config,
                resources=resources,
                mcp_servers=mcp_servers,
                environment_variables=environment_variables,
            ),
        )
        return SandboxConfig.model_validate(ans.data)

    async def send_message(
        self,
        to: str,
        content: Mapping[str, Any] | str,
        *,
        message_type: str = "request",
        to_agent: str | None = None,
        from_agent: str | None = None,
        priority: int | None = None,
        requires_response: bool | None = None,
        timeout: int | None = None,
        correlation_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> MessageAccepted:
        """Send a message from this sandbox to another (`to`: its id or name).

        A string `content` is sent as ``{"text": content}``. Accepted durably (202, `queued`);
        follow it with `client.messages.get(id)` or the `messages` stream channel.
        """
        body = _body(
            to_sandbox=to,
            to_agent=to_agent,
            from_agent=from_agent,
            message_type=message_type,
            content={"text": content} if isinstance(content, str) else dict(content),
            priority=priority,
            requires_response=requires_response,
            timeout=timeout,
            correlation_id=correlation_id,
        )
        ans = await self._core.request(
            "POST", self._path("/messages"), json=body, idempotency_key=idempotency_key
        )
        return MessageAccepted.model_validate(ans.data)

    async def get_messages(
        self,
        *,
        direction: str | None = None,
        limit: int | None = None,
        since: datetime | str | None = None,
        status: str | Sequence[str] | None = None,
    ) -> list[Message]:
        """Messages sent to and/or from this sandbox (`direction`: sent, received, both;
        `status`: one or several delivery statuses)."""
        ans = await self._core.request(
            "GET",
            self._path("/messages"),
            params={
                "direction": direction,
                "limit": limit,
                "since": since,
                "status": _many(status),
            },
        )
        return [Message.model_validate(m) for m in (ans.data or {}).get("messages", [])]

    async def wait_until(
        self,
        status: str | Iterable[str] = "running",
        *,
        timeout: float = 120.0,
        interval: float = 0.5,
    ) -> Sandbox:
        """Poll until the sandbox reaches `status` (one or several). Raises `SandboxNotReady`
        when it lands in `error` instead, `WaitTimeout` when time runs out."""
        wanted = {status} if isinstance(status, str) else set(status)
        deadline = time.monotonic() + timeout
        while True:
            await self.refresh()
            if self.info.status in wanted:
                return self
            if self.info.status == "error" and "error" not in wanted:
                raise SandboxNotReady(
                    f"sandbox {self.id} is in error: {self.info.status_reason or 'unknown'}",
                    details={"sandbox_id": self.id, "status": "error"},
                )
            if time.monotonic() >= deadline:
                raise WaitTimeout(
                    f"sandbox {self.id} is {self.info.status!r} after {timeout:g} s, "
                    f"not {' or '.join(sorted(wanted))}",
                    details={"sandbox_id": self.id, "status": self.info.status},
                )
            await asyncio.sleep(interval)

    def stream(
        self,
        channels: Sequence[str] | None = None,
        *,
        last_event_id: int | None = None,
        include_system: bool = False,
        reconnect: bool = True,
    ) -> EventStream:
        """Live events of this sandbox (`messages`, `events`, `logs`, `metrics`; default all).

        `last_event_id=0` replays the sandbox's stored history first. The stream survives
        dropped connections (resuming after the last event id) and token expiry.
        """
        return EventStream(
            self._core,
            f"ws/sandboxes/{self.id}",
            channels,
            last_event_id=last_event_id,
            include_system=include_system,
            reconnect=reconnect,
        )


class SandboxesResource:
    """Sandboxes: create / get / list return `Sandbox` handles."""

    def __init__(self, core: HTTPCore, client: Any) -> None:
        self._core = core
        self._client = client

    async def create(
        self,
        workspace_id: str,
        name: str | None = None,
        agent_config: Mapping[str, Any] | None = None,
        *,
        resources: Mapping[str, Any] | None = None,
        mcp_servers: Sequence[str] | None = None,
        environment_variables: Mapping[str, str] | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> Sandbox:
        """Create a sandbox (201, `provisioning`; it starts by itself).

        Give the fields as arguments, or the whole request body as `config` (arguments win).
        """
        body = dict(config or {})
        body.update(
            _body(
                name=name,
                agent_config=agent_config,
                resources=resources,
                mcp_servers=mcp_servers,
                environment_variables=environment_variables,
            )
        )
        ans = await self._core.request("POST", f"workspaces/{workspace_id}/sandboxes", json=body)
        return Sandbox(self._client, SandboxInfo.model_validate(ans.data))

    async def get(self, sandbox_id: str) -> Sandbox:
        ans = await self._core.request("GET", f"sandboxes/{sandbox_id}")
        return Sandbox(self._client, SandboxInfo.model_validate(ans.data))

    def handle(self, sandbox_id: str) -> Sandbox:
        """A `Sandbox` for a known id without fetching it (no request is made)."""
        return Sandbox(self._client, SandboxInfo(sandbox_id=sandbox_id))

    def list(
        self, workspace_id: str, *, status: str | None = None, per_page: int = 20
    ) -> Paginator[Sandbox]:
        return self._client.workspaces.list_sandboxes(
            workspace_id, status=status, per_page=per_page
        )

    async def delete(self, sandbox_id: str) -> None:
        await self.handle(sandbox_id).delete()

    def stream(
        self,
        sandbox_id: str,
        channels: Sequence[str] | None = None,
        *,
        last_event_id: int | None = None,
        include_system: bool = False,
    ) -> EventStream:
        return self.handle(sandbox_id).stream(
            channels, last_event_id=last_event_id, include_system=include_system
        )


# -- messages ------------------------------------------------------------------------------------


class MessagesResource:
    """`/messages/{id}`: details (with the linked response), retry, approval decisions."""

    def __init__(self, core: HTTPCore) -> None:
        self._core = core

    async def get(self, message_id: str) -> Message:
        ans = await self._core.request("GET", f"messages/{message_id}")
        return Message.model_validate(ans.data)

    async def list(
        self,
        workspace_id: str,
        *,
        status: str | Sequence[str] | None = None,
        sandbox_id: str | None = None,
        since: datetime | str | None = None,
        limit: int | None = None,
    ) -> list[Message]:
        """Every message of a workspace, newest first (`status`: one or several, e.g.
        ``("failed", "timeout")``; `sandbox_id`: either end; `limit` 1-1000, default 50)."""
        ans = await self._core.request(
            "GET",
            f"workspaces/{workspace_id}/messages",
            params={
                "status": _many(status),
                "sandbox_id": sandbox_id,
                "since": since,
                "limit": limit,
            },
        )
        return [Message.model_validate(m) for m in (ans.data or {}).get("messages", [])]

    async def retry(self, message_id: str) -> MessageAction:
        """Re-enqueue a failed delivery (202)."""
        ans = await self._core.request("POST", f"messages/{message_id}/retry")
        return MessageAction.model_validate(ans.data)

    async def approve(self, message_id: str, reason: str | None = None) -> MessageAction:
        ans = await self._core.request(
            "POST", f"messages/{message_id}/approve", json=_body(reason=reason)
        )
        return MessageAction.model_validate(ans.data)

    async def deny(self, message_id: str, reason: str | None = None) -> MessageAction:
        ans = await self._core.request(
            "POST", f"messages/{message_id}/deny", json=_body(reason=reason)
        )
        return MessageAction.model_validate(ans.data)

    async def wait_until(
        self,
        message_id: str,
        status: str | Iterable[str] = ("delivered", "responded"),
        *,
        timeout: float = 60.0,
        interval: float = 0.3,
    ) -> Message:
        """Poll a message until it reaches `status` (raises `WaitTimeout` otherwise)."""
        wanted = {status} if isinstance(status, str) else set(status)
        deadline = time.monotonic() + timeout
        while True:
            message = await self.get(message_id)
            if message.status in wanted:
                return message
            if time.monotonic() >= deadline:
                raise WaitTimeout(
                    f"message {message_id} is {message.status!r} after {timeout:g} s",
                    details={"message_id": message_id, "status": message.status},
                )
            await asyncio.sleep(interval)


# -- collaborations ------------------------------------------------------------------------------


class Collaboration:
    """A handle on one collaboration: its last known state (`info`) and what to do with it.

    `watch()` yields a fresh snapshot each time the collaboration changes (pushed over
    `WS /ws/collaborations/{id}`, with polling as fallback) until it ends; `wait()` returns the
    final state.
    """

    def __init__(self, client: Any, info: CollaborationInfo) -> None:
        self._client = client
        self._core: HTTPCore = client._core
        self.info = info
        #: The 202 answer of `orchestrate()` (None for a handle from `get()`).
        self.started: CollaborationStarted | None = None

    @property
    def id(self) -> str:
        return self.info.collaboration_id

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name == "info":
            raise AttributeError(name)
        return getattr(self.info, name)

    def __repr__(self) -> str:
        return f"Collaboration(id={self.id!r}, status={self.info.status!r})"

    async def refresh(self) -> Collaboration:
        ans = await self._core.request("GET", f"collaborations/{self.id}")
        self.info = CollaborationInfo.model_validate(ans.data)
        return self

    async def cancel(self) -> CollaborationCancelled:
        ans = await self._core.request("POST", f"collaborations/{self.id}/cancel")
        result = CollaborationCancelled.model_validate(ans.data)
        self.info.status = result.status
        return result

    def stream(self, *, last_event_id: int | None = None) -> EventStream:
        """The raw events of `WS /ws/collaborations/{id}` (channel `collaboration`)."""
        return EventStream(
            self._core,
            f"ws/collaborations/{self.id}",
            None,
            last_event_id=last_event_id,
            query_channels=False,
        )

    async def watch(
        self,
        *,
        poll_interval: float = 2.0,
        use_stream: bool = True,
        max_poll_interval: float = 30.0,
        connect_timeout: float = 10.0,
    ) -> AsyncIterator[CollaborationInfo]:
        """Snapshots of the collaboration as it progresses, the first at once, the last when
        it reaches `completed`, `failed` or `cancelled`.

        Watching costs two reads however long the run: the stream `WS /ws/collaborations/{id}`
        is opened first, then the collaboration read once; every later snapshot is built from
        the stream's `collaboration` events (each carries the status, the whole progress, the
        estimate and a version), and the final state is read once more (deliverables, result,
        messages). Each version reaches the caller once, never an older one after a newer.
        Only while the stream cannot be had (refused, unreachable for `connect_timeout`
        seconds) is the collaboration polled: every `poll_interval` seconds, doubling up to
        `max_poll_interval` while nothing changes, waiting out a 429's `Retry-After`; the
        stream is tried again meanwhile and takes over when it connects.
        """
        follower = _Follower(self, poll_interval, max_poll_interval)
        stream = self.stream_for_watch() if use_stream else None
        pending: asyncio.Future[Any] | None = None
        retry_stream_at = float("inf")
        try:
            if stream is not None:
                pending = asyncio.ensure_future(stream.__anext__())
                # Subscribed before the read, so no change between the two is missed.
                connected = asyncio.ensure_future(stream.connected.wait())
                await asyncio.wait({pending, connected}, timeout=connect_timeout)
                connected.cancel()
            await follower.read()
            yield self.info
            if self.info.done:
                return
            while True:
                if stream is not None and pending is not None:
                    live = stream.connected.is_set()
                    done, _ = await asyncio.wait(
                        {pending}, timeout=None if live else follower.interval
                    )
                    if not done:  # no stream yet: poll meanwhile
                        if await follower.poll():
                            yield self.info
                    else:
                        finished, pending = pending, None
                        try:
                            event = finished.result()
                        except (StopAsyncIteration, AInTandemError):
                            await stream.aclose()
                            stream = None  # refused or lost for good: poll, retry it later
                            retry_stream_at = time.monotonic() + max(60.0, max_poll_interval)
                            continue
                        pending = asyncio.ensure_future(stream.__anext__())
                        if event.channel == "collaboration" and follower.apply(event.data):
                            if self.info.done:
                                await follower.read_final()
                            yield self.info
                else:
                    if use_stream and time.monotonic() >= retry_stream_at:
                        stream = self.stream_for_watch()
                        pending = asyncio.ensure_future(stream.__anext__())
                        continue
                    await asyncio.sleep(follower.interval)
                    if await follower.poll():
                        yield self.info
                if self.info.done:
                    return
        finally:
            if pending is not None:
                pending.cancel()
                with contextlib.suppress(BaseException):
                    await pending
            if stream is not None:
                await stream.aclose()

    def stream_for_watch(self) -> EventStream:
        """The stream `watch()` follows (every channel: a collaboration's stream cannot be
        narrowed to its `collaboration` events, the others are skipped), reconnecting and
        resuming after the last event for as long as it takes."""
        return EventStream(
            self._core,
            f"ws/collaborations/{self.id}",
            None,
            max_reconnect_attempts=1_000_000,
            query_channels=False,
        )

    async def wait(
        self,
        *,
        timeout: float | None = None,
        poll_interval: float = 2.0,
        raise_on_failure: bool = True,
    ) -> CollaborationInfo:
        """Wait for the end; raises `CollaborationFailed` on `failed` (unless told not to)
        and `WaitTimeout` after `timeout` seconds."""

        async def run() -> CollaborationInfo:
            async for _ in self.watch(poll_interval=poll_interval):
                pass
            return self.info

        try:
            info = await asyncio.wait_for(run(), timeout)
        except TimeoutError:
            raise WaitTimeout(
                f"collaboration {self.id} still {self.info.status!r} after {timeout:g} s",
                details={"collaboration_id": self.id, "status": self.info.status},
            ) from None
        if raise_on_failure and info.status == "failed":
            err = info.error
            raise CollaborationFailed(
                (err.message if err and err.message else "collaboration failed"),
                code=(err.code if err and err.code else None),
                details={"collaboration_id": self.id},
            )
        return info


_TERMINAL = ("completed", "failed", "cancelled")


def _rank(status: str, progress: Any) -> tuple[bool, int, int]:
    """How far a state is: finished, percentage, steps completed (each only grows)."""
    pct = int(getattr(progress, "percentage", 0) or 0) if progress is not None else 0
    done = len(getattr(progress, "completed_steps", []) or []) if progress is not None else 0
    return (status in _TERMINAL, pct, done)


def _state_key(info: CollaborationInfo) -> str:
    """What makes a snapshot new (the estimate alone does not)."""
    progress = info.progress.model_dump(mode="json") if info.progress else None
    error = info.error.model_dump(mode="json") if info.error else None
    return json.dumps([info.status, progress, info.result, error], sort_keys=True, default=str)


class _Follower:
    """`Collaboration.watch()`'s bookkeeping: snapshots from events, reads, polling back-off."""

    def __init__(self, collab: Collaboration, poll_interval: float, max_interval: float) -> None:
        self.collab = collab
        self.base = max(0.05, poll_interval)
        self.max = max(self.base, max_interval)
        self.interval = self.base
        self.version = 0  # the last version applied from the stream
        self.key = ""

    async def read(self) -> None:
        await self.collab.refresh()
        self.key = _state_key(self.collab.info)
        version = getattr(self.collab.info, "version", None)  # when the server says it
        if isinstance(version, int):
            self.version = version

    async def read_final(self) -> None:
        """The finished state in full (deliverables, messages, completed_at); the version's
        own snapshot stays the one yielded, so the end is reported once."""
        with contextlib.suppress(AInTandemError):
            await self.read()

    async def poll(self) -> bool:
        """One poll; True when the state changed. Back-off doubles while nothing changes."""
        try:
            await self.collab.refresh()
        except RateLimitExceeded as exc:
            self.interval = max(self.interval * 2, float(exc.retry_after or 0), self.base)
            return False
        key = _state_key(self.collab.info)
        if key == self.key:
            self.interval = min(self.interval * 2, self.max)
            return False
        self.key, self.interval = key, self.base
        return True

    def apply(self, data: Any) -> bool:
        """Fold one `collaboration` event into `info`; True when it is a new snapshot (a newer
        version, not behind what was read, not the same state again)."""
        if not isinstance(data, dict):
            return False
        version = data.get("version")
        if isinstance(version, int):
            if version <= self.version:
                return False
            self.version = version
        info = self.collab.info
        body = info.model_dump(by_alias=True)
        body["status"] = data.get("status") or info.status
        if isinstance(data.get("progress"), dict):
            body["progress"] = data["progress"]
            states = data["progress"].get("participants") or {}
            for p in body.get("participants") or []:
                state = states.get(p.get("sandbox_id")) or {}
                for k in ("status", "messages_exchanged"):
                    if k in state:
                        p[k] = state[k]
        if "estimated_completion" in data:
            body["estimated_completion"] = data["estimated_completion"]
        if data.get("result") is not None:
            body["result"] = data["result"]
        new = CollaborationInfo.model_validate(body)
        if _rank(new.status, new.progress) < _rank(info.status, info.progress):
            return False  # an event from before the read: older than what was shown
        key = _state_key(new)
        self.collab.info = new
        if key == self.key:
            return False
        self.key = key
        return True


class CollaborationsResource:
    """Multi-agent collaborations: orchestrate, follow, cancel."""

    def __init__(self, core: HTTPCore, client: Any) -> None:
        self._core = core
        self._client = client

    async def orchestrate(
        self,
        workspace_id: str,
        task: str,
        participants: Sequence[str],
        *,
        collaboration_mode: str = "orchestrated",
        orchestrator: str | None = None,
        timeout: int | None = None,
        deliverables: Sequence[str] | None = None,
        max_turns: int | None = None,
        idempotency_key: str | None = None,
    ) -> Collaboration:
        """Start a collaboration (202) among `participants` (sandbox names or ids).

        `timeout` is in seconds (30-3600); `deliverables` names the texts the collaboration
        must produce (returned in `deliverables` at the end); `max_turns` bounds a
        peer_to_peer conversation.
        """
        ans = await self._core.request(
            "POST",
            f"workspaces/{workspace_id}/collaboration/orchestrate",
            json=_body(
                task=task,
                participants=list(participants),
                collaboration_mode=collaboration_mode,
                orchestrator=orchestrator,
                timeout=timeout,
                deliverables=list(deliverables) if deliverables is not None else None,
                max_turns=max_turns,
            ),
            idempotency_key=idempotency_key,
        )
        started = CollaborationStarted.model_validate(ans.data)
        info = CollaborationInfo.model_validate(
            {
                **started.model_dump(by_alias=True),
                "participants": [{"sandbox_id": sid} for sid in started.participants],
                "workspace_id": workspace_id,
                "task": task,
            }
        )
        collab = Collaboration(self._client, info)
        collab.started = started
        return collab

    def list(
        self,
        workspace_id: str,
        *,
        status: str | Sequence[str] | None = None,
        search: str | None = None,
        order: str | None = None,
        per_page: int = 20,
        limit: int | None = None,
    ) -> Paginator[CollaborationSummary]:
        """A workspace's collaborations (same as `client.workspaces.list_collaborations`)."""
        return self._client.workspaces.list_collaborations(
            workspace_id,
            status=status,
            search=search,
            order=order,
            per_page=per_page,
            limit=limit,
        )

    async def get(self, collaboration_id: str) -> Collaboration:
        ans = await self._core.request("GET", f"collaborations/{collaboration_id}")
        return Collaboration(self._client, CollaborationInfo.model_validate(ans.data))

    async def cancel(self, collaboration_id: str) -> CollaborationCancelled:
        return await self.handle(collaboration_id).cancel()

    def handle(self, collaboration_id: str) -> Collaboration:
        return Collaboration(
            self._client,
            CollaborationInfo(collaboration_id=collaboration_id, status="unknown"),
        )

    def watch(
        self, collaboration_id: str, *, poll_interval: float = 2.0
    ) -> AsyncIterator[CollaborationInfo]:
        return self.handle(collaboration_id).watch(poll_interval=poll_interval)

    async def wait(
        self,
        collaboration_id: str,
        *,
        timeout: float | None = None,
        poll_interval: float = 2.0,
        raise_on_failure: bool = True,
    ) -> CollaborationInfo:
        return await self.handle(collaboration_id).wait(
            timeout=timeout, poll_interval=poll_interval, raise_on_failure=raise_on_failure
        )


# -- system --------------------------------------------------------------------------------------


class SystemResource:
    """`/system`: health and info (no authentication needed)."""

    def __init__(self, core: HTTPCore) -> None:
        self._core = core

    async def health(self) -> SystemHealth:
        """The health report; an unhealthy system (503) is returned too, not raised."""
        try:
            ans = await self._core.request("GET", "system/health", auth=False, max_retries=0)
        except ServiceUnavailable as exc:
            if "status" in exc.details:
                return SystemHealth.model_validate(exc.details)
            raise
        return SystemHealth.model_validate(ans.data)

    async def info(self) -> SystemInfo:
        ans = await self._core.request("GET", "system/info", auth=False)
        return SystemInfo.model_validate(ans.data)
