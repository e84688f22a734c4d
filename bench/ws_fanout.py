"""Fan-out of events to N WebSocket subscribers: latency, throughput, memory per connection.

Ours: the API as `aintandem api` runs it (`python -m cli.main api`: uvicorn, uvloop, the
`websockets` implementation, pings every 20 s) in a subprocess of its own, started fresh for each
N so its RSS is comparable; no Temporal (nothing here needs it; the address points nowhere as in
the API tests). One user (`websocket_max_connections_per_user` raised through the environment),
one workspace (REST) and one sandbox row inserted directly (`/ws/sandboxes/{id}` only checks
ownership in the database). N client connections `?token=…` follow that sandbox (all channels).
This process appends rows to `events` (`store.events.append` + commit, its own engine on the same
database) at a fixed rate, each carrying `{"seq", "t"}` with `t` = wall clock just before the
insert; the API's bus picks them up (SQLite: a poll every `events_poll_interval_seconds`;
PostgreSQL: LISTEN/NOTIFY) and every connection's pump sends the frame.

Baseline: a bare Starlette WebSocket endpoint under the same uvicorn settings, also a subprocess
(`python -m bench.ws_fanout baseline-server`): a publisher WebSocket feeds an in-memory asyncio
queue; one broadcaster task builds the same frame once (`{channel,event,data,timestamp,id}`) and
offers it to a bounded queue per subscriber, whose sender task writes it. No database, no auth:
what the transport alone costs, so ours/baseline is the cost of the durable log and its polling.

Clients: `python -m bench.ws_fanout clients` subprocesses (uvloop, `websockets` asyncio client,
permessage-deflate offered as browsers and the library do by default), N split between them;
each stamps `time.time()` on every frame as it arrives (same host clock as the publisher).
Latency = receive - publish stamp, over every (event, connection) pair. Also per event: publish →
first connection, and first → last connection (the fan-out spread). RSS (VmRSS of the server
process): after a one-connection warm-up, after N connected, after the run → KiB per connection.
CPU of the server and of the clients over the publish window, and the clients' event-loop lag
(how late a 5 ms timer fires: high lag means the client loop, not the server, adds latency).

Options through environment variables (the harness's parser is shared by every benchmark):
  BENCH_WS_N="100,500,1000"  BENCH_WS_RATE=20 (events/s)  BENCH_WS_SECONDS=10 (3 with --quick)
  BENCH_WS_CLIENT_PROCS=2  BENCH_WS_BACKENDS="sqlite,postgres" (postgres is skipped with a note
  when AINTANDEM_TEST_PG_DSN / postgresql://postgres@127.0.0.1:5432/postgres does not answer)
  BENCH_WS_DEFLATE=1 (0: clients do not offer permessage-deflate)  BENCH_WS_POLL=<seconds>
  (the API's events_poll_interval_seconds; default: the platform default)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import stats
from bench.core import BenchContext, Result, benchmark

NAME = "ws_fanout"
BASELINE = "bare Starlette broadcast (in-memory queue)"
REPO = Path(__file__).resolve().parent.parent
SYSTEM_PREFIX = '{"channel":"system"'
CONNECT_CONCURRENCY = 50  # simultaneous handshakes per client process
QUEUE_SIZE = 1000  # the platform's websocket_queue_size default; the baseline uses the same
PG_ADMIN_DSN = os.environ.get(
    "AINTANDEM_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)


# == the baseline server (runs in a subprocess) ===================================================


class _BaselineSub:
    """A bounded per-connection buffer the broadcaster offers frames to without blocking."""

    def __init__(self) -> None:
        self.frames: list[str] = []
        self.wakeup = asyncio.Event()
        self.dropped = False

    def offer(self, text: str) -> bool:
        if len(self.frames) >= QUEUE_SIZE:
            self.frames.clear()
            self.dropped = True
            self.wakeup.set()
            return False
        self.frames.append(text)
        self.wakeup.set()
        return True

    async def take(self) -> list[str]:
        await self.wakeup.wait()
        self.wakeup.clear()
        items, self.frames = self.frames, []
        return items


def baseline_app() -> Any:
    """A bare Starlette app: `/publish` feeds a queue, `/ws` subscribers get every frame."""
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket, WebSocketDisconnect

    from domain.timeutil import iso, utcnow

    source: asyncio.Queue[str] = asyncio.Queue()
    subscribers: set[_BaselineSub] = set()

    def encode(channel: str, event: str, data: object, event_id: int | None) -> str:
        body = {
            "channel": channel,
            "event": event,
            "data": data,
            "timestamp": iso(utcnow()),
            "id": event_id,
        }
        return json.dumps(body, separators=(",", ":"), default=str)

    async def broadcaster() -> None:
        next_id = 0
        while True:
            raw = await source.get()
            next_id += 1
            text = encode("events", "bench", json.loads(raw), next_id)
            for sub in list(subscribers):
                if not sub.offer(text):  # as the platform: drop the slow consumer
                    subscribers.discard(sub)

    async def subscribe(ws: WebSocket) -> None:
        await ws.accept()
        sub = _BaselineSub()
        subscribers.add(sub)
        await ws.send_text(encode("system", "connected", {"stream": "baseline"}, None))

        async def pump() -> None:
            while True:
                for text in await sub.take():
                    await ws.send_text(text)
                if sub.dropped:
                    await ws.close(1013, "slow consumer")
                    return

        async def read() -> None:
            with contextlib.suppress(WebSocketDisconnect):
                while True:
                    message = await ws.receive()
                    if message["type"] == "websocket.disconnect":
                        return

        tasks = [asyncio.create_task(pump()), asyncio.create_task(read())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            subscribers.discard(sub)
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t

    async def publish(ws: WebSocket) -> None:
        await ws.accept()
        with contextlib.suppress(WebSocketDisconnect):
            while True:
                source.put_nowait(await ws.receive_text())

    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> Any:
        task = asyncio.create_task(broadcaster())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return Starlette(
        routes=[WebSocketRoute("/ws", subscribe), WebSocketRoute("/publish", publish)],
        lifespan=lifespan,
    )


def serve_baseline(port: int) -> None:
    import uvicorn

    # The same uvicorn settings as `aintandem api` (cli/main.py).
    uvicorn.run(
        baseline_app(),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        proxy_headers=True,
        ws_ping_interval=20,
        ws_ping_timeout=20,
    )


# == the clients (run in subprocesses) ===========================================================


@dataclass
class _Conn:
    ws: Any
    frames: list[tuple[float, str]] = field(default_factory=list)
    events: int = 0
    closed_early: str | None = None
    task: asyncio.Task[None] | None = None


async def clients_main(url: str, count: int, out: Path, deflate: bool) -> None:
    """Open `count` connections, report, record every frame until told how many to expect."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    conns: list[_Conn] = []
    errors: Counter[str] = Counter()
    sem = asyncio.Semaphore(CONNECT_CONCURRENCY)
    target = [1 << 60]
    progress = asyncio.Event()

    async def receive(c: _Conn) -> None:
        frames = c.frames
        try:
            async for msg in c.ws:
                frames.append((time.time(), msg))  # type: ignore[arg-type]
                if not msg.startswith(SYSTEM_PREFIX):  # type: ignore[union-attr]
                    c.events += 1
                    if c.events >= target[0]:
                        progress.set()
        except ConnectionClosed:
            pass
        if not stopping:
            code = getattr(c.ws, "close_code", None)
            reason = getattr(c.ws, "close_reason", "") or ""
            c.closed_early = f"{code} {reason}".strip()
            progress.set()

    async def open_one() -> None:
        async with sem:
            try:
                ws = await connect(
                    url,
                    ping_interval=None,  # the server pings (every 20 s), as browsers rely on
                    compression="deflate" if deflate else None,
                    open_timeout=120,
                    close_timeout=5,
                )
            except Exception as exc:
                errors[f"connect: {type(exc).__name__}: {str(exc)[:80]}"] += 1
                return
            try:
                first = await asyncio.wait_for(ws.recv(), 60)
            except Exception as exc:
                errors[f"first frame: {type(exc).__name__}: {str(exc)[:80]}"] += 1
                await ws.close()
                return
            if '"connected"' not in str(first):
                errors[f"first frame: {str(first)[:100]}"] += 1
                await ws.close()
                return
            c = _Conn(ws)
            c.task = asyncio.create_task(receive(c))
            conns.append(c)

    stopping = False
    t0 = time.perf_counter()
    await asyncio.gather(*(open_one() for _ in range(count)))
    connect_s = time.perf_counter() - t0
    _say({"type": "connected", "ok": len(conns), "errors": dict(errors), "connect_s": connect_s})

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    lags: list[float] = []
    ticking = False

    async def ticker() -> None:
        while ticking:
            t = time.perf_counter()
            await asyncio.sleep(0.005)
            lags.append((time.perf_counter() - t - 0.005) * 1000)

    tick_task: asyncio.Task[None] | None = None
    cpu0 = wall0 = 0.0
    drained_in = None
    while True:
        line = (await reader.readline()).decode().strip()
        if not line:
            break  # the controller went away
        cmd, _, arg = line.partition(" ")
        if cmd == "start":
            ticking = True
            tick_task = asyncio.create_task(ticker())
            cpu0, wall0 = _cpu_self(), time.perf_counter()
        elif cmd == "expect":
            expected, timeout = int(arg.split()[0]), float(arg.split()[1])
            target[0] = expected
            t_wait = time.perf_counter()
            deadline = t_wait + timeout
            while time.perf_counter() < deadline:
                if all(c.events >= expected or c.closed_early for c in conns):
                    drained_in = time.perf_counter() - t_wait
                    break
                progress.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(progress.wait(), 0.05)
            ticking = False
            cpu_s, wall_s = _cpu_self() - cpu0, time.perf_counter() - wall0
            if tick_task is not None:
                await tick_task
            stopping = True
            await asyncio.gather(*(c.ws.close() for c in conns), return_exceptions=True)
            for c in conns:
                if c.task is not None:
                    c.task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await c.task
            recv: list[list[tuple[int, float]]] = []
            system: Counter[str] = Counter()
            for c in conns:
                mine = []
                for t, msg in c.frames:
                    body = json.loads(msg)
                    if body.get("channel") == "system":
                        system[str(body.get("event"))] += 1
                        continue
                    mine.append((int(body["data"]["seq"]), t))
                recv.append(mine)
            _write(
                out,
                json.dumps(
                    {
                        "recv": recv,
                        "closed_early": dict(
                            Counter(c.closed_early for c in conns if c.closed_early)
                        ),
                        "system_frames": dict(system),
                        "lag_ms": lags,
                        "cpu_s": cpu_s,
                        "wall_s": wall_s,
                        "drained_in_s": drained_in,
                    }
                ),
            )
            _say({"type": "done"})
            return


