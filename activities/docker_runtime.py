"""Sandbox containers on a Docker engine, through docker-py 7.x.

`DockerRuntime` is plain and blocking (the docker SDK is): the worker calls it from sync
activities on its thread pool. Every method is idempotent on the container name
`aintandem-{sandbox_id}`: creating what exists returns it, stopping what is stopped or removing
what is gone succeeds.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import docker
import docker.errors
import requests.exceptions
from docker.types import LogConfig, Mount

from activities.sandbox_disk import DiskError, SandboxDisks
from activities.sandbox_network import EgressUnavailable, SandboxNetworks
from domain.containers import (
    AGENT_RUNTIME_COMMAND,
    DEFAULT_SANDBOX_IMAGE,
    EGRESS_INTERNET,
    HEALTH_CHECK_USER,
    LABEL_ENV_HASH,
    LABEL_INSTALLATION,
    LABEL_ISOLATION,
    LABEL_MANAGED,
    LABEL_SANDBOX_ID,
    LABEL_WORKSPACE_ID,
    MIN_TMP_MB,
    SANDBOX_TMP,
    SANDBOX_WORKSPACE,
    ContainerSpec,
    ContainerState,
    LogLine,
    ManagedContainer,
    ResourceUsage,
    ToolResult,
    container_name,
    env_hash,
    isolation_key,
    network_name,
    pids_limit,
    sandbox_hostname,
    tmp_size_mb,
    workspace_volume,
)
from domain.sandbox_env import LOADER_ENV, allowed_env

__all__ = [
    "ContainerNotFound",
    "ContainerNotRunning",
    "DockerRuntime",
    "DockerRuntimeError",
    "DockerUnavailable",
    "ImageMissing",
    "IsolationUnavailable",
]

# Host-side allowance on top of a tool's own timeout (exec setup, python start, JSON transfer).
EXEC_TIMEOUT_MARGIN_SECONDS = 10.0
DEFAULT_TOOL_TIMEOUT_SECONDS = 60.0
DEFAULT_COMMAND_TIMEOUT_SECONDS = 300
# A tool answer is at most ~1 MiB of file content plus JSON escaping; anything beyond is a bug.
MAX_EXEC_OUTPUT_BYTES = 16 * 1024 * 1024
CPU_SAMPLE_INTERVAL_SECONDS = 0.1
_MIB = 1024 * 1024
# /dev/shm is a tmpfs outside the disk limit (Docker's default: 64 MiB): as small as the
# smallest /tmp. Its pages count against the memory limit; its use is reported as disk too.
SANDBOX_SHM = "/dev/shm"
SHM_SIZE_MB = MIN_TMP_MB
# The environment of every runtime exec (health, tools), over the container's: the loader's
# code-loading variables emptied (a container made before the API refused them may hold
# LD_PRELOAD=/workspace/x.so; Docker can override a variable for an exec, not unset it) and the
# runtime's confinement root pinned (domain/sandbox_env.py).
RUNTIME_EXEC_ENV = {
    **dict.fromkeys(LOADER_ENV, ""),
    "AINTANDEM_WORKSPACE": SANDBOX_WORKSPACE,
}
_LEVELS = {
    "debug": "debug",
    "trace": "debug",
    "info": "info",
    "notice": "info",
    "warn": "warn",
    "warning": "warn",
    "error": "error",
    "err": "error",
    "critical": "error",
    "fatal": "error",
}


class DockerRuntimeError(Exception):
    """Base of every error this module raises."""


class DockerUnavailable(DockerRuntimeError):
    """The engine cannot be reached (not running, socket missing, not answering)."""


class ContainerNotFound(DockerRuntimeError):
    def __init__(self, sandbox_id: str) -> None:
        super().__init__(f"container {container_name(sandbox_id)} does not exist")
        self.sandbox_id = sandbox_id


class ContainerNotRunning(DockerRuntimeError):
    def __init__(self, sandbox_id: str, status: str) -> None:
        super().__init__(f"container {container_name(sandbox_id)} is {status}, not running")
        self.sandbox_id = sandbox_id
        self.status = status


class ImageMissing(DockerRuntimeError):
    def __init__(self, image: str) -> None:
        super().__init__(
            f"image {image} is not present on the engine (build it with sandbox_image/build.sh)"
        )
        self.image = image


class IsolationUnavailable(DockerRuntimeError):
    """The sandbox's network or disk isolation cannot be set up here (a business failure:
    retrying does not help; the reason says what the host lacks)."""


P = ParamSpec("P")
R = TypeVar("R")


def _close_sockets_of_failed_connects() -> None:
    """docker-py 7's `UnixHTTPConnection.connect` leaves its socket open when connecting fails
    (the engine is stopped, its socket gone): every health probe during an outage leaked a file
    descriptor until garbage collection. Same connect, but the socket is closed on failure."""
    from docker.transport.unixconn import UnixHTTPConnection

    if getattr(UnixHTTPConnection.connect, "closes_on_failure", False):
        return

    def connect(self: Any) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.unix_socket)
        except BaseException:
            sock.close()
            raise
        self.sock = sock

    connect.closes_on_failure = True  # type: ignore[attr-defined]
    UnixHTTPConnection.connect = connect  # type: ignore[method-assign]


_close_sockets_of_failed_connects()


def _translate_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Map docker-py/requests failures onto this module's exceptions."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except DockerRuntimeError:
            raise
        except (EgressUnavailable, DiskError) as exc:
            raise IsolationUnavailable(str(exc)) from exc
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            raise DockerUnavailable(f"Docker engine unreachable: {exc}") from exc
        except docker.errors.NotFound as exc:
            # Removed between two calls of one method (args[0] is self, args[1] the sandbox id).
            if len(args) > 1 and isinstance(args[1], str):
                raise ContainerNotFound(args[1]) from exc
            raise DockerRuntimeError(f"Docker engine error: {exc.explanation or exc}") from exc
        except docker.errors.APIError as exc:
            raise DockerRuntimeError(f"Docker engine error: {exc.explanation or exc}") from exc
        except docker.errors.DockerException as exc:
            # from_env() raises a bare DockerException when it cannot reach the socket.
            raise DockerUnavailable(f"Docker engine unreachable: {exc}") from exc

    return wrapper


def _parse_docker_time(value: str | None) -> datetime | None:
    """RFC 3339 with nanoseconds ("2026-01-10T15:30:00.123456789Z"); Docker's zero time -> None."""
    if not value or value.startswith("0001-01-01"):
        return None
    match = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?$", value)
    if match is None:
        return None
    base, frac, tz = match.groups()
    text = base + (f".{frac[:6].ljust(6, '0')}" if frac else "")
    tz = "+00:00" if tz in (None, "Z") else tz
    return datetime.fromisoformat(text + tz).astimezone(UTC)


