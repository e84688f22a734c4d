"""The Temporal UI as the operators' console (issue #14, item 4): a failed delivery is a *failed*
workflow that one documented query finds — through the UI's own HTTP API, the calls the UI
makes — and `POST /messages/{id}/retry` delivers it again as a new run of the same workflow.

The dev server runs exactly as `aintandem up` runs it (UI on); the agent's provider answers 401
(a revoked key), so the turn fails at once and for good.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import httpx
import pytest
from temporalio.client import Client

from store.migrate import upgrade
from tests.cleanup import remove_installation_sandboxes
from tests.conftest import make_settings, new_account
from tests.integration.conftest import eventually
from tests.security.test_payload_codec import TemporalUI, platform, temporal_ui  # noqa: F401
from tests.unit.test_llm_providers import FakeProvider, error_body, fake_server  # noqa: F401

pytestmark = [pytest.mark.docker, pytest.mark.temporal]

# What the README's "Operating with the Temporal UI" section tells operators to type.
FAILED_DELIVERIES = 'AintandemMessageStatus = "failed" AND AintandemWorkspaceId = "{wid}"'


async def _ui_find(ui: httpx.AsyncClient, query: str) -> dict[str, str]:
    """Workflow id → status, as the UI's workflow list shows them (its own HTTP API)."""
    r = await ui.get("/api/v1/namespaces/default/workflows", params={"query": query})
    assert r.status_code == 200, r.text
    return {e["execution"]["workflowId"]: e["status"] for e in r.json().get("executions") or []}


async def test_a_failed_delivery_is_found_in_the_ui_and_retried(
    temporal_ui: TemporalUI,  # noqa: F811
    tmp_path: Path,
    fake_server: FakeProvider,  # noqa: F811
) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'aintandem.db'}"
    await asyncio.to_thread(upgrade, database_url)
    settings = make_settings(
        database_url,
        tmp_path,
        temporal_address=temporal_ui.address,
        task_queue=f"ops-{uuid.uuid4().hex[:8]}",
    )
    fake = fake_server
    fake.reset()
    fake.responder = lambda _body: _revoked()
    raw = await Client.connect(temporal_ui.address)
    workspaces: list[str] = []
    try:
        async with (
            platform(settings, raw) as api,
            httpx.AsyncClient(base_url=temporal_ui.ui, timeout=30) as ui,
        ):
            acc = await new_account(api)
            h = acc.headers
            r = await api.post("/api/v1/workspaces", headers=h, json={"name": "ops"})
            wid = r.json()["data"]["workspace_id"]
            workspaces.append(wid)
            provider = {"name": "openai", "api_key": "sk-revoked", "base_url": f"{fake.base}/v1"}
            r = await api.put(
                f"/api/v1/workspaces/{wid}/config", headers=h, json={"llm_providers": [provider]}
            )
            assert r.status_code == 200, r.text
            ids = []
            for name in ("front", "back"):
                r = await api.post(
                    f"/api/v1/workspaces/{wid}/sandboxes",
                    headers=h,
                    json={
                        "name": name,
                        "agent_config": {"primary_agent": {"name": name, "role": "Engineer"}},
                    },
                )
                assert r.status_code == 201, r.text
                ids.append(r.json()["data"]["sandbox_id"])
            for sid in ids:
                await eventually(
                    lambda sid=sid: api.get(f"/api/v1/sandboxes/{sid}", headers=h),
                    lambda r: r.json()["data"]["status"] == "running",
                    90,
                    f"{sid} running",
                )
            r = await api.post(
                f"/api/v1/sandboxes/{ids[0]}/messages",
                headers=h,
                json={
                    "to_sandbox": "back",
                    "message_type": "request",
                    "content": {"task": "Design the auth API"},
                    "requires_response": True,
                    "timeout": 60,
                },
            )
            assert r.status_code == 202, r.text
            mid = r.json()["data"]["message_id"]
            message = await eventually(
                lambda: api.get(f"/api/v1/messages/{mid}", headers=h),
                lambda r: r.json()["data"]["status"] == "failed",
                60,
                "the delivery to fail",
            )
            assert "HTTP 401" in message.json()["data"]["status_reason"]

            # The operator's query, through the UI's HTTP API: this failed delivery, failed.
            found = await eventually(
                lambda: _ui_find(ui, FAILED_DELIVERIES.format(wid=wid)),
                lambda f: f"message-{mid}" in f,
                30,
                "the failed delivery in the UI",
            )
            assert found[f"message-{mid}"] == "WORKFLOW_EXECUTION_STATUS_FAILED"
            by_status = await _ui_find(
                ui, f'ExecutionStatus = "Failed" AND AintandemMessageId = "{mid}"'
            )
            assert f"message-{mid}" in by_status
            r = await ui.get(f"/api/v1/namespaces/default/workflows/message-{mid}")
            failure = r.json()["workflowExtendedInfo"] if r.status_code == 200 else {}
            assert r.status_code == 200, (r.text, failure)

            # The key is fixed; the retry delivers it again: a new run of the same workflow.
            fake.responder = None
            fake.then(200, _answer())
            r = await api.post(f"/api/v1/messages/{mid}/retry", headers=h)
            assert r.status_code == 202, r.text
            await eventually(
                lambda: api.get(f"/api/v1/messages/{mid}", headers=h),
                lambda r: r.json()["data"]["status"] == "responded",
                60,
                "the retried delivery",
            )
            # Both runs are in the UI: the failed one and the retry that completed.
            for status in ("Failed", "Completed"):
                await eventually(
                    lambda status=status: _ui_find(
                        ui, f'WorkflowId = "message-{mid}" AND ExecutionStatus = "{status}"'
                    ),
                    lambda f: f"message-{mid}" in f,
                    30,
                    f"the {status.lower()} run in the UI",
                )
    finally:
        remove_installation_sandboxes(settings.installation_id, workspace_ids=workspaces)


def _revoked() -> object:
    from tests.unit.test_llm_providers import Scripted

    return Scripted(401, error_body("openai", "invalid_api_key", "revoked"))


def _answer() -> dict[str, object]:
    from tests.unit.test_llm_providers import openai_reply

    return openai_reply("Designed: POST /auth/login")