def _write(path: Path, text: str) -> None:
    path.write_text(text)


def _cpu_self() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _say(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


# == the controller (in the harness process) =====================================================


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env_base() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AINTANDEM_")}
    env["PYTHONPATH"] = str(REPO) + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
    )
    return env


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (all threads)
    return ticks / os.sysconf("SC_CLK_TCK")


def machine_busy() -> tuple[int, int]:
    parts = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = parts[3] + parts[4]
    return sum(parts) - idle, sum(parts)


class Server:
    """A server subprocess (ours or the baseline) on a loopback port; log to a file."""

    def __init__(self, argv: list[str], env: dict[str, str], port: int, cwd: Path, log: Path):
        self.argv, self.env, self.port, self.cwd, self.log_path = argv, env, port, cwd, log
        self.proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> Server:
        self._log = self.log_path.open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv, cwd=self.cwd, env=self.env, stdout=self._log, stderr=self._log
        )
        deadline = time.monotonic() + 60
        while True:
            if self.proc.returncode is not None:
                raise RuntimeError(f"server exited ({self.proc.returncode}): {self.tail()}")
            try:
                _, w = await asyncio.open_connection("127.0.0.1", self.port)
                w.close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"server did not listen on {self.port}: {self.tail()}"
                    ) from None
                await asyncio.sleep(0.05)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def tail(self, n: int = 1500) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-n:]
        return ""

    async def __aexit__(self, *_: object) -> None:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(self.proc.wait(), 20)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        self._log.close()


