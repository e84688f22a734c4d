"""Chaos: the Docker engine stops while sandboxes run, stays down a few health ticks, and comes
back. A sandbox never claims `running` for a container that is not running: while the engine
is away it turns `error` ("Docker engine unreachable"), and once the engine answers again it is
brought back to `running` (or stays `error` with a reason when that fails).

The real drill stops the machine's dockerd (scripts/docker-engine.sh started it; no systemd, no
live-restore, so its containers stop with it) with SIGTERM and starts it again with the same
script, whatever happens: every later test needs the engine. The workflow-level tests replay the
same outage with the Docker activities replaced (same names), for the cases the real engine does
not give on demand, and replay a history recorded before the change (workflow.patched).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import httpx
import pytest
from sqlalchemy import func, select
from temporalio import activity
from temporalio.client import WorkflowHandle, WorkflowHistory
from temporalio.worker import Replayer, Worker

from activities.docker_runtime import DockerUnavailable
from activities.sandbox import Observation, StartInput
from api.app import create_app
from config.payload_codec import data_converter
from config.settings import Settings
from domain.containers import ContainerState, container_name
from domain.sandbox import LifecycleResult, SandboxWorkflowInput, StatusRecord
from store.db import create_engine, session_factory
from store.migrate import upgrade
from store.models import Event
from tests.cleanup import remove_installation_sandboxes
from tests.conftest import app_client, make_settings, new_account, temporal_address
from tests.integration.conftest import eventually
from tests.live_stack import ROOT
from worker.main import build_activities, build_worker
from workflows.sandbox import SandboxWorkflow

HISTORIES = Path(__file__).parent / "histories"
PID_FILE = Path("/var/run/docker.pid")
CONTAINERD_PID_FILE = Path("/var/run/docker/containerd/containerd.pid")
HEALTH_INTERVAL = 1.0
# The claim must go within a few health ticks of the engine's exit (a tick, the observe
# activity failing at once on the missing socket, one status write).
WITHDRAWN_WITHIN = 5 * HEALTH_INTERVAL


# -- the real engine ------------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _gone(pid: int, within: float) -> bool:
    """Exited and reaped; True at once when it is, False if still there after `within` s."""
    deadline = time.monotonic() + within
    while Path(f"/proc/{pid}").exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def stop_engine() -> None:
    """SIGTERM to dockerd, as a service manager stops it; returns once it and the containerd
    it runs have exited (a new dockerd started beside a dying one would find it and wait on
    it instead of starting)."""
    pid = int(PID_FILE.read_text().strip())
    assert Path(f"/proc/{pid}/comm").read_text().strip() == "dockerd", pid
    containerd = CONTAINERD_PID_FILE.read_text().strip() if CONTAINERD_PID_FILE.exists() else ""
    os.kill(pid, 15)
    for child in (pid, int(containerd or 0)):
        if child:
            # An unreaped zombie is harmless (scripts/docker-engine.sh skips it); one that
            # still runs after a minute is not.
            assert _gone(child, 60) or not _alive(child), f"pid {child} still runs after 60 s"


def start_engine() -> None:
    # A session of its own: the engine must not share the test run's process group (a Ctrl-C
    # of pytest would stop it again).
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "docker-engine.sh")],
        start_new_session=True,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, f"the Docker engine did not start again: {done.stderr}"


@contextlib.asynccontextmanager
async def platform(settings: Settings, temporal: Any) -> AsyncIterator[httpx.AsyncClient]:
    """Worker (in-process, on its own task queue) and API, on one SQLite database."""
    engine = create_engine(settings.resolved_database_url)
    activities = build_activities(settings, session_factory(engine), temporal)
    try:
        with ThreadPoolExecutor(64) as pool:
            async with (
                build_worker(temporal, settings, pool, activities),
                app_client(create_app(settings)) as client,
            ):
                yield client
    finally:
        await activities.aclose()
        await engine.dispose()


@pytest.mark.chaos
@pytest.mark.docker
@pytest.mark.temporal
async def test_sandboxes_never_claim_running_while_the_engine_is_down(
    tmp_path: Path, temporal_env: Any
) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'aintandem.db'}"
    await asyncio.to_thread(upgrade, database_url)
    settings = make_settings(
        database_url,
        tmp_path,
        temporal_address=temporal_address(temporal_env),
        task_queue=f"chaos-engine-{uuid.uuid4().hex[:8]}",
        sandbox_health_interval_seconds=HEALTH_INTERVAL,
    )
    dk = docker.from_env()
    engine = create_engine(database_url)
    sandboxes: list[str] = []
    try:
        async with platform(settings, temporal_env.client) as client:
            acc = await new_account(client)
            r = await client.post("/api/v1/workspaces", headers=acc.headers, json={"name": "e"})
            wid = r.json()["data"]["workspace_id"]
            for name in ("one", "two"):
                r = await client.post(
                    f"/api/v1/workspaces/{wid}/sandboxes",
                    headers=acc.headers,
                    json={
                        "name": name,
                        "agent_config": {"primary_agent": {"name": "a", "role": "r"}},
                    },
                )
                assert r.status_code == 201, r.text
                sandboxes.append(r.json()["data"]["sandbox_id"])

            async def get(sid: str) -> dict[str, Any]:
                # Never a 500, engine up or down: the API answers from the read model.
                r = await client.get(f"/api/v1/sandboxes/{sid}", headers=acc.headers)
                assert r.status_code == 200, r.text
                s = await client.get(f"/api/v1/sandboxes/{sid}/status", headers=acc.headers)
                assert s.status_code == 200, s.text
                return {**r.json()["data"], "health": s.json()["data"]["health"]}

            async def look() -> list[dict[str, Any]]:
                return [await get(sid) for sid in sandboxes]

            def are(status: str) -> Callable[[list[dict[str, Any]]], bool]:
                return lambda views: all(v["status"] == status for v in views)

            def running_and_healthy(views: list[dict[str, Any]]) -> bool:
                return are("running")(views) and all(
                    v["health"]["status"] == "healthy" for v in views
                )

            await eventually(look, running_and_healthy, 90, "running and observed healthy")
            pids = {}
            for sid in sandboxes:
                state = (await asyncio.to_thread(dk.api.inspect_container, container_name(sid)))[
                    "State"
                ]
                assert state["Running"]
                pids[sid] = state["Pid"]
            live_restore = (await asyncio.to_thread(dk.info)).get("LiveRestoreEnabled")
            async with session_factory(engine)() as s:
                before = await s.scalar(select(func.max(Event.id))) or 0
            dk.close()

            try:
                await asyncio.to_thread(stop_engine)
                down_at = time.monotonic()
                if not live_restore:  # the engine stopped its containers on the way out
                    assert not any(_alive(pid) for pid in pids.values())
                views = await eventually(look, are("error"), WITHDRAWN_WITHIN + 10, "error")
                withdrawn_after = time.monotonic() - down_at
                assert withdrawn_after <= WITHDRAWN_WITHIN, withdrawn_after
                for v in views:
                    assert v["status_reason"].startswith("Docker engine unreachable"), v
                    assert v["health"]["status"] == "unhealthy", v
                # …and it stays so while the engine is away: the loop keeps probing, fails, and
                # never flips back to `running` on its own.
                hold_until = time.monotonic() + 3 * HEALTH_INTERVAL
                while time.monotonic() < hold_until:
                    assert are("error")(await look())
                    await asyncio.sleep(0.2)
            finally:
                await asyncio.to_thread(start_engine)
            dk = docker.from_env()

            # Back: each sandbox runs again, and the status says so because it is so.
            views = await eventually(look, running_and_healthy, 60, "running and healthy again")
            for sid, v in zip(sandboxes, views, strict=True):
                state = (await asyncio.to_thread(dk.api.inspect_container, container_name(sid)))[
                    "State"
                ]
                assert state["Running"] and _alive(state["Pid"]), state
                assert v["restart_count"] == (0 if live_restore else 1), v
                assert v["status_reason"] is None, v
                async with session_factory(engine)() as s:
                    lifecycle = [
                        (e.event, e.data["reason"])
                        for e in await s.scalars(
                            select(Event)
                            .where(
                                Event.sandbox_id == sid,
                                Event.channel == "events",
                                Event.id > before,
                            )
                            .order_by(Event.id)
                        )
                    ]
                assert [event for event, _ in lifecycle] == (
                    ["sandbox_error", "sandbox_started"]
                    if live_restore
                    else ["sandbox_error", "sandbox_restarting", "sandbox_started"]
                ), lifecycle
                assert lifecycle[0][1].startswith("Docker engine unreachable"), lifecycle
                if not live_restore:
                    assert lifecycle[1][1].startswith("Docker engine was unreachable; "), lifecycle

            for sid in sandboxes:
                r = await client.delete(f"/api/v1/sandboxes/{sid}", headers=acc.headers)
                assert r.status_code == 204, r.text
    finally:
        await asyncio.to_thread(start_engine)  # idempotent: a no-op when it is up
        try:  # whatever a failure left behind: sandboxes, their disks, the network
            await asyncio.to_thread(remove_installation_sandboxes, settings.installation_id)
        finally:
            await engine.dispose()


# -- the same outage, with the Docker activities replaced -----------------------------------------


@dataclass
class FakeEngine:
    """The engine as the sandbox activities see it; the tests switch it off and on."""

    up: bool = True
    container_running: bool = True
    failure: type[Exception] = DockerUnavailable  # what observing raises while it is down
    fail_next: int = 0  # observations to fail even while up (a hiccup)
    observed: int = 0
    starts: int = 0
    statuses: list[StatusRecord] = field(default_factory=list)

    def state(self) -> ContainerState:
        if self.container_running:
            return ContainerState(exists=True, status="running", running=True)
        return ContainerState(exists=True, status="exited", exit_code=0)

    def activities(self) -> list[Callable[..., Any]]:
        @activity.defn(name="sandbox_start")
        async def start(_: StartInput) -> ContainerState:
            if not self.up:
                raise DockerUnavailable("Docker engine unreachable: connection refused")
            self.starts += 1
            self.container_running = True
            return self.state()

        @activity.defn(name="sandbox_stop")
        async def stop(_: Any) -> ContainerState:
            self.container_running = False
            return self.state()

        @activity.defn(name="sandbox_observe")
        async def observe(_: Any) -> Observation:
            self.observed += 1
            if self.fail_next > 0:
                self.fail_next -= 1
                raise self.failure("engine hiccup")
            if not self.up:
                raise self.failure("Docker engine unreachable: connection refused")
            return Observation(state=self.state(), healthy=self.container_running)

        @activity.defn(name="sandbox_record_status")
        async def record_status(rec: StatusRecord) -> bool:
            self.statuses.append(rec)
            return True

        @activity.defn(name="sandbox_record_observation")
        async def record_observation(_: Any) -> None:
            return None

        return [start, stop, observe, record_status, record_observation]

    async def ticks(self, n: int) -> None:
        """Until the workflow has observed n more times."""
        target = self.observed + n
        deadline = time.monotonic() + 30
        while self.observed < target:
            assert time.monotonic() < deadline, f"{self.observed} observations, not {target}"
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def fake_sandbox(temporal_env: Any, fake: FakeEngine) -> AsyncIterator[WorkflowHandle]:
    queue = f"engine-{uuid.uuid4().hex[:8]}"
    inp = SandboxWorkflowInput(
        sandbox_id="sb_engineout1",
        workspace_id="ws_engineout1",
        name="e",
        image="unused",
        health_interval_seconds=0.05,
    )
    async with Worker(
        temporal_env.client,
        task_queue=queue,
        workflows=[SandboxWorkflow],
        activities=fake.activities(),
    ):
        handle = await temporal_env.client.start_workflow(
            SandboxWorkflow.run, inp, id=f"sandbox-test-{uuid.uuid4().hex}", task_queue=queue
        )
        await status_is(handle, "running")
        try:
            yield handle
        finally:
            # Its own history replays on the code that wrote it (the patch is deterministic).
            await Replayer(workflows=[SandboxWorkflow]).replay_workflow(
                await handle.fetch_history()
            )
            await handle.terminate()


async def status_is(handle: WorkflowHandle, status: str) -> dict[str, Any]:
    return dict(
        await eventually(
            lambda: handle.query(SandboxWorkflow.state),
            lambda s: s["status"] == status,
            30,
            status,
        )
    )


def transitions(fake: FakeEngine) -> list[tuple[str, str | None]]:
    return [(r.status, r.reason) for r in fake.statuses]


@pytest.mark.temporal
async def test_an_engine_outage_is_an_error_and_the_sandbox_comes_back(temporal_env: Any) -> None:
    fake = FakeEngine()
    async with fake_sandbox(temporal_env, fake) as handle:
        fake.up, fake.container_running = False, False  # stopped with the engine
        state = await status_is(handle, "error")
        assert state["reason"] == "Docker engine unreachable: connection refused"
        await fake.ticks(3)  # probing on, failing: still error
        assert (await handle.query(SandboxWorkflow.state))["status"] == "error"
        fake.up = True
        state = await status_is(handle, "running")
    assert state["restart_count"] == 1 and state["reason"] is None
    assert fake.starts == 2  # provisioning, then once after the outage
    assert transitions(fake) == [
        ("running", None),
        ("error", "Docker engine unreachable: connection refused"),
        ("restarting", "Docker engine was unreachable; container exited with code 0"),
        ("running", None),
    ]


@pytest.mark.temporal
async def test_a_container_that_ran_through_the_outage_is_running_again_without_a_restart(
    temporal_env: Any,
) -> None:
    fake = FakeEngine()
    async with fake_sandbox(temporal_env, fake) as handle:
        fake.up = False  # live-restore: the container keeps running without its engine
        await status_is(handle, "error")
        fake.up = True
        state = await status_is(handle, "running")
    assert state["restart_count"] == 0 and fake.starts == 1
    assert [s for s, _ in transitions(fake)] == ["running", "error", "running"]


@pytest.mark.temporal
async def test_other_observation_failures_are_tolerated_for_two_ticks(temporal_env: Any) -> None:
    fake = FakeEngine(failure=RuntimeError)
    async with fake_sandbox(temporal_env, fake) as handle:
        fake.fail_next = 2  # two failed ticks, then a good one: a hiccup, nothing recorded
        await fake.ticks(3)
        assert [s for s, _ in transitions(fake)] == ["running"]
        fake.fail_next = 3
        state = await status_is(handle, "error")
        assert state["reason"] == "health check failed 3 times in a row: engine hiccup", state
        state = await status_is(handle, "running")  # the next good tick: it ran throughout
    assert state["restart_count"] == 0 and fake.starts == 1


@pytest.mark.temporal
async def test_a_stop_during_the_outage_is_not_undone_when_the_engine_returns(
    temporal_env: Any,
) -> None:
    fake = FakeEngine()
    async with fake_sandbox(temporal_env, fake) as handle:
        fake.up, fake.container_running = False, False
        await status_is(handle, "error")
        stopping = await handle.execute_update("stop", result_type=LifecycleResult)
        assert stopping.status == "stopping"
        await status_is(handle, "stopped")
        fake.up = True
        # Stopped is not observed, so there is no tick to wait for: give it ten intervals.
        await asyncio.sleep(0.5)
        assert (await handle.query(SandboxWorkflow.state))["status"] == "stopped"
    assert fake.starts == 1


async def test_a_history_from_before_the_change_replays(tmp_path: Path) -> None:
    """Recorded with the code before workflow.patched("engine-outage-is-an-error"): five ticks
    whose observation failed with DockerUnavailable, the sandbox left `running` throughout."""
    path = HISTORIES / "sandbox_engine_outage_before_patch.json"
    history = WorkflowHistory.from_json("sandbox-engine-outage-history", path.read_text())
    failed = [e for e in json.loads(path.read_text())["events"] if "FAILED" in e["eventType"]]
    assert len(failed) == 5
    # On the worker's data converter: its plaintext payloads pass through the codec.
    converter = data_converter(make_settings("sqlite://", tmp_path))
    await Replayer(workflows=[SandboxWorkflow], data_converter=converter).replay_workflow(history)
