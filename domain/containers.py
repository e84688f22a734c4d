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
# What the container's isolation was made from (egress mode, disk size, runtime layout): a start
# with other values recreates the container (keeping /workspace), like an env change does.
LABEL_ISOLATION = "aintandem.isolation"
LABEL_EGRESS = "aintandem.egress"

DEFAULT_SANDBOX_IMAGE = "aintandem/sandbox:latest"
# Path of the agent runtime inside the sandbox image (sandbox_image/Dockerfile).
AGENT_RUNTIME_PATH = "/opt/aintandem/agent_runtime.py"
# The interpreter the platform runs it with: a root-owned link in the image, so neither PATH
# nor anything the agent can write decides which program answers a health check or tool call.
AGENT_RUNTIME_PYTHON = "/opt/aintandem/bin/python3"
# -I: isolated (no user site dir, no PYTHON* variables, no cwd/script-relative surprises on
# sys.path beyond the root-owned runtime directory); -B: the root is read-only anyway;
# -X utf8 replaces PYTHONUTF8, which -I ignores.
AGENT_RUNTIME_COMMAND = [AGENT_RUNTIME_PYTHON, "-I", "-B", "-X", "utf8", AGENT_RUNTIME_PATH]
SANDBOX_WORKSPACE = "/workspace"
SANDBOX_TMP = "/tmp"
# The image's unprivileged user (sandbox_image/Dockerfile), owner of /workspace.
SANDBOX_UID = 1000
SANDBOX_GID = 1000
# Health checks run as `nobody`: a uid no agent process has, so no agent process can trace,
# signal or otherwise reach into the platform's own check.
HEALTH_CHECK_USER = "65534:65534"

# Workspace `settings.egress`: what a sandbox may reach over the network (README, security).
EGRESS_NONE = "none"  # its own workspace's sandboxes only
EGRESS_INTERNET = "internet"  # plus public addresses; never private ranges nor the host
EGRESS_MODES = (EGRESS_NONE, EGRESS_INTERNET)
DEFAULT_EGRESS = EGRESS_NONE

# `resources.disk_mb`: the size of the sandbox's /workspace filesystem.
DEFAULT_DISK_MB = 1024
MIN_DISK_MB = 64
MAX_DISK_MB = 102400
# /tmp is a tmpfs (its pages count against the memory limit): a quarter of the memory, at
# least 16 MiB, never more than the disk.
MIN_TMP_MB = 16

# Processes the platform itself runs in every sandbox (init, agent runtime, one tool exec) are
# added on top of the user's `max_processes`, so `max_processes=1` still leaves a working sandbox.
RUNTIME_PIDS_OVERHEAD = 3


def container_name(sandbox_id: str) -> str:
    return f"{CONTAINER_NAME_PREFIX}{sandbox_id}"


def workspace_volume(sandbox_id: str) -> str:
    """The named volume holding a sandbox's /workspace: it outlives container re-creation."""
    return f"{CONTAINER_NAME_PREFIX}{sandbox_id}-workspace"


def network_name(installation: str, workspace_id: str, egress: str) -> str:
    """The workspace's own bridge network; the egress mode is part of the name because it is a
    property of the network (internal or not) that cannot change while containers use it."""
    return f"{CONTAINER_NAME_PREFIX}{installation or 'local'}-{workspace_id}-{egress}"


def workspace_egress(settings: dict[str, Any] | None) -> str:
    """A workspace's egress mode from its stored settings (older workspaces: the default)."""
    value = (settings or {}).get("egress", DEFAULT_EGRESS)
    return value if value in EGRESS_MODES else DEFAULT_EGRESS


def sandbox_disk_mb(resources: dict[str, Any] | None) -> int:
    value = (resources or {}).get("disk_mb", DEFAULT_DISK_MB)
    try:
        return min(MAX_DISK_MB, max(MIN_DISK_MB, int(value)))
    except (TypeError, ValueError):
        return DEFAULT_DISK_MB


def tmp_size_mb(memory_mb: int, disk_mb: int) -> int:
    return max(MIN_TMP_MB, min(int(disk_mb), int(memory_mb) // 4))


def isolation_key(egress: str, disk_mb: int) -> str:
    # v2: read-only root, sized /tmp, workspace network, the runtime's pinned interpreter.
    return f"v2;egress={egress};disk_mb={int(disk_mb)}"


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
    # None = the workspace's own network (by `egress`); "none" isolates the sandbox entirely.
    network_mode: str | None = None
    # What the workspace's sandboxes may reach: EGRESS_NONE | EGRESS_INTERNET.
    egress: str = DEFAULT_EGRESS
    # Size of the /workspace filesystem (MiB); /tmp is a tmpfs sized by tmp_size_mb().
    disk_mb: int = DEFAULT_DISK_MB
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
    # Size of the /workspace filesystem (0: not known, e.g. a sandbox without a sized disk).
    disk_limit_mb: float = 0.0


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
