"""Durability of sandbox lifecycles: worker crashes, replay, crash policy, idempotent activities."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
from sqlalchemy import func, select
from temporalio import activity
from temporalio.testing import ActivityEnvironment
from temporalio.worker import Replayer, Worker

from activities.docker_runtime import DockerRuntime
from activities.sandbox import Observation, SandboxActivities, StartInput
from api.app import create_app
from config.payload_codec import data_converter
from domain.containers import ContainerSpec, ContainerState, container_name
from domain.ids import sandbox_workflow_id
from domain.sandbox import LifecycleResult, SandboxResources, SandboxWorkflowInput, StatusRecord
from store.db import create_engine, session_factory
from store.models import Event, Sandbox
from tests.conftest import app_client, make_settings, new_account, temporal_address
from tests.integration.conftest import Stack, eventually
from tests.live_stack import free_port
from workflows.sandbox import SandboxWorkflow

pytestmark = [pytest.mark.docker, pytest.mark.temporal]
ROOT = Path(__file__).resolve().parents[2]


def _start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "cli.main", "worker"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


@pytest.mark.chaos
async def test_worker_killed_mid_provision_reaches_running_exactly_once(
    database_url: str, tmp_path: Path, temporal_env: Any
) -> None:
    settings = make_settings(
        database_url,
        tmp_path,
        temporal_address=temporal_address(temporal_env),
        task_queue=f"kill-{uuid.uuid4().hex[:8]}",
        sandbox_health_interval_seconds=1.0,
    )
    env = {
        **os.environ,
        "AINTANDEM_DATABASE_URL": database_url,
        "AINTANDEM_TEMPORAL_ADDRESS": settings.resolved_temporal_address,
        "AINTANDEM_TASK_QUEUE": settings.task_queue,
        "AINTANDEM_DATA_DIR": str(tmp_path),
        "AINTANDEM_WORKER_METRICS_PORT": str(free_port()),
    }
    dk = docker.from_env()
    first = _start_worker(env, tmp_path / "worker1.log")
    second = None
    try:
        async with app_client(create_app(settings)) as client:
            acc = await new_account(client)
            wid = (
                await client.post("/api/v1/workspaces", json={"name": "k"}, headers=acc.headers)
            ).json()["data"]["workspace_id"]
            since = datetime.now(UTC)
            r = await client.post(
                f"/api/v1/workspaces/{wid}/sandboxes",
                headers=acc.headers,
                json={
                    "name": "survivor",
                    "agent_config": {"primary_agent": {"name": "a", "role": "r"}},
                },
            )
            assert r.status_code == 201, r.text
            sid = r.json()["data"]["sandbox_id"]
            # Kill the worker the moment the container exists: provisioning is mid-flight.
            deadline = time.monotonic() + 60
            while not dk.api.containers(all=True, filters={"name": container_name(sid)}):
                assert time.monotonic() < deadline, (tmp_path / "worker1.log").read_text()
                await asyncio.sleep(0.01)
            first.send_signal(signal.SIGKILL)
            first.wait(10)
            status = (await client.get(f"/api/v1/sandboxes/{sid}", headers=acc.headers)).json()[
                "data"
            ]["status"]
            assert status == "provisioning"

            env["AINTANDEM_WORKER_METRICS_PORT"] = str(free_port())
            second = _start_worker(env, tmp_path / "worker2.log")

            async def fetch() -> dict[str, Any]:
                return (await client.get(f"/api/v1/sandboxes/{sid}", headers=acc.headers)).json()[
                    "data"
                ]

            await eventually(
                fetch, lambda d: d["status"] == "running", 90, "running after the crash"
            )
            containers = dk.api.containers(
                all=True, filters={"label": f"aintandem.sandbox_id={sid}"}
            )
            assert len(containers) == 1 and containers[0]["State"] == "running"
            assert dk.api.inspect_container(containers[0]["Id"])["RestartCount"] == 0
            starts = list(
                dk.events(
                    since=since,
                    until=datetime.now(UTC) + timedelta(seconds=2),
                    decode=True,
                    filters={"container": container_name(sid), "event": "start"},
                )
            )
            assert len(starts) == 1, starts
            # The read model recorded a single transition to running.
            engine = create_engine(database_url)
            async with session_factory(engine)() as s:
                n = await s.scalar(
                    select(func.count())
                    .select_from(Event)
                    .where(Event.sandbox_id == sid, Event.event == "sandbox_started")
                )
            await engine.dispose()
            assert n == 1
            assert (
                await client.delete(f"/api/v1/sandboxes/{sid}", headers=acc.headers)
            ).status_code == 204
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(30)
        dk.close()


async def test_history_replays_deterministically(stack: Stack) -> None:
    acc = await stack.account()
    wid = await stack.workspace(acc)
    sid = await stack.sandbox(acc, wid)
    await stack.wait_status(acc, sid, "running")
    await stack.client.post(f"/api/v1/sandboxes/{sid}/stop", headers=acc.headers)
    await stack.wait_status(acc, sid, "stopped")
    await stack.client.post(f"/api/v1/sandboxes/{sid}/start", headers=acc.headers)
    await stack.wait_status(acc, sid, "running")
    await asyncio.sleep(2.5)  # a few health ticks in the history
    assert (
        await stack.client.delete(f"/api/v1/sandboxes/{sid}", headers=acc.headers)
    ).status_code == 204
    handle = stack.temporal.client.get_workflow_handle(sandbox_workflow_id(sid))
    assert await handle.result() == "deleted"
    history = await handle.fetch_history()
    # The worker's data converter: its payloads are encrypted.
    replayer = Replayer(workflows=[SandboxWorkflow], data_converter=data_converter(stack.settings))
    await replayer.replay_workflow(history)


async def test_env_change_recreates_container_and_keeps_workspace(stack: Stack) -> None:
    acc = await stack.account()
    wid = await stack.workspace(acc)
    sid = await stack.sandbox(acc, wid, environment_variables={"STAGE": "one"})
    await stack.wait_status(acc, sid, "running")
    c = stack.docker.containers.get(container_name(sid))
    assert c.exec_run(["sh", "-c", "echo kept > /workspace/notes.txt"]).exit_code == 0
    r = await stack.client.put(
        f"/api/v1/sandboxes/{sid}/config",
        headers=acc.headers,
        json={"environment_variables": {"STAGE": "two"}},
    )
    assert r.json()["data"]["applied"]["environment_variables"] == "next_start"
    await stack.client.post(f"/api/v1/sandboxes/{sid}/restart", headers=acc.headers)
    await stack.wait_status(acc, sid, "running")
    c = stack.docker.containers.get(container_name(sid))
    assert "STAGE=two" in c.attrs["Config"]["Env"]
    assert c.exec_run(["cat", "/workspace/notes.txt"]).output.strip() == b"kept"
    assert (
        await stack.client.delete(f"/api/v1/sandboxes/{sid}", headers=acc.headers)
    ).status_code == 204
    assert not [v for v in stack.docker.volumes.list() if v.name.startswith(container_name(sid))]


async def test_side_effecting_activities_are_idempotent(stack: Stack) -> None:
    acc = await stack.account()
    wid = await stack.workspace(acc)
    sid = await stack.sandbox(acc, wid)
    await stack.wait_status(acc, sid, "running")
    engine = create_engine(stack.settings.resolved_database_url)
    runtime = DockerRuntime(image=stack.settings.sandbox_image)
    acts = SandboxActivities(runtime, session_factory(engine))
    env = ActivityEnvironment()
    spec = ContainerSpec(
        sandbox_id=sid, workspace_id=wid, name="x", image=stack.settings.sandbox_image
    )
    first = await asyncio.to_thread(env.run, acts.start, StartInput(spec))
    again = await asyncio.to_thread(env.run, acts.start, StartInput(spec))
    assert first.container_id == again.container_id and again.running
    async with session_factory(engine)() as s:
        version = await s.scalar(select(Sandbox.status_version).where(Sandbox.id == sid))
    rec = StatusRecord(
        sandbox_id=sid,
        workspace_id=wid,
        status="running",
        version=(version or 0) + 100,
        event="sandbox_started",
    )
    assert await env.run(acts.record_status, rec) is True
    assert await env.run(acts.record_status, rec) is False  # same transition: no second event
    async with session_factory(engine)() as s:
        n = await s.scalar(
            select(func.count())
            .select_from(Event)
            .where(Event.sandbox_id == sid, Event.event == "sandbox_started")
        )
    assert n == 2  # the workflow's own + ours once
    assert (
        await stack.client.delete(f"/api/v1/sandboxes/{sid}", headers=acc.headers)
    ).status_code == 204
    await asyncio.to_thread(env.run, acts.remove, sid)  # already gone: still success
    runtime.close()
    await engine.dispose()


async def test_repeated_oom_kills_end_in_error_with_the_reason(temporal_env: Any) -> None:
    """Crash policy with the Docker activities replaced (same names): OOM every time."""
    calls: dict[str, int] = {"start": 0}
    statuses: list[tuple[str, str | None]] = []

    @activity.defn(name="sandbox_start")
    async def fake_start(_: StartInput) -> ContainerState:
        calls["start"] += 1
        return ContainerState(exists=True, status="running", running=True)

    @activity.defn(name="sandbox_observe")
    async def fake_observe(_: Any) -> Observation:
        return Observation(
            state=ContainerState(exists=True, status="exited", exit_code=137, oom_killed=True)
        )

    @activity.defn(name="sandbox_record_status")
    async def fake_record_status(rec: StatusRecord) -> bool:
        statuses.append((rec.status, rec.reason))
        return True

    @activity.defn(name="sandbox_record_observation")
    async def fake_record_observation(_: Any) -> None:
        return None

    queue = f"oom-{uuid.uuid4().hex[:8]}"
    inp = SandboxWorkflowInput(
        sandbox_id="sb_oomoomoom1",
        workspace_id="ws_oomoomoom1",
        name="oom",
        image="unused",
        resources=SandboxResources(memory_mb=128),
        health_interval_seconds=0.05,
        max_consecutive_failures=2,
    )
    async with Worker(
        temporal_env.client,
        task_queue=queue,
        workflows=[SandboxWorkflow],
        activities=[fake_start, fake_observe, fake_record_status, fake_record_observation],
    ):
        handle = await temporal_env.client.start_workflow(
            SandboxWorkflow.run, inp, id=f"sandbox-test-{uuid.uuid4().hex}", task_queue=queue
        )
        state = await eventually(
            lambda: handle.query(SandboxWorkflow.state),
            lambda s: s["status"] == "error",
            30,
            "error after repeated OOM",
        )
        await handle.terminate()
    assert state["restart_count"] == 2
    assert "OOM-killed" in state["reason"] and "gave up after 2 restarts" in state["reason"]
    assert calls["start"] == 3  # provisioning + two restarts
    assert [s for s, _ in statuses].count("restarting") == 2
    assert statuses[-1][0] == "error"


async def test_continue_as_new_keeps_the_lifecycle_state(temporal_env: Any) -> None:
    statuses: list[StatusRecord] = []

    @activity.defn(name="sandbox_start")
    async def fake_start(_: StartInput) -> ContainerState:
        return ContainerState(exists=True, status="running", running=True)

    @activity.defn(name="sandbox_stop")
    async def fake_stop(_: Any) -> ContainerState:
        return ContainerState(exists=True, status="exited")

    @activity.defn(name="sandbox_observe")
    async def fake_observe(_: Any) -> Observation:
        return Observation(
            state=ContainerState(exists=True, status="running", running=True), healthy=True
        )

    @activity.defn(name="sandbox_record_status")
    async def fake_record_status(rec: StatusRecord) -> bool:
        statuses.append(rec)
        return True

    @activity.defn(name="sandbox_record_observation")
    async def fake_record_observation(_: Any) -> None:
        return None

    queue = f"can-{uuid.uuid4().hex[:8]}"
    inp = SandboxWorkflowInput(
        sandbox_id="sb_canxcanx01",
        workspace_id="ws_canxcanx01",
        name="c",
        image="unused",
        health_interval_seconds=0.05,
        ticks_per_run=5,
    )
    async with Worker(
        temporal_env.client,
        task_queue=queue,
        workflows=[SandboxWorkflow],
        activities=[
            fake_start,
            fake_stop,
            fake_observe,
            fake_record_status,
            fake_record_observation,
        ],
    ):
        handle = await temporal_env.client.start_workflow(
            SandboxWorkflow.run, inp, id=f"sandbox-test-{uuid.uuid4().hex}", task_queue=queue
        )
        first_run = (await handle.describe()).run_id
        await eventually(handle.describe, lambda d: d.run_id != first_run, 30, "a continue-as-new")
        state = await handle.query(SandboxWorkflow.state)
        assert state["status"] == "running" and state["version"] == 1
        # Updates keep working on the new run, and versions keep increasing.
        result = await handle.execute_update("stop", result_type=LifecycleResult)
        assert result.status == "stopping" and result.version == 2
        await eventually(
            lambda: handle.query(SandboxWorkflow.state),
            lambda s: s["status"] == "stopped",
            30,
            "stopped",
        )
        await handle.terminate()
    assert [r.version for r in statuses] == sorted(r.version for r in statuses)


async def test_orphaned_containers_are_removed_at_worker_start(stack: Stack) -> None:
    orphan, foreign = "sb_orphan0001", "sb_foreign001"
    ours = stack.settings.installation_id
    for leftover in (orphan, foreign):  # from an earlier run that was interrupted
        with contextlib.suppress(docker.errors.NotFound):
            stack.docker.containers.get(container_name(leftover)).remove(force=True)
    c = stack.docker.containers.create(
        stack.settings.sandbox_image,
        name=container_name(orphan),
        labels={
            "aintandem.managed": "true",
            "aintandem.installation": ours,
            "aintandem.sandbox_id": orphan,
            "aintandem.workspace_id": "ws_orphan0001",
        },
    )
    # Another installation's container on the same engine is none of our business.
    other = stack.docker.containers.create(
        stack.settings.sandbox_image,
        name=container_name(foreign),
        labels={
            "aintandem.managed": "true",
            "aintandem.installation": "someone-else",
            "aintandem.sandbox_id": foreign,
            "aintandem.workspace_id": "ws_foreign001",
        },
    )
    acc = await stack.account()
    wid = await stack.workspace(acc)
    kept = await stack.sandbox(acc, wid)
    await stack.wait_status(acc, kept, "running")
    engine = create_engine(stack.settings.resolved_database_url)
    runtime = DockerRuntime(image=stack.settings.sandbox_image, installation=ours)
    acts = SandboxActivities(runtime, session_factory(engine))
    try:
        removed = await acts.remove_orphans()
    finally:
        runtime.close()
        await engine.dispose()
        other.reload()
        other.remove(force=True)
    assert orphan in removed and kept not in removed and foreign not in removed
    assert not stack.docker.api.containers(all=True, filters={"id": c.id})
    assert stack.docker.containers.get(container_name(kept)).status == "running"
