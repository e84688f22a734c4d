"""The harness's vocabulary: a result row, the benchmark registry, the run context.

A benchmark is one module under `bench/` that registers an async function:

    from bench.core import BenchContext, Result, benchmark

    @benchmark("message_delivery", "send → delivered through the platform vs raw Temporal")
    async def run(ctx: BenchContext) -> list[Result]:
        stack = await ctx.stack()          # started once, shared by every benchmark
        ...
        return [Result("message_delivery", "p50 ms", ours=..., baseline=..., goal=1.5)]

and is listed in `bench.__main__.MODULES`. Each returns rows of the same `Result` type; the
runner prints them in one table and writes them to JSON.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from bench import stats

if TYPE_CHECKING:
    from bench.stack import Stack


@dataclass
class Result:
    """One comparable number: ours against a baseline measured in the same run.

    `goal` is the ratio ours/baseline to meet (a maximum for latencies, a minimum when
    `higher_is_better`); None makes the row informational (a breakdown, a count).
    """

    benchmark: str
    metric: str
    ours: float | None
    baseline: float | None = None
    goal: float | None = None
    unit: str = "ms"
    higher_is_better: bool = False
    baseline_name: str = ""
    note: str = ""
    samples: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        return stats.ratio(self.ours, self.baseline)

    @property
    def verdict(self) -> str:
        return stats.verdict(self.ours, self.baseline, self.goal, self.higher_is_better)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["ratio"] = self.ratio
        out["verdict"] = self.verdict
        return out


BenchFn = Callable[["BenchContext"], Awaitable[list[Result]]]


@dataclass(frozen=True)
class Benchmark:
    name: str
    description: str
    fn: BenchFn


REGISTRY: dict[str, Benchmark] = {}


def benchmark(name: str, description: str = "") -> Callable[[BenchFn], BenchFn]:
    """Register an async benchmark function under `name` (unique)."""

    def register(fn: BenchFn) -> BenchFn:
        if name in REGISTRY and REGISTRY[name].fn is not fn:
            raise ValueError(f"benchmark {name!r} registered twice")
        REGISTRY[name] = Benchmark(name, description, fn)
        return fn

    return register


class BenchContext:
    """What a benchmark gets: the parsed options, and the platform stack on first request."""

    def __init__(self, args: argparse.Namespace, exit_stack: AsyncExitStack) -> None:
        self.args = args
        self.quick: bool = bool(args.quick)
        self._exit_stack = exit_stack
        self._stack: Stack | None = None
        self.notes: list[str] = []

    def log(self, message: str) -> None:
        if not getattr(self.args, "quiet", False):
            print(f"[bench] {message}", flush=True)

    async def stack(self) -> Stack:
        """Temporal dev server + migrated database + in-process worker + API under uvicorn,
        started once for the whole run and stopped at its end."""
        if self._stack is None:
            from bench.stack import start_stack

            self.log("starting the stack (Temporal dev server, database, worker, API)")
            self._stack = await self._exit_stack.enter_async_context(start_stack(self.args))
            s = self._stack
            self.log(f"stack up: API {s.base_url}, Temporal {s.temporal_address}")
        return self._stack
