"""`aintandem up` end to end: the README's run command, driven like a user with curl would."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.live_stack import Stack

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def _descendants(pid: int) -> set[int]:
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout
    children: dict[int, list[int]] = {}
    for line in out.splitlines():
        p, pp = (int(x) for x in line.split())
        children.setdefault(pp, []).append(p)
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def _families(text: str) -> set[str]:
    """Metric family names, parsed with the Prometheus text parser (fails on bad exposition)."""
    return {family.name for family in text_string_to_metric_families(text)}


def test_up_serves_the_api_stops_cleanly_and_keeps_data(tmp_path: Path) -> None:
    stack = Stack(tmp_path / "data")
    stack.start()
    try:
        out = stack.log.read_text()
        for url_part in ("/api/v1", "/docs", "/metrics", "Temporal UI"):
            assert url_part in out
        children = _descendants(stack.proc.pid)  # type: ignore[union-attr]
        assert len(children) >= 3  # temporal, worker, api
        with httpx.Client(base_url=f"{stack.base}/api/v1", timeout=10) as c:
            assert (
                c.post(
                    "/auth/register",
                    json={"email": "e2e@example.com", "password": "password123", "name": "E2E"},
                ).status_code
                == 201
            )
            login = c.post(
                "/auth/login", json={"email": "e2e@example.com", "password": "password123"}
            )
            h = {"Authorization": f"Bearer {login.json()['data']['access_token']}"}
            ws = c.post("/workspaces", json={"name": "persisted"}, headers=h).json()["data"]
            assert [w["name"] for w in c.get("/workspaces", headers=h).json()["data"]] == [
                "persisted"
            ]
            cfg = c.put(
                f"/workspaces/{ws['workspace_id']}/config",
                headers=h,
                json={"llm_providers": [{"name": "qwen", "api_key": "${DASHSCOPE_API_KEY}"}]},
            )
            assert cfg.status_code == 200
            health = c.get("/system/health").json()
            for _ in range(40):
                if health.get("data", {}).get("status") == "healthy":
                    break
                time.sleep(0.5)
                health = c.get("/system/health").json()
            assert health["data"]["services"]["temporal"] == "healthy", health
            assert health["data"]["services"]["worker"] == "healthy", health
            api_metrics = _families(httpx.get(f"{stack.base}/metrics").text)
            assert "aintandem_api_http_requests" in api_metrics
            worker_url = f"http://127.0.0.1:{stack.env['AINTANDEM_WORKER_METRICS_PORT']}/metrics"
            worker_metrics = _families(httpx.get(worker_url).text)
            assert "aintandem_sandbox_sandboxes" in worker_metrics
            assert "aintandem_collaboration_collaborations" in worker_metrics
            assert any(name.startswith("temporal_") for name in worker_metrics), worker_metrics
    finally:
        code = stack.stop()
    assert code == 0, stack.log.read_text()
    time.sleep(0.5)
    assert not [p for p in children if _alive(p)], "processes left behind after Ctrl-C"

    # Restart on the same data dir: the account and workspace are still there.
    stack.start()
    try:
        with httpx.Client(base_url=f"{stack.base}/api/v1", timeout=10) as c:
            login = c.post(
                "/auth/login", json={"email": "e2e@example.com", "password": "password123"}
            )
            assert login.status_code == 200
            h = {"Authorization": f"Bearer {login.json()['data']['access_token']}"}
            assert [w["name"] for w in c.get("/workspaces", headers=h).json()["data"]] == [
                "persisted"
            ]
    finally:
        assert stack.stop() == 0


def _child(stack: Stack, role: str) -> int:
    """The pid of `up`'s `python -m cli.main <role>` child."""
    for pid in _descendants(stack.proc.pid):  # type: ignore[union-attr]
        with contextlib.suppress(OSError):
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if argv[-3:-1] == [b"cli.main", role.encode()] and _alive(pid):
                return pid
    raise AssertionError(f"no {role} process under `up`")


def _wait_for(what: str, check: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError, AssertionError):
            result = check()
            if result:
                return result
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def test_up_restarts_a_child_that_dies(tmp_path: Path) -> None:
    """A crashed worker or API is started again (with a short back-off) instead of taking the
    whole platform down; what they serve comes back and `up` still stops cleanly."""
    stack = Stack(tmp_path / "data")
    stack.start()
    try:
        worker_metrics = f"http://127.0.0.1:{stack.env['AINTANDEM_WORKER_METRICS_PORT']}/metrics"
        _wait_for("the worker's metrics", lambda: httpx.get(worker_metrics).status_code == 200)
        for role, probe in (
            ("worker", lambda: httpx.get(worker_metrics).status_code == 200),
            ("api", lambda: httpx.get(f"{stack.api_url}/system/info").status_code == 200),
        ):
            old = _child(stack, role)
            os.kill(old, signal.SIGKILL)
            _wait_for(
                f"`up` to restart the {role}",
                lambda role=role: f"restarted {role}" in stack.log.read_text(),
            )
            new = _wait_for(f"a new {role} process", lambda role=role: _child(stack, role))
            assert new != old and not _alive(old)
            _wait_for(f"the restarted {role} to serve", probe)
        assert stack.proc.poll() is None, stack.log.read_text()  # type: ignore[union-attr]
    finally:
        code = stack.stop()
    assert code == 0, stack.log.read_text()
