"""A sandbox created through the API runs unprivileged, as activities/docker_runtime.py intends.

Through the real stack (Temporal dev server, worker, API, Docker engine): the container the
SandboxWorkflow starts is inspected from outside (HostConfig) and from inside (what its process
actually holds): not privileged, every capability dropped and none added, no-new-privileges,
no host namespaces or devices, only its own /workspace volume — never the Docker socket — and
the image's non-root user.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.integration.conftest import (  # noqa: F401 (fixtures)
    Stack,
    _delete_test_workspaces,
    stack,
)

pytestmark = [pytest.mark.security, pytest.mark.docker, pytest.mark.temporal]


def _exec(container: Any, command: str) -> tuple[int, str]:
    result = container.exec_run(["sh", "-c", command])
    return result.exit_code, result.output.decode(errors="replace").strip()


async def test_sandbox_container_is_unprivileged_without_the_docker_socket(
    stack: Stack,  # noqa: F811 (the integration fixture, imported above)
) -> None:
    acc = await stack.account()
    wid = await stack.workspace(acc)
    sid = await stack.sandbox(acc, wid)
    await stack.wait_status(acc, sid, "running", timeout=120)
    container = await asyncio.to_thread(stack.docker.containers.get, f"aintandem-{sid}")
    attrs = container.attrs
    host = attrs["HostConfig"]

    assert host["Privileged"] is False
    assert host["CapDrop"] == ["ALL"] and not host.get("CapAdd")
    assert "no-new-privileges" in (host.get("SecurityOpt") or [])
    assert not host.get("Devices") and not host.get("DeviceRequests")
    # CgroupnsMode is left to the engine: docker_runtime.py does not set it ("host" on cgroup v1).
    for mode in ("PidMode", "IpcMode", "UTSMode", "UsernsMode"):
        assert host.get(mode) != "host", (mode, host.get(mode))
    assert host.get("NetworkMode") != "host"
    assert not host.get("Binds") and not host.get("VolumesFrom")
    assert [(m["Type"], m["Destination"]) for m in attrs["Mounts"]] == [("volume", "/workspace")]
    assert "docker.sock" not in json.dumps(attrs)

    image = await asyncio.to_thread(stack.docker.images.get, attrs["Image"])
    image_user = image.attrs["Config"].get("User") or ""
    assert image_user and image_user not in ("0", "root"), "the sandbox image sets a non-root user"
    assert attrs["Config"].get("User") in ("", image_user), "the container keeps the image's user"

    # From inside: what the sandbox's processes really hold.
    code, uid = await asyncio.to_thread(_exec, container, "id -u")
    assert code == 0 and uid != "0", uid
    code, status = await asyncio.to_thread(_exec, container, "cat /proc/self/status")
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    for cap in ("CapEff", "CapPrm", "CapBnd", "CapAmb"):
        assert int(fields[cap].strip(), 16) == 0, (cap, fields[cap])
    assert fields["NoNewPrivs"].strip() == "1"
    code, _ = await asyncio.to_thread(
        _exec, container, "test -e /var/run/docker.sock || test -e /run/docker.sock"
    )
    assert code != 0, "a Docker socket is reachable inside the sandbox"
