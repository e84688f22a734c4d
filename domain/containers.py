"""Sandbox container types: inputs and results of the Docker runtime (no I/O).

Frozen dataclasses so they travel through Temporal's default data converter unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

CONTAINER_NAME_PREFIX = "aintandem-"
LABEL_SANDBOX_ID = "aintandem.sandbox_id"
LABEL_WORKSPACE_ID = "aintandem.workspace_id"
LABEL_MANAGED = "aintandem.managed"
# Which installation (database) owns the container, so one never sweeps another's containers.
LABEL_INSTALLATION = "aintandem.installation"
# Hash of the user's environment variables the container was created with: docker cannot
# change a container's env, so a start with different variables recreates the container.
LABEL_ENV_HASH = "aintandem.env_hash"

DEFAULT_SANDBOX_IMAGE = "aintandem/sandbox:latest"
# Path of the agent runtime inside the sandbox image (sandbox_image/Dockerfile).
AGENT_RUNTIME_PATH = "/opt/aintandem/agent_runtime.py"
SANDBOX_WORKSPACE = "/workspace"

# Processes the platform itself runs in every sandbox (init, agent runtime, one tool exec) are
# added on top of the user's `max_processes`, so `max_processes=1` still leaves a working sandbox.
RUNTIME_PIDS_OVERHEAD = 3


def container_name(sandbox_id: str) -> str:
    return f"{CONTAINER_NAME_PREFIX}{sandbox_id}"


def workspace_volume(sandbox_id: str) -> str:
    """The named volume holding a sandbox's /workspace: it outlives container re-creation."""
    return f"{CONTAINER_NAME_PREFIX}{sandbox_id}-workspace"


def env_hash(env: dict[str, str]) -> str:
    import hashlib
    import json

    return hashlib.sha256(json.dumps(env, sort_keys=True).encode()).hexdigest()[:16]


def sandbox_hostname(name: str, fallback: str = "sandbox") -> str:
    """An RFC 1123 label derived from the sandbox's display name."""
    label = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:63].strip("-")
    if not label:
        label = re.sub(r"[^a-z0-9-]+", "-", fallback.lower()).strip("-")[:63].strip("-")
    return label or "sandbox"


def pids_limit(max_processes: int) -> int:
    return max_processes + RUNTIME_PIDS_OVERHEAD


@dataclass(frozen=True)
class ContainerSpec:
    sandbox_id: str
    workspace_id: str
    name: str
    image: str = ""  # "" = the runtime's default image
    memory_mb: int = 512
    cpu_cores: float = 1.0
    max_processes: int = 10
    env: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    # None = the engine's default bridge; "none" isolates the sandbox from every network.
    network_mode: str | None = None
    # None = the image's CMD (the agent runtime's `serve`).
    command: list[str] | None = None


@dataclass(frozen=True)
class ContainerState:
    exists: bool
    status: str  # Docker's: created|running|paused|restarting|removing|exited|dead, or "absent"
    running: bool = False
    exit_code: int | None = None
    oom_killed: bool = False
    started_at: datetime | None = None
    finished_at: datetime | None = None
    restart_count: int = 0
    container_id: str | None = None
    image: str | None = None
    error: str | None = None

    @classmethod
    def absent(cls) -> ContainerState:
        return cls(exists=False, status="absent")


@dataclass(frozen=True)
class ResourceUsage:
    # 100.0 = one core fully busy (Docker's convention): 1.5 cores -> 150.0.
    cpu_percent: float
    memory_mb: float
    memory_limit_mb: float
    memory_percent: float
    disk_mb: float
    network_in_bytes: int
    network_out_bytes: int
    pids: int
    sampled_at: datetime | None = None
    source: str = "cgroup"  # "cgroup" (host files) | "stats" (engine API) | "stopped"


@dataclass(frozen=True)
class LogLine:
    timestamp: datetime
    level: str  # debug|info|warn|error
    message: str
    stream: str = "stdout"


@dataclass(frozen=True)
class ToolResult:
    ok: bool
    result: Any = None
    error_type: str | None = None
    error_message: str | None = None
    duration_ms: float = 0.0


@dataclass(frozen=True)
class ManagedContainer:
    container_id: str
    name: str
    sandbox_id: str | None
    workspace_id: str | None
    status: str
    image: str
    created_at: datetime | None = None