def _state_from_attrs(attrs: dict[str, Any]) -> ContainerState:
    state = attrs.get("State") or {}
    status = state.get("Status", "unknown")
    started_at = _parse_docker_time(state.get("StartedAt"))
    return ContainerState(
        exists=True,
        status=status,
        running=bool(state.get("Running")) and status == "running",
        # A container that never ran reports ExitCode 0: that is no exit at all.
        exit_code=state.get("ExitCode") if started_at is not None and status != "running" else None,
        oom_killed=bool(state.get("OOMKilled")),
        started_at=started_at,
        finished_at=_parse_docker_time(state.get("FinishedAt")),
        restart_count=int(attrs.get("RestartCount") or 0),
        container_id=attrs.get("Id"),
        image=(attrs.get("Config") or {}).get("Image"),
        error=state.get("Error") or None,
    )


# ------------------------------------------------------------------------------------------------
# cgroup sampling from the host (fast: a few small file reads instead of a 1 s stats call)


@dataclass(frozen=True)
class _CgroupSample:
    cpu_ns: int
    memory_bytes: int
    memory_limit_bytes: int | None
    pids: int
    taken_ns: int


class _CgroupReader:
    """Reads a container's cgroup files through the host's /sys/fs/cgroup (v1, hybrid or v2)."""

    def __init__(self, proc: str = "/proc") -> None:
        self._proc = Path(proc)
        self._mounts: tuple[dict[str, tuple[str, str]], tuple[str, str] | None] | None = None

    def _cgroup_mounts(self) -> tuple[dict[str, tuple[str, str]], tuple[str, str] | None]:
        # controller -> (hierarchy root, mount point) for v1; (root, mount point) of cgroup2.
        if self._mounts is None:
            v1: dict[str, tuple[str, str]] = {}
            v2: tuple[str, str] | None = None
            for line in (self._proc / "self" / "mountinfo").read_text().splitlines():
                pre, _, post = line.partition(" - ")
                fields, post_fields = pre.split(), post.split()
                if len(fields) < 5 or len(post_fields) < 3:
                    continue
                root, mount_point, fstype = fields[3], fields[4], post_fields[0]
                if fstype == "cgroup2" and v2 is None:
                    v2 = (root, mount_point)
                elif fstype == "cgroup":
                    for opt in post_fields[2].split(","):
                        v1.setdefault(opt, (root, mount_point))
            self._mounts = (v1, v2)
        return self._mounts

    @staticmethod
    def _join(mount: tuple[str, str], path: str) -> Path:
        root, mount_point = mount
        if root != "/" and path.startswith(root):
            path = path[len(root) :]
        return Path(mount_point + "/" + path.lstrip("/"))

    def locate(self, pid: int, container_id: str) -> dict[str, Path] | None:
        """Controller directories of the container whose init has host pid `pid`."""
        try:
            content = (self._proc / str(pid) / "cgroup").read_text()
        except OSError:
            return None
        # A remote engine's pid means nothing here: only trust a cgroup naming this container.
        if container_id not in content:
            return None
        v1, v2 = self._cgroup_mounts()
        dirs: dict[str, Path] = {}
        for line in content.splitlines():
            _, controllers, path = line.split(":", 2)
            if controllers == "" and v2 is not None:
                unified = self._join(v2, path)
                if (unified / "memory.current").exists():
                    dirs.setdefault("unified", unified)
                continue
            for ctrl in controllers.split(","):
                if ctrl in ("memory", "cpuacct", "pids") and ctrl in v1:
                    dirs[ctrl] = self._join(v1[ctrl], path)
        if "unified" in dirs or {"memory", "cpuacct"} <= dirs.keys():
            return dirs
        # Conventional locations, for hosts where /proc/<pid>/cgroup is namespaced.
        base = Path("/sys/fs/cgroup")
        for candidate in (
            base / "system.slice" / f"docker-{container_id}.scope",
            base / "docker" / container_id,
        ):
            if (candidate / "memory.current").exists():
                return {"unified": candidate}
        if (base / "memory" / "docker" / container_id).is_dir():
            return {
                "memory": base / "memory" / "docker" / container_id,
                "cpuacct": base / "cpuacct" / "docker" / container_id,
                "pids": base / "pids" / "docker" / container_id,
            }
        return None

    @staticmethod
    def _stat_file(path: Path) -> dict[str, int]:
        out: dict[str, int] = {}
        for line in path.read_text().splitlines():
            key, _, value = line.partition(" ")
            if value.strip().isdigit():
                out[key] = int(value)
        return out

    def sample(self, dirs: dict[str, Path]) -> _CgroupSample:
        pids_file: Path | None
        if "unified" in dirs:
            d = dirs["unified"]
            cpu_ns = self._stat_file(d / "cpu.stat").get("usage_usec", 0) * 1000
            mem = int((d / "memory.current").read_text())
            mem -= self._stat_file(d / "memory.stat").get("inactive_file", 0)
            raw_limit = (d / "memory.max").read_text().strip()
            limit = None if raw_limit == "max" else int(raw_limit)
            pids_file = d / "pids.current"
        else:
            cpu_ns = int((dirs["cpuacct"] / "cpuacct.usage").read_text())
            mem = int((dirs["memory"] / "memory.usage_in_bytes").read_text())
            # Same as `docker stats`: page cache that can be dropped is not "used".
            mem -= self._stat_file(dirs["memory"] / "memory.stat").get("total_inactive_file", 0)
            limit = int((dirs["memory"] / "memory.limit_in_bytes").read_text())
            pids_file = dirs["pids"] / "pids.current" if "pids" in dirs else None
        pids = 0
        if pids_file is not None:
            try:
                pids = int(pids_file.read_text())
            except (OSError, ValueError):
                pids = 0
        return _CgroupSample(
            cpu_ns=cpu_ns,
            memory_bytes=max(0, mem),
            memory_limit_bytes=limit,
            pids=pids,
            taken_ns=time.monotonic_ns(),
        )

    def network(self, pid: int) -> tuple[int, int]:
        rx = tx = 0
        for line in (self._proc / str(pid) / "net" / "dev").read_text().splitlines()[2:]:
            iface, _, data = line.partition(":")
            if iface.strip() == "lo":
                continue
            fields = data.split()
            rx += int(fields[0])
            tx += int(fields[8])
        return rx, tx