class Clients:
    """K client subprocesses holding N connections between them."""

    def __init__(self, url: str, n: int, procs: int, tmp: Path, deflate: bool) -> None:
        self.url, self.n, self.procs, self.tmp, self.deflate = url, n, procs, tmp, deflate
        self.children: list[tuple[asyncio.subprocess.Process, Path]] = []

    async def connect(self) -> dict[str, Any]:
        k = max(1, min(self.procs, self.n))
        shares = [self.n // k + (1 if i < self.n % k else 0) for i in range(k)]
        for i, share in enumerate(shares):
            out = self.tmp / f"clients-{uuid.uuid4().hex[:8]}-{i}.json"
            argv = [sys.executable, "-m", "bench.ws_fanout", "clients", "--url", self.url]
            argv += ["--count", str(share), "--out", str(out)]
            if not self.deflate:
                argv.append("--no-deflate")
            p = await asyncio.create_subprocess_exec(
                *argv,
                cwd=REPO,
                env=_env_base(),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            self.children.append((p, out))
        t0 = time.perf_counter()
        reports = [await self._read(p) for p, _ in self.children]
        errors: Counter[str] = Counter()
        for r in reports:
            errors.update(r["errors"])
        return {
            "ok": sum(r["ok"] for r in reports),
            "errors": dict(errors),
            "connect_s": time.perf_counter() - t0,
        }

    async def _read(self, p: asyncio.subprocess.Process) -> dict[str, Any]:
        assert p.stdout is not None
        line = await asyncio.wait_for(p.stdout.readline(), 600)
        if not line:
            raise RuntimeError(f"client process exited ({await p.wait()})")
        return dict(json.loads(line))

    async def send(self, line: str) -> None:
        for p, _ in self.children:
            assert p.stdin is not None
            p.stdin.write((line + "\n").encode())
            await p.stdin.drain()

    async def finish(self, expected: int, timeout: float) -> list[dict[str, Any]]:
        await self.send(f"expect {expected} {timeout}")
        results = []
        for p, out in self.children:
            await self._read(p)
            await p.wait()
            results.append(json.loads(out.read_text()))
            out.unlink()
        return results

    async def close(self) -> None:
        for p, _ in self.children:
            if p.returncode is None:
                p.kill()
                await p.wait()


@dataclass
class Run:
    """What one (server, N) measurement produced."""

    label: str
    n: int
    connected: int
    connect_errors: dict[str, int]
    connect_s: float
    rss_before: int
    rss_connected: int
    rss_after: int
    latencies: list[float]  # ms, every (event, connection) pair received
    first_ms: list[float]  # per event: publish → first connection
    spread_ms: list[float]  # per event: first → last connection
    publish_ms: list[float]  # insert+commit (ours) / send (baseline)
    expected_frames: int
    frames: int
    delivered_per_s: float
    server_cpu_pct: float
    server_cpu_us_per_frame: float | None  # server CPU over the publish window / frames
    connect_cpu_ms_per_conn: float | None  # server CPU while N connected / N
    clients_cpu_pct: float
    machine_busy_pct: float
    client_lag_p99_ms: float | None
    client_lag_max_ms: float | None
    closed_early: dict[str, int]
    drained_in_s: float | None

    @property
    def per_conn_kib(self) -> float | None:
        return (self.rss_connected - self.rss_before) / self.connected if self.connected else None

    def summary(self) -> dict[str, Any]:
        def p(vals: list[float], q: float) -> float | None:
            return round(stats.percentile(vals, q), 2) if vals else None

        return {
            "n": self.n,
            "connected": self.connected,
            "connect_errors": self.connect_errors,
            "connect_s": round(self.connect_s, 2),
            "rss_kib": [self.rss_before, self.rss_connected, self.rss_after],
            "per_conn_kib": self.per_conn_kib,
            "latency_ms": {
                "p50": p(self.latencies, 50),
                "p99": p(self.latencies, 99),
                "max": max(self.latencies) if self.latencies else None,
            },
            "first_ms_p50": p(self.first_ms, 50),
            "spread_ms": {"p50": p(self.spread_ms, 50), "p99": p(self.spread_ms, 99)},
            "publish_ms_p50": p(self.publish_ms, 50),
            "frames": [self.frames, self.expected_frames],
            "delivered_per_s": round(self.delivered_per_s, 1),
            "server_cpu_us_per_frame": self.server_cpu_us_per_frame,
            "connect_cpu_ms_per_conn": self.connect_cpu_ms_per_conn,
            "cpu_pct": {
                "server": round(self.server_cpu_pct),
                "clients": round(self.clients_cpu_pct),
                "machine": round(self.machine_busy_pct),
            },
            "client_lag_ms": {"p99": self.client_lag_p99_ms, "max": self.client_lag_max_ms},
            "closed_early": self.closed_early,
            "drained_in_s": self.drained_in_s,
        }


async def _measure(
    label: str,
    server: Server,
    url: str,
    n: int,
    procs: int,
    tmp: Path,
    deflate: bool,
    warm_up: Any,
    publish: Any,
    events: int,
    drain: float,
) -> Run:
    await warm_up()
    await asyncio.sleep(0.5)
    rss_before = rss_kib(server.pid)
    clients = Clients(url, n, procs, tmp, deflate)
    try:
        cpu_c0 = cpu_s(server.pid)
        conn = await clients.connect()
        connect_cpu = cpu_s(server.pid) - cpu_c0
        await asyncio.sleep(1.0)
        rss_connected = rss_kib(server.pid)
        await clients.send("start")
        cpu0, busy0 = cpu_s(server.pid), machine_busy()
        w0 = time.perf_counter()
        sent = await publish(events)
        results = await clients.finish(events, drain)
        wall = time.perf_counter() - w0
        cpu1, busy1 = cpu_s(server.pid), machine_busy()
        rss_after = rss_kib(server.pid)
    finally:
        await clients.close()

    sent_at = {seq: t for seq, t, _ in sent}
    latencies: list[float] = []
    per_event: dict[int, list[float]] = {}
    first_t, last_t = float("inf"), 0.0
    closed: Counter[str] = Counter()
    lags: list[float] = []
    client_cpu = client_wall = 0.0
    drained = [r["drained_in_s"] for r in results]
    for r in results:
        closed.update(r["closed_early"])
        lags += r["lag_ms"]
        client_cpu += r["cpu_s"]
        client_wall = max(client_wall, r["wall_s"])
        for conn_frames in r["recv"]:
            for seq, t in conn_frames:
                if seq not in sent_at:
                    continue
                latencies.append((t - sent_at[seq]) * 1000)
                per_event.setdefault(seq, []).append(t)
                last_t = max(last_t, t)
    if sent:
        first_t = min(t for _, t, _ in sent)
    first_ms = [(min(ts) - sent_at[s]) * 1000 for s, ts in per_event.items()]
    spread_ms = [(max(ts) - min(ts)) * 1000 for ts in per_event.values() if len(ts) > 1]
    frames = len(latencies)
    busy = (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]) * 100 * (os.cpu_count() or 1)
    return Run(
        label=label,
        n=n,
        connected=conn["ok"],
        connect_errors=conn["errors"],
        connect_s=conn["connect_s"],
        rss_before=rss_before,
        rss_connected=rss_connected,
        rss_after=rss_after,
        latencies=latencies,
        first_ms=first_ms,
        spread_ms=spread_ms,
        publish_ms=[(t1 - t0) * 1000 for _, t0, t1 in sent],
        expected_frames=len(sent) * conn["ok"],
        frames=frames,
        delivered_per_s=frames / (last_t - first_t) if frames and last_t > first_t else 0.0,
        server_cpu_pct=(cpu1 - cpu0) / wall * 100,
        server_cpu_us_per_frame=(cpu1 - cpu0) / frames * 1e6 if frames else None,
        connect_cpu_ms_per_conn=connect_cpu / conn["ok"] * 1000 if conn["ok"] else None,
        clients_cpu_pct=client_cpu / client_wall * 100 if client_wall else 0.0,
        machine_busy_pct=busy,
        client_lag_p99_ms=round(stats.percentile(lags, 99), 1) if lags else None,
        client_lag_max_ms=round(max(lags), 1) if lags else None,
        closed_early=dict(closed),
        drained_in_s=None if None in drained else max(drained),
    )


async def _paced(events: int, rate: float, one: Any) -> list[tuple[int, float, float]]:
    """Call `one(seq, t)` at `rate`/s on an absolute schedule; (seq, t before, t after)."""
    out = []
    start = time.perf_counter() + 0.05
    for i in range(events):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        t0 = time.time()
        await one(i, t0)
        out.append((i, t0, time.time()))
    return out


# -- ours -----------------------------------------------------------------------------------------


@dataclass
class Platform:
    backend: str
    url: str  # database
    data_dir: Path
    engine: Any = None
    sessions: Any = None
    token: str = ""
    workspace_id: str = ""
    sandbox_id: str = ""

    def env(self, port: int) -> dict[str, str]:
        env = _env_base()
        env.update(
            AINTANDEM_DATABASE_URL=self.url,
            AINTANDEM_DATA_DIR=str(self.data_dir),
            AINTANDEM_API_HOST="127.0.0.1",
            AINTANDEM_API_PORT=str(port),
            AINTANDEM_PUBLIC_URL=f"http://127.0.0.1:{port}",
            AINTANDEM_TEMPORAL_ADDRESS="127.0.0.1:1",  # nothing here needs Temporal
            AINTANDEM_RATE_LIMIT_AUTH_PER_MINUTE="1000000",
            AINTANDEM_RATE_LIMIT_WORKSPACE_PER_HOUR="1000000",
            AINTANDEM_WEBSOCKET_MAX_CONNECTIONS_PER_USER="100000",
        )
        if os.environ.get("BENCH_WS_POLL"):
            env["AINTANDEM_EVENTS_POLL_INTERVAL_SECONDS"] = os.environ["BENCH_WS_POLL"]
        return env

    async def setup(self, port: int) -> None:
        """One user, one workspace (over REST), one sandbox row (directly)."""
        if self.sandbox_id:
            return
        import httpx

        from domain.ids import Prefix, new_id
        from store.models import Sandbox

        base = f"http://127.0.0.1:{port}/api/v1"
        email = f"ws-bench-{uuid.uuid4().hex[:10]}@example.com"
        password = "bench password 123"
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            r = await http.post(
                "/auth/register", json={"email": email, "password": password, "name": "Bench"}
            )
            r.raise_for_status()
            r = await http.post("/auth/login", json={"email": email, "password": password})
            r.raise_for_status()
            self.token = r.json()["data"]["access_token"]
            r = await http.post(
                "/workspaces",
                headers={"Authorization": f"Bearer {self.token}"},
                json={"name": f"ws-fanout-{uuid.uuid4().hex[:6]}"},
            )
            r.raise_for_status()
            self.workspace_id = r.json()["data"]["workspace_id"]
        sid = new_id(Prefix.SANDBOX)
        async with self.sessions() as s:
            s.add(Sandbox(id=sid, workspace_id=self.workspace_id, name=f"fanout-{sid[-6:]}"))
            await s.commit()
        self.sandbox_id = sid

    async def append(self, seq: int, t: float) -> None:
        from store import events as event_log

        async with self.sessions() as s:
            event_log.append(
                s,
                channel="events",
                event="bench",
                data={"seq": seq, "t": t},
                workspace_id=self.workspace_id,
                sandbox_id=self.sandbox_id,
            )
            await s.commit()


async def _ours(
    platform: Platform,
    n: int,
    procs: int,
    tmp: Path,
    deflate: bool,
    events: int,
    rate: float,
    drain: float,
) -> Run:
    from websockets.asyncio.client import connect

    port = _free_port()
    server = Server(
        [sys.executable, "-m", "cli.main", "api"],
        platform.env(port),
        port,
        platform.data_dir,
        tmp / f"api-{platform.backend}.log",
    )
    async with server:
        await platform.setup(port)
        url = f"ws://127.0.0.1:{port}/ws/sandboxes/{platform.sandbox_id}?token={platform.token}"

        async def warm_up() -> None:
            async with connect(url, ping_interval=None) as ws:
                await asyncio.wait_for(ws.recv(), 30)  # connected
                await platform.append(-1, time.time())
                await asyncio.wait_for(ws.recv(), 30)

        async def publish(count: int) -> list[tuple[int, float, float]]:
            return await _paced(count, rate, platform.append)

        return await _measure(
            f"ours ({platform.backend})",
            server,
            url,
            n,
            procs,
            tmp,
            deflate,
            warm_up,
            publish,
            events,
            drain,
        )


async def _baseline(
    n: int, procs: int, tmp: Path, deflate: bool, events: int, rate: float, drain: float
) -> Run:
    from websockets.asyncio.client import connect

    port = _free_port()
    server = Server(
        [sys.executable, "-m", "bench.ws_fanout", "baseline-server", "--port", str(port)],
        _env_base(),
        port,
        REPO,
        tmp / "baseline.log",
    )
    async with server:
        url = f"ws://127.0.0.1:{port}/ws"
        async with connect(f"ws://127.0.0.1:{port}/publish", compression=None) as pub:

            async def send(seq: int, t: float) -> None:
                await pub.send(json.dumps({"seq": seq, "t": t}))

            async def warm_up() -> None:
                async with connect(url, ping_interval=None) as ws:
                    await asyncio.wait_for(ws.recv(), 30)
                    await send(-1, time.time())
                    await asyncio.wait_for(ws.recv(), 30)

            async def publish(count: int) -> list[tuple[int, float, float]]:
                return await _paced(count, rate, send)

            return await _measure(
                "baseline", server, url, n, procs, tmp, deflate, warm_up, publish, events, drain
            )


async def _make_platform(backend: str, tmp: Path) -> Platform:
    from store.db import create_engine, session_factory
    from store.migrate import upgrade

    data_dir = tmp / f"data-{backend}"
    data_dir.mkdir()
    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{data_dir / 'aintandem.db'}"
    else:
        import psycopg

        dbname = f"aintandem_bench_{uuid.uuid4().hex[:8]}"

        def create() -> str:
            with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{dbname}"')
            info = psycopg.conninfo.conninfo_to_dict(PG_ADMIN_DSN)
            user, host = info.get("user", "postgres"), info.get("host", "127.0.0.1")
            return f"postgresql+psycopg://{user}@{host}:{info.get('port', 5432)}/{dbname}"

        url = await asyncio.to_thread(create)
    await asyncio.to_thread(upgrade, url)
    p = Platform(backend, url, data_dir)
    p.engine = create_engine(url)
    p.sessions = session_factory(p.engine)
    return p


async def _drop_platform(p: Platform) -> None:
    if p.engine is not None:
        await p.engine.dispose()
    if p.backend == "postgres":
        import psycopg
        from sqlalchemy.engine import make_url

        dbname = make_url(p.url).database

        def drop() -> None:
            with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')

        await asyncio.to_thread(drop)


def _pg_available() -> str | None:
    try:
        import psycopg

        psycopg.connect(PG_ADMIN_DSN, connect_timeout=3).close()
        return None
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc).strip()[:120]}"


