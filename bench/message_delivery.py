"""Message send → delivered (no response) through the platform vs raw Temporal, in the same run.

Ours (the real platform over HTTP): one workspace, two running sandboxes, A sends to B with
`POST /sandboxes/{A}/messages` (requires_response false) from an httpx.AsyncClient with a
connection pool; concurrency by asyncio. The API writes the row (`queued`) and signals-with-start
`inbox-{B}`; the inbox checks B's status and runs `inbox_deliver` on batches, which stamps
`delivered_at`. Latency = client send (wall clock, just before the POST) → the row's
`delivered_at`, read from the messages table after the run (SQLite keeps microseconds; the API
rounds to seconds, so it is not polled). The 202 latency is the POST's round trip. Ours runs
twice, on a workspace and sender → target pair of its own each:
  ours     the deployed topology: `python -m cli.main api` and `... worker` as processes of
           their own (as `aintandem up` runs them), on the same Temporal server and database,
           with a task queue of their own; CPU per message per process is reported;
  ours·1p  API (uvicorn thread) and worker in this process with the load generator (one GIL),
           instrumented: the profile rows below come from this one.

Baselines, against the same Temporal server, on a task queue and worker of their own in this
process (sandboxed workflow runner like the platform's worker), writing to a scratch table of the
same database with the same session factory the platform's activities use:
  wf/msg   one workflow per message running one activity that UPDATEs its scratch row + commit
           (start → written_at; the RPC ack is the "202");
  signals  one long-lived workflow fed by plain signals, batching like the inbox (≤ 100 per
           activity, continue-as-new every 2000 signals), one activity per batch that UPDATEs
           each row + commit (signal → written_at).

Modes, each run for ours and both baselines (the order rotates per mode so drift hits all):
  serial      one sender, back to back: the latency floor (no queueing of our own making);
  fixed rate  open loop at R/s for S seconds (at most `max_inflight` requests outstanding, so
              an overloaded system shows as offered/s below R and a growing ack latency);
  saturation  C concurrent senders, N messages, as fast as they go (closed loop).

Goals (issue): ≥ 300 messages/s delivered and p50 ≤ 100 ms end to end on 2 cores. GOAL rows
carry the target in the baseline column; the raw-Temporal rows are informational ratios.

Profile (bench-only instrumentation; no platform code changes):
  202 path   wrappers on the API's outermost middleware, `api.services.messages.send` /
             `signal_inbox`, AsyncSession methods and Pool.connect: client → API, pool checkout
             wait, auth/ownership queries, target lookup + INSERTs, commit, the inbox signal
             (signal-with-start, coalesced with concurrent requests), response;
  inbox      its Temporal history (every run of the continue-as-new chain): per message
             signaled → batch scheduled → started → delivered_at, per cycle the status-check
             activity, the workflow tasks and the delivery activity, batch sizes from the
             `inbox_deliver` inputs; DB time inside inbox_deliver (vs the baseline's write);
  CPU        this process (load generator + API + both workers share one GIL) split by thread
             (API loop, main loop, aiosqlite threads, native SDK threads), the Temporal server,
             and the machine (it is shared: the load average is printed in the notes).

Options through environment variables (the harness's parser is shared by every benchmark):
  BENCH_MSG_SERIAL=50 (20 with --quick)  BENCH_MSG_RATES="50" (comma-separated msg/s)
  BENCH_MSG_SECONDS=10 (3 with --quick)  BENCH_MSG_COUNT=2000 (300 with --quick)
  BENCH_MSG_CONCURRENCY=32  BENCH_MSG_MAX_INFLIGHT=256
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
import json
import os
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from temporalio import activity, workflow
from temporalio.common import RetryPolicy

from bench.core import BenchContext, Result, benchmark
from bench.stack import Account, create_account, platform_processes

NAME = "message_delivery"
GOAL_RATE = 300.0  # messages/s delivered
GOAL_P50_MS = 100.0
BATCH_SIZE = 100  # as InboxInput.batch_size
SIGNALS_PER_RUN = 2000  # as InboxInput.signals_per_run
WRITE_ACTIVITY = "bench_scratch_write"
STORE_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=100),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=5),
)


# -- raw Temporal baselines (workflows run in the SDK sandbox; `bench` is passed through) ---------


@workflow.defn(name="BenchOneActivity")
class OneActivityWorkflow:
    """Baseline 1: one workflow per message, one write activity."""

    @workflow.run
    async def run(self, key: str) -> int:
        return await workflow.execute_activity(
            WRITE_ACTIVITY,
            [key],
            start_to_close_timeout=timedelta(seconds=15),
            retry_policy=STORE_RETRY,
            result_type=int,
        )


@dataclass
class SinkInput:
    batch_size: int = BATCH_SIZE
    signals_per_run: int = SIGNALS_PER_RUN
    pending: list[str] = field(default_factory=list)


@workflow.defn(name="BenchSignalSink")
class SignalSinkWorkflow:
    """Baseline 2: signals into one workflow, written in batches by one activity per batch."""

    def __init__(self) -> None:
        self._pending: list[str] = []
        self._signals = 0
        self._stop = False

    @workflow.signal(name="item")
    def item(self, key: str) -> None:
        self._pending.append(key)
        self._signals += 1

    @workflow.signal(name="stop")
    def stop(self) -> None:
        self._stop = True

    @workflow.run
    async def run(self, inp: SinkInput) -> None:
        self._pending = list(inp.pending) + self._pending
        while True:
            await workflow.wait_condition(lambda: bool(self._pending) or self._stop)
            if not self._pending:
                return
            batch = self._pending[: inp.batch_size]
            await workflow.execute_activity(
                WRITE_ACTIVITY,
                batch,
                start_to_close_timeout=timedelta(seconds=15),
                retry_policy=STORE_RETRY,
                result_type=int,
            )
            done = set(batch)
            self._pending = [k for k in self._pending if k not in done]
            if (
                self._signals >= inp.signals_per_run
                or workflow.info().is_continue_as_new_suggested()
            ):
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(
                    SinkInput(inp.batch_size, inp.signals_per_run, self._pending)
                )


class ScratchWriter:
    """The baselines' write: one UPDATE per key on the same database, then commit."""

    def __init__(self, sessions: Any) -> None:
        self._sessions = sessions

    @activity.defn(name=WRITE_ACTIVITY)
    async def write(self, keys: list[str]) -> int:
        from sqlalchemy import text

        async with self._sessions() as session:
            now = time.time()
            n = 0
            for key in keys:
                r = await session.execute(
                    text(
                        "UPDATE bench_scratch SET written_at = :t WHERE id = :id "
                        "AND written_at IS NULL"
                    ),
                    {"t": now, "id": key},
                )
                n += int(getattr(r, "rowcount", 0) or 0)
            await session.commit()
            return n


# -- load generation -------------------------------------------------------------------------------


@dataclass
class Sent:
    index: int
    key: str | None  # message id / baseline key; None when the request failed
    t_send: float  # epoch seconds, just before the request
    t_ack: float  # epoch seconds, response received
    error: str | None = None


