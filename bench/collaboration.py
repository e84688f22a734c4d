"""Collaboration overhead: a 5-step orchestrated collaboration vs the same turns sent one by one.

Both sides run on the same stack, against a zero-latency loopback model server speaking the
OpenAI wire format (so only the platform's own cost is measured):
  ours      POST /workspaces/{id}/collaboration/orchestrate with three running sandboxes; the
            orchestrator's plan is a chain of 5 steps (each depends on the previous, so nothing
            runs in parallel), then the integration turn: 7 agent turns in all. Wall time =
            the POST → GET /collaborations/{id} shows `completed` (polled every 20 ms).
  baseline  the same 7 turns as plain messages with `requires_response`, one after the other
            (POST /sandboxes/{id}/messages, then GET /messages/{id} polled every 20 ms until
            `responded`).
The ratio is what the collaboration machinery (plan validation, dependency scheduling, child
workflows, progress mirrored to the read model and the stream) costs on top of the deliveries.

Options: BENCH_COLLAB_RUNS=5 (2 with --quick).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from typing import Any

from bench import stats
from bench.core import BenchContext, Result, benchmark
from bench.stack import UvicornThread, free_port

NAME = "collaboration"
STEPS = 5
TURNS = STEPS + 2  # the plan, the steps, the integration
TEAM = ("c-alpha", "c-beta", "c-gamma")
POLL = 0.02


def _plan() -> dict[str, Any]:
    return {
        "steps": [
            {
                "id": f"s{i}",
                "assignee": TEAM[i % len(TEAM)],
                "deliverable": f"d{i}",
                "instructions": f"part {i}",
                "depends_on": [f"s{i - 1}"] if i else [],
            }
            for i in range(STEPS)
        ]
    }


def _answer(body: dict[str, Any]) -> str:
    text = "\n".join(str(m.get("content") or "") for m in body["messages"] if m["role"] == "user")
    if "You orchestrate a collaboration" in text:
        return json.dumps(_plan())
    step = re.search(r"Your step 's(\d+)'", text)
    if step:
        return f"## d{step.group(1)}\ndone"
    return "ok"


class ModelServer:
    """A zero-latency OpenAI-compatible chat endpoint in a thread (uvicorn + Starlette)."""

    def __init__(self) -> None:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse
        from starlette.routing import Route

        async def chat(request: Request) -> JSONResponse:
            body = await request.json()
            return JSONResponse(
                {
                    "id": "chatcmpl-bench",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": body.get("model", "bench"),
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": _answer(body)},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                }
            )

        self.port = free_port()
        app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
        self._server = UvicornThread(app, self.port)

    def __enter__(self) -> ModelServer:
        self._server.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.stop()


async def _until(fetch: Any, done: Any, timeout: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await fetch()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"benchmark wait timed out: {value}")
        await asyncio.sleep(POLL)


@benchmark(NAME, "5-step orchestrated collaboration vs the same 7 turns sent one by one")
async def run(ctx: BenchContext) -> list[Result]:
    stack = await ctx.stack()
    runs = int(os.environ.get("BENCH_COLLAB_RUNS", 2 if ctx.quick else 5))
    acc = await stack.account()
    h = acc.headers
    http = stack.http
    with ModelServer() as model:
        wid = (await http.post("/workspaces", headers=h, json={"name": "bench-collab"})).json()[
            "data"
        ]["workspace_id"]
        provider = {
            "name": "openai",
            "api_key": "sk-bench",
            "base_url": f"http://127.0.0.1:{model.port}/v1",
            "models": ["bench"],
            "default_model": "bench",
        }
        r = await http.put(
            f"/workspaces/{wid}/config", headers=h, json={"llm_providers": [provider]}
        )
        r.raise_for_status()
        ids = []
        for name in TEAM:
            r = await http.post(
                f"/workspaces/{wid}/sandboxes",
                headers=h,
                json={
                    "name": name,
                    "agent_config": {"primary_agent": {"name": f"{name}-lead", "role": "Dev"}},
                },
            )
            r.raise_for_status()
            ids.append(r.json()["data"]["sandbox_id"])

        async def sandbox(sid: str) -> dict[str, Any]:
            return dict((await http.get(f"/sandboxes/{sid}", headers=h)).json()["data"])

        for sid in ids:
            await _until(lambda sid=sid: sandbox(sid), lambda d: d["status"] == "running")

        async def collaboration() -> float:
            started = time.perf_counter()
            r = await http.post(
                f"/workspaces/{wid}/collaboration/orchestrate",
                headers=h,
                json={
                    "task": "Build it",
                    "participants": list(TEAM),
                    "deliverables": [f"d{i}" for i in range(STEPS)],
                    "timeout": 300,
                },
            )
            r.raise_for_status()
            cid = r.json()["data"]["collaboration_id"]

            async def get() -> dict[str, Any]:
                return dict((await http.get(f"/collaborations/{cid}", headers=h)).json()["data"])

            d = await _until(get, lambda d: d["status"] in ("completed", "failed", "cancelled"))
            if d["status"] != "completed" or len(d["steps"]) != TURNS:
                raise RuntimeError(f"collaboration {cid} ended {d['status']}: {d['error']}")
            return (time.perf_counter() - started) * 1000

        async def one_by_one() -> float:
            started = time.perf_counter()
            for i in range(TURNS):
                frm, to = ids[i % len(ids)], TEAM[(i + 1) % len(TEAM)]
                r = await http.post(
                    f"/sandboxes/{frm}/messages",
                    headers=h,
                    json={
                        "to_sandbox": to,
                        "content": {"text": f"Your step 's{i % STEPS}'"},
                        "requires_response": True,
                        "timeout": 60,
                    },
                )
                r.raise_for_status()
                mid = r.json()["data"]["message_id"]

                async def get(mid: str = mid) -> dict[str, Any]:
                    return dict((await http.get(f"/messages/{mid}", headers=h)).json()["data"])

                await _until(get, lambda m: m["status"] in ("responded", "failed", "timeout"))
            return (time.perf_counter() - started) * 1000

        await collaboration()  # warm-up: connections, caches, the inboxes' workflows
        await one_by_one()
        ours: list[float] = []
        base: list[float] = []
        for i in range(runs):
            pair = (collaboration, one_by_one) if i % 2 == 0 else (one_by_one, collaboration)
            for fn in pair:
                (ours if fn is collaboration else base).append(await fn())
            ctx.log(f"collaboration run {i + 1}/{runs}: {ours[-1]:.0f} ms vs {base[-1]:.0f} ms")
        await http.delete(f"/workspaces/{wid}", headers=h)
    label = f"{TURNS} deliveries one by one"
    p50, base50 = stats.percentile(ours, 50), stats.percentile(base, 50)
    return [
        Result(
            NAME,
            f"{STEPS}-step wall p50",
            p50,
            base50,
            baseline_name=label,
            samples={"ours": ours, "baseline": base},
        ),
        Result(NAME, f"{STEPS}-step wall max", max(ours), max(base), baseline_name=label),
        Result(
            NAME,
            "per turn p50",
            p50 / TURNS,
            base50 / TURNS,
            baseline_name=label,
            note=f"{TURNS} agent turns each; zero-latency model",
        ),
    ]
