"""The operators' CLI on the live stack (issue 14, item 5): `register` logs in, `send` takes
names for both ends, `messages list|show|retry` find and re-enqueue a failed delivery,
`collab list|status|cancel`, and Ctrl-C on `collab run` leaves the collaboration running and
says how to follow it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from aintandem import AInTandemSyncClient

from tests.live_stack import Stack
from tests.sdk.conftest import PASSWORD

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def _env(cfg: Path) -> dict[str, str]:
    env = {**os.environ, "AINTANDEM_CONFIG_DIR": str(cfg), "NO_COLOR": "1"}
    for name in ("AINTANDEM_BASE_URL", "AINTANDEM_API_KEY", "AINTANDEM_PASSWORD"):
        env.pop(name, None)
    return env


def _cli(cfg: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        cwd=ROOT,
        env=_env(cfg),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=180,
    )


def _json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def _until(check: Any, timeout: float = 120.0) -> Any:
    """Poll `check` (a CLI read) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.5)


def test_operator_cli(stack: Stack, tmp_path: Path) -> None:
    cfg = tmp_path / "cfg"
    email = f"ops-{uuid.uuid4().hex[:10]}@example.com"

    # `register` logs in: the next command needs no `login`.
    reg = _json(
        _cli(
            cfg,
            "register",
            "--api-url",
            stack.api_url,
            "--email",
            email,
            "--name",
            "Operator",
            "--password-stdin",
            "--json",
            stdin=PASSWORD + "\n",
        )
    )
    assert reg["email"] == email and reg["logged_in"] is True
    stored = json.loads((cfg / "credentials.json").read_text())
    assert stored["email"] == email and stored["access_token"] and stored["refresh_token"]
    assert _json(_cli(cfg, "workspaces", "list", "--json")) == []

    with AInTandemSyncClient(stack.api_url, email=email, password=PASSWORD) as api:
        ws = api.workspaces.create(name="ops")
        other = api.workspaces.create(name="ops-2")
        try:
            _scenario(cfg, api, ws.id, other.id)
        finally:
            api.workspaces.delete(ws.id)
            api.workspaces.delete(other.id)


