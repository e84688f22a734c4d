"""The in-sandbox agent runtime, run on the host as a subprocess against a temporary workspace."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

RUNTIME = Path(__file__).resolve().parents[2] / "sandbox_image" / "runtime" / "agent_runtime.py"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    return {
        **os.environ,
        "AINTANDEM_WORKSPACE": str(workspace),
        "AINTANDEM_HEARTBEAT_FILE": str(tmp_path / "heartbeat"),
        "AINTANDEM_HEARTBEAT_INTERVAL": "0.2",
        "AINTANDEM_HEARTBEAT_LOG_INTERVAL": "0.3",
    }


@pytest.fixture
def workspace(env: dict[str, str]) -> Path:
    return Path(env["AINTANDEM_WORKSPACE"])


def call_raw(env: dict[str, str], payload: bytes) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, str(RUNTIME), "tool"],
        input=payload,
        capture_output=True,
        env=env,
        timeout=60,
        check=False,
    )
    # Tool errors are answers, not crashes: exit code 0 either way.
    assert proc.returncode == 0, proc.stderr.decode()
    lines = proc.stdout.decode().splitlines()
    assert len(lines) == 1, proc.stdout
    return json.loads(lines[0])


def call(env: dict[str, str], tool: str, **args: Any) -> dict[str, Any]:
    return call_raw(env, json.dumps({"tool": tool, "args": args}).encode() + b"\n")


def ok(response: dict[str, Any]) -> Any:
    assert response["ok"] is True, response
    return response["result"]


def error_type(response: dict[str, Any]) -> str:
    assert response["ok"] is False, response
    assert set(response["error"]) == {"type", "message"}
    return response["error"]["type"]


# -- files ---------------------------------------------------------------------------------------


def test_write_then_read_creates_parents(env: dict[str, str], workspace: Path) -> None:
    result = ok(call(env, "write_file", path="deep/er/notes.txt", content="héllo\nworld"))
    assert result["path"] == "deep/er/notes.txt"
    assert result["bytes_written"] == len("héllo\nworld".encode())
    assert (workspace / "deep/er/notes.txt").read_text() == "héllo\nworld"

    read = ok(call(env, "read_file", path="deep/er/notes.txt"))
    assert read["content"] == "héllo\nworld"
    assert read["encoding"] == "utf-8"
    assert read["truncated"] is False
    assert read["size"] == len("héllo\nworld".encode())


def test_write_append_and_overwrite(env: dict[str, str], workspace: Path) -> None:
    ok(call(env, "write_file", path="log.txt", content="a"))
    ok(call(env, "write_file", path="log.txt", content="b", append=True))
    assert (workspace / "log.txt").read_text() == "ab"
    ok(call(env, "write_file", path="log.txt", content="c"))
    assert (workspace / "log.txt").read_text() == "c"


def test_write_base64_and_read_binary(env: dict[str, str], workspace: Path) -> None:
    blob = bytes(range(256))
    ok(
        call(
            env,
            "write_file",
            path="bin",
            content=base64.b64encode(blob).decode(),
            encoding="base64",
        )
    )
    assert (workspace / "bin").read_bytes() == blob
    read = ok(call(env, "read_file", path="bin"))
    assert read["encoding"] == "base64"
    assert base64.b64decode(read["content"]) == blob


def test_read_truncates_at_max_bytes_without_splitting_characters(env: dict[str, str]) -> None:
    ok(call(env, "write_file", path="t.txt", content="aé" * 10))  # é is 2 bytes
    read = ok(call(env, "read_file", path="t.txt", max_bytes=4))
    assert read["truncated"] is True
    assert read["encoding"] == "utf-8"
    assert read["content"] == "aéa"  # 4 bytes; the 5th would cut an é
    assert read["size"] == 30


def test_read_default_limit_is_one_mib(env: dict[str, str], workspace: Path) -> None:
    (workspace / "big.txt").write_bytes(b"x" * (1024 * 1024 + 10))
    read = ok(call(env, "read_file", path="big.txt"))
    assert read["truncated"] is True
    assert len(read["content"]) == 1024 * 1024


def test_read_errors(env: dict[str, str], workspace: Path) -> None:
    (workspace / "adir").mkdir()
    assert error_type(call(env, "read_file", path="missing.txt")) == "not_found"
    assert error_type(call(env, "read_file", path="adir")) == "is_a_directory"
    assert error_type(call(env, "read_file")) == "invalid_arguments"
    assert error_type(call(env, "read_file", path="x", max_bytes="10")) == "invalid_arguments"


def test_list_files(env: dict[str, str], workspace: Path) -> None:
    (workspace / "src/pkg").mkdir(parents=True)
    (workspace / "src/pkg/mod.py").write_text("print(1)\n")
    (workspace / "README").write_text("hi")
    top = ok(call(env, "list_files"))
    assert top["path"] == "."
    assert top["entries"] == [
        {"path": "README", "type": "file", "size": 2},
        {"path": "src", "type": "dir", "size": 0},
    ]
    deep = ok(call(env, "list_files", path="src", recursive=True))
    assert [(e["path"], e["type"]) for e in deep["entries"]] == [
        ("src/pkg", "dir"),
        ("src/pkg/mod.py", "file"),
    ]
    assert deep["entries"][1]["size"] == 9
    assert error_type(call(env, "list_files", path="nope")) == "not_found"
    assert error_type(call(env, "list_files", path="README")) == "not_a_directory"


def test_list_does_not_follow_symlinked_dirs_out(
    env: dict[str, str], workspace: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("s")
    (workspace / "link").symlink_to(outside)
    listing = ok(call(env, "list_files", recursive=True))
    assert [e["path"] for e in listing["entries"]] == ["link"]


# -- workspace confinement -----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["../escape.txt", "a/../../escape.txt", "/etc/passwd", "/tmp/x"])
def test_paths_outside_the_workspace_are_rejected(env: dict[str, str], path: str) -> None:
    assert error_type(call(env, "read_file", path=path)) == "path_outside_workspace"
    assert error_type(call(env, "write_file", path=path, content="x")) == "path_outside_workspace"
    assert error_type(call(env, "list_files", path=path)) == "path_outside_workspace"
    response = call(env, "run_command", command="true", cwd=path)
    assert error_type(response) == "path_outside_workspace"


def test_symlinks_pointing_out_are_rejected(
    env: dict[str, str], workspace: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("s")
    (workspace / "link").symlink_to(outside)
    (workspace / "file-link").symlink_to(outside / "secret")
    assert error_type(call(env, "read_file", path="link/secret")) == "path_outside_workspace"
    assert error_type(call(env, "read_file", path="file-link")) == "path_outside_workspace"
    response = call(env, "write_file", path="link/new", content="x")
    assert error_type(response) == "path_outside_workspace"
    assert not (outside / "new").exists()


def test_absolute_path_inside_the_workspace_is_allowed(
    env: dict[str, str], workspace: Path
) -> None:
    ok(call(env, "write_file", path=str(workspace / "abs.txt"), content="yes"))
    assert ok(call(env, "read_file", path="abs.txt"))["content"] == "yes"


# -- run_command ---------------------------------------------------------------------------------


def test_run_command_output_and_exit_code(env: dict[str, str], workspace: Path) -> None:
    (workspace / "sub").mkdir()
    result = ok(
        call(
            env, "run_command", command="pwd; echo oops >&2; exit 3", cwd="sub", timeout_seconds=10
        )
    )
    assert result["exit_code"] == 3
    assert result["stdout"].strip() == str((workspace / "sub").resolve())
    assert result["stderr"] == "oops\n"
    assert result["timed_out"] is False
    assert result["oom_killed"] is False


def test_run_command_output_is_bounded(env: dict[str, str]) -> None:
    result = ok(call(env, "run_command", command="head -c 300000 /dev/zero | tr '\\0' a"))
    assert result["exit_code"] == 0
    assert len(result["stdout"]) == 64 * 1024
    assert result["stdout_truncated"] is True
    assert result["stderr_truncated"] is False


def test_run_command_timeout_kills_the_process_group(env: dict[str, str], workspace: Path) -> None:
    started = time.monotonic()
    result = ok(
        call(
            env,
            "run_command",
            command="sleep 60 & echo $! > bg.pid; echo started; sleep 60",
            timeout_seconds=1,
        )
    )
    elapsed = time.monotonic() - started
    assert result["timed_out"] is True
    assert result["exit_code"] == 137
    assert result["stdout"] == "started\n"
    assert elapsed < 10
    # The background child was in the same process group and died with it.
    bg_pid = int((workspace / "bg.pid").read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _alive(bg_pid):
        time.sleep(0.05)
    assert not _alive(bg_pid)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_run_command_does_not_wait_for_background_children(env: dict[str, str]) -> None:
    started = time.monotonic()
    result = ok(call(env, "run_command", command="sleep 30 & echo done", timeout_seconds=20))
    assert result["stdout"] == "done\n"
    assert result["timed_out"] is False
    assert time.monotonic() - started < 10


def test_run_command_validates_arguments(env: dict[str, str]) -> None:
    assert error_type(call(env, "run_command")) == "invalid_arguments"
    assert error_type(call(env, "run_command", command="true", timeout_seconds=0)) == (
        "invalid_arguments"
    )
    assert error_type(call(env, "run_command", command="true", timeout_seconds=True)) == (
        "invalid_arguments"
    )
    assert error_type(call(env, "run_command", command="true", cwd="missing")) == (
        "not_a_directory"
    )


# -- protocol ------------------------------------------------------------------------------------


def test_bad_requests_are_answers_not_crashes(env: dict[str, str]) -> None:
    assert error_type(call_raw(env, b"not json\n")) == "invalid_request"
    assert error_type(call_raw(env, b"[1, 2]\n")) == "invalid_request"
    assert error_type(call_raw(env, b'{"tool": "read_file", "args": 5}\n')) == "invalid_request"
    assert error_type(call(env, "rm_rf")) == "unknown_tool"
    # Without a trailing newline (stdin closed) the request is read too.
    assert ok(call_raw(env, b'{"tool": "list_files"}'))["entries"] == []


# -- serve + health ------------------------------------------------------------------------------


def test_health_without_serve_is_unhealthy(env: dict[str, str]) -> None:
    result = ok(call(env, "health"))
    assert result["status"] == "unhealthy"
    assert result["workspace"] == env["AINTANDEM_WORKSPACE"]


def test_serve_logs_heartbeats_and_stops_on_sigterm(env: dict[str, str], tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, str(RUNTIME), "serve"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        deadline = time.monotonic() + 10
        while not Path(env["AINTANDEM_HEARTBEAT_FILE"]).exists():
            assert time.monotonic() < deadline, "no heartbeat file"
            time.sleep(0.05)
        time.sleep(0.7)
        health = ok(call(env, "health"))
        assert health["status"] == "healthy"
        assert health["workspace"] == env["AINTANDEM_WORKSPACE"]
        assert 0.5 <= health["uptime_seconds"] < 30
        assert health["last_heartbeat"].endswith("Z")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err.decode()
    records = [json.loads(line) for line in out.decode().splitlines()]
    first = records[0]
    assert first["message"] == "Agent runtime started"
    assert first["level"] == "info"
    assert first["timestamp"].endswith("Z")
    datetime.fromisoformat(first["timestamp"].replace("Z", "+00:00"))
    assert any(r["level"] == "debug" and r["message"] == "Heartbeat" for r in records)
    assert records[-1]["message"] == "Agent runtime stopping"
    assert records[-1]["signal"] == "SIGTERM"
    # The heartbeat goes away with the process, so health no longer reports it healthy.
    assert ok(call(env, "health"))["status"] == "unhealthy"


def test_configured_agents_primary_first_and_lookup_by_name() -> None:
    from domain.agent import agent_named, configured_agents

    cfg = {
        "primary_agent": {"name": "lead", "role": "Lead"},
        "sub_agents": [{"name": "qa", "role": "QA"}, {"role": "no name"}],
    }
    assert [a["name"] for a in configured_agents(cfg)] == ["lead", "qa"]
    assert agent_named(cfg, "qa")["role"] == "QA"
    assert agent_named(cfg, None)["name"] == agent_named(cfg, "missing")["name"] == "lead"
    assert configured_agents(None) == [] and agent_named({}, "x") == {}
