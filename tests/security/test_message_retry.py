"""`POST /messages/{id}/retry` on the real stack (Temporal dev server, worker, Docker sandboxes).

- A message whose target sandbox was deleted cannot be delivered: the retry answers 409 with
  the reason and leaves the message exactly as it was (it used to answer 202, re-enqueue it and
  fail it again).
- Concurrent retries of one failed message: exactly one re-enqueues it (202); the others get
  409, and the target's inbox receives exactly one new signal (it used to be several 202s).
- A re-enqueue Temporal refuses (503) puts the message back exactly as it was, `failed_at`
  and the reason included.

Every message here fails for real, through its inbox workflow: its target is deleted, or the
workspace's collaboration policy changes while it waits for a stopped target.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import func, inspect, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.app import create_app
from domain.ids import inbox_workflow_id
from store.models import Event, Message
from tests.conftest import Account, app_client, assert_error
from tests.integration.conftest import (  # noqa: F401 (fixtures)
    Stack,
    _delete_test_workspaces,
    eventually,
    stack,
)

pytestmark = [pytest.mark.security, pytest.mark.docker, pytest.mark.temporal]


async def _message(live: Stack, acc: Account, mid: str) -> dict[str, Any]:
    r = await live.client.get(f"/api/v1/messages/{mid}", headers=acc.headers)
    assert r.status_code == 200, r.text
    return dict(r.json()["data"])


async def _row(db: async_sessionmaker[AsyncSession], mid: str) -> dict[str, Any]:
    """The message's stored columns, all of them."""
    async with db() as s:
        m = await s.get(Message, mid)
        assert m is not None
        return {c.key: getattr(m, c.key) for c in inspect(Message).columns}


async def _retry(live: Stack, acc: Account, mid: str) -> Any:
    return await live.client.post(f"/api/v1/messages/{mid}/retry", headers=acc.headers)


async def _queued_for_stopped_target(live: Stack, acc: Account) -> tuple[str, str, str, str]:
    """A workspace with a sender and a stopped target, and a message queued for the target."""
    wid = await live.workspace(acc)
    a = await live.sandbox(acc, wid, name="sender")
    b = await live.sandbox(acc, wid, name="target")
    await live.wait_status(acc, b, "running")
    r = await live.client.post(f"/api/v1/sandboxes/{b}/stop", headers=acc.headers)
    assert r.status_code == 202, r.text
    await live.wait_status(acc, b, "stopped")
    r = await live.client.post(
        f"/api/v1/sandboxes/{a}/messages",
        headers=acc.headers,
        json={"to_sandbox": "target", "message_type": "request", "content": {"task": "t"}},
    )
    assert r.status_code == 202, r.text
    return wid, a, b, str(r.json()["data"]["message_id"])


async def _set_policy(live: Stack, acc: Account, wid: str, policy: dict[str, Any]) -> None:
    r = await live.client.put(
        f"/api/v1/workspaces/{wid}/config",
        headers=acc.headers,
        json={"collaboration_policy": policy},
    )
    assert r.status_code == 200, r.text


async def _failed_by_policy(live: Stack, acc: Account) -> tuple[str, str, str]:
    """A failed message to a running target that a retry can deliver: it failed because the
    policy changed while it waited; the policy then allows it again."""
    wid, a, b, mid = await _queued_for_stopped_target(live, acc)
    deny = {"mode": "deny_list", "rules": [{"from": "sender", "to": "*"}]}
    await _set_policy(live, acc, wid, deny)
    r = await live.client.post(f"/api/v1/sandboxes/{b}/start", headers=acc.headers)
    assert r.status_code == 202, r.text
    failed = await eventually(
        lambda: _message(live, acc, mid), lambda m: m["status"] == "failed", 60, "the failure"
    )
    assert "collaboration policy changed" in failed["status_reason"]
    await _set_policy(live, acc, wid, {"mode": "allow_all", "rules": []})
    await live.wait_status(acc, b, "running")
    return a, b, mid


async def _inbox_signals(live: Stack, target: str) -> int:
    """How many signals the target's inbox workflow has received (signal-with-start included)."""
    handle = live.temporal.client.get_workflow_handle(inbox_workflow_id(target))
    history = await handle.fetch_history()
    return sum(
        1 for ev in history.events if ev.HasField("workflow_execution_signaled_event_attributes")
    )