OneFn = Callable[[int], Awaitable[Sent]]


async def open_loop(rate: float, seconds: float, one: OneFn, max_inflight: int) -> list[Sent]:
    """Requests at `rate`/s for `seconds` (open loop; at most `max_inflight` outstanding)."""
    n = max(1, round(rate * seconds))
    sem = asyncio.Semaphore(max_inflight)
    out: list[Sent] = []
    tasks: list[asyncio.Task[None]] = []

    async def fire(i: int) -> None:
        try:
            out.append(await one(i))
        finally:
            sem.release()

    start = time.perf_counter() + 0.02
    for i in range(n):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await sem.acquire()
        tasks.append(asyncio.create_task(fire(i)))
    await asyncio.gather(*tasks)
    return out


async def closed_loop(total: int, concurrency: int, one: OneFn) -> list[Sent]:
    counter = itertools.count()
    out: list[Sent] = []

    async def sender() -> None:
        while (i := next(counter)) < total:
            out.append(await one(i))

    await asyncio.gather(*(sender() for _ in range(concurrency)))
    return out


# -- CPU accounting from /proc ---------------------------------------------------------------------

_CLK = os.sysconf("SC_CLK_TCK")


def _proc_cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _CLK
    except (OSError, IndexError, ValueError):
        return 0.0


def _machine_jiffies() -> tuple[int, int]:
    parts = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    return sum(parts[:8]) - idle, sum(parts[:8])


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = defaultdict(list)
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children[ppid].append(int(d.name))
    out, todo = [], [root]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def temporal_pids() -> list[int]:
    pids = []
    for pid in _descendants(os.getpid()):
        with contextlib.suppress(OSError):
            if "temporal" in Path(f"/proc/{pid}/comm").read_text():
                pids.append(pid)
    return pids


def _threads_cpu() -> dict[int, float]:
    out: dict[int, float] = {}
    for d in Path("/proc/self/task").iterdir():
        with contextlib.suppress(ValueError):
            out[int(d.name)] = _proc_cpu_path(d / "stat")
    return out


def _proc_cpu_path(path: Path) -> float:
    try:
        fields = path.read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _CLK
    except (OSError, IndexError, ValueError):
        return 0.0


def _thread_group(t: Any) -> str:
    import threading

    try:
        import aiosqlite

        is_sqlite = isinstance(t, aiosqlite.Connection)
    except ImportError:
        is_sqlite = False
    if t.name == "bench-api":
        return "API event loop thread"
    if t is threading.main_thread():
        return "main event loop (load gen, worker, baseline worker)"
    if is_sqlite or "_connection_worker_thread" in t.name:
        return "aiosqlite connection threads"
    if t.name.startswith("activity"):
        return "activity thread pool"
    return "other Python threads"


NATIVE = "native threads (Temporal SDK core, …)"


@dataclass
class CpuSample:
    t: float
    self_s: float
    temporal_s: float
    busy: int
    total: int
    threads: dict[int, float] = field(default_factory=dict)
    processes: dict[str, float] = field(default_factory=dict)  # label → cpu s (children)


def cpu_sample(tpids: list[int], processes: dict[str, int] | None = None) -> CpuSample:
    busy, total = _machine_jiffies()
    return CpuSample(
        time.perf_counter(),
        _proc_cpu(os.getpid()),
        sum(_proc_cpu(p) for p in tpids),
        busy,
        total,
        _threads_cpu(),
        {label: _proc_cpu(pid) for label, pid in (processes or {}).items()},
    )


def cpu_usage(a: CpuSample, b: CpuSample) -> dict[str, float]:
    """Percent of one core over [a, b]: this process, per thread group, Temporal, machine."""
    import threading

    wall = max(1e-9, b.t - a.t)
    ncpu = os.cpu_count() or 1
    out = {
        "bench process %": 100 * (b.self_s - a.self_s) / wall,
        "temporal server %": 100 * (b.temporal_s - a.temporal_s) / wall,
        "machine busy %": 100 * ncpu * (b.busy - a.busy) / max(1, b.total - a.total),
    }
    for label, cpu in b.processes.items():
        out[f"{label} process %"] = 100 * (cpu - a.processes.get(label, cpu)) / wall
    names = {t.native_id: _thread_group(t) for t in threading.enumerate()}
    groups: dict[str, float] = defaultdict(float)
    for tid, cpu in b.threads.items():
        groups[names.get(tid, NATIVE)] += cpu - a.threads.get(tid, 0.0)
    for g, cpu in sorted(groups.items()):
        out[f"  thread: {g} %"] = 100 * cpu / wall
    return out


# -- instrumentation (bench-only wrappers; restored after the run) ---------------------------------

# The record of the current API request or activity: "<stage>:<what>" → ms (and counts).
_REC: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "bench_probe_record", default=None
)
_DB_METHODS = ("execute", "scalar", "get", "flush", "commit")


