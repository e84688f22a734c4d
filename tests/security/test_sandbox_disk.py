"""A sandbox cannot fill the host's disk: /workspace, /tmp and the root filesystem are bounded.

Against the real engine: writes past `resources.disk_mb` fail with ENOSPC inside the sandbox,
/tmp is a sized tmpfs, the root filesystem is read-only, /workspace survives re-creation and
grows with `disk_mb`; through the API the size is validated and reported in status/metrics.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError

from activities.docker_runtime import DockerRuntime, IsolationUnavailable
from activities.sandbox import _docker_call
from activities.sandbox_disk import DiskSpaceExhausted, SandboxDisks
from domain.containers import MAX_DISK_MB, ContainerSpec, tmp_size_mb
from tests.conftest import assert_error
from tests.integration.conftest import (  # noqa: F401 (fixtures)
    Stack,
    _delete_test_workspaces,
    eventually,
    stack,
)
from tests.integration.test_docker_runtime import sandbox_image  # noqa: F401 (fixture)

pytestmark = [pytest.mark.security, pytest.mark.docker]


@pytest.fixture
def runtime(sandbox_image: str) -> Iterator[DockerRuntime]:  # noqa: F811
    rt = DockerRuntime(image=sandbox_image)
    yield rt
    rt.close()


@pytest.fixture
def sandbox_id(runtime: DockerRuntime) -> Iterator[str]:
    sid = f"sb_disk{uuid.uuid4().hex[:12]}"
    yield sid
    runtime.remove(sid)


def _spec(sid: str, **kw: Any) -> ContainerSpec:
    values: dict[str, Any] = {
        "sandbox_id": sid,
        "workspace_id": "ws_disktest",
        "name": "disk",
        "memory_mb": 256,
        "disk_mb": 64,
    }
    values.update(kw)
    return ContainerSpec(**values)


def _run(runtime: DockerRuntime, sid: str, command: str) -> dict[str, Any]:
    result = runtime.exec_tool(sid, "run_command", {"command": command, "timeout_seconds": 60})
    assert result.ok, result
    return dict(result.result)


def test_writes_past_the_disk_size_fail_with_enospc(
    runtime: DockerRuntime, sandbox_id: str
) -> None:
    if runtime.disks.unavailable_reason():
        pytest.skip(f"sandbox disks unavailable here: {runtime.disks.unavailable_reason()}")
    runtime.ensure_container(_spec(sandbox_id))
    runtime.start(sandbox_id)

    # /workspace: 64 MiB. Writing 200 MiB stops at the limit with ENOSPC.
    out = _run(runtime, sandbox_id, "dd if=/dev/zero of=/workspace/big bs=1M count=200")
    assert out["exit_code"] != 0 and "No space left on device" in out["stderr"], out
    size = int(_run(runtime, sandbox_id, "stat -c %s /workspace/big")["stdout"])
    assert 32 * 2**20 < size <= 64 * 2**20, size

    # The platform sees it: used ≈ the limit, limit = disk_mb.
    usage = runtime.usage(sandbox_id)
    assert usage.disk_limit_mb == 64
    assert usage.disk_mb >= size / 2**20 - 1, usage

    # /tmp: a tmpfs of tmp_size_mb(memory, disk); past it, ENOSPC too.
    tmp_mb = tmp_size_mb(256, 64)
    out = _run(runtime, sandbox_id, "dd if=/dev/zero of=/tmp/big bs=1M count=200")
    assert out["exit_code"] != 0 and "No space left on device" in out["stderr"], out
    size = int(_run(runtime, sandbox_id, "stat -c %s /tmp/big")["stdout"])
    assert size <= tmp_mb * 2**20, size
    _run(runtime, sandbox_id, "rm -f /tmp/big")

    # Everything else is read-only: no writing around the limits.
    for path in ("/big", "/var/tmp/big", "/opt/aintandem/big", "/usr/lib/big", "/run/big"):
        out = _run(runtime, sandbox_id, f"echo x > {path}")
        assert out["exit_code"] != 0, (path, out)


def test_workspace_survives_recreation_and_grows_with_disk_mb(
    runtime: DockerRuntime, sandbox_id: str
) -> None:
    if runtime.disks.unavailable_reason():
        pytest.skip(f"sandbox disks unavailable here: {runtime.disks.unavailable_reason()}")
    spec = _spec(sandbox_id)
    runtime.ensure_container(spec)
    runtime.start(sandbox_id)
    _run(runtime, sandbox_id, "echo kept > /workspace/notes.txt")

    bigger = _spec(sandbox_id, disk_mb=160)
    assert runtime.outdated(spec) is None
    assert runtime.outdated(bigger) == "isolation settings changed"
    runtime.remove(sandbox_id, keep_workspace=True)
    runtime.ensure_container(bigger)
    runtime.start(sandbox_id)
    assert _run(runtime, sandbox_id, "cat /workspace/notes.txt")["stdout"].strip() == "kept"
    out = _run(runtime, sandbox_id, "dd if=/dev/zero of=/workspace/big bs=1M count=120")
    assert out["exit_code"] == 0, out  # fits now; would not have in 64 MiB
    out = _run(runtime, sandbox_id, "dd if=/dev/zero of=/workspace/more bs=1M count=200")
    assert "No space left on device" in out["stderr"], out
    assert runtime.usage(sandbox_id).disk_limit_mb == 160

    # Removal takes the disk with it.
    runtime.remove(sandbox_id)
    assert not runtime.disks.image(sandbox_id).exists()


async def test_disk_mb_is_validated_and_reported(
    stack: Stack,  # noqa: F811 (the integration fixture, imported above)
) -> None:
    acc = await stack.account()
    wid = await stack.workspace(acc)
    for bad in (63, 102401, "lots"):
        r = await stack.client.post(
            f"/api/v1/workspaces/{wid}/sandboxes",
            headers=acc.headers,
            json={
                "name": f"bad-{uuid.uuid4().hex[:4]}",
                "agent_config": {"primary_agent": {"name": "a", "role": "r"}},
                "resources": {"disk_mb": bad},
            },
        )
        assert r.status_code == 422, r.text
        assert r.json()["error"]["code"] == "VALIDATION_ERROR"
    sid = await stack.sandbox(acc, wid, resources={"disk_mb": 96})
    await stack.wait_status(acc, sid, "running", timeout=120)
    container = stack.docker.containers.get(f"aintandem-{sid}")
    result = container.exec_run(["sh", "-c", "head -c 20000000 /dev/zero > /workspace/blob"])
    assert result.exit_code == 0
    status = await eventually(
        lambda: stack.client.get(f"/api/v1/sandboxes/{sid}/status", headers=acc.headers),
        lambda r: r.json()["data"]["resources"]["disk_mb"]["used"] >= 19,
        30,
        "the disk usage in the status",
    )
    disk = status.json()["data"]["resources"]["disk_mb"]
    assert disk["allocated"] == 96 and 19 <= disk["used"] <= 96, disk
    r = await stack.client.get(f"/api/v1/sandboxes/{sid}/metrics", headers=acc.headers)
    res = r.json()["data"]["resources"]
    assert res["disk_limit_mb"] == 96 and res["disk_usage_mb"] >= 19, res
    assert 0 < res["disk_usage_percent"] <= 100
    r = await stack.client.get(f"/api/v1/sandboxes/{sid}/config", headers=acc.headers)
    assert r.json()["data"]["resources"]["disk_mb"] == 96


# -- how far the host's disk is promised (security review of issue #13) -------------------------


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 48 MiB filesystem for the disk images (a tmpfs: the host's real free space is not
    touched, and the test does not depend on it)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a filesystem needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_disk_larger_than_the_free_space_is_refused(small_fs: Path, sandbox_image: str) -> None:  # noqa: F811
    disks = SandboxDisks(small_fs)
    if disks.unavailable_reason():
        pytest.skip(f"sandbox disks unavailable here: {disks.unavailable_reason()}")
    sid = f"sb_free{uuid.uuid4().hex[:12]}"
    try:
        # 64 MiB promised on a 48 MiB filesystem: refused before anything is made.
        with pytest.raises(DiskSpaceExhausted, match="does not fit"):
            disks.ensure(sid, 64)
        assert not disks.image(sid).exists()
        # What fits is made (sparse: little of it is on the filesystem yet)...
        disks.ensure(sid, 32)
        assert disks.size_mb(sid) == 32
        # ...and growing it past the free space is refused, keeping the disk as it was.
        with pytest.raises(DiskSpaceExhausted):
            disks.ensure(sid, 96)
        assert disks.size_mb(sid) == 32
    finally:
        disks.remove(sid)

    # Through the worker: a business failure, not retried (the sandbox goes to `error`).
    runtime = DockerRuntime(image=sandbox_image, disks=disks)
    try:
        spec = _spec(f"sb_free{uuid.uuid4().hex[:12]}", disk_mb=64)
        with pytest.raises(IsolationUnavailable, match="does not fit"):
            runtime.ensure_container(spec)
        with pytest.raises(ApplicationError) as refused:
            _docker_call(runtime.ensure_container, spec)
        assert refused.value.non_retryable
        runtime.remove(spec.sandbox_id)
    finally:
        runtime.close()


async def test_disk_mb_above_the_operators_cap_is_refused(
    stack: Stack,  # noqa: F811
) -> None:
    acc = await stack.account()
    wid = await stack.workspace(acc)
    cap = stack.settings.sandbox_max_disk_mb
    r = await stack.client.post(
        f"/api/v1/workspaces/{wid}/sandboxes",
        headers=acc.headers,
        json={
            "name": f"big-{uuid.uuid4().hex[:4]}",
            "agent_config": {"primary_agent": {"name": "a", "role": "r"}},
            "resources": {"disk_mb": cap + 1},
        },
    )
    body = assert_error(r, 422, "VALIDATION_ERROR")
    fields = body["error"]["details"]["fields"]
    assert fields[0]["field"] == "resources.disk_mb" and str(cap) in fields[0]["message"], body

    sid = await stack.sandbox(acc, wid)
    r = await stack.client.put(
        f"/api/v1/sandboxes/{sid}/config",
        headers=acc.headers,
        json={"resources": {"disk_mb": cap + 1}},
    )
    body = assert_error(r, 422, "CONFIGURATION_INVALID")  # PUT /config's code for a bad body
    fields = body["error"]["details"]["fields"]
    assert fields[0]["field"] == "resources.disk_mb" and str(cap) in fields[0]["message"], body
    r = await stack.client.get(f"/api/v1/sandboxes/{sid}/config", headers=acc.headers)
    assert r.json()["data"]["resources"]["disk_mb"] == 1024  # unchanged


async def test_a_disk_beyond_the_hosts_free_space_puts_the_sandbox_in_error(
    stack: Stack,  # noqa: F811
) -> None:
    disks = SandboxDisks()
    if disks.unavailable_reason():
        pytest.skip(f"sandbox disks unavailable here: {disks.unavailable_reason()}")
    free_mb = disks.free_bytes() // 2**20
    if free_mb >= MAX_DISK_MB:
        pytest.skip(f"the host has {free_mb} MiB free: no disk_mb the API accepts exceeds it")
    acc = await stack.account()
    wid = await stack.workspace(acc)
    # An operator who raised the cap to the schema's bound (restored below).
    cap = stack.settings.sandbox_max_disk_mb
    stack.settings.sandbox_max_disk_mb = MAX_DISK_MB
    try:
        sid = await stack.sandbox(acc, wid, resources={"disk_mb": MAX_DISK_MB})
    finally:
        stack.settings.sandbox_max_disk_mb = cap
    detail = await stack.wait_status(acc, sid, "error", timeout=120)
    assert "does not fit" in (detail["status_reason"] or ""), detail
    assert not disks.image(sid).exists()
