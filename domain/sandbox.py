"""Sandbox lifecycle rules and the SandboxWorkflow's inputs (pure; shared by API and workflow)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from domain.enums import SandboxStatus as S


class SandboxOp(StrEnum):
    START = "start"
    STOP = "stop"
    RESTART = "restart"


# Which lifecycle operation is possible from which status. Anything else is a 409
# SANDBOX_NOT_READY raised by the workflow's update validator, never a stuck workflow.
ALLOWED_FROM: dict[SandboxOp, frozenset[str]] = {
    SandboxOp.START: frozenset({S.STOPPED, S.ERROR}),
    SandboxOp.STOP: frozenset({S.RUNNING, S.ERROR, S.STARTING, S.RESTARTING}),
    SandboxOp.RESTART: frozenset({S.RUNNING, S.ERROR}),
}
TRANSITIONAL: dict[SandboxOp, str] = {
    SandboxOp.START: S.STARTING,
    SandboxOp.STOP: S.STOPPING,
    SandboxOp.RESTART: S.RESTARTING,
}
# A rough "ready in" hint for 202 responses (measured: create+start+health ≈ 1 s here).
ESTIMATED_READY_SECONDS = {S.STARTING: 5, S.RESTARTING: 10, S.PROVISIONING: 10, S.STOPPING: 10}


def transition_error(op: SandboxOp, status: str) -> str | None:
    """None when `op` may run from `status`, else the reason it may not."""
    if status in ALLOWED_FROM[op]:
        return None
    return f"cannot {op.value} a sandbox that is {status}"


@dataclass(frozen=True)
class SandboxResources:
    memory_mb: int = 512
    cpu_cores: float = 1.0
    timeout_seconds: int = 300
    max_processes: int = 10
    # Size of the /workspace filesystem; applies when the container is (re)created.
    disk_mb: int = 1024


@dataclass
class SandboxState:
    """Everything the workflow carries across continue-as-new."""

    status: str = S.PROVISIONING
    version: int = 0
    restart_count: int = 0
    consecutive_failures: int = 0
    reason: str | None = None
    started_at: str | None = None  # ISO 8601; workflow time, not wall clock
    log_cursor: str | None = None  # timestamp of the last container log line recorded
    # Health checks in a row that could not observe the container (engine unreachable, ...).
    failed_observations: int = 0
    # In `error` because the Docker engine went away: the health loop keeps probing and brings
    # the sandbox back by itself once the engine answers again.
    engine_lost: bool = False


@dataclass
class SandboxWorkflowInput:
    sandbox_id: str
    workspace_id: str
    name: str
    image: str
    resources: SandboxResources = field(default_factory=SandboxResources)
    environment: dict[str, str] = field(default_factory=dict)
    health_interval_seconds: float = 10.0
    max_consecutive_failures: int = 3
    # Health ticks per run before continue-as-new keeps the history small (≈ 10 events a tick).
    ticks_per_run: int = 300
    state: SandboxState = field(default_factory=SandboxState)


@dataclass(frozen=True)
class LifecycleResult:
    """What a start/stop/restart update answers: the status it moved to."""

    sandbox_id: str
    status: str
    version: int


@dataclass(frozen=True)
class ConfigUpdate:
    resources: SandboxResources | None = None
    environment: dict[str, str] | None = None


@dataclass(frozen=True)
class StatusRecord:
    """A status transition written to the read model (applied only if newer than stored)."""

    sandbox_id: str
    workspace_id: str
    status: str
    version: int
    reason: str | None = None
    restart_count: int = 0
    started_at: str | None = None
    event: str | None = None  # event name for the stream, e.g. sandbox_started
