"""Sandbox lifecycle latency through the platform vs raw docker-py, in the same run.

Ours (through the real platform, over HTTP, one sandbox at a time):
  create→running  POST /workspaces/{id}/sandboxes, then GET /sandboxes/{id} every `--poll-ms`
                  until status == running (the workflow waited for the runtime's health exec);
  stop            POST /sandboxes/{id}/stop, then poll until status == stopped.
Baseline (raw docker-py, same image, same create kwargs — so the same HostConfig limits:
memory = memswap, NanoCpus, PidsLimit, cap_drop ALL, no-new-privileges, init, log config):
  create+start+health  containers.create + start + the same health exec until it answers;
  create+start         the same without the health wait (reported, not judged);
  stop                 container.stop(timeout=10), the platform's stop timeout.
Raw and platform cycles alternate (which goes first flips every round) so drift hits both.

A profile of where the platform's time goes is read back from each sandbox workflow's Temporal
history and from timing wrappers on the in-process worker's DockerRuntime instance (bench-only
instrumentation; no platform code changes), and reported as informational rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import docker
import docker.errors

from bench import stats
from bench.core import BenchContext, Result, benchmark
from bench.temporal_history import breakdown, timeline, workflow_task_stats
from domain.containers import (
    AGENT_RUNTIME_PATH,
    SANDBOX_WORKSPACE,
    ContainerSpec,
    workspace_volume,
)
from domain.ids import sandbox_workflow_id

NAME = "sandbox_lifecycle"
GOAL = 1.5
RAW_LABEL = "aintandem.bench.run"
RAW_SANDBOX_ID = "sb_bench_raw"  # names the raw baseline's /workspace volume
POLL_TIMEOUT_SECONDS = 120.0
HEALTH_REQUEST = json.dumps({"tool": "health", "args": {}}).encode() + b"\n"


# -- raw docker-py baseline ------------------------------------------------------------------------


def _demux_stdout(data: bytes) -> bytes:
    out = bytearray()
    pos = 0
    while pos + 8 <= len(data):
        if data[pos] not in (0, 1, 2) or data[pos + 1 : pos + 4] != b"\0\0\0":
            return bytes(data)
        size = int.from_bytes(data[pos + 4 : pos + 8], "big")
        if data[pos] == 1:
            out.extend(data[pos + 8 : pos + 8 + size])
        pos += 8 + size
    return bytes(out)


def raw_health(api: docker.APIClient, container: str, timeout: float = 5.0) -> bool:
    """One health exec of the agent runtime, as the platform runs it (stdin request line)."""
    exec_id = api.exec_create(
        container,
        ["python3", AGENT_RUNTIME_PATH, "tool"],
        stdin=True,
        stdout=True,
        stderr=True,
        tty=False,
        workdir=SANDBOX_WORKSPACE,
    )["Id"]
    sock = api.exec_start(exec_id, socket=True)
    raw = getattr(sock, "_sock", sock)
    received = bytearray()
    try:
        raw.settimeout(timeout)
        raw.sendall(HEALTH_REQUEST)
        with contextlib.suppress(OSError):
            raw.shutdown(socket.SHUT_WR)
        while chunk := raw.recv(65536):
            received += chunk
    finally:
        with contextlib.suppress(Exception):
            sock._response.close()
        with contextlib.suppress(Exception):
            sock.close()
        with contextlib.suppress(Exception):
            raw.close()
    lines = [
        ln
        for ln in _demux_stdout(bytes(received)).decode(errors="replace").splitlines()
        if ln.strip()
    ]
    try:
        return bool(lines and json.loads(lines[-1]).get("ok"))
    except ValueError:
        return False


@dataclass
class RawCycle:
    create_ms: float
    start_ms: float
    create_start_ms: float
    health_ms: float  # until the first successful health exec
    ready_ms: float  # create + start + health answered
    stop_ms: float
    health_attempts: int


def raw_cycle(client: docker.DockerClient, kwargs: dict[str, Any]) -> RawCycle:
    t0 = time.perf_counter()
    container = client.containers.create(**kwargs)
    t_created = time.perf_counter()
    container.start()
    t_started = time.perf_counter()
    attempts = 0
    deadline = t_started + 60
    while True:
        attempts += 1
        try:
            if raw_health(client.api, container.id):
                break
        except docker.errors.APIError:
            pass
        if time.perf_counter() > deadline:
            raise RuntimeError("raw container's runtime did not answer a health exec in 60 s")
        time.sleep(0.02)
    t_ready = time.perf_counter()
    t1 = time.perf_counter()
    container.stop(timeout=10)
    t_stopped = time.perf_counter()
    return RawCycle(
        (t_created - t0) * 1000,
        (t_started - t_created) * 1000,
        (t_started - t0) * 1000,
        (t_ready - t_started) * 1000,
        (t_ready - t0) * 1000,
        (t_stopped - t1) * 1000,
        attempts,
    )


# -- instrumentation of the in-process worker's DockerRuntime ------------------------------------


@dataclass
class DockerProbe:
    """Timing wrappers on one DockerRuntime instance: (method, sandbox_id) → [ms, ...]."""

    calls: dict[str, list[tuple[str, float, float]]] = field(
        default_factory=lambda: defaultdict(list)
    )  # sandbox_id -> [(method, t_start, ms)]
    _installed: list[tuple[Any, str]] = field(default_factory=list)
    # _exec_exit_code gets an exec id, not a sandbox id: attributed to the health call around it.
    _current: dict[str, str] = field(default_factory=dict)

    def install(self, runtime: Any) -> None:
        for method in ("ensure_container", "start", "health", "inspect", "stop", "_exec_exit_code"):
            original = getattr(runtime, method, None)
            if original is None:  # renamed since: profile without it
                continue
            setattr(runtime, method, self._wrap(method, original))
            self._installed.append((runtime, method))

    def uninstall(self) -> None:
        for runtime, method in self._installed:
            with contextlib.suppress(AttributeError):
                delattr(runtime, method)
        self._installed.clear()

    def _wrap(self, method: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        calls, current = self.calls, self._current

        def timed(*args: Any, **kwargs: Any) -> Any:
            key = args[0] if args and isinstance(args[0], str) else ""
            if method == "health":
                current["sid"] = key
            if method == "_exec_exit_code":
                key = current.get("sid", "")
            elif not key and args and hasattr(args[0], "sandbox_id"):
                key = args[0].sandbox_id
            start = time.time()
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                calls[key].append((method, start, (time.perf_counter() - t0) * 1000))

        return timed

    def total(self, sandbox_id: str, method: str, begin: float, end: float) -> tuple[float, int]:
        picked = [
            ms for m, t, ms in self.calls.get(sandbox_id, []) if m == method and begin <= t <= end
        ]
        return sum(picked), len(picked)


# -- the platform side -----------------------------------------------------------------------------


@dataclass
class PlatformCycle:
    sandbox_id: str
    create_running_ms: float
    stop_ms: float
    post_create_ms: float
    post_stop_ms: float
    polls_running: int
    polls_stopped: int
    get_ms: list[float]
    wall: dict[str, float]  # epoch seconds of: create_sent, running_seen, stop_sent, stopped_seen


class SandboxWentToError(RuntimeError):
    pass


async def _poll(
    http: Any, headers: dict[str, str], sid: str, status: str, interval: float, get_ms: list[float]
) -> tuple[float, float, int]:
    """GET until `status`; (perf_counter, wall) when seen, and how many GETs it took (each
    GET's duration is appended to `get_ms`)."""
    polls = 0
    deadline = time.perf_counter() + POLL_TIMEOUT_SECONDS
    while True:
        t_get = time.perf_counter()
        r = await http.get(f"/sandboxes/{sid}", headers=headers)
        get_ms.append((time.perf_counter() - t_get) * 1000)
        polls += 1
        if r.status_code != 200:
            raise RuntimeError(f"GET /sandboxes/{sid}: {r.status_code} {r.text}")
        data = r.json()["data"]
        if data["status"] == status:
            return time.perf_counter(), time.time(), polls
        if data["status"] == "error":
            raise SandboxWentToError(f"sandbox {sid} went to error: {data.get('status_reason')}")
        if time.perf_counter() > deadline:
            raise RuntimeError(
                f"sandbox {sid} not {status} after {POLL_TIMEOUT_SECONDS:.0f} s "
                f"(last: {data['status']})"
            )
        await asyncio.sleep(interval)


async def platform_cycle(
    http: Any, headers: dict[str, str], workspace_id: str, interval: float
) -> PlatformCycle:
    body = {
        "name": f"bench-{uuid.uuid4().hex[:8]}",
        "agent_config": {"primary_agent": {"name": "lead", "role": "Engineer"}},
    }
    w_create = time.time()
    t0 = time.perf_counter()
    r = await http.post(f"/workspaces/{workspace_id}/sandboxes", headers=headers, json=body)
    t_post = time.perf_counter()
    if r.status_code != 201:
        raise RuntimeError(f"create sandbox: {r.status_code} {r.text}")
    sid = r.json()["data"]["sandbox_id"]
    get_ms: list[float] = []
    t_running, w_running, polls_running = await _poll(
        http, headers, sid, "running", interval, get_ms
    )

    w_stop = time.time()
    t1 = time.perf_counter()
    r = await http.post(f"/sandboxes/{sid}/stop", headers=headers)
    t_post_stop = time.perf_counter()
    if r.status_code != 202:
        raise RuntimeError(f"stop sandbox {sid}: {r.status_code} {r.text}")
    t_stopped, w_stopped, polls_stopped = await _poll(
        http, headers, sid, "stopped", interval, get_ms
    )
    return PlatformCycle(
        sid,
        (t_running - t0) * 1000,
        (t_stopped - t1) * 1000,
        (t_post - t0) * 1000,
        (t_post_stop - t1) * 1000,
        polls_running,
        polls_stopped,
        get_ms,
        {
            "create_sent": w_create,
            "running_seen": w_running,
            "stop_sent": w_stop,
            "stopped_seen": w_stopped,
        },
    )


def _host_config_diff(client: docker.DockerClient, a: str, b: str) -> dict[str, Any]:
    keys = (
        "Memory",
        "MemorySwap",
        "NanoCpus",
        "PidsLimit",
        "CapDrop",
        "SecurityOpt",
        "Init",
        "Privileged",
        "LogConfig",
        "NetworkMode",
        "ReadonlyRootfs",
    )
    ha = client.api.inspect_container(a)["HostConfig"]
    hb = client.api.inspect_container(b)["HostConfig"]
    return {k: (ha.get(k), hb.get(k)) for k in keys if ha.get(k) != hb.get(k)}


# -- the benchmark ---------------------------------------------------------------------------------


@benchmark(NAME, "sandbox create→running and stop through the platform vs raw docker-py")
async def run(ctx: BenchContext) -> list[Result]:
    n = int(ctx.args.sandboxes or (5 if ctx.quick else 20))
    warmup = int(ctx.args.warmup)
    interval = float(ctx.args.poll_ms) / 1000
    stack = await ctx.stack()
    http, dk = stack.http, stack.docker
    acc = await stack.account()
    r = await http.post(
        "/workspaces",
        headers=acc.headers,
        json={
            "name": f"bench-{uuid.uuid4().hex[:6]}",
            "settings": {"max_sandboxes": n + warmup + 1},
        },
    )
    if r.status_code != 201:
        raise RuntimeError(f"create workspace: {r.status_code} {r.text}")
    wid = r.json()["data"]["workspace_id"]
    run_tag = uuid.uuid4().hex[:10]
    runtime = stack.activities.sandbox._docker  # the worker's DockerRuntime (instrumented below)
    probe = DockerProbe()
    probe.install(runtime)

    raw: list[RawCycle] = []
    ours: list[PlatformCycle] = []
    raw_kwargs: dict[str, Any] | None = None
    notes: list[str] = []

    def kwargs_for_raw(resources: dict[str, Any]) -> dict[str, Any]:
        spec = ContainerSpec(
            sandbox_id=RAW_SANDBOX_ID,
            workspace_id=wid,
            name="bench-raw",
            image=stack.settings.sandbox_image,
            memory_mb=int(resources["memory_mb"]),
            cpu_cores=float(resources["cpu_cores"]),
            max_processes=int(resources["max_processes"]),
        )
        # The platform's own create kwargs (same image, env and HostConfig); only the name and
        # labels differ — without `aintandem.managed`, no platform sweep ever touches them.
        kw = runtime._create_kwargs(spec)
        kw["labels"] = {RAW_LABEL: run_tag}
        return kw

    def next_raw_kwargs() -> dict[str, Any]:
        assert raw_kwargs is not None
        return {**raw_kwargs, "name": f"aintandem-bench-raw-{run_tag}-{uuid.uuid4().hex[:6]}"}

    try:
        ctx.log(
            f"{NAME}: warm-up ({warmup} of each), then {n} sequential rounds "
            f"(poll every {ctx.args.poll_ms} ms, health interval "
            f"{stack.settings.sandbox_health_interval_seconds:g} s)"
        )
        i = retries = 0
        checked_host_config = False
        while i < warmup + n:
            platform_first = i % 2 == 1
            try:
                if platform_first or raw_kwargs is None:
                    cycle = await platform_cycle(http, acc.headers, wid, interval)
                    if raw_kwargs is None:
                        detail = (
                            await http.get(f"/sandboxes/{cycle.sandbox_id}", headers=acc.headers)
                        ).json()["data"]
                        raw_kwargs = kwargs_for_raw(detail["resources"])
                    rc = await asyncio.to_thread(raw_cycle, dk, next_raw_kwargs())
                else:
                    rc = await asyncio.to_thread(raw_cycle, dk, next_raw_kwargs())
                    cycle = await platform_cycle(http, acc.headers, wid, interval)
            except SandboxWentToError as exc:
                # Typically another platform on the same engine sweeping "orphans" (every
                # aintandem.managed container its own database does not know) mid-round.
                retries += 1
                notes.append(f"round {i + 1} repeated: {exc}")
                ctx.log(f"  round {i + 1} disturbed ({exc}); repeating it")
                if retries > max(3, n // 2):
                    raise
                continue
            if not checked_host_config:
                try:
                    some_raw = dk.containers.list(
                        all=True, filters={"label": f"{RAW_LABEL}={run_tag}"}
                    )
                    diff = _host_config_diff(dk, f"aintandem-{cycle.sandbox_id}", some_raw[0].id)
                    checked_host_config = True
                except docker.errors.NotFound:
                    diff = {}
                if diff:
                    notes.append(f"HostConfig differs between platform and raw: {diff}")
                    ctx.log(f"WARNING: HostConfig differs: {diff}")
            if i >= warmup:
                raw.append(rc)
                ours.append(cycle)
                ctx.log(
                    f"  round {i - warmup + 1:>2}/{n}: ours create→running "
                    f"{cycle.create_running_ms:7.1f} ms, stop {cycle.stop_ms:7.1f} ms | raw "
                    f"create+start+health {rc.ready_ms:6.1f} ms, stop {rc.stop_ms:6.1f} ms"
                )
            i += 1
        profile = await _profile(stack, probe, ours)
    finally:
        probe.uninstall()
        await _cleanup(ctx, stack, acc.headers, wid, run_tag)

    return _results(ours, raw, profile, n, stack, ctx, notes)


async def _profile(
    stack: Any, probe: DockerProbe, ours: list[PlatformCycle]
) -> dict[str, list[float]]:
    """Per-sandbox breakdowns (ms) of both phases, gathered into lists per part."""
    out: dict[str, list[float]] = defaultdict(list)
    for c in ours:
        tl = await timeline(stack.temporal, sandbox_workflow_id(c.sandbox_id))
        w = c.wall
        if tl.started is not None:
            out["create: POST → workflow started"].append((tl.started - w["create_sent"]) * 1000)
        for phase, begin, end in (
            ("create", w["create_sent"], w["running_seen"]),
            ("stop", w["stop_sent"], w["stopped_seen"]),
        ):
            parts = breakdown(tl, begin, end) | workflow_task_stats(tl, begin, end)
            for part, ms in parts.items():
                out[f"{phase}: {part}"].append(ms)
            # Inside the Docker activities (worker-side wrappers).
            for method in (
                "ensure_container",
                "start",
                "health",
                "_exec_exit_code",
                "inspect",
                "stop",
            ):
                total, count = probe.total(c.sandbox_id, method, begin, end)
                if count:
                    out[f"{phase}: docker {method}"].append(total)
                    out[f"{phase}: docker {method} calls"].append(float(count))
            # The Docker activity as the worker ran it vs as Temporal recorded it: with eager
            # dispatch "started" is stamped when scheduled, so the thread-pool hand-off shows
            # as the gap before the first Docker call; the completion report as the gap after.
            act_name = "sandbox_start" if phase == "create" else "sandbox_stop"
            for act in tl.activities:
                if act.name != act_name or not begin <= act.scheduled <= end:
                    continue
                inside = [
                    (t, t + ms / 1000)
                    for _, t, ms in probe.calls.get(c.sandbox_id, [])
                    if act.scheduled <= t <= (act.completed or end)
                ]
                if inside and act.started is not None and act.completed is not None:
                    out[f"{phase}: {act_name} hand-off to thread"].append(
                        (inside[0][0] - act.started) * 1000
                    )
                    out[f"{phase}: {act_name} completion report"].append(
                        (act.completed - max(e for _, e in inside)) * 1000
                    )
        out["create: POST /sandboxes response"].append(c.post_create_ms)
        out["stop: POST /stop response"].append(c.post_stop_ms)
        out["GET /sandboxes/{id} (poll)"].extend(c.get_ms)
        out["create: polls"].append(float(c.polls_running))
        out["stop: polls"].append(float(c.polls_stopped))
    return out


async def _cleanup(
    ctx: BenchContext, stack: Any, headers: dict[str, str], wid: str, run_tag: str
) -> None:
    """DELETE the workspace through the API (its sandboxes go with it), then make sure: no
    sandbox of this workspace (disk and network included) and no container of this run's raw
    baseline is left."""
    from tests.cleanup import remove_installation_sandboxes

    try:
        r = await stack.http.delete(f"/workspaces/{wid}", headers=headers, timeout=300)
        if r.status_code != 204:
            ctx.log(f"cleanup: DELETE /workspaces/{wid} answered {r.status_code}: {r.text[:200]}")
    except Exception as exc:
        ctx.log(f"cleanup: DELETE /workspaces/{wid} failed: {exc!r}")
    try:
        done = await asyncio.to_thread(
            remove_installation_sandboxes,
            stack.settings.installation_id,
            workspace_ids=[wid],
            client=stack.docker,
            check=False,
        )
        if done.removed:
            ctx.log(f"cleanup: {len(done.removed)} sandboxes were still there after the DELETE")
        if done.leftovers:
            ctx.log(f"cleanup: left on the machine: {done.leftovers}")
    except Exception as exc:
        ctx.log(f"cleanup: removing the workspace's sandboxes failed: {exc!r}")
    # The raw baseline is not the platform's: plain containers (and the named volume their
    # kwargs mount) on the default bridge, no disk, no workspace network.
    for c in stack.docker.containers.list(all=True, filters={"label": f"{RAW_LABEL}={run_tag}"}):
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            c.remove(force=True, v=True)
    with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
        stack.docker.api.remove_volume(workspace_volume(RAW_SANDBOX_ID), force=True)


def _p(values: list[float], q: float) -> float | None:
    return stats.percentile(values, q) if values else None


def _results(
    ours: list[PlatformCycle],
    raw: list[RawCycle],
    profile: dict[str, list[float]],
    n: int,
    stack: Any,
    ctx: BenchContext,
    notes: list[str],
) -> list[Result]:
    created = [c.create_running_ms for c in ours]
    stopped = [c.stop_ms for c in ours]
    raw_ready = [r.ready_ms for r in raw]
    raw_cs = [r.create_start_ms for r in raw]
    raw_stop = [r.stop_ms for r in raw]
    samples = {
        "ours_create_running_ms": created,
        "ours_stop_ms": stopped,
        "raw_create_start_health_ms": raw_ready,
        "raw_create_start_ms": raw_cs,
        "raw_stop_ms": raw_stop,
        "raw_create_ms": [r.create_ms for r in raw],
        "raw_start_ms": [r.start_ms for r in raw],
        "raw_health_ms": [r.health_ms for r in raw],
        "raw_health_attempts": [r.health_attempts for r in raw],
    }
    base = "raw docker-py create+start+health"
    rows = [
        Result(
            NAME,
            "create→running p50 ms",
            _p(created, 50),
            _p(raw_ready, 50),
            GOAL,
            baseline_name=base,
            samples=samples,
        ),
        Result(
            NAME,
            "create→running p95 ms",
            _p(created, 95),
            _p(raw_ready, 95),
            GOAL,
            baseline_name=base,
        ),
        Result(
            NAME,
            "stop p50 ms",
            _p(stopped, 50),
            _p(raw_stop, 50),
            GOAL,
            baseline_name="raw docker-py stop",
        ),
        Result(
            NAME,
            "stop p95 ms",
            _p(stopped, 95),
            _p(raw_stop, 95),
            GOAL,
            baseline_name="raw docker-py stop",
        ),
        Result(
            NAME,
            "create→running p50 vs raw create+start (no health wait)",
            _p(created, 50),
            _p(raw_cs, 50),
            None,
            baseline_name="raw docker-py create+start",
        ),
    ]
    # Profile rows (p50 over the sandboxes; informational). The docker-activity row is compared
    # with the same raw work so the activity's own overhead shows.
    order = [
        ("create: POST /sandboxes response", None),
        ("create: POST → workflow started", None),
        ("create: scheduling", None),
        ("create: workflow tasks", None),
        ("create: workflow task pickup", None),
        ("create: workflow task run", None),
        ("create: first workflow task run", None),
        ("create: queue wait", None),
        ("create: exec:sandbox_record_status", None),
        ("create: exec:sandbox_start", raw_ready),
        ("create: sandbox_start hand-off to thread", None),
        ("create: sandbox_start completion report", None),
        ("create: docker ensure_container", [r.create_ms for r in raw]),
        ("create: docker start", [r.start_ms for r in raw]),
        ("create: docker health", [r.health_ms for r in raw]),
        ("create: docker _exec_exit_code", None),
        ("create: docker inspect", None),
        ("create: tail", None),
        ("GET /sandboxes/{id} (poll)", None),
        ("stop: POST /stop response", None),
        ("stop: scheduling", None),
        ("stop: workflow tasks", None),
        ("stop: workflow task pickup", None),
        ("stop: workflow task run", None),
        ("stop: first workflow task run", None),
        ("stop: queue wait", None),
        ("stop: exec:sandbox_record_status", None),
        ("stop: exec:sandbox_stop", raw_stop),
        ("stop: sandbox_stop hand-off to thread", None),
        ("stop: sandbox_stop completion report", None),
        ("stop: docker stop", raw_stop),
        ("stop: docker inspect", None),
        ("stop: tail", None),
    ]
    for key, baseline in order:
        values = profile.get(key)
        if not values:
            continue
        unit = "count" if key.endswith("tasks") else "ms"
        rows.append(
            Result(
                NAME,
                f"  {key} p50{' ms' if unit == 'ms' else ''}",
                _p(values, 50),
                _p(baseline, 50) if baseline else None,
                None,
                unit=unit,
                note="profile",
                samples={"values": values},
            )
        )
    health_calls = profile.get("create: docker health calls")
    notes += [
        f"N={n} sandboxes sequentially, warm-up {ctx.args.warmup} of each; raw and platform "
        f"rounds alternate",
        f"poll interval {ctx.args.poll_ms} ms (create→running also includes up to one poll "
        f"interval + one GET); health_interval "
        f"{stack.settings.sandbox_health_interval_seconds:g} s",
        f"health execs per platform start: p50 {_p(health_calls, 50) if health_calls else '-'}; "
        f"raw health attempts p50 {_p([float(r.health_attempts) for r in raw], 50)}",
        "profile rows: p50 of each part per sandbox (parts of one phase sum to its total per "
        "sandbox, not across p50s); 'scheduling' = API handling + Temporal RPC + workflow tasks "
        "before each activity; 'tail' = last activity done → poll saw the status",
    ]
    ctx.notes.extend(notes)
    return rows
