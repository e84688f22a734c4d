"""What the numbers were measured on: cores, memory, CPU model, Python, Docker, date."""

from __future__ import annotations

import os
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except (OSError, ValueError):
        pass
    return None


def _docker_version() -> str:
    try:
        import docker

        client = docker.from_env(timeout=5)
        try:
            v = client.version()
            return f"{v.get('Version', '?')} (API {v.get('ApiVersion', '?')})"
        finally:
            client.close()
    except Exception as exc:
        return f"unavailable ({type(exc).__name__})"


def machine_info() -> dict[str, Any]:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "nproc": usable,
        "memory_gib": _memory_gib(),
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "docker": _docker_version(),
        "kernel": platform.release(),
    }


def describe(info: dict[str, Any]) -> str:
    return (
        f"{info['date']}  nproc={info['nproc']}  memory={info['memory_gib']} GiB  "
        f"cpu={info['cpu_model']}  python={info['python']}  docker={info['docker']}"
    )