def _workspace_bytes(attrs: dict[str, Any], max_files: int = 100_000) -> int:
    """Size of the /workspace volume, read from its host directory when this process can see
    it (a worker on the engine's host); 0 otherwise. Bounded so a huge tree cannot stall it."""
    source = next(
        (
            m.get("Source")
            for m in attrs.get("Mounts") or []
            if m.get("Destination") == SANDBOX_WORKSPACE
        ),
        None,
    )
    if not source or not os.path.isdir(source):
        return 0
    total = seen = 0
    for root, _dirs, files in os.walk(source):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
            seen += 1
            if seen >= max_files:
                return total
    return total


def _tmp_bytes(pid: int, path: str = SANDBOX_TMP) -> int:
    """Bytes held by one of the container's tmpfs (/tmp, /dev/shm), through its init's root
    (a local engine)."""
    try:
        st = os.statvfs(f"/proc/{pid}/root{path}")
    except OSError:
        return 0
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def _host_memory_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


# ------------------------------------------------------------------------------------------------
# exec stream helpers


def _raw_socket(sock: Any) -> Any:
    # docker-py hands back a SocketIO for unix/tcp and the bare socket for TLS.
    return getattr(sock, "_sock", sock)


def _close_exec_socket(sock: Any) -> None:
    # Close the HTTP response first (its buffered reader flushes into the socket on close),
    # then the socket wrappers; any other order leaks the fd or raises during garbage collection.
    raw = _raw_socket(sock)
    response = getattr(sock, "_response", None)
    for closer in (
        getattr(response, "close", None),
        getattr(sock, "close", None),
        getattr(raw, "close", None),
    ):
        if closer is not None:
            with contextlib.suppress(OSError, ValueError):
                closer()


def _demux(data: bytes) -> tuple[bytes, bytes]:
    """Split Docker's multiplexed stream (8-byte frame headers) into stdout and stderr."""
    out, err = bytearray(), bytearray()
    pos = 0
    while pos + 8 <= len(data):
        stream_type = data[pos]
        size = int.from_bytes(data[pos + 4 : pos + 8], "big")
        if stream_type not in (0, 1, 2) or data[pos + 1 : pos + 4] != b"\0\0\0":
            # Not multiplexed after all (a TTY exec): everything is stdout.
            return bytes(data), b""
        chunk = data[pos + 8 : pos + 8 + size]
        (err if stream_type == 2 else out).extend(chunk)
        pos += 8 + size
    return bytes(out), bytes(err)


def _iter_frames(data: bytes) -> Iterator[tuple[str, bytes]]:
    pos = 0
    while pos + 8 <= len(data):
        stream_type = data[pos]
        if stream_type not in (0, 1, 2) or data[pos + 1 : pos + 4] != b"\0\0\0":
            yield "stdout", data[pos:]
            return
        size = int.from_bytes(data[pos + 4 : pos + 8], "big")
        yield ("stderr" if stream_type == 2 else "stdout"), data[pos + 8 : pos + 8 + size]
        pos += 8 + size


# ------------------------------------------------------------------------------------------------