def _server_log_errors(tmp: Path) -> list[str]:
    """One note per server log with errors: how many, and the distinct messages (first 3)."""
    out = []
    for log in sorted(tmp.glob("*.log")):
        lines = log.read_text(errors="replace").splitlines()
        bad = [
            i for i, line in enumerate(lines) if " ERROR " in line or line.startswith("Traceback")
        ]
        if not bad:
            continue
        kinds: Counter[str] = Counter()
        for i in bad:
            # The message, or for a traceback its last line (the exception).
            j = i
            if lines[i].startswith("Traceback"):
                while j + 1 < len(lines) and lines[j + 1].startswith((" ", "Traceback")):
                    j += 1
                j = min(j + 1, len(lines) - 1)
            kinds[lines[j].split(" ERROR ", 1)[-1][:160]] += 1
        top = "; ".join(f"{k!r} x{v}" for k, v in kinds.most_common(3))
        out.append(f"{NAME}: {log.name}: {len(bad)} error lines: {top}")
    return out


def _loadavg() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


def _ints(name: str, default: str) -> list[int]:
    return [int(x) for x in os.environ.get(name, default).split(",") if x.strip()]


def _log_run(ctx: BenchContext, r: Run) -> None:
    s = r.summary()
    ctx.log(
        f"  {r.label:16} N={r.n:<5} connected {r.connected} in {r.connect_s:.1f}s | latency p50 "
        f"{s['latency_ms']['p50']} p99 {s['latency_ms']['p99']} ms | first p50 "
        f"{s['first_ms_p50']} spread p50 {s['spread_ms']['p50']} ms | frames {r.frames}/"
        f"{r.expected_frames} ({r.delivered_per_s:.0f}/s) | RSS {r.rss_before}→"
        f"{r.rss_connected}→{r.rss_after} KiB ({(r.per_conn_kib or 0):.1f} KiB/conn) | CPU "
        f"server {r.server_cpu_pct:.0f}% ({r.server_cpu_us_per_frame or 0:.0f} µs/frame, connect "
        f"{r.connect_cpu_ms_per_conn or 0:.1f} ms/conn) clients {r.clients_cpu_pct:.0f}% machine "
        f"{r.machine_busy_pct:.0f}% | client lag p99 {r.client_lag_p99_ms} ms"
        + (f" | closed early {r.closed_early}" if r.closed_early else "")
        + (f" | connect errors {r.connect_errors}" if r.connect_errors else "")
    )


