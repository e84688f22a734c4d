"""DockerRuntime against the real Docker engine and the locally built sandbox image."""

from __future__ import annotations

import gc
import subprocess
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import docker
import pytest

from activities.docker_runtime import (
    ContainerNotFound,
    ContainerNotRunning,
    DockerRuntime,
    DockerUnavailable,
    ImageMissing,
)
from domain.containers import (
    LABEL_MANAGED,
    LABEL_SANDBOX_ID,
    LABEL_WORKSPACE_ID,
    RUNTIME_PIDS_OVERHEAD,
    ContainerSpec,
    container_name,
    workspace_volume,
)

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]
MIB = 1024 * 1024


@pytest.fixture(scope="session")
def sandbox_image() -> str:
    """Engine up and image built, once per session (both scripts are idempotent)."""
    for script in ("scripts/docker-engine.sh", "sandbox_image/build.sh"):
        proc = subprocess.run(
            [str(ROOT / script)], capture_output=True, text=True, timeout=900, check=False
        )
        if proc.returncode != 0:
            pytest.fail(f"{script} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    tag = proc.stdout.strip().splitlines()[-1]
    assert tag.startswith("aintandem/sandbox:")
    return tag


@pytest.fixture(scope="session")
def docker_client(sandbox_image: str) -> Iterator[docker.DockerClient]:
    client = docker.from_env()
    yield client
    client.close()


@pytest.fixture
def runtime(docker_client: docker.DockerClient, sandbox_image: str) -> DockerRuntime:
    return DockerRuntime(docker_client, image=sandbox_image)


@pytest.fixture
def sandbox_id(runtime: DockerRuntime) -> Iterator[str]:
    sid = f"sb_test{uuid.uuid4().hex[:12]}"
    yield sid
    runtime.remove(sid)


def make_spec(sandbox_id: str, **overrides: object) -> ContainerSpec:
    values: dict[str, object] = {
        "sandbox_id": sandbox_id,
        "workspace_id": "ws_test",
        "name": "Test Sandbox #1",
        "memory_mb": 256,
        "cpu_cores": 0.5,
        "max_processes": 10,
        "env": {"GREETING": "hello", "AINTANDEM_SANDBOX_ID": "spoofed"},
        "labels": {"team": "qa"},
    }
    values.update(overrides)
    return ContainerSpec(**values)  # type: ignore[arg-type]


def started(runtime: DockerRuntime, sandbox_id: str, **overrides: object) -> None:
    runtime.ensure_container(make_spec(sandbox_id, **overrides))
    runtime.start(sandbox_id)


def wait_for_log(
    runtime: DockerRuntime, sandbox_id: str, message: str, timeout: float = 10
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(line.message == message for line in runtime.logs(sandbox_id, limit=1000)):
            return
        time.sleep(0.1)
    raise AssertionError(f"log line {message!r} never appeared")


# -- lifecycle -----------------------------------------------------------------------------------


def test_lifecycle_is_idempotent_and_applies_limits(
    runtime: DockerRuntime, docker_client: docker.DockerClient, sandbox_id: str
) -> None:
    spec = make_spec(sandbox_id)
    first = runtime.ensure_container(spec)
    second = runtime.ensure_container(spec)
    assert first.exists and first.status == "created" and not first.running
    assert second.container_id == first.container_id

    attrs = docker_client.api.inspect_container(container_name(sandbox_id))
    host = attrs["HostConfig"]
    assert attrs["Name"] == f"/aintandem-{sandbox_id}"
    assert host["Memory"] == 256 * MIB
    assert host["MemorySwap"] == 256 * MIB
    assert host["NanoCpus"] == 500_000_000
    assert host["PidsLimit"] == 10 + RUNTIME_PIDS_OVERHEAD
    assert host["CapDrop"] == ["ALL"]
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert host["Init"] is True
    assert host["Privileged"] is False
    assert not host.get("Binds")
    # Only the sandbox's own named volume at /workspace: nothing of the host.
    assert [(m["Type"], m["Destination"]) for m in attrs["Mounts"]] == [("volume", "/workspace")]
    assert attrs["Mounts"][0]["Name"] == workspace_volume(
        attrs["Config"]["Labels"]["aintandem.sandbox_id"]
    )
    assert "docker.sock" not in str(attrs)
    config = attrs["Config"]
    assert config["Hostname"] == "test-sandbox-1"
    assert config["Labels"][LABEL_SANDBOX_ID] == sandbox_id
    assert config["Labels"][LABEL_WORKSPACE_ID] == "ws_test"
    assert config["Labels"][LABEL_MANAGED] == "true"
    assert config["Labels"]["team"] == "qa"
    assert "GREETING=hello" in config["Env"]
    assert f"AINTANDEM_SANDBOX_ID={sandbox_id}" in config["Env"]  # the platform's value wins
    assert config["User"] == "agent"

    t0 = time.monotonic()
    running = runtime.start(sandbox_id)
    start_s = time.monotonic() - t0
    again = runtime.start(sandbox_id)
    assert running.running and running.status == "running"
    assert again.started_at == running.started_at  # the second start was a no-op

    wait_for_log(runtime, sandbox_id, "Agent runtime started")
    health = runtime.health(sandbox_id)
    assert health.ok, health
    assert health.result["status"] == "healthy"
    assert health.result["workspace"] == "/workspace"
    assert health.result["uptime_seconds"] >= 0

    t0 = time.monotonic()
    stopped = runtime.stop(sandbox_id, timeout=10)
    stop_s = time.monotonic() - t0
    assert runtime.stop(sandbox_id) == stopped
    assert stopped.status == "exited" and not stopped.running
    assert stopped.exit_code == 0  # the runtime exits cleanly on SIGTERM
    assert not stopped.oom_killed
    assert stopped.finished_at is not None
    # SIGTERM reaches the runtime through the init: no wait for the stop timeout.
    assert stop_s < 5, stop_s
    assert start_s < 5, start_s
    messages = [line.message for line in runtime.logs(sandbox_id)]
    assert messages[-1] == "Agent runtime stopping"

    restarted = runtime.restart(sandbox_id)
    assert restarted.running
    assert restarted.started_at is not None and restarted.started_at > running.started_at

    runtime.remove(sandbox_id)
    runtime.remove(sandbox_id)
    absent = runtime.inspect(sandbox_id)
    assert absent.exists is False and absent.status == "absent"
    assert runtime.stop(sandbox_id).exists is False
    with pytest.raises(ContainerNotFound):
        runtime.start(sandbox_id)
    with pytest.raises(ContainerNotFound):
        runtime.usage(sandbox_id)


def test_update_resources_applies_to_the_live_container(
    runtime: DockerRuntime, docker_client: docker.DockerClient, sandbox_id: str
) -> None:
    started(runtime, sandbox_id)
    for _ in range(2):
        state = runtime.update_resources(sandbox_id, memory_mb=384, cpu_cores=1.5, max_processes=20)
        assert state.running
    host = docker_client.api.inspect_container(container_name(sandbox_id))["HostConfig"]
    assert host["Memory"] == 384 * MIB
    assert host["MemorySwap"] == 384 * MIB
    assert host["NanoCpus"] == 1_500_000_000
    assert host["PidsLimit"] == 20 + RUNTIME_PIDS_OVERHEAD
    # The kernel sees the new limit, not just the engine's bookkeeping.
    assert runtime.usage(sandbox_id).memory_limit_mb == 384
    limit = runtime.exec_tool(
        sandbox_id, "run_command", {"command": "cat /sys/fs/cgroup/memory/memory.limit_in_bytes"}
    )
    assert limit.ok and int(limit.result["stdout"]) == 384 * MIB


def test_ensure_container_with_a_missing_image(runtime: DockerRuntime, sandbox_id: str) -> None:
    with pytest.raises(ImageMissing):
        runtime.ensure_container(make_spec(sandbox_id, image="aintandem/does-not-exist:0"))


def test_engine_down_is_reported_as_unavailable(tmp_path: Path) -> None:
    client = docker.DockerClient(base_url=f"unix://{tmp_path}/no.sock", version="1.41")
    runtime = DockerRuntime(client)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()  # whatever earlier tests left for the collector, silently
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        for _ in range(3):  # what a health loop does while the engine is away
            with pytest.raises(DockerUnavailable):
                runtime.inspect("sb_whatever")
            with pytest.raises(DockerUnavailable):
                runtime.ping()
        client.close()
        gc.collect()
    # docker-py 7 left the socket of each failed unix connect open (one descriptor per probe
    # until garbage collection); activities/docker_runtime.py closes it.
    leaked = [str(w.message) for w in caught if "family=1" in str(w.message)]
    assert leaked == []


# -- observation ---------------------------------------------------------------------------------


def test_usage_reads_real_numbers_fast(runtime: DockerRuntime, sandbox_id: str) -> None:
    started(runtime, sandbox_id, memory_mb=256, cpu_cores=0.5)
    wait_for_log(runtime, sandbox_id, "Agent runtime started")
    first = runtime.usage(sandbox_id)
    assert first.source == "cgroup"
    assert first.memory_mb > 0
    assert first.memory_limit_mb == 256
    assert 0 < first.memory_percent < 100
    assert first.pids >= 2  # init + runtime
    assert first.cpu_percent >= 0
    assert first.network_in_bytes >= 0 and first.network_out_bytes >= 0

    write = runtime.exec_tool(
        sandbox_id, "run_command", {"command": "head -c 3000000 /dev/urandom > blob"}
    )
    assert write.ok and write.result["exit_code"] == 0
    assert runtime.usage(sandbox_id).disk_mb >= 2.5

    # Burn CPU inside for ~3 s: cpu_percent rises but stays under the 0.5-core quota.
    burner = threading.Thread(
        target=runtime.exec_tool,
        args=(sandbox_id, "run_command", {"command": "timeout 3 sh -c 'while :; do :; done'"}),
    )
    burner.start()
    try:
        time.sleep(1.0)
        runtime.usage(sandbox_id)
        time.sleep(1.0)
        t0 = time.monotonic()
        busy = runtime.usage(sandbox_id)
        elapsed = time.monotonic() - t0
    finally:
        burner.join()
    assert 20 < busy.cpu_percent <= 60, busy
    assert elapsed < 0.5, elapsed  # cgroup files, not a ~1 s stats() call


def test_usage_falls_back_to_engine_stats(
    runtime: DockerRuntime, sandbox_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    started(runtime, sandbox_id)
    wait_for_log(runtime, sandbox_id, "Agent runtime started")
    # As with a remote engine: the container's cgroup files are not on this host.
    monkeypatch.setattr(runtime._cgroups, "locate", lambda pid, container_id: None)
    usage = runtime.usage(sandbox_id)
    assert usage.source == "stats"
    assert usage.memory_mb > 0
    assert usage.memory_limit_mb == 256
    assert usage.pids >= 2


def test_usage_of_a_stopped_container(runtime: DockerRuntime, sandbox_id: str) -> None:
    runtime.ensure_container(make_spec(sandbox_id))
    usage = runtime.usage(sandbox_id)
    assert usage.source == "stopped"
    assert usage.memory_mb == 0 and usage.pids == 0
    assert usage.memory_limit_mb == 256


def test_logs_since_and_limit(runtime: DockerRuntime, sandbox_id: str) -> None:
    started(runtime, sandbox_id)
    wait_for_log(runtime, sandbox_id, "Agent runtime started")
    runtime.restart(sandbox_id, timeout=5)
    time.sleep(0.5)
    lines = runtime.logs(sandbox_id, limit=100)
    messages = [line.message for line in lines]
    assert messages.count("Agent runtime started") == 2
    assert "Agent runtime stopping" in messages
    assert all(line.level in {"debug", "info", "warn", "error"} for line in lines)
    assert all(line.timestamp.tzinfo is not None for line in lines)
    assert lines == sorted(lines, key=lambda line: line.timestamp)

    assert runtime.logs(sandbox_id, limit=1) == lines[-1:]
    later = runtime.logs(sandbox_id, since=lines[-1].timestamp)
    assert later == lines[-1:]
    assert runtime.logs(sandbox_id, since=datetime.now(UTC) + timedelta(hours=1)) == []


def test_find_managed_containers(runtime: DockerRuntime, sandbox_id: str) -> None:
    runtime.ensure_container(make_spec(sandbox_id))
    found = {c.sandbox_id: c for c in runtime.find_managed_containers()}
    ours = found[sandbox_id]
    assert ours.name == container_name(sandbox_id)
    assert ours.workspace_id == "ws_test"
    assert ours.status == "created"


# -- tools inside the container -----------------------------------------------------------------


def test_file_tools_in_the_container(runtime: DockerRuntime, sandbox_id: str) -> None:
    started(runtime, sandbox_id)
    content = "line\n" * 50_000  # 250 kB through the exec's stdin
    wrote = runtime.exec_tool(sandbox_id, "write_file", {"path": "src/app.txt", "content": content})
    assert wrote.ok, wrote
    assert wrote.result["bytes_written"] == len(content)
    read = runtime.exec_tool(sandbox_id, "read_file", {"path": "src/app.txt"})
    assert read.ok and read.result["content"] == content
    listing = runtime.exec_tool(sandbox_id, "list_files", {"recursive": True})
    assert listing.ok
    assert {"path": "src/app.txt", "type": "file", "size": len(content)} in listing.result[
        "entries"
    ]
    escape = runtime.exec_tool(sandbox_id, "read_file", {"path": "../etc/passwd"})
    assert not escape.ok and escape.error_type == "path_outside_workspace"
    missing = runtime.exec_tool(sandbox_id, "read_file", {"path": "nope"})
    assert not missing.ok and missing.error_type == "not_found"
    unknown = runtime.exec_tool(sandbox_id, "format_disk", {})
    assert not unknown.ok and unknown.error_type == "unknown_tool"


def test_run_command_in_the_container(runtime: DockerRuntime, sandbox_id: str) -> None:
    started(runtime, sandbox_id)
    result = runtime.exec_tool(
        sandbox_id,
        "run_command",
        {
            "command": "id -u; pwd; echo $GREETING; grep CapEff /proc/self/status;"
            " test -e /var/run/docker.sock && echo SOCKET; exit 4"
        },
    )
    assert result.ok, result
    out = result.result["stdout"].splitlines()
    assert out[:3] == ["1000", "/workspace", "hello"]
    assert out[3].split() == ["CapEff:", "0000000000000000"]
    assert "SOCKET" not in out
    assert result.result["exit_code"] == 4

    t0 = time.monotonic()
    slow = runtime.exec_tool(sandbox_id, "run_command", {"command": "sleep 30"}, timeout_seconds=1)
    assert time.monotonic() - t0 < 5
    assert slow.ok and slow.result["timed_out"] is True
    assert slow.result["exit_code"] == 137
    # The timed-out command is gone: only init and the runtime are left.
    time.sleep(0.3)
    assert runtime.usage(sandbox_id).pids == 2


def test_exec_needs_a_running_container(runtime: DockerRuntime, sandbox_id: str) -> None:
    with pytest.raises(ContainerNotFound):
        runtime.exec_tool(sandbox_id, "health", {})
    runtime.ensure_container(make_spec(sandbox_id))
    with pytest.raises(ContainerNotRunning):
        runtime.exec_tool(sandbox_id, "health", {})


def test_pids_limit_is_enforced(runtime: DockerRuntime, sandbox_id: str) -> None:
    started(runtime, sandbox_id, max_processes=3)
    result = runtime.exec_tool(
        sandbox_id,
        "run_command",
        {"command": "for i in 1 2 3 4 5 6 7 8 9 10; do sleep 2 & done; wait"},
        timeout_seconds=20,
    )
    assert result.ok, result
    assert (
        "fork" in result.result["stderr"].lower() or "resource" in result.result["stderr"].lower()
    )


# -- OOM ----------------------------------------------------------------------------------------

ALLOCATE_300MB = "b = bytearray(300 * 1024 * 1024); b[::4096] = b'x' * len(b[::4096])"


def test_oom_of_a_command_kills_only_the_command(runtime: DockerRuntime, sandbox_id: str) -> None:
    started(runtime, sandbox_id, memory_mb=128)
    result = runtime.exec_tool(
        sandbox_id, "run_command", {"command": f'python3 -c "{ALLOCATE_300MB}"'}, timeout_seconds=60
    )
    assert result.ok, result
    assert result.result["exit_code"] == 137
    assert result.result["oom_killed"] is True
    assert result.result["timed_out"] is False
    state = runtime.inspect(sandbox_id)
    assert state.running  # the agent runtime survives its command's OOM
    assert runtime.health(sandbox_id).ok


def test_oom_of_the_main_process_is_reported(runtime: DockerRuntime, sandbox_id: str) -> None:
    started(runtime, sandbox_id, memory_mb=128, command=["python3", "-c", ALLOCATE_300MB])
    deadline = time.monotonic() + 30
    state = runtime.inspect(sandbox_id)
    while state.running and time.monotonic() < deadline:
        time.sleep(0.1)
        state = runtime.inspect(sandbox_id)
    assert state.status == "exited"
    assert state.exit_code == 137
    assert state.oom_killed is True