class DockerRuntime:
    """Lifecycle, resources, logs and tool execution of sandbox containers."""

    def __init__(
        self,
        client: docker.DockerClient | None = None,
        image: str = DEFAULT_SANDBOX_IMAGE,
        *,
        log_max_size: str = "10m",
        log_max_files: int = 3,
        installation: str = "",
        disks: SandboxDisks | None = None,
        internet_egress_allowed: bool | None = None,
    ) -> None:
        self._client = client
        self.installation = installation
        # The operator's switch (AINTANDEM_SANDBOX_INTERNET_EGRESS_ALLOWED); None: this
        # process's settings. The API refuses the setting too; this holds for stored ones.
        if internet_egress_allowed is None:
            from config.settings import get_settings

            internet_egress_allowed = get_settings().sandbox_internet_egress_allowed
        self.internet_egress_allowed = internet_egress_allowed
        # Per-sandbox size-limited /workspace filesystems (activities/sandbox_disk.py) and
        # per-workspace networks (activities/sandbox_network.py).
        self.disks = disks or SandboxDisks()
        self.networks = SandboxNetworks(lambda: self.client, installation)
        self._client_lock = threading.Lock()
        self.image = image
        self._log_config = LogConfig(
            type=LogConfig.types.JSON,
            config={"max-size": log_max_size, "max-file": str(log_max_files)},
        )
        self._cgroups = _CgroupReader()
        # container id -> previous CPU sample, for cpu_percent between two usage() calls.
        self._cpu_prev: dict[str, _CgroupSample] = {}
        self._cpu_lock = threading.Lock()

    # -- plumbing --------------------------------------------------------------------------------

    @property
    def client(self) -> docker.DockerClient:
        # Lazy: a worker can start (and report a clear error later) while the engine is down.
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    try:
                        self._client = docker.from_env()
                    except docker.errors.DockerException as exc:
                        raise DockerUnavailable(f"Docker engine unreachable: {exc}") from exc
        return self._client

    def _get(self, sandbox_id: str) -> Any:
        try:
            return self.client.containers.get(container_name(sandbox_id))
        except docker.errors.NotFound as exc:
            raise ContainerNotFound(sandbox_id) from exc

    @staticmethod
    def _user_env(spec: ContainerSpec) -> dict[str, str]:
        """The sandbox's variables the container gets: never a loader, Python or platform
        variable (a config stored before the API refused them). The env hash is taken of this,
        so a container that still holds one is outdated and re-created at its next start."""
        return allowed_env(spec.env)

    def _create_kwargs(self, spec: ContainerSpec, network: str | None = None) -> dict[str, Any]:
        user_env = self._user_env(spec)
        labels = {
            **spec.labels,
            LABEL_SANDBOX_ID: spec.sandbox_id,
            LABEL_WORKSPACE_ID: spec.workspace_id,
            LABEL_MANAGED: "true",
            LABEL_ENV_HASH: env_hash(user_env),
            LABEL_ISOLATION: isolation_key(spec.egress, spec.disk_mb),
        }
        if self.installation:
            labels[LABEL_INSTALLATION] = self.installation
        environment = {
            **user_env,
            "AINTANDEM_SANDBOX_ID": spec.sandbox_id,
            "AINTANDEM_WORKSPACE_ID": spec.workspace_id,
        }
        memory = f"{int(spec.memory_mb)}m"
        kwargs: dict[str, Any] = {
            "image": spec.image or self.image,
            "name": container_name(spec.sandbox_id),
            "hostname": sandbox_hostname(spec.name, fallback=spec.sandbox_id),
            "labels": labels,
            "environment": environment,
            "detach": True,
            "tty": False,
            "stdin_open": False,
            # Init as PID 1: it reaps zombies and forwards SIGTERM, so stop takes ~0.1 s.
            "init": True,
            "mem_limit": memory,
            "memswap_limit": memory,  # equal: no swap on top of the limit
            "nano_cpus": round(spec.cpu_cores * 1e9),
            "pids_limit": pids_limit(spec.max_processes),
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"],
            "privileged": False,
            "log_config": self._log_config,
            # Only the sandbox's own named volume: never the Docker socket, nothing of the host.
            # It binds the sandbox's size-limited disk when the host can make one.
            "mounts": [
                Mount(
                    target=SANDBOX_WORKSPACE,
                    source=workspace_volume(spec.sandbox_id),
                    type="volume",
                )
            ],
            # Nothing else is writable: a read-only root, and /tmp a sized tmpfs (its pages
            # count against the memory limit).
            "read_only": True,
            "tmpfs": {
                SANDBOX_TMP: f"size={tmp_size_mb(spec.memory_mb, spec.disk_mb)}m,mode=1777,"
                "nosuid,nodev"
            },
            # /dev/shm: small (it is outside the disk limit); Docker mounts it noexec already.
            "shm_size": f"{SHM_SIZE_MB}m",
            # IPv4 only: the firewall rules of a workspace network are IPv4 rules.
            "sysctls": {"net.ipv6.conf.all.disable_ipv6": "1"},
        }
        if spec.command:
            kwargs["command"] = list(spec.command)
        if spec.network_mode:
            kwargs["network_mode"] = spec.network_mode
            if spec.network_mode in ("none", "host") or spec.network_mode.startswith("container:"):
                kwargs.pop("sysctls")
        elif network:
            kwargs["network"] = network
        return kwargs

    def _ensure_workspace_volume(self, spec: ContainerSpec) -> None:
        """The sandbox's /workspace volume, binding its size-limited disk (made/resized and
        mounted here). A volume from before disks (unlimited) has its files moved onto the disk.
        Without disk support on this host the plain volume stays (the reason is logged)."""
        if not self.disks.available:
            return
        sid = spec.sandbox_id
        source = self.disks.ensure(sid, spec.disk_mb, self.installation)
        name = workspace_volume(sid)
        api = self.client.api
        try:
            current = api.inspect_volume(name)
        except docker.errors.NotFound:
            current = None
        if current is not None:
            options = current.get("Options") or {}
            if options.get("device") == str(source) and options.get("o") == "bind":
                return
            if not options and current.get("Driver") == "local":
                self.disks.adopt(sid, Path(current.get("Mountpoint") or ""))
            api.remove_volume(name, force=True)
        labels = {LABEL_MANAGED: "true", LABEL_SANDBOX_ID: sid}
        if self.installation:
            labels[LABEL_INSTALLATION] = self.installation
        api.create_volume(
            name,
            driver="local",
            driver_opts={"type": "none", "o": "bind", "device": str(source)},
            labels=labels,
        )

    def _ensure_network(self, spec: ContainerSpec) -> str | None:
        if spec.network_mode:
            return None
        name, _ = self.networks.ensure(spec.workspace_id, spec.egress)
        return name

    @_translate_errors
    def outdated(self, spec: ContainerSpec) -> str | None:
        """Why the existing container no longer matches `spec` and must be re-created (keeping
        /workspace): other env vars, egress or disk size, or its network is gone. None when it
        matches or does not exist."""
        try:
            attrs = self._get(spec.sandbox_id).attrs
        except ContainerNotFound:
            return None
        labels = (attrs.get("Config") or {}).get("Labels") or {}
        if labels.get(LABEL_ENV_HASH) != env_hash(self._user_env(spec)):
            return "environment variables changed"
        if labels.get(LABEL_ISOLATION) != isolation_key(spec.egress, spec.disk_mb):
            return "isolation settings changed"
        shm = int((attrs.get("HostConfig") or {}).get("ShmSize") or 0)
        if spec.network_mode != "host" and shm != SHM_SIZE_MB * _MIB:
            return "isolation settings changed"
        if spec.network_mode:
            return None
        name = network_name(self.installation, spec.workspace_id, spec.egress)
        joined = ((attrs.get("NetworkSettings") or {}).get("Networks") or {}).get(name)
        if joined is None:
            return "not on its workspace network"
        try:
            current = self.client.api.inspect_network(name)
        except docker.errors.NotFound:
            return "its workspace network is gone"
        if joined.get("NetworkID") and joined["NetworkID"] != current.get("Id"):
            return "its workspace network was re-created"
        return None

    # -- lifecycle -------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the engine connection pool (the client reconnects lazily if used again)."""
        with self._client_lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    @_translate_errors
    def ping(self) -> bool:
        return bool(self.client.ping())

    @_translate_errors
    def ensure_container(self, spec: ContainerSpec) -> ContainerState:
        """Create the sandbox's container if it does not exist (not started). Either way its
        disk is mounted and its network's firewall rules are in place (a reboot loses both).
        A sandbox with egress 'internet' is refused where the operator disabled it."""
        if (
            not spec.network_mode
            and spec.egress == EGRESS_INTERNET
            and not self.internet_egress_allowed
        ):
            raise IsolationUnavailable(
                "egress 'internet' is disabled on this installation "
                "(AINTANDEM_SANDBOX_INTERNET_EGRESS_ALLOWED=false): set the workspace's "
                "settings.egress to 'none'"
            )
        try:
            existing = self._get(spec.sandbox_id)
        except ContainerNotFound:
            existing = None
        if existing is not None:
            if self.disks.available and self.disks.image(spec.sandbox_id).exists():
                # Mount only: resizing waits for a re-created container.
                self.disks.ensure(spec.sandbox_id, self.disks.size_mb(spec.sandbox_id))
            joined = ((existing.attrs.get("NetworkSettings") or {}).get("Networks") or {}).values()
            self.networks.ensure_rules([n["NetworkID"] for n in joined if n.get("NetworkID")])
            return _state_from_attrs(existing.attrs)
        self._ensure_workspace_volume(spec)
        kwargs = self._create_kwargs(spec, self._ensure_network(spec))
        container = None
        for attempt in range(2):
            try:
                container = self.client.containers.create(**kwargs)
                break
            except docker.errors.ImageNotFound as exc:
                raise ImageMissing(kwargs["image"]) from exc
            except docker.errors.NotFound:
                # The network was removed between ensuring and creating (its last sandbox of
                # the workspace was deleted just then): make it again, once.
                if attempt or spec.network_mode:
                    raise
                kwargs = self._create_kwargs(spec, self._ensure_network(spec))
            except docker.errors.APIError as exc:
                if exc.status_code == 409:
                    # Lost a race with a concurrent create of the same name: that one wins.
                    return _state_from_attrs(self._get(spec.sandbox_id).attrs)
                raise
        assert container is not None
        if not spec.network_mode:
            # A re-creation for another egress mode leaves the old mode's network unused.
            self.networks.remove_unused(spec.workspace_id, keep=kwargs.get("network"))
        container.reload()
        return _state_from_attrs(container.attrs)

    @_translate_errors
    def start(self, sandbox_id: str) -> ContainerState:
        container = self._get(sandbox_id)
        status = container.attrs["State"]["Status"]
        if status == "paused":
            container.unpause()
        elif status != "running":
            container.start()
        container.reload()
        return _state_from_attrs(container.attrs)

    @_translate_errors
    def stop(self, sandbox_id: str, timeout: int = 10) -> ContainerState:
        try:
            container = self._get(sandbox_id)
        except ContainerNotFound:
            return ContainerState.absent()
        if container.attrs["State"]["Status"] in ("running", "paused", "restarting"):
            try:
                container.stop(timeout=timeout)
            except docker.errors.NotFound:
                return ContainerState.absent()
        container.reload()
        return _state_from_attrs(container.attrs)

    @_translate_errors
    def restart(self, sandbox_id: str, timeout: int = 10) -> ContainerState:
        container = self._get(sandbox_id)
        container.restart(timeout=timeout)
        container.reload()
        with self._cpu_lock:
            self._cpu_prev.pop(container.id, None)
        return _state_from_attrs(container.attrs)

    @_translate_errors
    def remove(self, sandbox_id: str, keep_workspace: bool = False) -> None:
        """Remove the container and (unless kept) its /workspace volume and disk, and the
        workspace network once no container uses it; absent is success."""
        try:
            container = self._get(sandbox_id)
        except ContainerNotFound:
            container = None
        workspace_id, joined = None, []
        if container is not None:
            workspace_id = (container.labels or {}).get(LABEL_WORKSPACE_ID)
            networks = (container.attrs.get("NetworkSettings") or {}).get("Networks") or {}
            joined = [n["NetworkID"] for n in networks.values() if n.get("NetworkID")]
            try:
                container.remove(force=True, v=True)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as exc:
                # "removal already in progress": a concurrent remove of the same name.
                if exc.status_code != 409:
                    raise
            with self._cpu_lock:
                self._cpu_prev.pop(container.id, None)
        if not keep_workspace:
            with contextlib.suppress(docker.errors.NotFound):
                self.client.volumes.get(workspace_volume(sandbox_id)).remove(force=True)
            self.disks.remove(sandbox_id)
            self.networks.remove_if_unused(joined)
            if workspace_id:
                self.networks.remove_unused(workspace_id)

    @_translate_errors
    def remove_orphan_resources(self, known_sandbox_ids: set[str]) -> list[str]:
        """Disks (and their volumes) of this installation whose sandbox no longer exists, and
        workspace networks no container uses. Returns what was removed."""
        removed = []
        for sid in self.disks.owned(self.installation):
            if sid in known_sandbox_ids:
                continue
            with contextlib.suppress(docker.errors.NotFound):
                self.client.api.remove_volume(workspace_volume(sid), force=True)
            self.disks.remove(sid)
            removed.append(f"disk:{sid}")
        removed.extend(f"network:{n}" for n in self.networks.remove_unused())
        return removed

    @_translate_errors
    def created_env_hash(self, sandbox_id: str) -> str | None:
        """The env hash label of the existing container (None when absent or unlabelled)."""
        try:
            return (self._get(sandbox_id).labels or {}).get(LABEL_ENV_HASH)
        except ContainerNotFound:
            return None

    @_translate_errors
    def inspect(self, sandbox_id: str) -> ContainerState:
        try:
            return _state_from_attrs(self._get(sandbox_id).attrs)
        except ContainerNotFound:
            return ContainerState.absent()

    @_translate_errors
    def update_resources(
        self, sandbox_id: str, memory_mb: int, cpu_cores: float, max_processes: int
    ) -> ContainerState:
        """Apply new limits to the live container (no restart)."""
        container = self._get(sandbox_id)
        memory = int(memory_mb) * _MIB
        # docker-py's update_container() knows neither NanoCpus nor PidsLimit; the API does.
        api = self.client.api
        response = api._post_json(
            api._url("/containers/{0}/update", container.id),
            data={
                "Memory": memory,
                "MemorySwap": memory,
                "NanoCpus": round(cpu_cores * 1e9),
                "PidsLimit": pids_limit(max_processes),
            },
        )
        api._result(response, True)
        container.reload()
        return _state_from_attrs(container.attrs)

    @_translate_errors
    def find_managed_containers(self) -> list[ManagedContainer]:
        """Every container this installation created (for orphan cleanup). Other installations
        sharing the engine (a second database, a test run) label theirs differently."""
        wanted = [f"{LABEL_MANAGED}=true"]
        if self.installation:
            wanted.append(f"{LABEL_INSTALLATION}={self.installation}")
        rows = self.client.api.containers(all=True, filters={"label": wanted})
        found = []
        for row in rows:
            labels = row.get("Labels") or {}
            names = row.get("Names") or []
            created = row.get("Created")
            found.append(
                ManagedContainer(
                    container_id=row["Id"],
                    name=names[0].lstrip("/") if names else "",
                    sandbox_id=labels.get(LABEL_SANDBOX_ID),
                    workspace_id=labels.get(LABEL_WORKSPACE_ID),
                    status=row.get("State", "unknown"),
                    image=row.get("Image", ""),
                    created_at=datetime.fromtimestamp(created, UTC) if created else None,
                )
            )
        return found

    # -- observation -----------------------------------------------------------------------------

    @_translate_errors
    def usage(self, sandbox_id: str) -> ResourceUsage:
        """CPU, memory, disk, network and pids of the container, in well under 200 ms."""
        # One inspect (with the writable layer's size) + a few file reads: ~10 ms when idle.
        attrs = self._inspect_with_size(sandbox_id)
        container_id = attrs["Id"]
        host_config = attrs.get("HostConfig") or {}
        configured_limit = int(host_config.get("Memory") or 0)
        state = attrs.get("State") or {}
        pid = int(state.get("Pid") or 0)
        running = bool(state.get("Running")) and pid > 0
        # Writable layer (empty with a read-only root) + /workspace (its disk's used blocks, or
        # a walk of an unlimited volume) + the /tmp tmpfs.
        disk = self.disks.usage(sandbox_id) if self.disks.available else None
        disk_bytes = int(attrs.get("SizeRw") or 0)
        disk_bytes += int(disk.used_mb * _MIB) if disk is not None else _workspace_bytes(attrs)
        if running and SANDBOX_TMP in (host_config.get("Tmpfs") or {}):
            # Only a /tmp of its own: an older container's /tmp is its writable layer, whose
            # statvfs would be the host's whole filesystem.
            disk_bytes += _tmp_bytes(pid)
        if running:
            disk_bytes += _tmp_bytes(pid, SANDBOX_SHM)  # always a tmpfs of its own
        disk_mb = round(disk_bytes / _MIB, 2)
        limits = {"disk_limit_mb": disk.size_mb if disk is not None else 0.0}
        now = datetime.now(UTC)
        if not running:
            limit_mb = configured_limit / _MIB if configured_limit else 0.0
            return ResourceUsage(
                0.0, 0.0, limit_mb, 0.0, disk_mb, 0, 0, 0, now, "stopped", **limits
            )
        dirs = self._cgroups.locate(pid, container_id)
        usage = None
        if dirs is not None:
            # Failing: the container exited mid-read, or an unexpected layout: ask the engine.
            with contextlib.suppress(OSError, ValueError, IndexError):
                usage = self._usage_from_cgroup(container_id, pid, dirs, configured_limit, disk_mb)
        if usage is None:
            usage = self._usage_from_stats(container_id, configured_limit, disk_mb)
        return replace(usage, **limits)

    def _usage_from_cgroup(
        self, container_id: str, pid: int, dirs: dict[str, Path], configured: int, disk_mb: float
    ) -> ResourceUsage:
        with self._cpu_lock:
            previous = self._cpu_prev.get(container_id)
        current = self._cgroups.sample(dirs)
        if previous is None or current.cpu_ns < previous.cpu_ns:
            # First call (or the container restarted): take a short second sample.
            time.sleep(CPU_SAMPLE_INTERVAL_SECONDS)
            previous, current = current, self._cgroups.sample(dirs)
        with self._cpu_lock:
            self._cpu_prev[container_id] = current
        wall = max(1, current.taken_ns - previous.taken_ns)
        cpu_percent = (current.cpu_ns - previous.cpu_ns) / wall * 100.0
        limit = configured or current.memory_limit_bytes or _host_memory_bytes() or 0
        host_memory = _host_memory_bytes()
        if host_memory and limit > host_memory:
            limit = host_memory  # "unlimited" is a huge number in cgroup v1
        rx, tx = self._cgroups.network(pid)
        return ResourceUsage(
            cpu_percent=round(cpu_percent, 2),
            memory_mb=round(current.memory_bytes / _MIB, 2),
            memory_limit_mb=round(limit / _MIB, 2),
            memory_percent=round(current.memory_bytes / limit * 100.0, 2) if limit else 0.0,
            disk_mb=disk_mb,
            network_in_bytes=rx,
            network_out_bytes=tx,
            pids=current.pids,
            sampled_at=datetime.now(UTC),
            source="cgroup",
        )

    def _usage_from_stats(
        self, container_id: str, configured: int, disk_mb: float
    ) -> ResourceUsage:
        # Slow path (~1 s: the engine waits for a second sample), for remote engines.
        stats = self.client.api.stats(container_id, stream=False)
        cpu = stats.get("cpu_stats") or {}
        pre = stats.get("precpu_stats") or {}
        cpu_delta = (cpu.get("cpu_usage") or {}).get("total_usage", 0) - (
            pre.get("cpu_usage") or {}
        ).get("total_usage", 0)
        system_delta = cpu.get("system_cpu_usage", 0) - pre.get("system_cpu_usage", 0)
        online = cpu.get("online_cpus") or len(
            (cpu.get("cpu_usage") or {}).get("percpu_usage") or [1]
        )
        cpu_percent = cpu_delta / system_delta * online * 100.0 if system_delta > 0 else 0.0
        mem = stats.get("memory_stats") or {}
        mem_stats = mem.get("stats") or {}
        used = mem.get("usage", 0) - mem_stats.get(
            "total_inactive_file", mem_stats.get("inactive_file", 0)
        )
        limit = configured or mem.get("limit", 0)
        networks = stats.get("networks") or {}
        return ResourceUsage(
            cpu_percent=round(max(0.0, cpu_percent), 2),
            memory_mb=round(max(0, used) / _MIB, 2),
            memory_limit_mb=round(limit / _MIB, 2),
            memory_percent=round(max(0, used) / limit * 100.0, 2) if limit else 0.0,
            disk_mb=disk_mb,
            network_in_bytes=sum(n.get("rx_bytes", 0) for n in networks.values()),
            network_out_bytes=sum(n.get("tx_bytes", 0) for n in networks.values()),
            pids=int((stats.get("pids_stats") or {}).get("current") or 0),
            sampled_at=datetime.now(UTC),
            source="stats",
        )

    def _inspect_with_size(self, sandbox_id: str) -> dict[str, Any]:
        api = self.client.api
        response = api._get(
            api._url("/containers/{0}/json", container_name(sandbox_id)), params={"size": 1}
        )
        if response.status_code == 404:
            raise ContainerNotFound(sandbox_id)
        result: dict[str, Any] = api._result(response, True)
        return result

    @_translate_errors
    def logs(
        self, sandbox_id: str, since: datetime | None = None, limit: int = 100
    ) -> list[LogLine]:
        """The last `limit` lines of stdout/stderr (at or after `since`), oldest first."""
        params: dict[str, Any] = {
            "stdout": 1,
            "stderr": 1,
            "timestamps": 1,
            "tail": str(max(1, int(limit))),
        }
        if since is not None:
            since_utc = since if since.tzinfo else since.replace(tzinfo=UTC)
            params["since"] = f"{since_utc.timestamp():.6f}"
        api = self.client.api
        response = api._get(
            api._url("/containers/{0}/logs", container_name(sandbox_id)), params=params
        )
        if response.status_code == 404:
            raise ContainerNotFound(sandbox_id)
        api._raise_for_status(response)
        lines: list[LogLine] = []
        pending = {"stdout": b"", "stderr": b""}
        for stream, chunk in _iter_frames(response.content):
            pending[stream] += chunk
            *complete, pending[stream] = pending[stream].split(b"\n")
            lines.extend(self._log_line(stream, raw) for raw in complete if raw.strip())
        lines.extend(self._log_line(s, raw) for s, raw in pending.items() if raw.strip())
        if since is not None:
            floor = since if since.tzinfo else since.replace(tzinfo=UTC)
            lines = [line for line in lines if line.timestamp >= floor]
        lines.sort(key=lambda line: line.timestamp)
        return lines[-limit:] if limit > 0 else lines

    @staticmethod
    def _log_line(stream: str, raw: bytes) -> LogLine:
        text = raw.decode("utf-8", errors="replace").rstrip("\r")
        stamp, _, body = text.partition(" ")
        timestamp = _parse_docker_time(stamp) or datetime.now(UTC)
        level, message = "info", body
        if body.startswith("{"):
            try:
                record = json.loads(body)
            except ValueError:
                record = None
            if isinstance(record, dict) and "message" in record:
                message = str(record["message"])
                level = _LEVELS.get(str(record.get("level", "info")).lower(), "info")
        return LogLine(timestamp=timestamp, level=level, message=message, stream=stream)

    # -- tools -----------------------------------------------------------------------------------

    @_translate_errors
    def exec_tool(
        self,
        sandbox_id: str,
        tool: str,
        args: dict[str, Any] | None = None,
        timeout_seconds: float | None = None,
        *,
        user: str = "",
    ) -> ToolResult:
        """Run one agent-runtime tool inside the running container and return its answer.

        The runtime runs isolated (`python3 -I`, a root-owned interpreter link and code on a
        read-only root): nothing the agent writes (a .pth or usercustomize in its user site,
        a sitecustomize in /workspace, PYTHON* variables) is imported into it. `user` = ""
        runs it as the image's user (tools act on the agent's files as the agent)."""
        args = dict(args or {})
        if tool == "run_command":
            inner = (
                args.get("timeout_seconds") or timeout_seconds or DEFAULT_COMMAND_TIMEOUT_SECONDS
            )
            if timeout_seconds is not None:
                inner = min(inner, timeout_seconds)
            args["timeout_seconds"] = inner
            # The runtime enforces the command's timeout (and kills its process group) first.
            host_timeout = float(inner) + EXEC_TIMEOUT_MARGIN_SECONDS
        else:
            host_timeout = float(timeout_seconds or DEFAULT_TOOL_TIMEOUT_SECONDS)
        request = json.dumps({"tool": tool, "args": args}, ensure_ascii=False).encode() + b"\n"

        api = self.client.api
        started = time.monotonic()
        try:
            # By name, without a prior inspect: the engine's 404/409 say absent/not running.
            exec_id = api.exec_create(
                container_name(sandbox_id),
                [*AGENT_RUNTIME_COMMAND, "tool"],
                stdin=True,
                stdout=True,
                stderr=True,
                tty=False,
                workdir=SANDBOX_WORKSPACE,
                user=user,
                # Nothing from the container's env loads code into the runtime.
                environment=RUNTIME_EXEC_ENV,
            )["Id"]
        except docker.errors.NotFound as exc:
            raise ContainerNotFound(sandbox_id) from exc
        except docker.errors.APIError as exc:
            if exc.status_code == 409:
                raise ContainerNotRunning(sandbox_id, self.inspect(sandbox_id).status) from exc
            raise
        sock = api.exec_start(exec_id, socket=True)
        raw = _raw_socket(sock)
        deadline = started + host_timeout
        received = bytearray()
        timed_out = overflow = False
        try:
            raw.settimeout(max(0.1, deadline - time.monotonic()))
            raw.sendall(request)
            # The runtime reads one line; EOF on stdin is a courtesy not every transport offers.
            with contextlib.suppress(OSError, AttributeError):
                raw.shutdown(socket.SHUT_WR)
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    timed_out = True
                    break
                raw.settimeout(remaining)
                try:
                    chunk = raw.recv(65536)
                except TimeoutError:
                    timed_out = True
                    break
                if not chunk:
                    break
                received += chunk
                if len(received) > MAX_EXEC_OUTPUT_BYTES:
                    overflow = True
                    break
        finally:
            _close_exec_socket(sock)
        duration_ms = round((time.monotonic() - started) * 1000, 1)
        if timed_out or overflow:
            self._kill_exec(exec_id)
            if timed_out:
                return ToolResult(
                    ok=False,
                    error_type="tool_timeout",
                    error_message=f"tool {tool!r} did not answer within {host_timeout:.0f} s",
                    duration_ms=duration_ms,
                )
            return ToolResult(
                ok=False,
                error_type="runtime_error",
                error_message=f"tool {tool!r} answered more than {MAX_EXEC_OUTPUT_BYTES} bytes",
                duration_ms=duration_ms,
            )
        stdout, stderr = _demux(bytes(received))
        exit_code = self._exec_exit_code(exec_id)
        response = None
        for line in reversed(stdout.decode("utf-8", errors="replace").splitlines()):
            if line.strip():
                try:
                    response = json.loads(line)
                except ValueError:
                    response = None
                break
        if not isinstance(response, dict) or "ok" not in response:
            detail = (stderr or stdout).decode("utf-8", errors="replace").strip()[-2000:]
            return ToolResult(
                ok=False,
                error_type="runtime_error",
                error_message=f"agent runtime failed (exit code {exit_code}): {detail}",
                duration_ms=duration_ms,
            )
        if response["ok"]:
            return ToolResult(ok=True, result=response.get("result"), duration_ms=duration_ms)
        error = response.get("error") or {}
        return ToolResult(
            ok=False,
            error_type=str(error.get("type", "unknown")),
            error_message=str(error.get("message", "")),
            duration_ms=duration_ms,
        )

    def _exec_exit_code(self, exec_id: str) -> int | None:
        # The stream closes a moment before the engine records the exit code.
        for _ in range(20):
            info = self.client.api.exec_inspect(exec_id)
            if not info.get("Running"):
                code = info.get("ExitCode")
                return None if code is None else int(code)
            time.sleep(0.05)
        return None

    def _kill_exec(self, exec_id: str) -> None:
        # The API cannot kill an exec; on a local engine its host pid can be signalled.
        try:
            pid = int(self.client.api.exec_inspect(exec_id).get("Pid") or 0)
            if pid > 0 and Path(f"/proc/{pid}").exists():
                os.kill(pid, 9)
        except (docker.errors.DockerException, OSError, ValueError):
            pass

    def health(self, sandbox_id: str, timeout_seconds: float = 10.0) -> ToolResult:
        """The agent runtime's own health report (status, uptime, workspace), run as a uid no
        agent process has, so none can reach into the check while it runs."""
        return self.exec_tool(
            sandbox_id, "health", {}, timeout_seconds=timeout_seconds, user=HEALTH_CHECK_USER
        )
