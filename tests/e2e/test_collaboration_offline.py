"""The README's collaboration as a user would run it: a fresh `aintandem up`, no API key
anywhere, three sandboxes, `orchestrate` → a completed collaboration run on the embedded
model's own plan (not the fallback), whose progress moved through real steps and whose
deliverables came from the participants' agents, are not empty and not echoes of the prompt.
How often it is done *well* within the default 300 s (deliverables about the task, no warning)
is what `bench/offline_collaboration.py` measures over five runs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.live_stack import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.docker]

TEAM = {
    "frontend-team": "frontend-architect",
    "backend-team": "backend-architect",
    "security-team": "security-analyst",
}
TASK = "Implement user authentication feature"
DELIVERABLES = ["frontend_components", "backend_api", "security_review"]
ABOUT = ("auth", "login", "password", "user", "sign")


def _poll(fetch: Any, done: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = fetch()
        if done(value):
            return value
        time.sleep(1.0)
    raise AssertionError(f"timed out waiting for {what}: {value}")


def test_three_sandboxes_collaborate_with_the_offline_model(tmp_path: Path) -> None:
    limits = ("AUTH_PER_MINUTE", "WORKSPACE_PER_HOUR", "SANDBOX_PER_HOUR", "MESSAGE_PER_HOUR")
    stack = Stack(tmp_path / "data", **{f"AINTANDEM_RATE_LIMIT_{k}": "100000" for k in limits})
    stack.start()
    try:
        with httpx.Client(base_url=stack.api_url, timeout=30) as c:
            creds = {"email": "team@example.com", "password": "password123"}
            assert c.post("/auth/register", json={**creds, "name": "T"}).status_code == 201
            token = c.post("/auth/login", json=creds).json()["data"]["access_token"]
            c.headers["authorization"] = f"Bearer {token}"
            wid = c.post("/workspaces", json={"name": "offline"}).json()["data"]["workspace_id"]
            ids = {}
            for name, agent in TEAM.items():
                r = c.post(
                    f"/workspaces/{wid}/sandboxes",
                    json={
                        "name": name,
                        "agent_config": {
                            "primary_agent": {"name": agent, "role": agent.replace("-", " ")}
                        },
                        "resources": {"memory_mb": 256},
                    },
                )
                assert r.status_code == 201, r.text
                ids[name] = r.json()["data"]["sandbox_id"]
            for sid in ids.values():
                _poll(
                    lambda sid=sid: c.get(f"/sandboxes/{sid}").json()["data"]["status"],
                    lambda s: s == "running",
                    120,
                    f"{sid} running",
                )
            r = c.post(
                f"/workspaces/{wid}/collaboration/orchestrate",
                json={
                    "task": TASK,
                    "participants": list(TEAM),
                    "collaboration_mode": "orchestrated",
                    "deliverables": DELIVERABLES,
                    # The default is 300 s; quiet, this run takes ≈ 40-200 s on 2 cores. The
                    # gate here is that it works; how often it is done well within 300 s is
                    # measured by bench/offline_collaboration.py, not asserted on a shared CI
                    # machine.
                    "timeout": 900,
                },
            )
            assert r.status_code == 202, r.text
            cid = r.json()["data"]["collaboration_id"]
            seen: list[int] = []

            def fetch() -> dict[str, Any]:
                r = c.get(f"/collaborations/{cid}")
                assert r.status_code == 200, r.text
                d = dict(r.json()["data"])
                seen.append(d["progress"]["percentage"])
                return d

            d = _poll(
                fetch,
                lambda d: d["status"] in ("completed", "failed", "cancelled"),
                960,
                "the collaboration to finish",
            )
            steps = [(s["step"], s["status"], s["attempts"], s["error"]) for s in d["steps"]]
            assert d["status"] == "completed", (d["error"], d["progress"], steps)
            assert seen == sorted(seen) and seen[-1] == 100
            assert len(set(seen)) >= 3, seen  # progress moved through the steps
            plans = [s["output"] for s in d["steps"] if s["step"] == "task_breakdown"]
            assert d["result"]["plan_source"] == "orchestrator", (d["result"], plans)
            assert set(d["deliverables"]) == set(DELIVERABLES)
            replies_seen = [
                (
                    m["content"].get("steps"),
                    m["content"].get("tool_calls"),
                    m["content"]["text"][:300],
                )
                for m in d["messages"]
                if m["message_type"] == "response"
            ]
            # Never our own fallback text: the plan was the model's. Whether a 0.5B model's
            # deliverable quotes its prompt varies run to run: `result.warnings` says so
            # (checked in tests/unit/test_collaboration_warnings.py), and the bench counts it.
            for name, text in d["deliverables"].items():
                assert text.strip(), (name, d["deliverables"], replies_seen)
                assert "Produce the deliverable" not in text, (name, text)
            warnings = d["result"]["warnings"]
            assert isinstance(warnings, list) and not [w for w in warnings if "own plan" in w]
            print(f"warnings: {warnings}")
            on_task = [
                n for n, t in d["deliverables"].items() if any(w in t.lower() for w in ABOUT)
            ]
            print(f"deliverables about the task: {on_task}")
            assert d["result"]["summary"].strip()
            replies = {m["message_id"]: m for m in d["messages"] if m["message_type"] == "response"}
            assert replies and all(m["content"]["provider"] == "offline" for m in replies.values())
            # Each deliverable step was answered by its assignee's agent, in its sandbox.
            by_sandbox = {v: k for k, v in ids.items()}
            for step in d["steps"]:
                if step["step"] in ("task_breakdown", "integration"):
                    continue
                answer = c.get(f"/messages/{step['message_ids'][-1]}").json()["data"]
                assert answer["status"] == "responded", answer
                assert answer["response"]["from_agent"] == TEAM[by_sandbox[step["assignee"]]]
    finally:
        code = stack.stop()
        stack.remove_sandboxes()
        assert code == 0
