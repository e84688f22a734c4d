"""Accepting a message when Temporal takes the connection but refuses the enqueue: the request
answers 503 and leaves nothing behind (no message row, no stored Idempotency-Key answer), so the
client's retry with the same key really sends."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from api.app import create_app
from config.settings import Settings
from store.db import create_engine, session_factory
from store.models import IdempotencyKey, Message, Sandbox
from tests.conftest import app_client, assert_error, new_account


class Temporal:
    """Stands in for the API's connected Temporal client: refuses every start_workflow (the
    inbox signal-with-start) until `accept` is set, then records them."""

    def __init__(self) -> None:
        self.accept = False
        self.started: list[dict[str, Any]] = []

    async def start_workflow(self, *args: Any, **kwargs: Any) -> None:
        if not self.accept:
            raise RuntimeError("Temporal refused the signal")
        self.started.append(kwargs)


@pytest.mark.parametrize("route", ["send", "broadcast"])
async def test_refused_enqueue_is_a_503_that_leaves_nothing_behind(
    settings: Settings, route: str
) -> None:
    app = create_app(settings)
    temporal = Temporal()
    engine = create_engine(settings.resolved_database_url)
    sessions = session_factory(engine)
    try:
        async with app_client(app) as client:
            app.state.aintandem.temporal._client = temporal  # "connected"; enqueues refused
            acc = await new_account(client)
            r = await client.post("/api/v1/workspaces", headers=acc.headers, json={"name": "w"})
            wid = r.json()["data"]["workspace_id"]
            suffix = route[:4]
            a, b = f"sb_{suffix}acc001", f"sb_{suffix}acc002"
            async with sessions() as s:
                s.add_all(
                    [
                        Sandbox(id=a, workspace_id=wid, name="a"),
                        Sandbox(id=b, workspace_id=wid, name="b"),
                    ]
                )
                await s.commit()

            async def post() -> Any:
                headers = {**acc.headers, "Idempotency-Key": f"key-{route}"}
                if route == "send":
                    return await client.post(
                        f"/api/v1/sandboxes/{a}/messages",
                        headers=headers,
                        json={"to_sandbox": b, "message_type": "notification", "content": {}},
                    )
                return await client.post(
                    f"/api/v1/workspaces/{wid}/broadcast",
                    headers=headers,
                    json={"from_sandbox": a, "message_type": "notification", "content": {}},
                )

            assert_error(await post(), 503, "SERVICE_UNAVAILABLE")
            async with sessions() as s:
                rows = await s.scalar(
                    select(func.count()).select_from(Message).where(Message.workspace_id == wid)
                )
                keys = await s.scalar(
                    select(func.count())
                    .select_from(IdempotencyKey)
                    .where(IdempotencyKey.user_id == acc.user_id)
                )
            assert (rows, keys) == (0, 0)

            temporal.accept = True  # Temporal is back: the retry with the same key sends
            retried = await post()
            assert retried.status_code == 202, retried.text
            async with sessions() as s:
                stored = list(
                    await s.scalars(select(Message.id).where(Message.workspace_id == wid))
                )
            assert len(stored) == 1 and len(temporal.started) == 1
            data = retried.json()["data"]
            assert stored == [data["message_id"] if route == "send" else data["message_ids"][0]]
    finally:
        await engine.dispose()
