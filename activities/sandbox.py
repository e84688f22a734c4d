"""Sandbox activities: Docker side effects (sync, on the worker's thread pool) and the writes
of their outcome to the read model and event log (async). Each is idempotent on its input."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.docker_runtime import (
    ContainerNotFound,
    ContainerNotRunning,
    DockerRuntime,
    DockerRuntimeError,
    ImageMissing,
    IsolationUnavailable,
)
from domain.containers import (
    ContainerSpec,
    ContainerState,
    LogLine,
    ResourceUsage,
    sandbox_disk_mb,
    workspace_egress,
)
from domain.sandbox import StatusRecord
from domain.timeutil import iso, utcnow
from store import events
from store.models import Event, MetricsSample, Sandbox, Workspace

# Bounded retention of what the health loop records (per sandbox).
METRICS_RETENTION = timedelta(days=7)
LOG_EVENTS_KEPT = 5000
T = TypeVar("T")


@dataclass(frozen=True)
class StartInput:
    spec: ContainerSpec
    ready_timeout_seconds: float = 60.0


@dataclass(frozen=True)
class StopInput:
    sandbox_id: str
    timeout_seconds: int = 10


@dataclass(frozen=True)
class ResourcesInput:
    sandbox_id: str
    memory_mb: int
    cpu_cores: float
    max_processes: int


@dataclass(frozen=True)
class ObserveInput:
    sandbox_id: str
    logs_since: str | None = None  # ISO timestamp of the last line already recorded


@dataclass(frozen=True)
class Observation:
    state: ContainerState
    usage: ResourceUsage | None = None
    healthy: bool = False
    health_error: str | None = None
    logs: list[LogLine] = field(default_factory=list)


@dataclass(frozen=True)
class ObservationRecord:
    sandbox_id: str
    workspace_id: str
    observed_at: str
    observation: Observation


def _non_retryable(exc: Exception) -> ApplicationError:
    return ApplicationError(str(exc), type=type(exc).__name__, non_retryable=True)


def _docker_call(fn: Callable[..., T], *args: Any) -> T:
    """Run a DockerRuntime call. A missing image or container is a business failure (not
    retried); an unreachable engine or engine error is retried by Temporal with backoff."""
    try:
        return fn(*args)
    except (ImageMissing, ContainerNotFound, ContainerNotRunning, IsolationUnavailable) as exc:
        raise _non_retryable(exc) from exc


class SandboxActivities:
    def __init__(self, runtime: DockerRuntime, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._docker = runtime
        self._sessions = sessions
        # The loop the sessions belong to: sync activities (threads) read the read model on it.
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None

    # -- Docker ---------------------------------------------------------------------------------

    @activity.defn(name="sandbox_start")
    def start(self, inp: StartInput) -> ContainerState:
        """Create the container if missing (re-create it, keeping /workspace, when its env
        vars, its workspace's egress or its disk size changed), start it, and wait until its
        runtime answers."""
        spec = self._isolation(inp.spec)
        inp = replace(inp, spec=spec)
        if _docker_call(self._docker.outdated, spec) is not None:
            self._docker.remove(spec.sandbox_id, keep_workspace=True)
        _docker_call(self._docker.ensure_container, inp.spec)
        _docker_call(self._docker.start, inp.spec.sandbox_id)
        deadline = time.monotonic() + inp.ready_timeout_seconds
        last_error = "no answer"
        while time.monotonic() < deadline:
            activity.heartbeat()
            result = self._docker.health(inp.spec.sandbox_id, timeout_seconds=5)
            if result.ok:
                return self._docker.inspect(inp.spec.sandbox_id)
            last_error = result.error_message or result.error_type or "unhealthy"
            current = self._docker.inspect(inp.spec.sandbox_id)
            if not current.running:
                raise ApplicationError(
                    _exit_reason(current), type="ContainerExited", non_retryable=True
                )
            time.sleep(0.1)
        raise ApplicationError(
            f"sandbox runtime not ready after {inp.ready_timeout_seconds:.0f} s: {last_error}",
            type="RuntimeNotReady",
        )

    def _isolation(self, spec: ContainerSpec) -> ContainerSpec:
        """The spec with the egress and disk size the read model holds now: both are read at
        each (re)creation, so a changed workspace setting applies at the next start/restart."""
        loop = self._loop
        if loop is None or loop.is_closed() or spec.network_mode:
            return spec
        with contextlib.suppress(RuntimeError):
            if asyncio.get_running_loop() is loop:
                return spec  # called on the loop itself (tests): cannot block on it
        egress, disk_mb = asyncio.run_coroutine_threadsafe(
            self._read_isolation(spec.sandbox_id, spec.workspace_id), loop
        ).result(timeout=60)
        return replace(spec, egress=egress or spec.egress, disk_mb=disk_mb or spec.disk_mb)

    async def _read_isolation(self, sandbox_id: str, workspace_id: str) -> tuple[str, int]:
        async with self._sessions() as session:
            settings = await session.scalar(
                select(Workspace.settings).where(Workspace.id == workspace_id)
            )
            resources = await session.scalar(
                select(Sandbox.resources).where(Sandbox.id == sandbox_id)
            )
        egress = workspace_egress(settings) if settings is not None else ""
        return egress, sandbox_disk_mb(resources) if resources is not None else 0

    @activity.defn(name="sandbox_stop")
    def stop(self, inp: StopInput) -> ContainerState:
        """Stop the container (absent or already stopped is success)."""
        return _docker_call(self._docker.stop, inp.sandbox_id, inp.timeout_seconds)

    @activity.defn(name="sandbox_remove")
    def remove(self, sandbox_id: str) -> None:
        """Remove the container and its anonymous volumes (absent is success)."""
        _docker_call(self._docker.remove, sandbox_id)

    @activity.defn(name="sandbox_update_resources")
    def update_resources(self, inp: ResourcesInput) -> ContainerState:
        """Apply new memory/CPU/pids limits to the live container."""
        if not self._docker.inspect(inp.sandbox_id).exists:
            return ContainerState.absent()
        return _docker_call(
            self._docker.update_resources,
            inp.sandbox_id,
            inp.memory_mb,
            inp.cpu_cores,
            inp.max_processes,
        )

    @activity.defn(name="sandbox_observe")
    def observe(self, inp: ObserveInput) -> Observation:
        """Inspect + resource usage + runtime health + new log lines, in one round."""
        state = self._docker.inspect(inp.sandbox_id)
        if not state.exists:
            return Observation(state=state)
        since = datetime.fromisoformat(inp.logs_since) if inp.logs_since else None
        logs = self._docker.logs(inp.sandbox_id, since=since, limit=1000)
        if since is not None:
            logs = [line for line in logs if line.timestamp > since]
        if not state.running:
            return Observation(state=state, logs=logs)
        try:
            usage = self._docker.usage(inp.sandbox_id)
        except DockerRuntimeError:
            usage = None
        health = self._docker.health(inp.sandbox_id, timeout_seconds=5)
        return Observation(
            state=state,
            usage=usage,
            healthy=health.ok,
            health_error=None if health.ok else (health.error_message or health.error_type),
            logs=logs,
        )

    # -- read model -----------------------------------------------------------------------------

    @activity.defn(name="sandbox_record_status")
    async def record_status(self, rec: StatusRecord) -> bool:
        """Write a transition if it is newer than the stored one; append its event once."""
        async with self._sessions() as session:
            values: dict[str, object] = {
                "status": rec.status,
                "status_version": rec.version,
                "status_reason": rec.reason,
                "restart_count": rec.restart_count,
                "updated_at": utcnow(),
                "started_at": datetime.fromisoformat(rec.started_at) if rec.started_at else None,
            }
            if rec.status in ("stopped", "error"):
                values["health_status"] = "unknown" if rec.status == "stopped" else "unhealthy"
            elif rec.status == "running":
                # Every way into `running` has just seen the runtime (a start returns only once
                # its health probe answered; a recovery after an observation of the running
                # container): that is the first heartbeat, so `running` never shows health
                # `unknown` for a whole health interval. The next tick re-judges it.
                values["health_status"] = "healthy"
                values["last_heartbeat"] = utcnow()
            result = await session.execute(
                update(Sandbox)
                .where(Sandbox.id == rec.sandbox_id, Sandbox.status_version < rec.version)
                .values(**values)
            )
            changed = bool(getattr(result, "rowcount", 0))
            if changed and rec.event:
                events.append(
                    session,
                    channel="events",
                    event=rec.event,
                    data={
                        "sandbox_id": rec.sandbox_id,
                        "status": rec.status,
                        "reason": rec.reason,
                        "restart_count": rec.restart_count,
                    },
                    workspace_id=rec.workspace_id,
                    sandbox_id=rec.sandbox_id,
                )
            await session.commit()
            return changed

    @activity.defn(name="sandbox_record_observation")
    async def record_observation(self, rec: ObservationRecord) -> None:
        """Heartbeat, a metrics sample and new log lines; old samples/logs are pruned."""
        obs = rec.observation
        now = datetime.fromisoformat(rec.observed_at)
        async with self._sessions() as session:
            exists = await session.scalar(select(Sandbox.id).where(Sandbox.id == rec.sandbox_id))
            if exists is None:
                return  # deleted meanwhile
            values: dict[str, object] = {"health_status": "healthy" if obs.healthy else "unhealthy"}
            if obs.state.running:
                values["last_heartbeat"] = now
            await session.execute(
                update(Sandbox).where(Sandbox.id == rec.sandbox_id).values(**values)
            )
            if obs.usage is not None:
                u = obs.usage
                session.add(
                    MetricsSample(
                        sandbox_id=rec.sandbox_id,
                        workspace_id=rec.workspace_id,
                        sampled_at=now,
                        cpu_percent=u.cpu_percent,
                        memory_mb=u.memory_mb,
                        memory_limit_mb=u.memory_limit_mb,
                        memory_percent=u.memory_percent,
                        disk_mb=u.disk_mb,
                        network_in_bytes=u.network_in_bytes,
                        network_out_bytes=u.network_out_bytes,
                        pids=u.pids,
                    )
                )
                events.append(
                    session,
                    channel="metrics",
                    event="metrics_sample",
                    data={
                        "sandbox_id": rec.sandbox_id,
                        "cpu_usage_percent": u.cpu_percent,
                        "memory_usage_mb": u.memory_mb,
                        "memory_usage_percent": u.memory_percent,
                        "network_in_bytes": u.network_in_bytes,
                        "network_out_bytes": u.network_out_bytes,
                        "pids": u.pids,
                    },
                    workspace_id=rec.workspace_id,
                    sandbox_id=rec.sandbox_id,
                )
            for line in obs.logs:
                events.append(
                    session,
                    channel="logs",
                    event="log",
                    data={
                        "timestamp": iso(line.timestamp),
                        "level": line.level,
                        "message": line.message,
                        "stream": line.stream,
                    },
                    workspace_id=rec.workspace_id,
                    sandbox_id=rec.sandbox_id,
                )
            await session.execute(
                delete(MetricsSample).where(
                    MetricsSample.sandbox_id == rec.sandbox_id,
                    MetricsSample.sampled_at < now - METRICS_RETENTION,
                )
            )
            await _prune_logs(session, rec.sandbox_id)
            await session.commit()

    # -- start-up sweep -------------------------------------------------------------------------

    async def remove_orphans(self) -> list[str]:
        """Remove managed containers (and disks, unused workspace networks) whose sandbox no
        longer exists in the database."""
        containers = await asyncio.to_thread(self._docker.find_managed_containers)
        async with self._sessions() as session:
            known = set(await session.scalars(select(Sandbox.id)))
        removed = []
        for c in containers:
            if c.sandbox_id and c.sandbox_id not in known:
                await asyncio.to_thread(self._docker.remove, c.sandbox_id)
                removed.append(c.sandbox_id)
        # Disks and workspace networks nothing uses any more (activities/docker_runtime.py).
        await asyncio.to_thread(self._docker.remove_orphan_resources, known)
        return removed


async def _prune_logs(session: AsyncSession, sandbox_id: str) -> None:
    cutoff = await session.scalar(
        select(Event.id)
        .where(Event.sandbox_id == sandbox_id, Event.channel == "logs")
        .order_by(Event.id.desc())
        .offset(LOG_EVENTS_KEPT)
        .limit(1)
    )
    if cutoff is not None:
        await session.execute(
            delete(Event).where(
                Event.sandbox_id == sandbox_id, Event.channel == "logs", Event.id <= cutoff
            )
        )


def _exit_reason(state: ContainerState) -> str:
    if state.oom_killed:
        return "container was OOM-killed (memory limit reached)"
    return f"container exited with code {state.exit_code}"
