"""Messaging under faults: a worker SIGKILLed with hundreds of messages in flight, and replay."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from temporalio.worker import Replayer

from api.app import create_app
from config.payload_codec import data_converter
from domain.ids import inbox_workflow_id, message_workflow_id
from store.db import create_engine, session_factory
from store.models import Event, Message
from tests.conftest import app_client, make_settings, new_account, temporal_address
from tests.integration.conftest import Stack, eventually
from tests.integration.test_sandbox_durability import _start_worker
from tests.live_stack import free_port
from workflows.inbox import InboxWorkflow
from workflows.message_delivery import MessageDeliveryWorkflow

pytestmark = [pytest.mark.docker, pytest.mark.temporal]
IN_FLIGHT = 200


async def _counts(database_url: str, sandbox_id: str) -> tuple[int, int, int]:
    engine = create_engine(database_url)
    async with session_factory(engine)() as s:
        delivered = await s.scalar(
            select(func.count())
            .select_from(Message)
            .where(Message.to_sandbox_id == sandbox_id, Message.status == "delivered")
        )
        failed = await s.scalar(
            select(func.count())
            .select_from(Message)
            .where(Message.to_sandbox_id == sandbox_id, Message.status == "failed")
        )
        received = await s.scalar(
            select(func.count())
            .select_from(Event)
            .where(Event.sandbox_id == sandbox_id, Event.event == "message_received")
        )
    await engine.dispose()
    return delivered or 0, failed or 0, received or 0


@pytest.mark.chaos
async def test_worker_sigkill_with_messages_in_flight_delivers_each_exactly_once(
    database_url: str, tmp_path: Path, temporal_env: Any
) -> None:
    settings = make_settings(
        database_url,
        tmp_path,
        temporal_address=temporal_address(temporal_env),
        task_queue=f"chaos-{uuid.uuid4().hex[:8]}",
        sandbox_health_interval_seconds=2.0,
    )
    env = {
        **os.environ,
        "AINTANDEM_DATABASE_URL": database_url,
        "AINTANDEM_TEMPORAL_ADDRESS": settings.resolved_temporal_address,
        "AINTANDEM_TASK_QUEUE": settings.task_queue,
        "AINTANDEM_DATA_DIR": str(tmp_path),
        "AINTANDEM_WORKER_METRICS_PORT": str(free_port()),
    }
    first = _start_worker(env, tmp_path / "worker1.log")
    second = None
    try:
        async with app_client(create_app(settings)) as client:
            acc = await new_account(client)
            wid = (
                await client.post("/api/v1/workspaces", json={"name": "chaos"}, headers=acc.headers)
            ).json()["data"]["workspace_id"]
            ids = []
            for name in ("sender", "receiver"):
                r = await client.post(
                    f"/api/v1/workspaces/{wid}/sandboxes",
                    headers=acc.headers,
                    json={
                        "name": name,
                        "agent_config": {"primary_agent": {"name": "a", "role": "r"}},
                    },
                )
                ids.append(r.json()["data"]["sandbox_id"])
            a, b = ids

            async def status(sid: str) -> str:
                return str(
                    (await client.get(f"/api/v1/sandboxes/{sid}", headers=acc.headers)).json()[
                        "data"
                    ]["status"]
                )

            for sid in ids:
                await eventually(
                    lambda sid=sid: status(sid), lambda s: s == "running", 90, "running"
                )

            async def send(i: int) -> httpx.Response:
                return await client.post(
                    f"/api/v1/sandboxes/{a}/messages",
                    headers=acc.headers,
                    json={
                        "to_sandbox": b,
                        "message_type": "notification",
                        "content": {"n": i},
                        "priority": i % 10,
                    },
                )

            half = IN_FLIGHT // 2
            sent = list(await asyncio.gather(*(send(i) for i in range(half))))
            first.send_signal(signal.SIGKILL)  # mid-delivery of the first half
            first.wait(10)
            # Accepted while no worker runs at all: durably queued in Temporal and the database.
            sent += await asyncio.gather(*(send(i) for i in range(half, IN_FLIGHT)))
            assert all(r.status_code == 202 for r in sent), [
                r.text for r in sent if r.status_code != 202
            ][:3]
            delivered_before, _, _ = await _counts(database_url, b)
            assert delivered_before < IN_FLIGHT
            env["AINTANDEM_WORKER_METRICS_PORT"] = str(free_port())
            second = _start_worker(env, tmp_path / "worker2.log")
            await eventually(
                lambda: _counts(database_url, b),
                lambda c: c[0] == IN_FLIGHT,
                120,
                f"all {IN_FLIGHT} delivered (before the kill: {delivered_before})",
            )
            delivered, failed, received = await _counts(database_url, b)
            assert (delivered, failed, received) == (IN_FLIGHT, 0, IN_FLIGHT)
            engine = create_engine(database_url)
            async with session_factory(engine)() as s:
                distinct = await s.scalar(
                    select(func.count(func.distinct(Event.data["message_id"].as_string()))).where(
                        Event.sandbox_id == b, Event.event == "message_received"
                    )
                )
            await engine.dispose()
            assert distinct == IN_FLIGHT  # one event per message: none twice, none missing
            for sid in ids:
                await client.delete(f"/api/v1/sandboxes/{sid}", headers=acc.headers)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(30)


async def test_inbox_and_delivery_histories_replay(stack: Stack) -> None:
    acc = await stack.account()
    wid = await stack.workspace(acc)
    a = await stack.sandbox(acc, wid, name="one")
    b = await stack.sandbox(acc, wid, name="two")
    await stack.wait_status(acc, a, "running")
    await stack.wait_status(acc, b, "running")
    await stack.client.put(
        f"/api/v1/workspaces/{wid}/config",
        headers=acc.headers,
        json={
            "collaboration_policy": {
                "mode": "allow_all",
                "rules": [
                    {
                        "from": "one",
                        "to": "two",
                        "message_types": ["command"],
                        "approval_required": True,
                    }
                ],
            }
        },
    )
    for prio in (3, 8):
        r = await stack.client.post(
            f"/api/v1/sandboxes/{a}/messages",
            headers=acc.headers,
            json={
                "to_sandbox": b,
                "message_type": "notification",
                "content": {"p": prio},
                "priority": prio,
            },
        )
        assert r.status_code == 202
    held = (
        await stack.client.post(
            f"/api/v1/sandboxes/{a}/messages",
            headers=acc.headers,
            json={"to_sandbox": b, "message_type": "command", "content": {"do": "x"}},
        )
    ).json()["data"]
    assert held["status"] == "pending_approval"
    await stack.client.post(f"/api/v1/messages/{held['message_id']}/approve", headers=acc.headers)

    async def status(mid: str) -> str:
        return str(
            (await stack.client.get(f"/api/v1/messages/{mid}", headers=acc.headers)).json()["data"][
                "status"
            ]
        )

    await eventually(
        lambda: status(held["message_id"]), lambda s: s == "delivered", 20, "delivered"
    )
    client = stack.temporal.client
    delivery = client.get_workflow_handle(message_workflow_id(held["message_id"]))
    await delivery.result()
    inbox = client.get_workflow_handle(inbox_workflow_id(b))
    replayer = Replayer(
        workflows=[InboxWorkflow, MessageDeliveryWorkflow],
        data_converter=data_converter(stack.settings),  # the worker's: payloads are encrypted
    )
    await replayer.replay_workflow(await delivery.fetch_history())
    await replayer.replay_workflow(await inbox.fetch_history())


async def test_a_message_whose_signal_was_lost_is_requeued(stack: Stack) -> None:
    """The API died between committing the row and signalling the inbox: the sweep recovers it."""
    from datetime import timedelta

    from domain.ids import Prefix, new_id
    from store.models import Sandbox
    from worker.maintenance import requeue_stale_messages

    acc = await stack.account()
    wid = await stack.workspace(acc)
    a = await stack.sandbox(acc, wid, name="one")
    b = await stack.sandbox(acc, wid, name="two")
    await stack.wait_status(acc, b, "running")
    engine = create_engine(stack.settings.resolved_database_url)
    sessions = session_factory(engine)
    mid = new_id(Prefix.MESSAGE)
    async with sessions() as s:
        assert await s.get(Sandbox, a) is not None
        s.add(
            Message(
                id=mid,
                workspace_id=wid,
                from_sandbox_id=a,
                to_sandbox_id=b,
                message_type="notification",
                content={"lost": True},
                status="queued",
            )
        )
        await s.commit()
    requeued = await requeue_stale_messages(
        stack.temporal.client, stack.settings, sessions, older_than=timedelta(0)
    )
    assert requeued >= 1
    msg = await eventually(
        lambda: stack.client.get(f"/api/v1/messages/{mid}", headers=acc.headers),
        lambda r: r.json()["data"]["status"] == "delivered",
        20,
        "recovered delivery",
    )
    assert msg.json()["data"]["delivered_at"]
    # Sweeping again changes nothing: no second delivery event.
    await requeue_stale_messages(
        stack.temporal.client, stack.settings, sessions, older_than=timedelta(0)
    )
    await asyncio.sleep(1)
    async with sessions() as s:
        n = await s.scalar(
            select(func.count())
            .select_from(Event)
            .where(
                Event.sandbox_id == b,
                Event.event == "message_received",
                Event.data["message_id"].as_string() == mid,
            )
        )
    await engine.dispose()
    assert n == 1