@benchmark(
    NAME, "events → N WebSocket subscribers (latency, throughput, RSS/conn) vs bare Starlette"
)
async def run(ctx: BenchContext) -> list[Result]:
    ns = _ints("BENCH_WS_N", "100,500,1000")
    rate = float(os.environ.get("BENCH_WS_RATE", 20))
    seconds = float(os.environ.get("BENCH_WS_SECONDS", 3 if ctx.quick else 10))
    procs = int(os.environ.get("BENCH_WS_CLIENT_PROCS", 2))
    deflate = os.environ.get("BENCH_WS_DEFLATE", "1") not in ("0", "false", "no")
    backends = [
        b.strip() for b in os.environ.get("BENCH_WS_BACKENDS", "sqlite,postgres").split(",")
    ]
    backends = [b for b in backends if b]
    events = max(1, int(rate * seconds))
    drain = max(30.0, 2 * seconds)
    notes: list[str] = []
    if "postgres" in backends:
        why = await asyncio.to_thread(_pg_available)
        if why:
            backends.remove("postgres")
            notes.append(f"{NAME}: PostgreSQL skipped ({PG_ADMIN_DSN} did not answer: {why})")
            ctx.log(notes[-1])

    load_start = _loadavg()
    tmp = Path(tempfile.mkdtemp(prefix="aintandem-bench-ws-"))
    platforms: dict[str, Platform] = {}
    runs: dict[tuple[str, int], Run] = {}
    try:
        for b in backends:
            platforms[b] = await _make_platform(b, tmp)
        ctx.log(
            f"{NAME}: N={ns}, {rate:g} events/s for {seconds:g} s ({events} events), "
            f"{procs} client process(es), deflate {'offered' if deflate else 'off'}, "
            f"backends {backends}"
        )
        for n in ns:
            r = await _baseline(n, procs, tmp, deflate, events, rate, drain)
            runs[("baseline", n)] = r
            _log_run(ctx, r)
            for b in backends:
                r = await _ours(platforms[b], n, procs, tmp, deflate, events, rate, drain)
                runs[(b, n)] = r
                _log_run(ctx, r)
        notes += _server_log_errors(tmp)
    finally:
        for p in platforms.values():
            with contextlib.suppress(Exception):
                await _drop_platform(p)
        shutil.rmtree(tmp, ignore_errors=True)

    poll = os.environ.get("BENCH_WS_POLL") or "0.15 (default)"
    notes += [
        f"{NAME}: {rate:g} events/s for {seconds:g} s per N; latency over every (event, "
        f"connection) pair = client receive - publisher stamp (ours: before the insert + commit "
        f"from the bench process; baseline: before the send on its publisher WebSocket); "
        f"servers are subprocesses (fresh per N), {procs} client process(es), "
        f"permessage-deflate {'offered' if deflate else 'off'}; SQLite events_poll_interval {poll}",
        f"{NAME}: RSS/conn = (VmRSS after N connected - after a 1-connection warm-up) / N",
        f"{NAME}: load average (1 min) {load_start} at start, {_loadavg()} at end, on "
        f"{os.cpu_count()} cores: latencies are those of a machine this busy",
    ]
    ctx.notes.extend(notes)
    return _results(runs, ns, backends)


