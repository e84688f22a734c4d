"""A real `aintandem up` in a subprocess (own data dir, free ports): what the e2e tests and the
SDK suites drive over HTTP, exactly as a user's client would."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A port that is free now and that the kernel never hands out on its own: below the
    ephemeral range, so the Temporal server's own random ports (and every other client
    socket) cannot take it between this choice and the moment `up` binds it."""
    low, _ = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(20000, max(20001, min(low, 32768)))
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


class Stack:
    def __init__(self, data_dir: Path, **extra_env: str) -> None:
        self.env = {
            **os.environ,
            "AINTANDEM_DATA_DIR": str(data_dir),
            "AINTANDEM_API_PORT": str(free_port()),
            "AINTANDEM_TEMPORAL_PORT": str(free_port()),
            "AINTANDEM_TEMPORAL_UI_PORT": str(free_port()),
            "AINTANDEM_WORKER_METRICS_PORT": str(free_port()),
        }
        self.env.pop("AINTANDEM_DATABASE_URL", None)
        self.env.pop("AINTANDEM_TEMPORAL_ADDRESS", None)
        self.env.pop("AINTANDEM_FORWARDED_ALLOW_IPS", None)  # trust no proxy unless a test says
        self.env.update(extra_env)
        self.base = f"http://127.0.0.1:{self.env['AINTANDEM_API_PORT']}"
        self.log = data_dir / "up.out"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def api_url(self) -> str:
        return f"{self.base}/api/v1"

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "cli.main", "up", "--no-docker"],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            if "AInTandem is up" in self.log.read_text()[offset:]:
                return
            time.sleep(0.3)
        raise AssertionError(f"stack did not come up:\n{self.log.read_text()}")

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        return self.proc.wait(60)

    def remove_sandboxes(self) -> int:
        """Remove the sandboxes of this stack's installation, disks and workspace networks
        included (tests/cleanup.py): `up` leaves sandboxes running when it stops (by design),
        and a suite's last teardown must not leave them on the machine. Fails if anything of
        the installation is left. Returns how many sandboxes it removed."""
        from config.settings import Settings
        from tests.cleanup import remove_installation_sandboxes

        installation = Settings(  # what `up` computes: its database is data_dir's SQLite
            _env_file=None, data_dir=Path(self.env["AINTANDEM_DATA_DIR"]), database_url=""
        ).installation_id
        done = remove_installation_sandboxes(
            installation, disk_root=self.env.get("AINTANDEM_SANDBOX_DISK_DIR") or None
        )
        return len(done.removed)
