"""The blocking twin (`AInTandemSyncClient`) and the `aintandem` CLI, both on the live stack."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from aintandem import AInTandemSyncClient, ResourceNotFound, Workspace
from aintandem.sync import AInTandemClient as SyncAlias
from aintandem.sync import SyncSandbox

from tests.live_stack import Stack
from tests.sdk.conftest import Account

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def test_sync_client_has_the_same_surface(stack: Stack, account: Account) -> None:
    assert SyncAlias is AInTandemSyncClient
    with AInTandemSyncClient(
        stack.api_url, email=account.email, password=account.password
    ) as client:
        assert client.system.health().status in ("healthy", "degraded")
        made = [client.workspaces.create(name=f"sync-{i}").id for i in range(3)]
        try:
            listed = [w.id for w in client.workspaces.list(per_page=1)]  # 1 item per page
            assert set(made) <= set(listed)
            ws = client.workspaces.get(made[0])
            assert isinstance(ws, Workspace)
            sandbox = client.sandboxes.create(
                made[0],
                name="sync-sb",
                agent_config={"primary_agent": {"name": "s", "role": "Engineer"}},
                resources={"memory_mb": 256, "cpu_cores": 0.5},
            )
            assert isinstance(sandbox, SyncSandbox) and sandbox.id.startswith("sb_")
            sandbox.wait_until("running", timeout=90)
            assert sandbox.get_status().status == "running"
            assert [s.id for s in client.workspaces.list_sandboxes(made[0])] == [sandbox.id]
            # The stream is a blocking iterator too (replaying the lifecycle events).
            with sandbox.stream(["events"], last_event_id=0) as events:
                first = next(events)
            assert first.channel == "events" and first.data["sandbox_id"] == sandbox.id
            sandbox.stop()
            sandbox.wait_until("stopped", timeout=60)
            with pytest.raises(ResourceNotFound) as err:
                client.workspaces.get("ws_zzzzzzzzzz")
            assert err.value.request_id
        finally:
            for wid in made:
                client.workspaces.delete(wid)


def _cli(cfg: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AINTANDEM_CONFIG_DIR": str(cfg), "NO_COLOR": ""}
    env.pop("AINTANDEM_BASE_URL", None)
    env.pop("AINTANDEM_API_KEY", None)
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        cwd=ROOT,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=180,
    )


def _json(result: subprocess.CompletedProcess[str]) -> object:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_cli_end_to_end_with_json(stack: Stack, account: Account, tmp_path: Path) -> None:
    cfg = tmp_path / "cfg"
    # Not logged in yet: a clear message and a failing exit code, no traceback.
    result = _cli(cfg, "workspaces", "list")
    assert result.returncode != 0
    assert "not logged in" in result.stderr and "Traceback" not in result.stderr

    login = _cli(
        cfg,
        "login",
        "--api-url",
        stack.api_url,
        "--email",
        account.email,
        "--password-stdin",
        "--json",
        stdin=account.password + "\n",
    )
    assert _json(login) == {  # type: ignore[comparison-overlap]
        "email": account.email,
        "user_id": json.loads(login.stdout)["user_id"],
        "base_url": stack.api_url,
    }
    creds = cfg / "credentials.json"
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    stored = json.loads(creds.read_text())
    assert stored["base_url"] == stack.api_url and stored["access_token"]

    ws = _json(_cli(cfg, "workspaces", "create", "cli-ws", "--max-sandboxes", "3", "--json"))
    assert isinstance(ws, dict) and ws["name"] == "cli-ws"
    wid = ws["workspace_id"]
    listed = _json(_cli(cfg, "workspaces", "list", "--json"))
    assert wid in [w["workspace_id"] for w in listed]  # type: ignore[union-attr]
    table = _cli(cfg, "workspaces", "list")
    assert table.returncode == 0 and "NAME" in table.stdout and wid in table.stdout
    assert "\x1b[" not in table.stdout  # no colours when not on a TTY

    a = _json(_cli(cfg, "sandboxes", "create", "alpha", "-w", wid, "--wait", "--json"))
    b = _json(_cli(cfg, "sandboxes", "create", "beta", "-w", wid, "--wait", "--json"))
    assert a["status"] == "running" and b["status"] == "running"  # type: ignore[index]
    sandboxes = _json(_cli(cfg, "sandboxes", "list", "-w", wid, "--json"))
    assert {s["name"] for s in sandboxes} == {"alpha", "beta"}  # type: ignore[union-attr]

    sent = _json(
        _cli(cfg, "send", a["sandbox_id"], "beta", '{"task": "review"}', "--wait", "--json")  # type: ignore[index]
    )
    assert sent["status"] == "delivered" and sent["content"] == {"task": "review"}  # type: ignore[index]

    stopped = _json(_cli(cfg, "sandboxes", "stop", b["sandbox_id"], "--wait", "--json"))  # type: ignore[index]
    assert stopped["status"] == "stopped"  # type: ignore[index]
    started = _json(_cli(cfg, "sandboxes", "start", b["sandbox_id"], "--json"))  # type: ignore[index]
    assert started["status"] == "starting"  # type: ignore[index]
    logs = _cli(cfg, "sandboxes", "logs", a["sandbox_id"], "--json")  # type: ignore[index]
    assert logs.returncode == 0, logs.stderr
    for line in logs.stdout.splitlines():
        assert set(json.loads(line)) >= {"timestamp", "level", "message"}

    status = _json(_cli(cfg, "status", "--json"))
    assert status["logged_in_as"] == account.email  # type: ignore[index]
    assert status["health"]["status"] == "healthy"  # type: ignore[index]

    # The error path: the server's code and message, a non-zero exit, no traceback.
    missing = _cli(cfg, "send", a["sandbox_id"], "nobody", "hello")  # type: ignore[index]
    assert missing.returncode == 1
    assert "RESOURCE_NOT_FOUND" in missing.stderr and "Sandbox not found" in missing.stderr
    assert "Traceback" not in missing.stderr
    invalid = _cli(cfg, "workspaces", "create", "", "--json")
    assert invalid.returncode == 1 and invalid.stdout == ""
    err = json.loads(invalid.stderr)["error"]
    assert err["code"] == "VALIDATION_ERROR" and err["status"] == 422 and err["request_id"]
    assert err["details"]["fields"][0]["field"] == "name"

    # The CLI refreshes an expired/invalid access token with the stored refresh token.
    stored = json.loads(creds.read_text())
    creds.write_text(json.dumps({**stored, "access_token": "not-a-valid-token"}))
    again = _json(_cli(cfg, "workspaces", "list", "--json"))
    assert wid in [w["workspace_id"] for w in again]  # type: ignore[union-attr]
    renewed = json.loads(creds.read_text())
    assert renewed["access_token"] not in ("not-a-valid-token", stored["access_token"])
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600

    _cli(cfg, "logout")
    assert not creds.exists()
    from aintandem import AInTandemSyncClient as Client

    with Client(stack.api_url, email=account.email, password=account.password) as c:
        c.workspaces.delete(wid)


def test_cli_server_commands_still_parse() -> None:
    from cli.main import build_parser

    parser = build_parser()
    assert parser.parse_args(["up", "--no-docker"]).no_docker is True
    for argv in (["api"], ["worker"], ["migrate"], ["image", "build"]):
        assert callable(parser.parse_args(argv).func)
