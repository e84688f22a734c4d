"""Agent-to-agent messaging through the inbox workflows, on the real stack."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import func, select

from config.payload_codec import data_converter
from store.db import create_engine, session_factory
from store.models import Event, Message
from tests.conftest import Account, assert_error
from tests.integration.conftest import Stack, eventually

pytestmark = [pytest.mark.docker, pytest.mark.temporal]


async def _pair(stack: Stack, acc: Account, **ws_settings: Any) -> tuple[str, str, str]:
    wid = await stack.workspace(acc, **ws_settings)
    a = await stack.sandbox(acc, wid, name="frontend-team")
    b = await stack.client.post(
        f"/api/v1/workspaces/{wid}/sandboxes",
        headers=acc.headers,
        json={
            "name": "backend-team",
            "agent_config": {
                "primary_agent": {"name": "backend-architect", "role": "Backend Architect"}
            },
        },
    )
    assert b.status_code == 201, b.text
    bid = b.json()["data"]["sandbox_id"]
    await stack.wait_status(acc, a, "running")
    await stack.wait_status(acc, bid, "running")
    return wid, a, bid


async def _send(
    stack: Stack, acc: Account, sid: str, headers: dict[str, str] | None = None, **body: Any
) -> Any:
    payload = {
        "to_sandbox": "backend-team",
        "message_type": "request",
        "content": {"task": "Design user authentication API"},
        **body,
    }
    return await stack.client.post(
        f"/api/v1/sandboxes/{sid}/messages",
        headers={**acc.headers, **(headers or {})},
        json=payload,
    )


async def _message(stack: Stack, acc: Account, mid: str) -> dict[str, Any]:
    r = await stack.client.get(f"/api/v1/messages/{mid}", headers=acc.headers)
    assert r.status_code == 200, r.text
    return dict(r.json()["data"])


async def test_send_deliver_and_read_back(stack: Stack) -> None:
    acc = await stack.account()
    _, a, b = await _pair(stack, acc)
    r = await _send(stack, acc, a, to_agent="backend-architect", priority=7)
    assert r.status_code == 202, r.text
    accepted = r.json()["data"]
    assert accepted["status"] == "queued" and accepted["message_id"].startswith("msg_")
    mid = accepted["message_id"]
    msg = await eventually(
        lambda: _message(stack, acc, mid), lambda m: m["status"] == "delivered", 20, "delivery"
    )
    assert (
        msg["from_sandbox"] == a
        and msg["to_sandbox"] == b
        and msg["to_agent"] == "backend-architect"
    )
    assert msg["from_agent"] == "lead" and msg["delivered_at"] and msg["response"] is None
    assert msg["content"] == {"task": "Design user authentication API"}

    sent = (
        await stack.client.get(
            f"/api/v1/sandboxes/{a}/messages", headers=acc.headers, params={"direction": "sent"}
        )
    ).json()["data"]
    received = (
        await stack.client.get(
            f"/api/v1/sandboxes/{b}/messages", headers=acc.headers, params={"direction": "received"}
        )
    ).json()["data"]
    assert (
        [m["message_id"] for m in sent["messages"]]
        == [mid]
        == [m["message_id"] for m in received["messages"]]
    )
    assert (
        await stack.client.get(
            f"/api/v1/sandboxes/{a}/messages", headers=acc.headers, params={"direction": "received"}
        )
    ).json()["data"]["meta"]["total"] == 0
    metrics = (
        await stack.client.get(f"/api/v1/sandboxes/{b}/metrics", headers=acc.headers)
    ).json()["data"]
    assert metrics["messaging"]["messages_received"] == 1
    # Exactly one message_received event for the recipient's stream.
    engine = create_engine(stack.settings.resolved_database_url)
    async with session_factory(engine)() as s:
        n = await s.scalar(
            select(func.count())
            .select_from(Event)
            .where(Event.sandbox_id == b, Event.event == "message_received")
        )
    await engine.dispose()
    assert n == 1


async def test_concurrent_sends_are_each_signalled_and_delivered_once(stack: Stack) -> None:
    """The API coalesces the inbox signals of concurrent requests (api/inbox_signals.py): every
    accepted message must reach the inbox exactly once and be delivered exactly once."""
    acc = await stack.account()
    _, a, b = await _pair(stack, acc)
    n = 40
    responses = await asyncio.gather(
        *(_send(stack, acc, a, message_type="notification", content={"n": i}) for i in range(n))
    )
    assert [r.status_code for r in responses] == [202] * n, [r.text for r in responses][:3]
    ids = {r.json()["data"]["message_id"] for r in responses}
    assert len(ids) == n
    engine = create_engine(stack.settings.resolved_database_url)
    sessions = session_factory(engine)

    async def delivered() -> int:
        async with sessions() as s:
            return int(
                await s.scalar(
                    select(func.count())
                    .select_from(Message)
                    .where(Message.id.in_(ids), Message.status == "delivered")
                )
                or 0
            )

    try:
        await eventually(delivered, lambda k: k == n, 30, "every concurrent message delivered")
        async with sessions() as s:
            received = list(
                await s.scalars(
                    select(Event.data["message_id"].as_string()).where(
                        Event.sandbox_id == b, Event.event == "message_received"
                    )
                )
            )
    finally:
        await engine.dispose()
    assert sorted(received) == sorted(ids)  # once each
    # The inbox's history: the signals carried each message once (one by one or coalesced).
    client = stack.temporal.client
    history = await client.get_workflow_handle(f"inbox-{b}").fetch_history()
    carried: list[str] = []
    signals = 0
    for ev in history.events:
        if ev.HasField("workflow_execution_signaled_event_attributes"):
            signals += 1
            attrs = ev.workflow_execution_signaled_event_attributes
            # Encrypted payloads: read them as the worker does.
            arg = (await data_converter(stack.settings).decode_wrapper(attrs.input))[0]
            carried += [e["message_id"] for e in (arg if isinstance(arg, list) else [arg])]
    assert sorted(carried) == sorted(ids)
    print(f"{n} concurrent messages reached the inbox in {signals} signals")


async def test_delivery_waits_for_a_stopped_target_in_priority_order(stack: Stack) -> None:
    acc = await stack.account()
    _, a, b = await _pair(stack, acc)
    await stack.client.post(f"/api/v1/sandboxes/{b}/stop", headers=acc.headers)
    await stack.wait_status(acc, b, "stopped")
    ids = {}
    for prio in (1, 9, 5):
        r = await _send(stack, acc, a, priority=prio, message_type="notification")
        ids[prio] = r.json()["data"]["message_id"]
    assert [(await _message(stack, acc, mid))["status"] for mid in ids.values()] == ["queued"] * 3
    await stack.client.post(f"/api/v1/sandboxes/{b}/start", headers=acc.headers)
    for mid in ids.values():
        await eventually(
            lambda mid=mid: _message(stack, acc, mid),
            lambda m: m["status"] == "delivered",
            30,
            "delivery after the target started",
        )
    engine = create_engine(stack.settings.resolved_database_url)
    async with session_factory(engine)() as s:
        order = list(
            await s.scalars(
                select(Event.data["message_id"].as_string())
                .where(Event.sandbox_id == b, Event.event == "message_received")
                .order_by(Event.id)
            )
        )
    await engine.dispose()
    assert order == [ids[9], ids[5], ids[1]]


async def test_undeliverable_message_fails_then_retry_delivers(stack: Stack) -> None:
    acc = await stack.account()
    _, a, b = await _pair(stack, acc)
    await stack.client.post(f"/api/v1/sandboxes/{b}/stop", headers=acc.headers)
    await stack.wait_status(acc, b, "stopped")
    mid = (await _send(stack, acc, a)).json()["data"]["message_id"]
    failed = await eventually(
        lambda: _message(stack, acc, mid),
        lambda m: m["status"] == "failed",
        60,
        "failure after the bounded wait",
    )
    assert "not running" in failed["status_reason"]
    await stack.client.post(f"/api/v1/sandboxes/{b}/start", headers=acc.headers)
    await stack.wait_status(acc, b, "running")
    r = await stack.client.post(f"/api/v1/messages/{mid}/retry", headers=acc.headers)
    assert r.status_code == 202 and r.json()["data"]["status"] == "queued"
    assert r.json()["data"]["attempts"] == 2
    await eventually(
        lambda: _message(stack, acc, mid),
        lambda m: m["status"] == "delivered",
        20,
        "delivery on retry",
    )
    assert_error(
        await stack.client.post(f"/api/v1/messages/{mid}/retry", headers=acc.headers),
        409,
        "MESSAGE_DELIVERY_FAILED",
    )


async def test_policy_idempotency_broadcast_and_bad_input(stack: Stack) -> None:
    acc = await stack.account()
    other = await stack.account()
    wid, a, b = await _pair(stack, acc)
    c = await stack.sandbox(acc, wid, name="security-team")
    await stack.wait_status(acc, c, "running")

    # Idempotency-Key: a retried POST returns the first answer and sends nothing twice.
    first = await _send(stack, acc, a, headers={"Idempotency-Key": "k-1"})
    again = await _send(stack, acc, a, headers={"Idempotency-Key": "k-1"})
    assert first.json()["data"] == again.json()["data"]
    engine = create_engine(stack.settings.resolved_database_url)
    async with session_factory(engine)() as s:
        n = await s.scalar(
            select(func.count()).select_from(Message).where(Message.from_sandbox_id == a)
        )
    await engine.dispose()
    assert n == 1

    # Broadcast: one delivery per other sandbox.
    r = await stack.client.post(
        f"/api/v1/workspaces/{wid}/broadcast",
        headers=acc.headers,
        json={
            "from_sandbox": a,
            "message_type": "notification",
            "content": {"event": "deployment_completed", "version": "v2.5.0"},
            "priority": 5,
        },
    )
    assert r.status_code == 202, r.text
    bc = r.json()["data"]
    assert bc["broadcast_id"].startswith("bc_") and sorted(bc["recipients"]) == sorted([b, c])
    for mid in bc["message_ids"]:
        await eventually(
            lambda mid=mid: _message(stack, acc, mid),
            lambda m: m["status"] == "delivered",
            20,
            "broadcast delivery",
        )

    # Policy: allow_list with one rule; the rest is refused with 403 before anything is queued.
    r = await stack.client.put(
        f"/api/v1/workspaces/{wid}/config",
        headers=acc.headers,
        json={
            "collaboration_policy": {
                "mode": "allow_list",
                "rules": [
                    {"from": "frontend-team", "to": ["backend-team"], "message_types": ["request"]}
                ],
            }
        },
    )
    assert r.status_code == 200, r.text
    assert (await _send(stack, acc, a)).status_code == 202
    assert_error(await _send(stack, acc, a, message_type="command"), 403, "AUTHORIZATION_FAILED")
    assert_error(
        await _send(stack, acc, a, to_sandbox="security-team"), 403, "AUTHORIZATION_FAILED"
    )
    assert_error(await _send(stack, acc, c), 403, "AUTHORIZATION_FAILED")

    assert_error(await _send(stack, acc, a, to_sandbox="frontend-team"), 422, "VALIDATION_ERROR")
    assert_error(await _send(stack, acc, a, to_sandbox="nobody"), 404, "RESOURCE_NOT_FOUND")
    assert_error(await _send(stack, acc, a, to_agent="ghost"), 422, "VALIDATION_ERROR")
    for bad in (
        {"priority": 10},
        {"timeout": 0},
        {"message_type": "gossip"},
        {"content": "text"},
        {"content": {"k": "nul\x00"}},
        {"unexpected": 1},
    ):
        assert_error(await _send(stack, acc, a, **bad), 422, "VALIDATION_ERROR")
    mid = first.json()["data"]["message_id"]
    assert_error(
        await stack.client.get(f"/api/v1/messages/{mid}", headers=other.headers),
        404,
        "RESOURCE_NOT_FOUND",
    )
    assert_error(await _send(stack, other, a), 404, "RESOURCE_NOT_FOUND")
    assert_error(
        await stack.client.get("/api/v1/messages/msg_doesnotexi", headers=acc.headers),
        404,
        "RESOURCE_NOT_FOUND",
    )


async def _approval_workspace(stack: Stack, acc: Account) -> tuple[str, str, str]:
    wid, a, b = await _pair(stack, acc)
    r = await stack.client.put(
        f"/api/v1/workspaces/{wid}/config",
        headers=acc.headers,
        json={
            "collaboration_policy": {
                "mode": "allow_list",
                "rules": [
                    {"from": "frontend-team", "to": "backend-team", "approval_required": True}
                ],
            }
        },
    )
    assert r.status_code == 200, r.text
    return wid, a, b


async def test_approval_approve_and_deny(stack: Stack) -> None:
    acc = await stack.account()
    _, a, _b = await _approval_workspace(stack, acc)
    held = (await _send(stack, acc, a)).json()["data"]
    assert held["status"] == "pending_approval"
    await asyncio.sleep(0.5)
    assert (await _message(stack, acc, held["message_id"]))["status"] == "pending_approval"
    r = await stack.client.post(
        f"/api/v1/messages/{held['message_id']}/approve", headers=acc.headers
    )
    assert r.status_code == 202, r.text
    assert r.json()["data"]["status"] == "queued"
    await eventually(
        lambda: _message(stack, acc, held["message_id"]),
        lambda m: m["status"] == "delivered",
        20,
        "delivery after approval",
    )
    assert_error(
        await stack.client.post(f"/api/v1/messages/{held['message_id']}/deny", headers=acc.headers),
        409,
        "MESSAGE_DELIVERY_FAILED",
    )

    denied = (await _send(stack, acc, a)).json()["data"]
    r = await stack.client.post(
        f"/api/v1/messages/{denied['message_id']}/deny",
        headers=acc.headers,
        json={"reason": "not now"},
    )
    assert r.status_code == 202 and r.json()["data"]["status"] == "failed"
    m = await _message(stack, acc, denied["message_id"])
    assert (
        m["status"] == "failed" and "denied by the workspace owner: not now" in m["status_reason"]
    )
    # Someone else cannot decide for the owner.
    other = await stack.account()
    third = (await _send(stack, acc, a)).json()["data"]
    assert_error(
        await stack.client.post(
            f"/api/v1/messages/{third['message_id']}/approve", headers=other.headers
        ),
        404,
        "RESOURCE_NOT_FOUND",
    )


async def test_unanswered_approval_expires(stack: Stack, tmp_path: Any) -> None:
    from api.app import create_app
    from tests.conftest import app_client, new_account

    settings = stack.settings.model_copy(
        update={"message_approval_timeout_seconds": 1.0, "data_dir": tmp_path}
    )
    async with app_client(create_app(settings)) as client:
        acc = await new_account(client)
        quick = Stack(settings, client, stack.docker, stack.temporal)
        _, a, _b = await _approval_workspace(quick, acc)
        held = (await _send(quick, acc, a)).json()["data"]
        m = await eventually(
            lambda: _message(quick, acc, held["message_id"]),
            lambda m: m["status"] == "failed",
            20,
            "expiry",
        )
        assert "approval expired" in m["status_reason"]
        for owner, wid in quick.created:  # this app's tokens: clean up here, not in the fixture
            await client.delete(f"/api/v1/workspaces/{wid}", headers=owner.headers)


async def test_policy_change_in_flight_fails_the_message(stack: Stack) -> None:
    from prometheus_client import REGISTRY

    acc = await stack.account()
    wid, a, b = await _pair(stack, acc)
    await stack.client.post(f"/api/v1/sandboxes/{b}/stop", headers=acc.headers)
    await stack.wait_status(acc, b, "stopped")
    mid = (await _send(stack, acc, a)).json()["data"]["message_id"]  # allowed when sent
    r = await stack.client.put(
        f"/api/v1/workspaces/{wid}/config",
        headers=acc.headers,
        json={
            "collaboration_policy": {
                "mode": "deny_list",
                "rules": [{"from": "frontend-team", "to": "*"}],
            }
        },
    )
    assert r.status_code == 200
    denied_before = (
        REGISTRY.get_sample_value("aintandem_delivery_messages_total", {"outcome": "denied"}) or 0
    )
    await stack.client.post(f"/api/v1/sandboxes/{b}/start", headers=acc.headers)
    m = await eventually(
        lambda: _message(stack, acc, mid),
        lambda m: m["status"] == "failed",
        30,
        "failure by the changed policy",
    )
    assert "collaboration policy changed" in m["status_reason"]
    assert (
        REGISTRY.get_sample_value("aintandem_delivery_messages_total", {"outcome": "denied"}) or 0
    ) == denied_before + 1
    assert (REGISTRY.get_sample_value("aintandem_delivery_latency_seconds_count") or 0) > 0