def _results(runs: dict[tuple[str, int], Run], ns: list[int], backends: list[str]) -> list[Result]:
    def p(vals: list[float], q: float) -> float | None:
        return stats.percentile(vals, q) if vals else None

    rows: list[Result] = []
    for b in backends:
        for n in ns:
            o, base = runs.get((b, n)), runs.get(("baseline", n))
            if o is None or base is None:
                continue
            tag = f"{b} N={n}"
            rows += [
                Result(
                    NAME,
                    f"{tag} latency p50 ms",
                    p(o.latencies, 50),
                    p(base.latencies, 50),
                    samples={"ours": o.summary(), "baseline": base.summary()},
                    baseline_name=BASELINE,
                ),
                Result(
                    NAME,
                    f"{tag} latency p99 ms",
                    p(o.latencies, 99),
                    p(base.latencies, 99),
                    baseline_name=BASELINE,
                ),
                Result(
                    NAME,
                    f"{tag} delivered frames/s",
                    o.delivered_per_s,
                    base.delivered_per_s,
                    unit="frames/s",
                    higher_is_better=True,
                    baseline_name=BASELINE,
                ),
                Result(
                    NAME,
                    f"{tag} delivered % of expected",
                    100 * o.frames / o.expected_frames if o.expected_frames else None,
                    100 * base.frames / base.expected_frames if base.expected_frames else None,
                    unit="%",
                    higher_is_better=True,
                    baseline_name=BASELINE,
                ),
                Result(
                    NAME,
                    f"{tag} server RSS KiB per connection",
                    o.per_conn_kib,
                    base.per_conn_kib,
                    unit="KiB",
                    baseline_name=BASELINE,
                ),
                Result(
                    NAME,
                    f"  {tag} publish → first client p50 ms",
                    p(o.first_ms, 50),
                    p(base.first_ms, 50),
                    unit="ms",
                    note="profile",
                    baseline_name=BASELINE,
                ),
                Result(
                    NAME,
                    f"  {tag} fan-out spread first→last p50 ms",
                    p(o.spread_ms, 50),
                    p(base.spread_ms, 50),
                    unit="ms",
                    note="profile",
                    baseline_name=BASELINE,
                ),
                Result(
                    NAME,
                    f"{tag} server CPU µs per delivered frame",
                    o.server_cpu_us_per_frame,
                    base.server_cpu_us_per_frame,
                    unit="µs",
                    baseline_name=BASELINE,
                ),
                Result(
                    NAME,
                    f"  {tag} server CPU ms per connection set up",
                    o.connect_cpu_ms_per_conn,
                    base.connect_cpu_ms_per_conn,
                    unit="ms",
                    note="profile",
                    baseline_name=BASELINE,
                ),
            ]
            if b in ("sqlite", "postgres"):
                rows.append(
                    Result(
                        NAME,
                        f"  {tag} insert+commit p50 ms (ours only)",
                        p(o.publish_ms, 50),
                        None,
                        unit="ms",
                        note="profile",
                    )
                )
    return rows


# == subprocess entry points =====================================================================


def _main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.ws_fanout")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("baseline-server")
    s.add_argument("--port", type=int, required=True)
    c = sub.add_parser("clients")
    c.add_argument("--url", required=True)
    c.add_argument("--count", type=int, required=True)
    c.add_argument("--out", type=Path, required=True)
    c.add_argument("--no-deflate", action="store_true")
    args = ap.parse_args(argv)
    if args.cmd == "baseline-server":
        serve_baseline(args.port)
        return
    try:
        import uvloop

        factory: Any = uvloop.new_event_loop  # as uvicorn runs the servers
    except ImportError:
        factory = None
    coro = clients_main(args.url, args.count, args.out, not args.no_deflate)
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(coro)


if __name__ == "__main__":
    _main()
