"""Which sandbox environment variable names are refused (domain/sandbox_env.py), and what every
runtime exec overrides."""

from __future__ import annotations

import pytest

from activities.docker_runtime import RUNTIME_EXEC_ENV, DockerRuntime
from domain.containers import ContainerSpec
from domain.sandbox_env import LOADER_ENV, allowed_env, refused_env_name


@pytest.mark.parametrize(
    "name",
    [
        "LD_PRELOAD",
        "LD_LIBRARY_PATH",
        "LD_AUDIT",
        "ld_preload",
        "GCONV_PATH",
        "GLIBC_TUNABLES",
        "LOCPATH",
        "PYTHONPATH",
        "PYTHONSTARTUP",
        "PYTHONHOME",
        "AINTANDEM_WORKSPACE",
        "AINTANDEM_SANDBOX_ID",
        "AINTANDEM_HEARTBEAT_FILE",
    ],
)
def test_refused(name: str) -> None:
    reason = refused_env_name(name)
    assert reason is not None and name in reason


@pytest.mark.parametrize(
    "name", ["PATH", "HOME", "TMPDIR", "LANG", "TZ", "OPENAI_API_KEY", "MY_LD_FLAG", "NODE_ENV"]
)
def test_allowed(name: str) -> None:
    assert refused_env_name(name) is None


def test_the_worker_never_gives_a_container_a_refused_variable() -> None:
    spec = ContainerSpec(
        sandbox_id="sb_unit",
        workspace_id="ws_unit",
        name="u",
        env={"LD_PRELOAD": "/workspace/pre.so", "AINTANDEM_WORKSPACE": "/", "KEEP": "1"},
    )
    kwargs = DockerRuntime(internet_egress_allowed=True)._create_kwargs(spec)
    env = kwargs["environment"]
    assert "LD_PRELOAD" not in env and env.get("AINTANDEM_WORKSPACE") is None, env
    assert env["KEEP"] == "1"
    assert allowed_env(spec.env) == {"KEEP": "1"}
    # /dev/shm is small (Docker's default is 64 MiB, outside the disk limit).
    assert kwargs["shm_size"] == "16m"


def test_every_runtime_exec_clears_the_loader_and_pins_the_workspace() -> None:
    for name in LOADER_ENV:
        assert RUNTIME_EXEC_ENV[name] == "", name
    assert "LD_PRELOAD" in LOADER_ENV and "LD_LIBRARY_PATH" in LOADER_ENV
    assert RUNTIME_EXEC_ENV["AINTANDEM_WORKSPACE"] == "/workspace"
