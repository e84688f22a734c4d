"""The async SDK against the real stack: auth, workspaces, sandboxes, messages, errors, streams."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
from aintandem import (
    AInTandemClient,
    AuthenticationFailed,
    LoginResult,
    Message,
    ResourceAlreadyExists,
    ResourceNotFound,
    Sandbox,
    SandboxNotReady,
    StreamEvent,
    ValidationError,
    Workspace,
)
from aintandem._version import __version__

from tests.live_stack import Stack
from tests.sdk.conftest import Account, register, running_sandbox

pytestmark = pytest.mark.e2e


async def test_register_login_logout_and_bearer_token(stack: Stack) -> None:
    account = await register(stack.api_url)
    async with AInTandemClient(stack.api_url) as anon:
        result = await anon.auth.login(account.email, account.password)
        assert isinstance(result, LoginResult)
        assert result.user.email == account.email
        assert anon.access_token == result.access_token
        ws = await anon.workspaces.create(name="from-login")

        # The access token alone (api_key) is enough to call the API.
        async with AInTandemClient(stack.api_url, api_key=result.access_token) as keyed:
            assert (await keyed.workspaces.get(ws.id)).name == "from-login"

            await anon.auth.logout()
            assert anon.access_token is None
            # Logout revokes the session: the same token now fails, and an api_key client
            # has nothing to renew it with.
            with pytest.raises(AuthenticationFailed) as err:
                await keyed.workspaces.get(ws.id)
            assert err.value.status == 401
            assert err.value.request_id


async def test_wrong_password_is_authentication_failed(stack: Stack, account: Account) -> None:
    async with AInTandemClient(stack.api_url, email=account.email, password="wrong-password") as c:
        with pytest.raises(AuthenticationFailed) as err:
            await c.workspaces.list().to_list()
        assert err.value.code == "AUTHENTICATION_FAILED"


async def test_explicit_refresh_rotates_tokens(client: AInTandemClient) -> None:
    await client.workspaces.list().page(1)  # logs in
    before = (client.access_token, client.refresh_token)
    result = await client.auth.refresh()
    assert result.access_token == client.access_token
    assert (client.access_token, client.refresh_token) != before
    assert client.refresh_token == result.refresh_token
    await client.workspaces.list().page(1)  # the new token works


async def test_workspace_crud(client: AInTandemClient) -> None:
    ws = await client.workspaces.create(
        name="crud", description="SDK test", settings={"max_sandboxes": 3}
    )
    assert isinstance(ws, Workspace)
    assert ws.id.startswith("ws_") and ws.settings and ws.settings.max_sandboxes == 3
    got = await client.workspaces.get(ws.id)
    assert got.sandboxes == [] and got.sandbox_count == 0
    updated = await client.workspaces.update(ws.id, name="crud-2", settings={"max_sandboxes": 4})
    assert updated.name == "crud-2" and updated.settings.max_sandboxes == 4  # type: ignore[union-attr]

    config = await client.workspaces.get_config(ws.id)
    assert config.workspace_id == ws.id and config.collaboration_policy["mode"] == "allow_all"
    config = await client.workspaces.update_config(
        ws.id,
        collaboration_policy={"mode": "deny_list", "rules": [{"from": "a", "to": "b"}]},
    )
    assert config.collaboration_policy["mode"] == "deny_list"
    assert (await client.workspaces.get_config(ws.id)).collaboration_policy["mode"] == "deny_list"

    metrics = await client.workspaces.metrics(ws.id, granularity="minute")
    assert metrics.workspace_id == ws.id and metrics.period["granularity"] == "minute"
    assert await client.workspaces.discover_agents(ws.id) == []

    await client.workspaces.delete(ws.id)
    with pytest.raises(ResourceNotFound):
        await client.workspaces.get(ws.id)


async def test_list_auto_paginates_across_pages(stack: Stack) -> None:
    account = await register(stack.api_url)  # a user with exactly the workspaces made here
    async with AInTandemClient(stack.api_url, email=account.email, password=account.password) as c:
        made = [(await c.workspaces.create(name=f"page-{i}")).id for i in range(5)]
        paginator = c.workspaces.list(per_page=2)
        seen = [ws.id async for ws in paginator]
        assert sorted(seen) == sorted(made)  # every item once, none lost between pages
        assert len(seen) == len(set(seen))
        assert paginator.pages_fetched == 3  # 2 + 2 + 1
        first = await c.workspaces.list(per_page=2).page(1)
        assert first.meta.total == 5 and first.meta.total_pages == 3 and first.meta.has_next
        assert [w.id for w in await c.workspaces.list(per_page=100)] == seen
        asc = await c.workspaces.list(per_page=2, order="asc")
        assert [w.id for w in asc] == list(reversed(seen))
        assert [w.name for w in await c.workspaces.list(search="page-3")] == ["page-3"]


async def test_sandbox_lifecycle_through_the_sandbox_object(
    client: AInTandemClient, workspace: Workspace
) -> None:
    sandbox = await client.sandboxes.create(
        workspace.id,
        name="lifecycle",
        agent_config={"primary_agent": {"name": "dev", "role": "Developer"}},
        resources={"memory_mb": 256, "cpu_cores": 0.5},
        environment_variables={"MODE": "test"},
    )
    assert isinstance(sandbox, Sandbox)
    assert sandbox.id.startswith("sb_") and sandbox.status == "provisioning"
    await sandbox.start()  # already on its way up: start() leaves it be
    await sandbox.wait_until("running", timeout=90)
    assert sandbox.health is not None

    status = await sandbox.get_status()
    assert status.status == "running" and status.resources["memory_mb"]["allocated"] == 256
    metrics = await sandbox.get_metrics()
    assert metrics.sandbox_id == sandbox.id and "messages_sent" in metrics.messaging
    config = await sandbox.get_config()
    assert config.environment_variables == {"MODE": "test"}
    config = await sandbox.update_config(resources={"memory_mb": 384})
    assert config.resources["memory_mb"] == 384

    listed = await client.workspaces.list_sandboxes(workspace.id)
    assert [s.id for s in listed] == [sandbox.id]
    assert [s.id for s in await client.sandboxes.list(workspace.id, status="running")] == [
        sandbox.id
    ]

    stopping = await sandbox.stop()
    assert stopping.status == "stopping"
    await sandbox.wait_until("stopped", timeout=60)
    with pytest.raises(SandboxNotReady) as err:
        await sandbox.stop()  # a stopped sandbox cannot stop: the server's 409
    assert err.value.status == 409

    await sandbox.start()
    await sandbox.wait_until("running", timeout=90)
    await sandbox.restart()
    await sandbox.wait_until("running", timeout=90)
    # Log lines are collected by the health loop (every 2 s here): poll for them.
    for _ in range(60):
        logs = await sandbox.get_logs(limit=50)
        if any("started" in line.message.lower() for line in logs.logs):
            break
        await asyncio.sleep(0.5)
    else:
        raise AssertionError(f"no start line in the logs: {logs}")

    with pytest.raises(ResourceAlreadyExists):
        await client.sandboxes.create(
            workspace.id,
            name="lifecycle",
            agent_config={"primary_agent": {"name": "x", "role": "y"}},
        )

    await sandbox.delete()
    with pytest.raises(ResourceNotFound):
        await sandbox.refresh()


async def test_send_message_get_messages_and_stream(
    client: AInTandemClient, workspace: Workspace
) -> None:
    sender, target = await asyncio.gather(
        running_sandbox(client, workspace.id, "sender"),
        running_sandbox(client, workspace.id, "target"),
    )
    async with target.stream(["messages"]) as events:
        # Subscribe first, then send: the frame must arrive live, not from a replay.
        waiter = asyncio.ensure_future(events.__anext__())
        await asyncio.wait_for(events.connected.wait(), 10)
        accepted = await sender.send_message(
            to="target", content={"task": "Design the auth API"}, priority=7
        )
        assert accepted.status == "queued" and accepted.id.startswith("msg_")
        event = await asyncio.wait_for(waiter, 30)
        assert isinstance(event, StreamEvent)
        assert event.channel == "messages" and event.id is not None
        assert event.data["message_id"] == accepted.id
        assert event.data["content"] == {"task": "Design the auth API"}

    delivered = await client.messages.wait_until(accepted.id, "delivered", timeout=30)
    assert isinstance(delivered, Message) and delivered.to_sandbox == target.id
    sent = await sender.get_messages(direction="sent")
    assert [m.id for m in sent] == [accepted.id] and sent[0].priority == 7
    received = await target.get_messages(direction="received")
    assert [m.id for m in received] == [accepted.id]
    assert await target.get_messages(direction="sent") == []

    text = await sender.send_message(
        to=target.id, content="plain text", message_type="notification"
    )
    assert (await client.messages.get(text.id)).content == {"text": "plain text"}

    result = await client.workspaces.broadcast(
        workspace.id, from_sandbox=sender.id, content={"event": "deployed"}
    )
    assert result.recipients == [target.id] and len(result.message_ids) == 1

    agents = await client.workspaces.discover_agents(workspace.id, role="engineer")
    assert {a.sandbox_id for a in agents} == {sender.id, target.id}


async def test_stream_resumes_after_a_dropped_connection(
    client: AInTandemClient, workspace: Workspace
) -> None:
    sandbox = await running_sandbox(client, workspace.id, "streamer")
    # Replay from the start: the lifecycle events written while it came up.
    async with sandbox.stream(["events"], last_event_id=0) as events:
        first = await asyncio.wait_for(events.__anext__(), 30)
        assert first.channel == "events" and first.data["sandbox_id"] == sandbox.id
        resume_from = events.last_event_id
        assert resume_from == first.id

    # A later stream resuming from that id sees what happened since, in order, each once.
    await sandbox.stop()
    await sandbox.wait_until("stopped", timeout=60)
    async with sandbox.stream(["events"], last_event_id=resume_from) as events:
        statuses: list[str] = []
        ids: list[int] = []
        async for event in events:
            ids.append(event.id)  # type: ignore[arg-type]
            statuses.append(event.data["status"])
            if event.data["status"] == "stopped":
                break
    assert ids == sorted(set(ids)) and all(i > resume_from for i in ids)  # type: ignore[operator]
    assert statuses[-2:] == ["stopping", "stopped"]


async def test_stream_of_a_foreign_sandbox_is_refused(
    stack: Stack, client: AInTandemClient
) -> None:
    with pytest.raises(ResourceNotFound):
        async with client.sandboxes.stream("sb_0000000000", ["events"]) as events:
            await asyncio.wait_for(events.__anext__(), 20)


async def test_errors_carry_code_status_details_and_request_id(client: AInTandemClient) -> None:
    with pytest.raises(ResourceNotFound) as nf:
        await client.workspaces.get("ws_abcdefghij")
    assert nf.value.status == 404 and nf.value.code == "RESOURCE_NOT_FOUND"
    uuid.UUID(nf.value.request_id)  # type: ignore[arg-type]
    assert nf.value.details == {"resource": "workspace", "id": "ws_abcdefghij"}

    with pytest.raises(ValidationError) as bad:
        await client.workspaces.create(name="", settings={"max_sandboxes": 0})
    assert bad.value.status == 422 and bad.value.code == "VALIDATION_ERROR"
    fields = {f["field"] for f in bad.value.fields}
    assert {"name", "settings.max_sandboxes"} <= fields
    assert bad.value.request_id

    with pytest.raises(ResourceNotFound):
        await client.messages.get("msg_0000000000")


async def test_every_request_carries_request_id_client_version_and_post_idempotency(
    stack: Stack, account: Account
) -> None:
    """What the SDK puts on the wire, seen by a recording transport in front of the real API."""
    seen: list[httpx.Request] = []
    real = httpx.AsyncHTTPTransport()

    class Recording(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            seen.append(request)
            return await real.handle_async_request(request)

        async def aclose(self) -> None:
            await real.aclose()

    async with AInTandemClient(
        stack.api_url, email=account.email, password=account.password, transport=Recording()
    ) as c:
        ws = await c.workspaces.create(name="headers")
        await c.workspaces.delete(ws.id)
    assert [r.method for r in seen] == ["POST", "POST", "DELETE"]  # login, create, delete
    for r in seen:
        uuid.UUID(r.headers["x-request-id"])
        assert r.headers["x-client-version"] == __version__
    assert all(uuid.UUID(r.headers["idempotency-key"]) for r in seen if r.method == "POST")
    assert "idempotency-key" not in seen[2].headers
    assert seen[1].headers["authorization"].startswith("Bearer ")