class Probe:
    """Where the time goes, without changing platform code:

    - API (POST …/messages): arrival in the outermost middleware, DB calls before `send()`
      (auth session lookup, sandbox/workspace ownership), inside `send()` (lookups, flush =
      the INSERT, commit = event INSERT + COMMIT) and the signal-with-start RPC; keyed by the
      message id the 202 carries;
    - activities (inbox_deliver, inbox_target_status, the baselines' write): DB calls by kind;
    - connection pools: the most connections checked out at once, per pool (API / worker);
    - the API's unhandled errors (the 500s), first few.
    """

    def __init__(self) -> None:
        self.api: dict[str, dict[str, Any]] = {}
        self.activities: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.pools: dict[int, dict[str, Any]] = {}
        self.errors: list[str] = []
        self._undo: list[tuple[Any, str, Any]] = []
        self._listeners: list[tuple[Any, str, Any]] = []
        self._log_handler: Any = None

    def _activity_record(self) -> dict[str, Any] | None:
        if not activity.in_activity():
            return None
        info = activity.info()
        rec: dict[str, Any] = defaultdict(float)
        rec["stage"] = "db"
        rec["first_db_call"] = time.time()
        rec["scheduled"] = info.current_attempt_scheduled_time.timestamp()
        self.activities[info.activity_type].append(rec)
        _REC.set(rec)  # the activity's own task context: later calls see it
        return rec

    def install(self) -> None:
        import logging

        from sqlalchemy import event
        from sqlalchemy.ext.asyncio import AsyncSession
        from sqlalchemy.pool import Pool

        from api.middleware import RequestContextMiddleware
        from api.services import messages as svc

        probe = self
        orig_call = RequestContextMiddleware.__call__

        async def call(self: Any, scope: Any, receive: Any, send: Any) -> None:
            if scope.get("type") == "http" and str(scope.get("path", "")).endswith("/messages"):
                rec: dict[str, Any] = defaultdict(float)
                rec["stage"] = "pre-send"
                rec["arrival"] = time.time()
                _REC.set(rec)
            await orig_call(self, scope, receive, send)

        orig_send = svc.send

        async def send(*args: Any, **kwargs: Any) -> Any:
            rec = _REC.get()
            if rec is None:
                rec = defaultdict(float)
                _REC.set(rec)
            rec["stage"] = "send"
            rec["send_start"] = time.time()
            result = await orig_send(*args, **kwargs)
            rec["send_end"] = time.time()
            with contextlib.suppress(Exception):
                status, data = result
                if status == 202:
                    probe.api[data["message_id"]] = rec
            return result

        orig_signal = svc.signal_inbox

        async def signal_inbox(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return await orig_signal(*args, **kwargs)
            finally:
                rec = _REC.get()
                if rec is not None:
                    rec["send:inbox signal"] += (time.perf_counter() - t0) * 1000

        def timed(name: str, original: Any) -> Any:
            async def method(self: Any, *args: Any, **kwargs: Any) -> Any:
                rec = _REC.get() or probe._activity_record()
                if rec is None:
                    return await original(self, *args, **kwargs)
                t0 = time.perf_counter()
                try:
                    return await original(self, *args, **kwargs)
                finally:
                    key = f"{rec['stage']}:{name}"
                    rec[key] += (time.perf_counter() - t0) * 1000
                    rec[f"{key} calls"] += 1

            return method

        orig_connect = Pool.connect

        def connect(self: Any) -> Any:
            # Checkout from the pool (waits while every connection is in use); the async
            # engine runs this in a greenlet that carries the caller's context.
            rec = _REC.get()
            t0 = time.perf_counter()
            try:
                return orig_connect(self)
            finally:
                if rec is not None:
                    rec[f"{rec['stage']}:pool checkout"] += (time.perf_counter() - t0) * 1000

        patches: list[tuple[Any, str, Any]] = [
            (Pool, "connect", connect),
            (RequestContextMiddleware, "__call__", call),
            (svc, "send", send),
            (svc, "signal_inbox", signal_inbox),
        ]
        patches += [(AsyncSession, m, timed(m, getattr(AsyncSession, m))) for m in _DB_METHODS]
        for owner, attr, new in patches:
            self._undo.append((owner, attr, getattr(owner, attr)))
            setattr(owner, attr, new)

        import threading

        def checkout(_dbapi: Any, _record: Any, proxy: Any) -> None:
            pool = getattr(proxy, "_pool", None)
            st = probe.pools.setdefault(
                id(pool),
                {
                    "name": "api" if threading.current_thread().name == "bench-api" else "worker",
                    "now": 0,
                    "max": 0,
                    "cap": (pool.size() + getattr(pool, "_max_overflow", 0)) if pool else None,
                },
            )
            st["now"] += 1
            st["max"] = max(st["max"], st["now"])
            _record.info["bench_pool"] = id(pool)

        def checkin(_dbapi: Any, record: Any) -> None:
            st = probe.pools.get(record.info.get("bench_pool", -1))
            if st is not None:
                st["now"] -= 1

        for name, fn in (("checkout", checkout), ("checkin", checkin)):
            event.listen(Pool, name, fn)
            self._listeners.append((Pool, name, fn))

        class Capture(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                if len(probe.errors) < 5 and record.exc_info and record.exc_info[1]:
                    exc = record.exc_info[1]
                    probe.errors.append(f"{type(exc).__name__}: {str(exc)[:300]}")

        self._log_handler = Capture(logging.ERROR)
        logging.getLogger("aintandem").addHandler(self._log_handler)

    def uninstall(self) -> None:
        import logging

        from sqlalchemy import event

        for owner, attr, original in reversed(self._undo):
            setattr(owner, attr, original)
        self._undo.clear()
        for target, name, fn in self._listeners:
            with contextlib.suppress(Exception):
                event.remove(target, name, fn)
        self._listeners.clear()
        if self._log_handler is not None:
            logging.getLogger("aintandem").removeHandler(self._log_handler)
            self._log_handler = None


# -- reading results back --------------------------------------------------------------------------


def _epoch(value: Any) -> float | None:
    from domain.timeutil import as_utc

    return None if value is None else as_utc(value).timestamp()


async def message_times(sessions: Any, target: str) -> dict[str, tuple[float, float | None, str]]:
    """id → (created_at, delivered_at, status) of every message to `target`."""
    from sqlalchemy import select

    from store.models import Message

    async with sessions() as session:
        rows = (
            await session.execute(
                select(Message.id, Message.created_at, Message.delivered_at, Message.status).where(
                    Message.to_sandbox_id == target
                )
            )
        ).all()
    return {r[0]: (_epoch(r[1]) or 0.0, _epoch(r[2]), r[3]) for r in rows}


async def scratch_times(sessions: Any, phase: str) -> dict[str, float | None]:
    from sqlalchemy import text

    async with sessions() as session:
        rows = (
            await session.execute(
                text("SELECT id, written_at FROM bench_scratch WHERE phase = :p"), {"p": phase}
            )
        ).all()
    return {r[0]: r[1] for r in rows}


async def wait_until(
    check: Callable[[], Awaitable[int]], expected: int, timeout: float, what: str
) -> float:
    """Poll `check()` (a count) until it reaches `expected`; seconds waited."""
    t0 = time.perf_counter()
    last, last_change = -1, t0
    while True:
        n = await check()
        now = time.perf_counter()
        if n >= expected:
            return now - t0
        if n != last:
            last, last_change = n, now
        if now - last_change > timeout:
            raise RuntimeError(f"{what}: stuck at {n}/{expected} for {timeout:.0f} s")
        await asyncio.sleep(0.2)


# -- Temporal history of the inbox -----------------------------------------------------------------


def _ts(event: Any) -> float:
    return float(event.event_time.ToMicroseconds()) / 1e6


def _payload(payloads: Any) -> Any:
    try:
        return json.loads(payloads.payloads[0].data)
    except (IndexError, ValueError, AttributeError):
        return None


@dataclass
class Activity:
    name: str
    scheduled: float
    started: float | None = None
    completed: float | None = None
    message_ids: list[str] = field(default_factory=list)


@dataclass
class InboxHistory:
    signaled: dict[str, float]  # message id → WorkflowExecutionSignaled time (first)
    activities: list[Activity]  # in scheduling order, every run
    runs: int
    signals_per_task: list[int]  # signals handled by each workflow task that handled any


async def inbox_history(client: Any, workflow_id: str) -> InboxHistory:
    """Every run of the continue-as-new chain, walked back from the latest."""
    from temporalio.api.enums.v1 import EventType as E

    signaled: dict[str, float] = {}
    acts: list[Activity] = []
    per_task: list[int] = []
    run_id: str | None = None
    runs = 0
    while True:
        handle = client.get_workflow_handle(workflow_id, run_id=run_id)
        history = await handle.fetch_history()
        runs += 1
        spans: dict[int, Activity] = {}
        previous = ""
        pending_signals = 0
        for ev in history.events:
            et = ev.event_type
            if et == E.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
                previous = ev.workflow_execution_started_event_attributes.continued_execution_run_id
            elif et == E.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
                attrs = ev.workflow_execution_signaled_event_attributes
                env = _payload(attrs.input)
                if isinstance(env, dict) and "message_id" in env:
                    signaled.setdefault(env["message_id"], _ts(ev))
                pending_signals += 1
            elif et == E.EVENT_TYPE_WORKFLOW_TASK_STARTED:
                if pending_signals:
                    per_task.append(pending_signals)
                pending_signals = 0
            elif et == E.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                attrs = ev.activity_task_scheduled_event_attributes
                data = _payload(attrs.input)
                ids = data.get("message_ids", []) if isinstance(data, dict) else []
                spans[ev.event_id] = Activity(attrs.activity_type.name, _ts(ev), message_ids=ids)
            elif et == E.EVENT_TYPE_ACTIVITY_TASK_STARTED:
                sid = ev.activity_task_started_event_attributes.scheduled_event_id
                if sid in spans:
                    spans[sid].started = _ts(ev)
            elif et == E.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
                sid = ev.activity_task_completed_event_attributes.scheduled_event_id
                if sid in spans:
                    spans[sid].completed = _ts(ev)
        acts = sorted(spans.values(), key=lambda a: a.scheduled) + acts
        if not previous:
            break
        run_id = previous
    acts.sort(key=lambda a: a.scheduled)
    return InboxHistory(signaled, acts, runs, per_task)


# -- phases ----------------------------------------------------------------------------------------


def _p(values: list[float], q: float) -> float | None:
    from bench import stats

    return stats.percentile(values, q) if values else None


@dataclass(frozen=True)
class Mode:
    name: str
    rate: float | None  # open loop at this rate; None: closed loop
    n: int  # messages
    concurrency: int  # senders (closed loop) / most requests in flight (open loop)

    def describe(self, seconds: float) -> str:
        if self.rate is not None:
            return f"{self.rate:g}/s for {seconds:g} s, open loop, ≤ {self.concurrency} in flight"
        return f"{self.n} messages, {self.concurrency} sender(s) back to back"


@dataclass
class Phase:
    system: str  # "ours" | "wf/msg" | "signals"
    mode: str  # "50/s", "saturation", ...
    sent: list[Sent]
    done: dict[str, float]  # key → delivered/written epoch
    cpu: dict[str, float] = field(default_factory=dict)
    drain_s: float = 0.0
    window: tuple[float, float] = (0.0, 0.0)  # epoch: first send → drained

    @property
    def ok(self) -> list[Sent]:
        return [s for s in self.sent if s.key is not None]

    @property
    def errors(self) -> list[Sent]:
        return [s for s in self.sent if s.key is None]

    def latencies(self) -> list[float]:
        return [(self.done[s.key] - s.t_send) * 1000 for s in self.ok if s.key in self.done]

    def ack_ms(self) -> list[float]:
        return [(s.t_ack - s.t_send) * 1000 for s in self.ok]

    def accepted_per_s(self) -> float | None:
        ok = self.ok
        if not ok:
            return None
        span = max(s.t_ack for s in ok) - min(s.t_send for s in self.sent)
        return len(ok) / span if span > 0 else None

    def offered_per_s(self) -> float | None:
        if len(self.sent) < 2:
            return None
        starts = sorted(s.t_send for s in self.sent)
        return (len(starts) - 1) / (starts[-1] - starts[0]) if starts[-1] > starts[0] else None

    def delivered_per_s(self) -> float | None:
        done = [self.done[s.key] for s in self.ok if s.key in self.done]
        if not done:
            return None
        span = max(done) - min(s.t_send for s in self.sent)
        return len(done) / span if span > 0 else None

    def summary(self) -> dict[str, Any]:
        lat, ack = self.latencies(), self.ack_ms()
        return {
            "system": self.system,
            "mode": self.mode,
            "sent": len(self.sent),
            "errors": len(self.errors),
            "delivered": len(lat),
            "offered/s": self.offered_per_s(),
            "accepted/s": self.accepted_per_s(),
            "delivered/s": self.delivered_per_s(),
            "p50 ms": _p(lat, 50),
            "p99 ms": _p(lat, 99),
            "ack p50 ms": _p(ack, 50),
            "ack p99 ms": _p(ack, 99),
            "drain s": self.drain_s,
            **self.cpu,
        }


def _fmt(v: Any, digits: int = 1) -> str:
    from bench import stats

    if isinstance(v, float | int) and not isinstance(v, bool):
        return stats.fmt_number(float(v), digits)
    return "-" if v is None else str(v)


def _log_phase(ctx: Any, ph: Phase) -> None:
    s = ph.summary()
    ctx.log(
        f"  {ph.system:8} {ph.mode:10} sent {s['sent']} (err {s['errors']}), offered "
        f"{_fmt(s['offered/s'])}/s, accepted {_fmt(s['accepted/s'])}/s, delivered "
        f"{_fmt(s['delivered/s'])}/s | e2e p50 {_fmt(s['p50 ms'])} p99 {_fmt(s['p99 ms'])} ms | "
        f"ack p50 {_fmt(s['ack p50 ms'])} p99 {_fmt(s['ack p99 ms'])} ms | drain "
        f"{s['drain s']:.1f} s | cpu bench {_fmt(s.get('bench process %'), 0)}% temporal "
        f"{_fmt(s.get('temporal server %'), 0)}% machine {_fmt(s.get('machine busy %'), 0)}%"
    )


# -- the benchmark ---------------------------------------------------------------------------------


def _env_list(name: str, default: str) -> list[float]:
    return [float(x) for x in os.environ.get(name, default).split(",") if x.strip()]


async def _wait_running(http: Any, headers: dict[str, str], sid: str, timeout: float = 120) -> None:
    deadline = time.perf_counter() + timeout
    while True:
        r = await http.get(f"/sandboxes/{sid}", headers=headers)
        status = r.json()["data"]["status"] if r.status_code == 200 else f"HTTP {r.status_code}"
        if status == "running":
            return
        if status == "error" or time.perf_counter() > deadline:
            raise RuntimeError(f"sandbox {sid} did not reach running (last: {status})")
        await asyncio.sleep(0.1)


OURS = "ours"  # the platform as deployed: API and worker in processes of their own
ONE_PROCESS = "ours·1p"  # API + worker in this process, instrumented (the profile rows)
SYSTEMS = (OURS, ONE_PROCESS, "wf/msg", "signals")
BASELINE_NAMES = {
    ONE_PROCESS: "ours with API, worker and load generator in one process",
    "wf/msg": "raw Temporal: one one-activity workflow per message",
    "signals": "raw Temporal: signals into one workflow, batched write activity",
}


@dataclass
class Platform:
    """One deployment of ours under test: its API, an account and a sender → target pair."""

    http: httpx.AsyncClient
    headers: dict[str, str]
    workspace_id: str
    sender: str
    target: str


async def _platform(http: httpx.AsyncClient, acc: Account, tag: str) -> Platform:
    r = await http.post(
        "/workspaces",
        headers=acc.headers,
        json={"name": f"bench-msg-{tag}", "settings": {"max_sandboxes": 3}},
    )
    if r.status_code != 201:
        raise RuntimeError(f"create workspace: {r.status_code} {r.text}")
    wid = r.json()["data"]["workspace_id"]
    pf = Platform(http, acc.headers, wid, "", "")
    sids = []
    for name in ("sender", "receiver"):
        r = await http.post(
            f"/workspaces/{wid}/sandboxes",
            headers=acc.headers,
            json={
                "name": f"{name}-{tag}",
                "agent_config": {"primary_agent": {"name": name, "role": "Engineer"}},
            },
        )
        if r.status_code != 201:
            raise RuntimeError(f"create sandbox: {r.status_code} {r.text}")
        sids.append(r.json()["data"]["sandbox_id"])
    for sid in sids:
        await _wait_running(http, acc.headers, sid)
    pf.sender, pf.target = sids
    return pf


@benchmark(NAME, "message send → delivered through the platform vs raw Temporal (wf/msg, signals)")
async def run(ctx: BenchContext) -> list[Result]:
    from sqlalchemy import func, select, text
    from temporalio.worker import Worker
    from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

    from domain.ids import inbox_workflow_id
    from store.models import Message

    rates = _env_list("BENCH_MSG_RATES", "50")
    seconds = float(os.environ.get("BENCH_MSG_SECONDS", 3 if ctx.quick else 10))
    count = int(os.environ.get("BENCH_MSG_COUNT", 300 if ctx.quick else 2000))
    serial = int(os.environ.get("BENCH_MSG_SERIAL", 20 if ctx.quick else 50))
    concurrency = int(os.environ.get("BENCH_MSG_CONCURRENCY", 32))
    max_inflight = int(os.environ.get("BENCH_MSG_MAX_INFLIGHT", 256))
    modes: list[Mode] = []
    if serial > 0:
        modes.append(Mode("serial", None, serial, 1))
    modes += [Mode(f"{r:g}/s", r, max(1, round(r * seconds)), max_inflight) for r in rates]
    modes.append(Mode("saturation", None, count, concurrency))

    stack = await ctx.stack()
    settings = stack.settings
    notes: list[str] = []
    # The harness raises every rate limit through settings (bench.stack.bench_settings).
    limit = settings.rate_limit_message_per_hour
    total_msgs = sum(m.n for m in modes) + 100
    if settings.rate_limit_enabled and limit < total_msgs:
        raise RuntimeError(f"rate_limit_message_per_hour={limit} would throttle {total_msgs}")
    http0, sessions, client = stack.http, stack.sessions, stack.temporal
    tag = uuid.uuid4().hex[:6]
    sink_handles: list[Any] = []
    probe = Probe()
    platforms: list[Platform] = []
    local = contextlib.AsyncExitStack()
    try:
        acc = await stack.account()
        one = await _platform(http0, acc, tag)
        platforms.append(one)
        # The platform as deployed: the API and the worker as processes of their own, on the
        # same Temporal server and database (`aintandem up` runs them so).
        ctx.log(f"{NAME}: starting the API and worker processes")
        proc = await local.enter_async_context(
            platform_processes(stack, settings.data_dir / "bench-processes")
        )
        # Enough client connections that requests queue in the servers, not in httpx.
        pool = max(concurrency, max_inflight)
        limits = httpx.Limits(max_connections=pool, max_keepalive_connections=pool)
        proc_http = await local.enter_async_context(
            httpx.AsyncClient(base_url=proc.base_url, timeout=60, limits=limits)
        )
        deployed = await _platform(proc_http, await create_account(proc_http), tag)
        platforms.append(deployed)
        one_http = await local.enter_async_context(
            httpx.AsyncClient(base_url=stack.base_url, timeout=60, limits=limits)
        )
        one.http = one_http
        for label, pf in ((ONE_PROCESS, one), (OURS, deployed)):
            ctx.log(f"{NAME}: {label}: sandboxes {pf.sender} → {pf.target} running")
        target = one.target  # the instrumented inbox (profile rows)
        tpids = temporal_pids()
        if not tpids:
            notes.append("Temporal server process not found: its CPU is not reported")

        async with sessions() as session:
            await session.execute(
                text(
                    "CREATE TABLE IF NOT EXISTS bench_scratch (id VARCHAR(64) PRIMARY KEY, "
                    "phase VARCHAR(64), written_at DOUBLE PRECISION)"
                )
            )
            await session.commit()

        async def scratch_rows(phase: str, n: int) -> None:
            async with sessions() as session:
                await session.execute(
                    text("INSERT INTO bench_scratch (id, phase) VALUES (:id, :p)"),
                    [{"id": f"{phase}-{i}", "p": phase} for i in range(n)],
                )
                await session.commit()

        async def written(phase: str) -> int:
            async with sessions() as session:
                return int(
                    await session.scalar(
                        text(
                            "SELECT count(*) FROM bench_scratch WHERE phase = :p "
                            "AND written_at IS NOT NULL"
                        ),
                        {"p": phase},
                    )
                    or 0
                )

        async def delivered_to(target: str) -> int:
            async with sessions() as session:
                return int(
                    await session.scalar(
                        select(func.count())
                        .select_from(Message)
                        .where(Message.to_sandbox_id == target, Message.delivered_at.is_not(None))
                    )
                    or 0
                )

        base_tq = f"bench-baseline-{tag}"
        writer = ScratchWriter(sessions)
        baseline_worker = Worker(
            client,
            task_queue=base_tq,
            workflows=[OneActivityWorkflow, SignalSinkWorkflow],
            activities=[writer.write],
            workflow_runner=SandboxedWorkflowRunner(
                restrictions=SandboxRestrictions.default.with_passthrough_modules("bench")
            ),
            max_concurrent_activities=64,
        )
        async with baseline_worker:

            def ours_one(pf: Platform) -> OneFn:
                url = f"/sandboxes/{pf.sender}/messages"

                async def one(i: int) -> Sent:
                    body = {
                        "to_sandbox": pf.target,
                        "message_type": "notification",
                        "content": {"n": i, "text": "benchmark message"},
                        "priority": 5,
                    }
                    t0 = time.time()
                    try:
                        r = await pf.http.post(url, json=body, headers=pf.headers)
                    except Exception as exc:
                        return Sent(i, None, t0, time.time(), repr(exc))
                    t1 = time.time()
                    if r.status_code == 202:
                        return Sent(i, r.json()["data"]["message_id"], t0, t1)
                    return Sent(i, None, t0, t1, f"{r.status_code} {r.text[:200]}")

                return one

            def wf_one(phase: str) -> OneFn:
                async def one(i: int) -> Sent:
                    key = f"{phase}-{i}"
                    t0 = time.time()
                    try:
                        await client.start_workflow(
                            "BenchOneActivity", key, id=f"bench-{key}", task_queue=base_tq
                        )
                    except Exception as exc:
                        return Sent(i, None, t0, time.time(), repr(exc))
                    return Sent(i, key, t0, time.time())

                return one

            def signal_one(phase: str, handle: Any) -> OneFn:
                async def one(i: int) -> Sent:
                    key = f"{phase}-{i}"
                    t0 = time.time()
                    try:
                        await handle.signal("item", key)
                    except Exception as exc:
                        return Sent(i, None, t0, time.time(), repr(exc))
                    return Sent(i, key, t0, time.time())

                return one

            def drive(mode: Mode) -> Callable[[OneFn], Awaitable[list[Sent]]]:
                if mode.rate is None:
                    return lambda one: closed_loop(mode.n, mode.concurrency, one)
                rate = mode.rate
                return lambda one: open_loop(rate, seconds, one, max_inflight)

            async def ours_phase(mode: Mode, system: str, pf: Platform) -> Phase:
                before = await delivered_to(pf.target)
                w0 = time.time()
                a = cpu_sample(tpids, proc.pids if pf is deployed else None)
                sent = await drive(mode)(ours_one(pf))
                ok = [s for s in sent if s.key]
                t0 = time.perf_counter()
                await wait_until(
                    lambda: delivered_to(pf.target),
                    before + len(ok),
                    60,
                    f"{system} {mode.name} delivery",
                )
                drain = time.perf_counter() - t0
                b = cpu_sample(tpids, proc.pids if pf is deployed else None)
                times = await message_times(sessions, pf.target)
                done: dict[str, float] = {}
                for s in ok:
                    delivered_at = times[s.key][1] if s.key in times else None
                    if s.key and delivered_at is not None:
                        done[s.key] = delivered_at
                return Phase(
                    system, mode.name, sent, done, cpu_usage(a, b), drain, (w0, time.time())
                )

            async def wf_phase(mode: Mode, phase: str) -> Phase:
                await scratch_rows(phase, mode.n)
                w0 = time.time()
                a = cpu_sample(tpids)
                sent = await drive(mode)(wf_one(phase))
                ok = [s for s in sent if s.key]
                t0 = time.perf_counter()
                await wait_until(lambda: written(phase), len(ok), 60, f"wf/msg {mode.name}")
                drain = time.perf_counter() - t0
                b = cpu_sample(tpids)
                w = await scratch_times(sessions, phase)
                done = {k: v for k, v in w.items() if v is not None}
                return Phase(
                    "wf/msg", mode.name, sent, done, cpu_usage(a, b), drain, (w0, time.time())
                )

            async def signals_phase(mode: Mode, phase: str) -> Phase:
                await scratch_rows(phase, mode.n)
                handle = await client.start_workflow(
                    "BenchSignalSink", SinkInput(), id=f"bench-sink-{phase}", task_queue=base_tq
                )
                sink_handles.append(handle)
                await asyncio.sleep(0.2)  # its first workflow task, as the inbox already ran
                w0 = time.time()
                a = cpu_sample(tpids)
                sent = await drive(mode)(signal_one(phase, handle))
                ok = [s for s in sent if s.key]
                t0 = time.perf_counter()
                await wait_until(lambda: written(phase), len(ok), 60, f"signals {mode.name}")
                drain = time.perf_counter() - t0
                b = cpu_sample(tpids)
                w = await scratch_times(sessions, phase)
                done = {k: v for k, v in w.items() if v is not None}
                return Phase(
                    "signals", mode.name, sent, done, cpu_usage(a, b), drain, (w0, time.time())
                )

            # Warm-up (not measured): the inbox exists, connections and worker are warm.
            ctx.log(f"{NAME}: warm-up")
            for pf in platforms:
                warm_ok = [s for s in await closed_loop(20, 4, ours_one(pf)) if s.key]
                await wait_until(
                    lambda pf=pf: delivered_to(pf.target), len(warm_ok), 60, "warm-up delivery"
                )
            await scratch_rows(f"w1-{tag}", 10)
            await closed_loop(10, 4, wf_one(f"w1-{tag}"))
            await wait_until(lambda: written(f"w1-{tag}"), 10, 60, "warm-up wf/msg")

            probe.install()
            phases: list[Phase] = []
            load_before = os.getloadavg()
            for mi, mode in enumerate(modes):
                ctx.log(f"{NAME}: {mode.name} ({mode.describe(seconds)})")
                k = mi % len(SYSTEMS)
                order = list(SYSTEMS[k:] + SYSTEMS[:k])  # rotate: drift hits all
                for system in order:
                    phase = f"{'b1' if system == 'wf/msg' else 'b2'}-{mi}-{tag}"
                    if system == OURS:
                        ph = await ours_phase(mode, system, deployed)
                    elif system == ONE_PROCESS:
                        ph = await ours_phase(mode, system, one)
                    elif system == "wf/msg":
                        ph = await wf_phase(mode, phase)
                    else:
                        ph = await signals_phase(mode, phase)
                    phases.append(ph)
                    _log_phase(ctx, ph)
                    if ph.errors:
                        notes.append(
                            f"{ph.system} {ph.mode}: {len(ph.errors)} failed sends, e.g. "
                            f"{ph.errors[0].error}"
                        )
                    await asyncio.sleep(1.0)
            load_after = os.getloadavg()
            probe.uninstall()

        ctx.log(f"{NAME}: reading the inbox's Temporal history")
        history = await inbox_history(client, inbox_workflow_id(target))
        times = await message_times(sessions, target)
    finally:
        probe.uninstall()
        for h in sink_handles:
            with contextlib.suppress(Exception):
                await h.signal("stop")
        with contextlib.suppress(Exception):
            async with sessions() as session:
                await session.execute(text("DROP TABLE IF EXISTS bench_scratch"))
                await session.commit()
        for pf in platforms:
            with contextlib.suppress(Exception):
                r = await pf.http.delete(
                    f"/workspaces/{pf.workspace_id}", headers=pf.headers, timeout=300
                )
                if r.status_code != 204:
                    ctx.log(
                        f"cleanup: DELETE /workspaces/{pf.workspace_id}: {r.status_code} "
                        f"{r.text[:200]}"
                    )
        await local.aclose()

    notes += [
        f"{NAME}: modes: "
        + "; ".join(f"{m.name} = {m.describe(seconds)}" for m in modes)
        + "; the order of ours/baselines rotates per mode",
        f"{NAME}: e2e = client send → delivered_at (ours) / written_at (baselines); ack = 202 "
        f"round trip (ours), start_workflow RPC (wf/msg), signal RPC (signals)",
        f"{NAME}: {OURS} = API and worker as processes of their own (as `aintandem up` runs "
        f"them; 'cpu ms per message' rows), {ONE_PROCESS} = load generator, API "
        f"(uvicorn thread), platform worker and baseline worker in this one Python process (one "
        f"GIL), instrumented for the profile rows; load average "
        f"{load_before[0]:.1f} before, {load_after[0]:.1f} after (machine shared)",
        f"{NAME}: our inbox_deliver writes more per message than the baselines' UPDATE "
        f"(SELECT + UPDATE + 2 event INSERTs), and runs an inbox_target_status activity "
        f"before every batch",
    ]
    return _results(ctx, phases, probe, history, times, modes, notes)


# -- results ---------------------------------------------------------------------------------------


def _find(phases: list[Phase], system: str, mode: str) -> Phase | None:
    return next((p for p in phases if p.system == system and p.mode == mode), None)


def _inbox_profile(
    ph: Phase, history: InboxHistory, times: dict[str, tuple[float, float | None, str]]
) -> dict[str, list[float]]:
    """Per message and per delivery cycle breakdown of one of our phases (inbox history).

    A cycle of the inbox loop: inbox_target_status (scheduled → completed), a workflow task,
    inbox_deliver (scheduled → started → completed), a workflow task, the next status check.
    """
    sent = {s.key: s for s in ph.ok if s.key}
    ids = set(sent)
    out: dict[str, list[float]] = defaultdict(list)
    delivers = [
        a for a in history.activities if a.name == "inbox_deliver" and ids & set(a.message_ids)
    ]
    statuses = [a for a in history.activities if a.name == "inbox_target_status"]
    batch_of: dict[str, Activity] = {}
    for i, d in enumerate(delivers):
        out["batch size"].append(float(len(d.message_ids)))
        for mid in d.message_ids:
            batch_of.setdefault(mid, d)
        before = [s for s in statuses if s.scheduled <= d.scheduled]
        st = before[-1] if before else None
        if st is not None and st.completed is not None:
            out["cycle: status check activity (scheduled→completed)"].append(
                (st.completed - st.scheduled) * 1000
            )
            out["cycle: workflow task (status done→deliver scheduled)"].append(
                (d.scheduled - st.completed) * 1000
            )
        if d.started is not None and d.completed is not None:
            out["cycle: deliver queue wait (scheduled→started)"].append(
                (d.started - d.scheduled) * 1000
            )
            out["cycle: deliver exec (started→completed)"].append((d.completed - d.started) * 1000)
        # Back-to-back cycles only (the next batch of this phase was already waiting).
        nxt = next((s for s in statuses if s.scheduled > d.scheduled), None)
        if (
            i + 1 < len(delivers)
            and nxt is not None
            and d.completed is not None
            and nxt.scheduled <= delivers[i + 1].scheduled
        ):
            out["cycle: workflow task (deliver done→next status scheduled)"].append(
                (nxt.scheduled - d.completed) * 1000
            )
            if st is not None:
                out["cycle: total (status scheduled→next status scheduled)"].append(
                    (nxt.scheduled - st.scheduled) * 1000
                )
    for mid, s in sent.items():
        row = times.get(mid)
        sig = history.signaled.get(mid)
        b = batch_of.get(mid)
        if row is None or row[1] is None or sig is None or b is None or b.started is None:
            continue
        created, delivered = row[0], row[1]
        out["msg: send → row created (HTTP, auth, lookups)"].append((created - s.t_send) * 1000)
        out["msg: row created → signaled (commit + SWS RPC)"].append((sig - created) * 1000)
        out["msg: signaled → batch scheduled (waiting for a cycle)"].append(
            (b.scheduled - sig) * 1000
        )
        out["msg: batch scheduled → started"].append((b.started - b.scheduled) * 1000)
        out["msg: batch started → delivered_at"].append((delivered - b.started) * 1000)
        out["msg: 202 received after signaled"].append((s.t_ack - sig) * 1000)
    return out


def _api_profile(ph: Phase, probe: Probe) -> dict[str, list[float]]:
    """The 202 path per message of one of our phases (ms)."""
    out: dict[str, list[float]] = defaultdict(list)
    for s in ph.ok:
        rec = probe.api.get(s.key or "")
        if rec is None or not rec.get("send_start"):
            continue
        pre_pool = rec.get("pre-send:pool checkout", 0.0)
        pre_db = sum(
            v
            for k, v in rec.items()
            if k.startswith("pre-send:") and "calls" not in k and "pool" not in k
        )
        lookups = sum(rec.get(f"send:{m}", 0.0) for m in ("execute", "scalar", "get"))
        send_ms = (rec["send_end"] - rec["send_start"]) * 1000
        parts = {
            "client → API middleware": (rec["arrival"] - s.t_send) * 1000
            if rec.get("arrival")
            else None,
            "middleware → send(): DB pool checkout wait": pre_pool,
            "middleware → send(): auth + ownership queries": pre_db - pre_pool,
            "middleware → send(): the rest (JWT, deps, event loop)": (
                (rec["send_start"] - rec["arrival"]) * 1000 - pre_db if rec.get("arrival") else None
            ),
            "send(): target lookup + message and event INSERTs": lookups,
            "send(): commit": rec.get("send:commit", 0.0),
            "send(): inbox signal (coalesced signal-with-start)": rec.get("send:inbox signal", 0.0),
            "send(): total": send_ms,
            "send() done → client has the 202": (s.t_ack - rec["send_end"]) * 1000,
        }
        for k, v in parts.items():
            if v is not None:
                out[f"202: {k}"].append(v)
    return out


def _activity_profile(ph: Phase, probe: Probe, kind: str, label: str) -> dict[str, list[float]]:
    """DB time inside one activity type during the phase, per activity call (ms)."""
    out: dict[str, list[float]] = defaultdict(list)
    lo, hi = ph.window
    for rec in probe.activities.get(kind, []):
        if not lo <= rec["first_db_call"] <= hi:
            continue
        pool = rec.get("db:pool checkout", 0.0)
        queries = sum(rec.get(f"db:{m}", 0.0) for m in ("execute", "scalar", "get"))
        out[f"{label}: DB pool checkout"].append(pool)
        out[f"{label}: DB statements (SELECT, UPDATEs, autoflushed INSERTs)"].append(queries - pool)
        out[f"{label}: DB commit"].append(rec.get("db:commit", 0.0))
        out[f"{label}: scheduled → first DB call"].append(
            (rec["first_db_call"] - rec["scheduled"]) * 1000
        )
    return out


def _results(
    ctx: BenchContext,
    phases: list[Phase],
    probe: Probe,
    history: InboxHistory,
    times: dict[str, tuple[float, float | None, str]],
    modes: list[Mode],
    notes: list[str],
) -> list[Result]:
    rows: list[Result] = []
    sat = _find(phases, OURS, "saturation")
    # Goals (absolute): the baseline column holds the target, the ratio is ours/target.
    if sat is not None:
        rows.append(
            Result(
                NAME,
                "GOAL delivered/s at saturation",
                sat.delivered_per_s(),
                GOAL_RATE,
                1.0,
                unit="msg/s",
                higher_is_better=True,
                baseline_name="goal",
            )
        )
    for mode in modes:
        ph = _find(phases, OURS, mode.name)
        if ph is None or (mode.rate is None and mode.concurrency != 1):
            continue
        rows.append(
            Result(
                NAME,
                f"GOAL e2e p50 ms at {mode.name}",
                _p(ph.latencies(), 50),
                GOAL_P50_MS,
                1.0,
                baseline_name="goal",
            )
        )
        if mode.rate is not None and mode.rate >= GOAL_RATE:
            rows.append(
                Result(
                    NAME,
                    f"GOAL delivered/s at {mode.name} offered",
                    ph.delivered_per_s(),
                    GOAL_RATE,
                    1.0,
                    unit="msg/s",
                    higher_is_better=True,
                    baseline_name="goal",
                )
            )

    # Ours vs the raw baselines (informational ratios).
    for mode in modes:
        ours = _find(phases, OURS, mode.name)
        if ours is None:
            continue
        wanted = [
            ("delivered/s", ONE_PROCESS),
            ("e2e p50 ms", ONE_PROCESS),
            ("delivered/s", "wf/msg"),
            ("delivered/s", "signals"),
            ("e2e p50 ms", "wf/msg"),
            ("e2e p50 ms", "signals"),
            ("e2e p99 ms", "wf/msg"),
            ("e2e p99 ms", "signals"),
            ("accepted/s", "signals"),
            ("ack p50 ms", "signals"),
            ("ack p99 ms", "signals"),
        ]
        if mode.rate is None and mode.concurrency == 1:  # serial: latency is the point
            wanted = [w for w in wanted if "/s" not in w[0]]
        for metric, base in wanted:
            b = _find(phases, base, mode.name)
            if b is None:
                continue
            value = {
                "delivered/s": lambda p: p.delivered_per_s(),
                "accepted/s": lambda p: p.accepted_per_s(),
                "e2e p50 ms": lambda p: _p(p.latencies(), 50),
                "e2e p99 ms": lambda p: _p(p.latencies(), 99),
                "ack p50 ms": lambda p: _p(p.ack_ms(), 50),
                "ack p99 ms": lambda p: _p(p.ack_ms(), 99),
            }[metric]
            rows.append(
                Result(
                    NAME,
                    f"{mode.name} {metric} [vs {base}]",
                    value(ours),
                    value(b),
                    None,
                    unit="msg/s" if "/s" in metric else "ms",
                    higher_is_better="/s" in metric,
                    baseline_name=BASELINE_NAMES[base],
                    samples={"ours": ours.summary(), "baseline": b.summary()}
                    if metric == "e2e p50 ms"
                    else {},
                )
            )

    # What a message costs in CPU on the deployed topology, per process (all on this machine).
    for mode in modes:
        ph = _find(phases, OURS, mode.name)
        rate = ph.delivered_per_s() if ph is not None else None
        if ph is None or not rate or (mode.rate is None and mode.concurrency == 1):
            continue
        for key, label in (
            ("api process %", "API process"),
            ("worker process %", "worker process"),
            ("temporal server %", "Temporal server"),
            ("bench process %", "load generator"),
        ):
            if key in ph.cpu:
                rows.append(
                    Result(
                        NAME,
                        f"{mode.name} cpu ms per message: {label}",
                        10 * ph.cpu[key] / rate,
                        None,
                        None,
                        note="cost: cpu time / delivered message",
                    )
                )

    # Where the time goes (the instrumented one-process deployment): the 202 path (wrappers),
    # the inbox (history + DB wrappers), CPU.
    for mode in modes:
        ph = _find(phases, ONE_PROCESS, mode.name)
        if ph is None:
            continue
        sig = _find(phases, "signals", mode.name)
        parts: dict[str, list[float]] = {}
        parts.update(_api_profile(ph, probe))
        inbox = _inbox_profile(ph, history, times)
        parts.update(inbox)
        parts.update(_activity_profile(ph, probe, "inbox_deliver", "inbox_deliver"))
        parts.update(_activity_profile(ph, probe, "inbox_target_status", "inbox_target_status"))
        base_parts = _activity_profile(sig, probe, WRITE_ACTIVITY, "inbox_deliver") if sig else {}
        for key, values in parts.items():
            if not values:
                continue
            if key == "inbox_target_status: DB commit":
                continue  # the status check only reads
            if key.endswith(": DB pool checkout") and (_p(values, 50) or 0.0) < 1.0:
                continue  # the worker's pool did not wait: not worth a row
            is_count = key == "batch size"
            base_values = base_parts.get(key)
            rows.append(
                Result(
                    NAME,
                    f"  {mode.name} {key} {'mean' if is_count else 'p50 ms'}",
                    sum(values) / len(values) if is_count else _p(values, 50),
                    _p(base_values, 50) if base_values else None,
                    None,
                    unit="count" if is_count else "ms",
                    baseline_name="signals baseline's write activity" if base_values else "",
                    note="profile",
                    samples={"p90": _p(values, 90), "n": len(values)},
                )
            )
        sizes = inbox.get("batch size", [])
        if sizes:
            rows.append(
                Result(
                    NAME,
                    f"  {mode.name} inbox_deliver calls (ours) / max batch (baseline col)",
                    float(len(sizes)),
                    max(sizes),
                    None,
                    unit="count",
                    note="profile",
                )
            )
        for k, label in (
            ("bench process %", "this process"),
            ("  thread: API event loop thread %", "API event loop thread"),
        ):
            ours_rate, base_rate = ph.delivered_per_s(), sig.delivered_per_s() if sig else None
            rows.append(
                Result(
                    NAME,
                    f"  {mode.name} cpu ms per message: {label}",
                    10 * ph.cpu[k] / ours_rate if k in ph.cpu and ours_rate else None,
                    10 * sig.cpu[k] / base_rate if sig and k in sig.cpu and base_rate else None,
                    None,
                    note="cpu time / delivered (baseline col: the signals baseline)",
                )
            )
        for k, v in ph.cpu.items():
            rows.append(
                Result(
                    NAME,
                    f"  {mode.name} cpu {k}",
                    v,
                    sig.cpu.get(k) if sig else None,
                    None,
                    unit="%",
                    note="cpu % of one core (baseline col: during the signals baseline)",
                )
            )
    if history.signals_per_task:
        spt = [float(x) for x in history.signals_per_task]
        notes.append(
            f"{NAME}: inbox history: {history.runs} runs, {len(spt)} workflow tasks with "
            f"signals, signals per task p50 {_p(spt, 50):.0f} max {max(spt):.0f}"
        )
    for st in probe.pools.values():
        notes.append(
            f"{NAME}: {st['name']} DB pool: at most {st['max']} connections checked out at once "
            f"(pool size + overflow = {st['cap']})"
        )
    for err in probe.errors:
        notes.append(f"{NAME}: API error logged: {err}")
    ctx.notes.extend(notes)
    print()
    print(_phase_table(phases))
    return rows


def _phase_table(phases: list[Phase]) -> str:
    from bench import stats

    headers = (
        "system",
        "mode",
        "sent",
        "err",
        "offered/s",
        "accepted/s",
        "delivered/s",
        "e2e p50",
        "e2e p99",
        "ack p50",
        "ack p99",
        "cpu bench%",
        "cpu temporal%",
        "cpu machine%",
    )
    rows = []
    for ph in phases:
        s = ph.summary()
        rows.append(
            (
                ph.system,
                ph.mode,
                str(s["sent"]),
                str(s["errors"]),
                _fmt(s["offered/s"]),
                _fmt(s["accepted/s"]),
                _fmt(s["delivered/s"]),
                _fmt(s["p50 ms"]),
                _fmt(s["p99 ms"]),
                _fmt(s["ack p50 ms"]),
                _fmt(s["ack p99 ms"]),
                _fmt(s.get("bench process %"), 0),
                _fmt(s.get("temporal server %"), 0),
                _fmt(s.get("machine busy %"), 0),
            )
        )
    return stats.render_table(headers, rows, align_right=[False, False] + [True] * 12)
