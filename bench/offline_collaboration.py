"""The README's collaboration on the embedded model, no API key: does it do its job, how long.

  ours      POST /workspaces/{id}/collaboration/orchestrate exactly as the README shows it (three
            running sandboxes frontend-team/backend-team/security-team, "Implement user
            authentication feature", three deliverables, the default 300 s timeout), on the
            worker's embedded model (AINTANDEM_OFFLINE_MODEL, default Qwen2.5-Coder-0.5B), N
            times. Counted a success when it completes on the model's own plan (plan_source
            "orchestrator", not the fallback) with no warning and deliverables that are not
            empty, not echoes of the prompt and about the task. Also one swarm run (valid votes).
  baseline  the same model in a server of its own (activities.offline_llm), one plan-sized
            request straight to llama.cpp: its generation speed is what the collaboration's
            effective speed (output tokens of every turn / wall time) is compared with.

Options: BENCH_OFFLINE_RUNS=5 (1 with --quick). Takes ≈ 3-4 min a run on 2 cores.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from bench.core import BenchContext, Result, benchmark

NAME = "offline_collaboration"
TEAM = {
    "frontend-team": ("frontend-architect", "Frontend Architect"),
    "backend-team": ("backend-architect", "Backend Architect"),
    "security-team": ("security-analyst", "Security Analyst"),
}
TASK = "Implement user authentication feature"
DELIVERABLES = ["frontend_components", "backend_api", "security_review"]
ABOUT = ("auth", "login", "password", "user", "sign")
POLL = 1.0


def _good(d: dict[str, Any]) -> tuple[bool, str]:
    """Whether a finished collaboration did its job, and why not."""
    if d["status"] != "completed":
        return False, f"{d['status']}: {(d.get('error') or {}).get('message')}"
    result = d.get("result") or {}
    if result.get("plan_source") != "orchestrator":
        return False, str(result.get("plan_source"))
    if result.get("warnings"):
        return False, "; ".join(result["warnings"])
    for name in DELIVERABLES:
        text = str((d.get("deliverables") or {}).get(name) or "")
        if len(text.strip()) < 40 or not any(w in text.lower() for w in ABOUT):
            return False, f"deliverable {name} is empty or off the task: {text[:80]!r}"
    return True, "ok"


def _output_tokens(d: dict[str, Any]) -> int:
    return sum(
        int((m.get("content") or {}).get("usage", {}).get("output_tokens", 0))
        for m in d.get("messages") or []
        if m.get("message_type") == "response"
    )


async def _raw_tokens_per_second() -> float:
    """One plan-sized request to the same model in a server of our own."""
    from activities.llm import complete
    from activities.offline_llm import OfflineModelServer, selected_model
    from domain.llm import AgentTurnRequest, ChatMessage, offline_provider

    server = OfflineModelServer(spec=selected_model())
    await asyncio.to_thread(server.start)
    try:
        req = AgentTurnRequest(
            provider=offline_provider(max_tokens=300),
            messages=[ChatMessage("user", f"Write a short plan to {TASK.lower()}.")],
        )
        started = time.perf_counter()
        result = await complete(req, offline_base_url=server.base_url, offline_key=server.api_key)
        return result.output_tokens / (time.perf_counter() - started)
    finally:
        await asyncio.to_thread(server.stop)


@benchmark(NAME, "the README collaboration on the embedded model: success rate, wall time, tok/s")
async def run(ctx: BenchContext) -> list[Result]:
    stack = await ctx.stack()
    runs = int(os.environ.get("BENCH_OFFLINE_RUNS", 1 if ctx.quick else 5))
    acc = await stack.account()
    h, http = acc.headers, stack.http
    wid = (await http.post("/workspaces", headers=h, json={"name": "bench-offline"})).json()[
        "data"
    ]["workspace_id"]
    ids: list[str] = []
    for name, (agent, role) in TEAM.items():
        r = await http.post(
            f"/workspaces/{wid}/sandboxes",
            headers=h,
            json={"name": name, "agent_config": {"primary_agent": {"name": agent, "role": role}}},
        )
        r.raise_for_status()
        ids.append(r.json()["data"]["sandbox_id"])
    for sid in ids:
        for _ in range(180):  # the sandboxes start in parallel; polling a read is the only way
            if (await http.get(f"/sandboxes/{sid}", headers=h)).json()["data"]["status"] == (
                "running"
            ):
                break
            await asyncio.sleep(POLL)

    async def collaborate(mode: str) -> tuple[dict[str, Any], float]:
        started = time.perf_counter()
        r = await http.post(
            f"/workspaces/{wid}/collaboration/orchestrate",
            headers=h,
            json={
                "task": TASK,
                "participants": list(TEAM),
                "collaboration_mode": mode,
                "deliverables": DELIVERABLES,
            },
        )
        r.raise_for_status()
        cid = r.json()["data"]["collaboration_id"]
        while True:
            d = dict((await http.get(f"/collaborations/{cid}", headers=h)).json()["data"])
            if d["status"] in ("completed", "failed", "cancelled"):
                return d, time.perf_counter() - started
            await asyncio.sleep(POLL)

    walls, tokens, successes = [], [], 0
    for i in range(runs):
        d, wall = await collaborate("orchestrated")
        ok, why = _good(d)
        successes += ok
        walls.append(wall)
        tokens.append(_output_tokens(d) / wall)
        ctx.log(f"{NAME}: run {i + 1}/{runs}: {wall:.0f} s, {'ok' if ok else why}")
    swarm, swarm_wall = await collaborate("swarm")
    votes = (swarm.get("result") or {}).get("votes") or {}
    valid_votes = sum(v is not None for v in votes.values())
    raw = await _raw_tokens_per_second()
    walls.sort()
    return [
        Result(
            NAME,
            f"runs done well (of {runs})",
            successes,
            runs,
            unit="runs",
            goal=0.8,
            higher_is_better=True,
            baseline_name="runs",
            note="completed on the model's own plan, no warning, deliverables on the task",
        ),
        Result(
            NAME,
            "wall p50 s (default timeout 300 s)",
            walls[len(walls) // 2],
            300.0,
            unit="s",
            goal=1.0,
            baseline_name="timeout",
        ),
        Result(
            NAME,
            "effective output tok/s vs raw model",
            sum(tokens) / len(tokens),
            raw,
            unit="tok/s",
            higher_is_better=True,
            baseline_name="raw llama.cpp",
        ),
        Result(
            NAME,
            "swarm valid votes",
            valid_votes,
            len(TEAM),
            unit="votes",
            goal=1.0,
            higher_is_better=True,
            baseline_name="participants",
            note=f"swarm {swarm['status']} in {swarm_wall:.0f} s",
        ),
    ]
