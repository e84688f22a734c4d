"""A sandbox's environment variables cannot load agent-written code into the platform's runtime.

The attack (security review of issue #13): the agent writes a shared library to /workspace,
the user sets `LD_PRELOAD=/workspace/pre.so` in the sandbox's environment and restarts it; the
dynamic loader then runs the library in every process of the container, the platform's health
check (run as `nobody`) and tool execs included. Likewise `AINTANDEM_WORKSPACE=/` would move the
root the runtime's file tools are confined to.

Checked two ways: the API refuses such names (create and config update, 422 naming the
variable), and a container made before that rule (its environment still holding them, as an
older worker created it) cannot load them into the runtime's execs, and is re-created without
them at its next start.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from activities.docker_runtime import DockerRuntime
from domain.containers import LABEL_ENV_HASH, ContainerSpec, container_name, env_hash
from tests.conftest import assert_error
from tests.integration.conftest import (  # noqa: F401 (fixtures)
    Stack,
    _delete_test_workspaces,
    stack,
)
from tests.integration.test_docker_runtime import sandbox_image  # noqa: F401 (fixture)

pytestmark = [pytest.mark.security, pytest.mark.docker]

# A library whose constructor leaves /tmp/PRELOAD-RAN-<uid> behind in every process it loads into.
PRELOAD_C = r"""
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>
__attribute__((constructor)) static void planted(void) {
    char path[64];
    snprintf(path, sizeof path, "/tmp/PRELOAD-RAN-%d", (int)getuid());
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0666);
    if (fd >= 0) { write(fd, "x", 1); close(fd); }
}
"""
CLEAN = {"LD_PRELOAD": ""}  # for the test's own probes: they must not trip the marker


@pytest.fixture(scope="module")
def preload_so(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler on this host to build the planted library")
    work = Path(tmp_path_factory.mktemp("preload"))
    (work / "pre.c").write_text(PRELOAD_C)
    subprocess.run(
        [cc, "-shared", "-fPIC", "-O2", "-o", str(work / "pre.so"), str(work / "pre.c")],
        check=True,
        capture_output=True,
    )
    return (work / "pre.so").read_bytes()


@pytest.fixture
def runtime(sandbox_image: str) -> Iterator[DockerRuntime]:  # noqa: F811
    rt = DockerRuntime(image=sandbox_image)
    yield rt
    rt.close()


@pytest.fixture
def sandbox_id(runtime: DockerRuntime) -> Iterator[str]:
    sid = f"sb_env{uuid.uuid4().hex[:12]}"
    yield sid
    runtime.remove(sid)


def _markers(container: Any) -> list[str]:
    out = container.exec_run(["ls", "/tmp"], environment=CLEAN)
    assert out.exit_code == 0, out.output
    return sorted(n for n in out.output.decode().split() if n.startswith("PRELOAD-RAN-"))


def _clear_markers(container: Any) -> None:
    out = container.exec_run(["sh", "-c", "rm -f /tmp/PRELOAD-RAN-*"], environment=CLEAN)
    assert out.exit_code == 0, out.output


def test_a_container_holding_ld_preload_never_loads_it_into_runtime_execs(
    runtime: DockerRuntime, sandbox_id: str, preload_so: bytes
) -> None:
    planted_env = {"LD_PRELOAD": "/workspace/pre.so", "AINTANDEM_WORKSPACE": "/"}
    spec = ContainerSpec(
        sandbox_id=sandbox_id,
        workspace_id="ws_envtest",
        name="env",
        network_mode="none",
        env=planted_env,
    )
    # The container as a worker from before the rule made it: the variables in its env, its
    # env hash taken of them.
    runtime._ensure_workspace_volume(spec)
    kwargs = runtime._create_kwargs(spec)
    kwargs["environment"].update(planted_env)
    kwargs["labels"][LABEL_ENV_HASH] = env_hash(planted_env)
    runtime.client.containers.create(**kwargs)
    runtime.start(sandbox_id)
    container = runtime.client.containers.get(container_name(sandbox_id))

    # The agent writes the library with its own tool (pre.so did not exist when it started).
    b64 = base64.b64encode(preload_so).decode()
    wrote = runtime.exec_tool(
        sandbox_id,
        "run_command",
        {"command": f"echo {b64} | base64 -d > /workspace/pre.so && echo ok"},
    )
    assert wrote.ok and wrote.result["exit_code"] == 0, wrote

    # The attack is live for any process started with the container's environment.
    _clear_markers(container)
    assert container.exec_run(["true"]).exit_code == 0
    assert _markers(container) == ["PRELOAD-RAN-1000"]
    _clear_markers(container)

    # ...but not in the platform's health check (as nobody) nor in tool calls.
    health = runtime.health(sandbox_id)
    assert health.ok and health.result["status"] == "healthy", health
    listed = runtime.exec_tool(sandbox_id, "list_files", {"path": "."})
    assert listed.ok, listed
    assert _markers(container) == [], "the planted library ran in a runtime exec"
    # The runtime's file tools stay confined to /workspace whatever the container's env says.
    escaped = runtime.exec_tool(sandbox_id, "read_file", {"path": "etc/hostname"})
    assert not escaped.ok, escaped

    # The next start re-creates the container without the variables (keeping /workspace).
    assert runtime.outdated(spec) == "environment variables changed"
    runtime.remove(sandbox_id, keep_workspace=True)
    runtime.ensure_container(spec)
    runtime.start(sandbox_id)
    container = runtime.client.containers.get(container_name(sandbox_id))
    env = container.attrs["Config"]["Env"]
    assert not any(e.startswith("LD_PRELOAD=") for e in env), env
    assert "AINTANDEM_WORKSPACE=/workspace" in env, env
    assert container.exec_run(["test", "-f", "/workspace/pre.so"]).exit_code == 0
    assert container.exec_run(["true"]).exit_code == 0
    assert _markers(container) == []


async def test_the_api_refuses_loader_python_and_platform_variables(
    stack: Stack,  # noqa: F811 (the integration fixture, imported above)
) -> None:
    acc = await stack.account()
    wid = await stack.workspace(acc)
    refused = ["LD_PRELOAD", "ld_preload", "LD_LIBRARY_PATH", "GCONV_PATH", "GLIBC_TUNABLES"]
    refused += ["PYTHONPATH", "AINTANDEM_WORKSPACE"]
    for name in refused:
        r = await stack.client.post(
            f"/api/v1/workspaces/{wid}/sandboxes",
            headers=acc.headers,
            json={
                "name": f"env-{uuid.uuid4().hex[:4]}",
                "agent_config": {"primary_agent": {"name": "a", "role": "r"}},
                "environment_variables": {name: "/workspace/pre.so"},
            },
        )
        body = assert_error(r, 422, "VALIDATION_ERROR")
        assert name in str(body["error"]), body

    sid = await stack.sandbox(acc, wid, environment_variables={"KEEP": "1"})
    for name in refused:
        r = await stack.client.put(
            f"/api/v1/sandboxes/{sid}/config",
            headers=acc.headers,
            json={"environment_variables": {"KEEP": "1", name: "/workspace/pre.so"}},
        )
        # PUT /config reports a bad body as CONFIGURATION_INVALID (api/validation.py).
        body = assert_error(r, 422, "CONFIGURATION_INVALID")
        assert name in str(body["error"]), body
    # PATH stays the user's choice (the runtime never resolves anything through it).
    r = await stack.client.put(
        f"/api/v1/sandboxes/{sid}/config",
        headers=acc.headers,
        json={"environment_variables": {"KEEP": "1", "PATH": "/workspace/bin:/usr/bin:/bin"}},
    )
    assert r.status_code == 200, r.text
    r = await stack.client.get(f"/api/v1/sandboxes/{sid}/config", headers=acc.headers)
    assert r.json()["data"]["environment_variables"] == {
        "KEEP": "1",
        "PATH": "/workspace/bin:/usr/bin:/bin",
    }