def _scenario(cfg: Path, api: Any, wid: str, other: str) -> None:
    def sandbox(workspace: str, name: str, **agent: Any) -> Any:
        return api.sandboxes.create(
            workspace,
            name=name,
            agent_config={"primary_agent": {"name": name, "role": "Engineer", **agent}},
            resources={"memory_mb": 256, "cpu_cores": 0.5},
        )

    alpha = sandbox(wid, "alpha")
    # beta's agent names a provider the workspace does not configure: every turn fails.
    beta = sandbox(wid, "beta", llm_provider="openai")
    alpha.wait_until("running", timeout=120)
    beta.wait_until("running", timeout=120)

    # `send` by names at both ends (the workspace given, or found among the user's).
    sent = _json(_cli(cfg, "send", "alpha", "beta", "hello", "-w", wid, "--wait", "--json"))
    assert sent["from_sandbox"] == alpha.id and sent["to_sandbox"] == beta.id
    assert sent["status"] == "delivered"
    failed = _cli(
        cfg, "send", "alpha", "beta", '{"ask": "x"}', "--requires-response", "--wait", "--json"
    )
    assert failed.returncode == 1, failed.stderr  # the agent could not answer
    failed_msg = json.loads(failed.stdout)
    assert failed_msg["status"] == "failed" and failed_msg["from_sandbox"] == alpha.id
    # The same name in a second workspace: ambiguous without -w, a clear error.
    sandbox(other, "alpha")
    ambiguous = _cli(cfg, "send", "alpha", "beta", "hi")
    assert ambiguous.returncode == 1 and "Traceback" not in ambiguous.stderr
    assert "'alpha' is ambiguous" in ambiguous.stderr and wid in ambiguous.stderr
    assert other in ambiguous.stderr
    missing = _cli(cfg, "send", "nobody", "beta", "hi", "-w", wid)
    assert missing.returncode == 1 and "no sandbox named 'nobody'" in missing.stderr

    # messages list: all, filtered by status and by sandbox name, and as a table.
    listed = _json(_cli(cfg, "messages", "list", "-w", wid, "--json"))
    assert [m["message_id"] for m in listed] == [failed_msg["message_id"], sent["message_id"]]
    only_failed = _json(
        _cli(
            cfg,
            "messages",
            "list",
            "-w",
            wid,
            "--status",
            "failed",
            "--status",
            "timeout",
            "--json",
        )
    )
    assert [m["message_id"] for m in only_failed] == [failed_msg["message_id"]]
    by_name = _json(_cli(cfg, "messages", "list", "-w", wid, "--sandbox", "beta", "--json"))
    assert len(by_name) == 2
    table = _cli(cfg, "messages", "list", "-w", wid, "--status", "failed")
    assert table.returncode == 0, table.stderr
    assert failed_msg["message_id"] in table.stdout and "alpha" in table.stdout
    assert "messages retry" in table.stdout
    bad = _cli(cfg, "messages", "list", "-w", wid, "--since", "yesterday", "--json")
    assert bad.returncode == 1
    assert json.loads(bad.stderr)["error"]["code"] == "VALIDATION_ERROR"

    # messages show, then retry: re-enqueued as attempt 2 (and failing again, as configured).
    shown = _cli(cfg, "messages", "show", failed_msg["message_id"])
    assert shown.returncode == 0 and "could not answer" in shown.stdout
    assert f"messages retry {failed_msg['message_id']}" in shown.stdout
    retried = _cli(cfg, "messages", "retry", failed_msg["message_id"], "--wait", "--json")
    again = json.loads(retried.stdout)
    assert retried.returncode == 1 and again["status"] == "failed" and again["attempts"] == 2
    not_retryable = _cli(cfg, "messages", "retry", sent["message_id"])
    assert not_retryable.returncode == 1 and "MESSAGE_DELIVERY_FAILED" in not_retryable.stderr

    _ctrl_c_and_collab_commands(cfg, wid)


def _ctrl_c_and_collab_commands(cfg: Path, wid: str) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cli.main",
            "collab",
            "run",
            "-w",
            wid,
            "--task",
            "Write a one-line greeting",
            "-p",
            "alpha",
            "-p",
            "beta",
            "--timeout",
            "600",
        ],
        cwd=ROOT,
        env=_env(cfg),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # "collaboration col_... started (orchestrated)"
        assert "started" in first, first + (proc.stderr.read() if proc.stderr else "")
        cid = first.split()[1]
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert f"collaboration {cid} keeps running" in err
    assert f"aintandem collab watch {cid}" in err and f"aintandem collab status {cid}" in err
    assert "Traceback" not in err

    # It really does keep running.
    status = _json(_cli(cfg, "collab", "status", cid, "--json"))
    assert status["status"] in ("initializing", "in_progress"), status
    human = _cli(cfg, "collab", "status", cid)
    assert human.returncode == 0 and cid in human.stdout and "Write a one-line" in human.stdout
    listed = _json(_cli(cfg, "collab", "list", "-w", wid, "--json"))
    assert [c["collaboration_id"] for c in listed] == [cid]

    cancelled = _json(_cli(cfg, "collab", "cancel", cid, "--json"))
    assert cancelled["collaboration_id"] == cid
    _until(
        lambda: _json(_cli(cfg, "collab", "status", cid, "--json"))["status"] == "cancelled",
        timeout=120,
    )
    done = _json(_cli(cfg, "collab", "list", "-w", wid, "--status", "cancelled", "--json"))
    assert [c["collaboration_id"] for c in done] == [cid]
    assert _json(_cli(cfg, "collab", "list", "-w", wid, "--status", "completed", "--json")) == []
    table = _cli(cfg, "collab", "list", "-w", wid)
    assert table.returncode == 0 and cid in table.stdout and "cancelled" in table.stdout
    again = _cli(cfg, "collab", "cancel", cid)
    assert again.returncode == 1 and "COLLABORATION_FAILED" in again.stderr
