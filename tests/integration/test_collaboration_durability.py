"""Chaos: the Temporal server stops in the middle of a collaboration and comes back (same
database file, same port). The worker and the API reconnect by themselves and the
collaboration completes, every step answered once."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client

from api.app import create_app
from cli.up import temporal_command, wait_for_port
from store.db import create_engine, session_factory
from tests.cleanup import remove_installation_sandboxes
from tests.conftest import app_client, make_settings, new_account
from tests.integration.conftest import eventually
from tests.integration.test_collaborations import AGENTS, DELIVERABLES, orchestrated_script
from tests.live_stack import free_port
from tests.unit.test_llm_providers import FakeProvider, fake_server
from worker.main import build_activities, build_worker
from worker.search_attributes import ensure_search_attributes

pytestmark = [pytest.mark.chaos, pytest.mark.docker, pytest.mark.temporal]
__all__ = ["fake_server"]


class TemporalServer:
    """A dev server on a fixed port with its state in a file, so it can stop and come back."""

    def __init__(self, data_dir: Path) -> None:
        self.settings = make_settings(
            "sqlite+aiosqlite://",
            data_dir,
            temporal_port=free_port(),
            temporal_ui_port=free_port(),
        )
        self.log = data_dir / "temporal.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.settings.temporal_port}"

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                temporal_command(self.settings, headless=True), stdout=out, stderr=out
            )
        wait_for_port("127.0.0.1", self.settings.temporal_port, 60, self.proc)

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(30)


@pytest.fixture
def temporal_server(tmp_path: Path) -> Iterator[TemporalServer]:
    server = TemporalServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait(10)


async def test_a_collaboration_survives_a_temporal_restart(
    database_url: str,
    tmp_path: Path,
    temporal_server: TemporalServer,
    fake_server: FakeProvider,
) -> None:
    settings = make_settings(
        database_url,
        tmp_path,
        temporal_address=temporal_server.address,
        task_queue=f"chaos-{uuid.uuid4().hex[:8]}",
        sandbox_health_interval_seconds=2.0,
    )
    client = await Client.connect(temporal_server.address)
    await ensure_search_attributes(client, "default")
    engine = create_engine(settings.resolved_database_url)
    activities = build_activities(settings, session_factory(engine), client)
    workspaces: list[str] = []
    fake_server.reset()
    fake_server.responder = orchestrated_script(slow=lambda step: 4.0)  # each step takes 4 s
    try:
        with ThreadPoolExecutor(64) as pool:
            async with (
                build_worker(client, settings, pool, activities),
                app_client(create_app(settings)) as api,
            ):
                acc = await new_account(api)
                h = acc.headers
                r = await api.post("/api/v1/workspaces", headers=h, json={"name": "chaos"})
                wid = r.json()["data"]["workspace_id"]
                workspaces.append(wid)
                provider = {
                    "name": "openai",
                    "api_key": "sk-test",
                    "base_url": f"{fake_server.base}/v1",
                    "models": ["gpt-test"],
                    "default_model": "gpt-test",
                }
                config = {"llm_providers": [provider]}
                r = await api.put(f"/api/v1/workspaces/{wid}/config", headers=h, json=config)
                assert r.status_code == 200, r.text
                ids = []
                for name, agent in AGENTS.items():
                    r = await api.post(
                        f"/api/v1/workspaces/{wid}/sandboxes",
                        headers=h,
                        json={
                            "name": name,
                            "agent_config": {"primary_agent": {"name": agent, "role": name}},
                        },
                    )
                    ids.append(r.json()["data"]["sandbox_id"])

                async def get(path: str) -> dict[str, Any]:
                    r = await api.get(f"/api/v1{path}", headers=h)
                    assert r.status_code == 200, r.text
                    return dict(r.json()["data"])

                for sid in ids:
                    await eventually(
                        lambda sid=sid: get(f"/sandboxes/{sid}"),
                        lambda d: d["status"] == "running",
                        90,
                        f"{sid} running",
                    )
                r = await api.post(
                    f"/api/v1/workspaces/{wid}/collaboration/orchestrate",
                    headers=h,
                    json={
                        "task": "Implement user authentication feature",
                        "participants": list(AGENTS),
                        "deliverables": DELIVERABLES,
                        "timeout": 600,
                    },
                )
                assert r.status_code == 202, r.text
                cid = r.json()["data"]["collaboration_id"]
                await eventually(
                    lambda: get(f"/collaborations/{cid}"),
                    lambda d: d["progress"]["current_step"] == "api",
                    90,
                    "the first step to run",
                )
                temporal_server.stop()  # mid-step: the agent's reply is on its way
                await asyncio.sleep(3)
                temporal_server.start()
                d = await eventually(
                    lambda: get(f"/collaborations/{cid}"),
                    lambda d: d["status"] in ("completed", "failed", "cancelled"),
                    240,
                    "the collaboration to finish after the restart",
                )
                assert d["status"] == "completed", (d["error"], d["steps"])
                assert set(d["deliverables"]) == set(DELIVERABLES)
                assert d["deliverables"]["backend_api"] == "POST /auth/login by be-lead"
                # Every step answered once: one request and one reply per step attempt.
                requests = [m for m in d["messages"] if m["message_type"] == "request"]
                replies = [m for m in d["messages"] if m["message_type"] == "response"]
                assert all(m["status"] == "responded" for m in requests)
                assert len(replies) == len(requests)
                steps = {s["step"]: s["attempts"] for s in d["steps"]}
                assert steps == {
                    "task_breakdown": 2,  # the script's first plan is invalid on purpose
                    "api": 1,
                    "ui": 1,
                    "review": 1,
                    "integration": 1,
                }
    finally:
        await activities.aclose()
        await engine.dispose()
        remove_installation_sandboxes(settings.installation_id, workspace_ids=workspaces)
