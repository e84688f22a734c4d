"""API read throughput and latency: GET /workspaces (authenticated) vs a bare endpoint.

Ours: the stack's API (uvicorn in a thread of this process, as `bench.stack` runs it) answering
`GET /api/v1/workspaces?per_page=20` for a user owning 20 workspaces: bearer-token auth (JWT
check + live-session lookup), rate limiting, the page query with sandbox counts and the total,
the envelope, the metrics middleware.
Baseline: a bare Starlette endpoint under uvicorn in another thread of this process, on the
same database through its own engine, running the same repository call
(`store.repositories.workspaces.list_owned`) for the same user and returning the rows as JSON,
with no auth, no middleware, no envelope.

Load: C concurrent httpx clients in this process (closed loop) for S seconds per side, the two
sides alternating twice so drift hits both. The load generator shares the process (and the
GIL) with both servers, equally: the ratio is what matters, not the absolute rate.

Options: BENCH_READS_SECONDS=5 (2 with --quick)  BENCH_READS_CONCURRENCY=16
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import httpx

from bench import stats
from bench.core import BenchContext, Result, benchmark
from bench.stack import UvicornThread, free_port

NAME = "api_reads"
WORKSPACES = 20


class BareServer:
    """The baseline: the same query, nothing else."""

    def __init__(self, database_url: str, owner_id: str) -> None:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse
        from starlette.routing import Route

        from store.db import create_engine, session_factory
        from store.repositories import workspaces as repo

        engine = create_engine(database_url)
        sessions = session_factory(engine)

        async def page(_: Request) -> JSONResponse:
            async with sessions() as session:
                rows, total = await repo.list_owned(
                    session,
                    owner_id,
                    search=None,
                    sort="created_at",
                    descending=True,
                    offset=0,
                    limit=20,
                )
            return JSONResponse(
                {
                    "data": [{"workspace_id": w.id, "name": w.name, "n": n} for w, n in rows],
                    "total": total,
                }
            )

        self.port = free_port()
        self.engine = engine
        self._server = UvicornThread(Starlette(routes=[Route("/workspaces", page)]), self.port)

    def __enter__(self) -> BareServer:
        self._server.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.stop()


async def _load(url: str, headers: dict[str, str], seconds: float, clients: int) -> list[float]:
    """Closed-loop GETs for `seconds`; the latency of every successful request, in ms."""
    latencies: list[float] = []
    failures = 0
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=30) as http:

        async def worker() -> None:
            nonlocal failures
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                r = await http.get(url)
                if r.status_code == 200:
                    latencies.append((time.perf_counter() - started) * 1000)
                else:
                    failures += 1

        await asyncio.gather(*(worker() for _ in range(clients)))
    if failures:
        raise RuntimeError(f"{failures} failed requests against {url}")
    return latencies


@benchmark(NAME, "GET /workspaces with auth vs a bare endpoint running the same query")
async def run(ctx: BenchContext) -> list[Result]:
    stack = await ctx.stack()
    seconds = float(os.environ.get("BENCH_READS_SECONDS", 2 if ctx.quick else 5))
    clients = int(os.environ.get("BENCH_READS_CONCURRENCY", 16))
    acc = await stack.account()
    for i in range(WORKSPACES):
        r = await stack.http.post("/workspaces", headers=acc.headers, json={"name": f"r{i}"})
        r.raise_for_status()
    ours_url = f"{stack.base_url}/workspaces?per_page=20"
    ours: list[float] = []
    base: list[float] = []
    window = {"ours": 0.0, "base": 0.0}
    with BareServer(stack.settings.resolved_database_url, acc.user_id) as bare:
        base_url = f"http://127.0.0.1:{bare.port}/workspaces"
        await _load(ours_url, acc.headers, 0.5, clients)  # warm-up both
        await _load(base_url, {}, 0.5, clients)
        for i in range(2):
            order: list[tuple[str, Any]] = [
                ("ours", lambda: _load(ours_url, acc.headers, seconds, clients)),
                ("base", lambda: _load(base_url, {}, seconds, clients)),
            ]
            for side, fn in order if i == 0 else order[::-1]:
                got = await fn()
                (ours if side == "ours" else base).extend(got)
                window[side] += seconds
        await bare.engine.dispose()
    ctx.log(f"api_reads: {len(ours)} vs {len(base)} requests in {window['ours']:.0f} s each")
    label = "bare Starlette, same query"
    return [
        Result(
            NAME,
            "throughput req/s",
            len(ours) / window["ours"],
            len(base) / window["base"],
            unit="req/s",
            higher_is_better=True,
            baseline_name=label,
            note=f"{clients} concurrent clients, closed loop, 20 rows + total",
        ),
        Result(NAME, "latency p50", stats.percentile(ours, 50), stats.percentile(base, 50),
               baseline_name=label),
        Result(NAME, "latency p99", stats.percentile(ours, 99), stats.percentile(base, 99),
               baseline_name=label),
    ]  # fmt: skip