async def test_retry_to_a_deleted_target_is_409_and_changes_nothing(
    stack: Stack,  # noqa: F811 (the integration fixture, imported above)
    db: async_sessionmaker[AsyncSession],
) -> None:
    acc = await stack.account()
    _, _, b, mid = await _queued_for_stopped_target(stack, acc)
    r = await stack.client.delete(f"/api/v1/sandboxes/{b}", headers=acc.headers)
    assert r.status_code == 204, r.text
    failed = await eventually(
        lambda: _message(stack, acc, mid), lambda m: m["status"] == "failed", 30, "the failure"
    )
    assert "no longer exists" in failed["status_reason"]
    before = await _row(db, mid)

    body = assert_error(await _retry(stack, acc, mid), 409, "MESSAGE_DELIVERY_FAILED")
    assert b in body["error"]["message"] and "no longer exists" in body["error"]["message"]
    assert body["error"]["details"]["reason"] == "target_deleted"
    assert body["error"]["details"]["to_sandbox"] == b
    assert await _row(db, mid) == before
    # Asked again, the same answer: nothing was re-enqueued in between.
    assert_error(await _retry(stack, acc, mid), 409, "MESSAGE_DELIVERY_FAILED")
    assert await _row(db, mid) == before


async def test_concurrent_retries_re_enqueue_once(
    stack: Stack,  # noqa: F811 (the integration fixture, imported above)
    db: async_sessionmaker[AsyncSession],
) -> None:
    acc = await stack.account()
    _, b, mid = await _failed_by_policy(stack, acc)
    signals_before = await _inbox_signals(stack, b)

    responses = await asyncio.gather(*(_retry(stack, acc, mid) for _ in range(5)))
    assert Counter(r.status_code for r in responses) == {202: 1, 409: 4}, [
        r.text for r in responses
    ]
    (won,) = [r.json()["data"] for r in responses if r.status_code == 202]
    assert won["status"] == "queued" and won["attempts"] == 2
    for r in responses:
        if r.status_code == 409:
            body = assert_error(r, 409, "MESSAGE_DELIVERY_FAILED")
            # Refused by the status it read, or by the conditional update it lost.
            assert body["error"]["details"]["status"] in ("queued", "delivered"), body

    delivered = await eventually(
        lambda: _message(stack, acc, mid), lambda m: m["status"] == "delivered", 30, "delivery"
    )
    assert delivered["attempts"] == 2
    assert await _inbox_signals(stack, b) == signals_before + 1  # one new delivery enqueued
    async with db() as s:
        received = await s.scalar(
            select(func.count())
            .select_from(Event)
            .where(
                Event.sandbox_id == b,
                Event.event == "message_received",
                Event.data["message_id"].as_string() == mid,
            )
        )
    assert received == 1
    # Delivered now: not retryable any more.
    assert_error(await _retry(stack, acc, mid), 409, "MESSAGE_DELIVERY_FAILED")


async def test_refused_re_enqueue_restores_the_message_exactly(
    stack: Stack,  # noqa: F811 (the integration fixture, imported above)
    db: async_sessionmaker[AsyncSession],
) -> None:
    acc = await stack.account()
    _, _, mid = await _failed_by_policy(stack, acc)
    before = await _row(db, mid)
    assert before["failed_at"] is not None and before["status_reason"]

    # A real refusal: the API reaches Temporal, which refuses the signal-with-start (the
    # namespace does not exist there).
    refusing = stack.settings.model_copy(update={"temporal_namespace": "aintandem-missing-ns"})
    async with app_client(create_app(refusing)) as client:
        r = await client.post(f"/api/v1/messages/{mid}/retry", headers=acc.headers)
    assert_error(r, 503, "SERVICE_UNAVAILABLE")
    assert await _row(db, mid) == before

    # Not stuck: a retry Temporal accepts goes through.
    r = await _retry(stack, acc, mid)
    assert r.status_code == 202, r.text
    await eventually(
        lambda: _message(stack, acc, mid), lambda m: m["status"] == "delivered", 30, "delivery"
    )
