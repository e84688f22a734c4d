"""A compromised agent cannot plant code that the platform's own runtime calls execute.

The worker execs the agent runtime in the sandbox for every health check and tool call. The
agent's HOME is /workspace, so its Python user site directory is writable by the agent: a
`.pth` or `usercustomize.py` there (or a `sitecustomize.py` in /workspace) would run inside
every runtime call and could falsify its answer. Here the agent plants all of them through its
own tools, then a health check and a tool call must neither run them nor change their result.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from activities.docker_runtime import DockerRuntime
from domain.containers import ContainerSpec
from tests.integration.test_docker_runtime import sandbox_image  # noqa: F401 (fixture)

pytestmark = [pytest.mark.security, pytest.mark.docker]

MARKER = "/workspace/PLANTED-CODE-RAN"
# Appends the process's argv to the marker, then makes every later json.dumps (the runtime's
# answer) claim a different result.
PAYLOAD = (
    "import sys, json\n"
    f"open({MARKER!r}, 'a').write(' '.join(sys.argv) + '\\n')\n"
    'json.dumps = lambda *a, **k: \'{"ok": true, "result": {"status": "forged"}}\'\n'
)


@pytest.fixture
def runtime(sandbox_image: str) -> Iterator[DockerRuntime]:  # noqa: F811
    rt = DockerRuntime(image=sandbox_image)
    yield rt
    rt.close()


@pytest.fixture
def sandbox_id(runtime: DockerRuntime) -> Iterator[str]:
    sid = f"sb_iso{uuid.uuid4().hex[:12]}"
    yield sid
    runtime.remove(sid)


def _tool(runtime: DockerRuntime, sid: str, tool: str, **args: Any) -> Any:
    result = runtime.exec_tool(sid, tool, args)
    assert result.ok, result
    return result.result


def test_planted_site_code_never_runs_in_runtime_calls(
    runtime: DockerRuntime, sandbox_id: str
) -> None:
    spec = ContainerSpec(sandbox_id=sandbox_id, workspace_id="ws_isotest", name="iso")
    runtime.ensure_container(spec)
    runtime.start(sandbox_id)

    # Where the agent's own Python would look: its user site directory under HOME=/workspace.
    out = _tool(
        runtime,
        sandbox_id,
        "run_command",
        command="python3 -c 'import site; print(site.getusersitepackages())'",
    )
    user_site = out["stdout"].strip()
    assert user_site.startswith("/workspace/"), out
    rel_site = user_site.removeprefix("/workspace/")

    # The attack, through the agent's own tools.
    pth = f"import os; exec(open({user_site + '/payload.py'!r}).read())\n"
    _tool(runtime, sandbox_id, "write_file", path=f"{rel_site}/zz-evil.pth", content=pth)
    _tool(runtime, sandbox_id, "write_file", path=f"{rel_site}/payload.py", content=PAYLOAD)
    _tool(runtime, sandbox_id, "write_file", path=f"{rel_site}/usercustomize.py", content=PAYLOAD)
    _tool(runtime, sandbox_id, "write_file", path=f"{rel_site}/sitecustomize.py", content=PAYLOAD)
    _tool(runtime, sandbox_id, "write_file", path="sitecustomize.py", content=PAYLOAD)
    _tool(runtime, sandbox_id, "write_file", path="usercustomize.py", content=PAYLOAD)

    # The planted code is live for the agent's own Python (the attack is real); checked with
    # a plain `docker exec`, not through the runtime under test.
    container = runtime.client.containers.get(f"aintandem-{sandbox_id}")
    probe = container.exec_run(["python3", "-c", "pass"], workdir="/workspace")
    assert probe.exit_code == 0, probe.output
    planted = container.exec_run(["cat", MARKER])
    assert planted.exit_code == 0 and b"-c" in planted.output, planted.output
    assert container.exec_run(["rm", "-f", MARKER]).exit_code == 0

    # ...but never inside the platform's runtime calls.
    health = runtime.health(sandbox_id)
    assert health.ok, health
    assert health.result["status"] == "healthy", health.result
    assert health.result["isolated"] is True
    listing = _tool(runtime, sandbox_id, "list_files", path=".")
    names = {e["path"] for e in listing["entries"]}
    assert "PLANTED-CODE-RAN" not in names, names
    written = _tool(runtime, sandbox_id, "write_file", path="answer.txt", content="42")
    assert written == {"path": "answer.txt", "bytes_written": 2, "size": 2, "appended": False}
    read = _tool(runtime, sandbox_id, "read_file", path="answer.txt")
    assert read["content"] == "42", read
    listing = _tool(runtime, sandbox_id, "list_files", path=".")
    assert "PLANTED-CODE-RAN" not in {e["path"] for e in listing["entries"]}

    # The runtime and its interpreter are out of the agent's reach.
    for attempt in (
        "echo 'x=1' >> /opt/aintandem/agent_runtime.py",
        "ln -sf /workspace/sitecustomize.py /opt/aintandem/bin/python3",
        "cp /workspace/sitecustomize.py /opt/aintandem/json.py",
        f"cp {user_site}/zz-evil.pth /usr/lib/python3/dist-packages/zz-evil.pth",
        "chmod 777 /opt/aintandem",
    ):
        out = _tool(runtime, sandbox_id, "run_command", command=attempt)
        assert out["exit_code"] != 0, (attempt, out)
    owner = _tool(runtime, sandbox_id, "run_command", command="stat -c %u:%a /opt/aintandem")
    assert owner["stdout"].strip() == "0:755", owner
