#!/usr/bin/env python3
"""AInTandem agent runtime: the process that lives inside every sandbox container.

Standard library only (the image may be a bare Debian root filesystem with just ``python3``).

Subcommands:
  serve    the container's main process (under the container init): logs JSON lines to stdout,
           writes a heartbeat file, exits cleanly on SIGTERM/SIGINT.
  tool     reads ONE JSON request line on stdin ``{"tool": ..., "args": {...}}``, writes ONE JSON
           response on stdout ``{"ok": true, "result": ...}`` or
           ``{"ok": false, "error": {"type": ..., "message": ...}}``. Exit code 0 either way; a
           non-zero exit code means the runtime itself crashed.
  version  prints the runtime version.

Every path a tool receives is relative to the workspace (``AINTANDEM_WORKSPACE``, default
``/workspace``); absolute paths are accepted only inside it, and symlinks are resolved before the
check, so nothing can reach outside (error type ``path_outside_workspace``).
"""

from __future__ import annotations

import base64
import codecs
import contextlib
import json
import os
import selectors
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RUNTIME_VERSION = "0.1.0"

WORKSPACE = Path(os.environ.get("AINTANDEM_WORKSPACE", "/workspace"))
HEARTBEAT_FILE = Path(os.environ.get("AINTANDEM_HEARTBEAT_FILE", "/tmp/aintandem-heartbeat"))
# Heartbeat file refresh and debug log cadence (seconds).
HEARTBEAT_INTERVAL = float(os.environ.get("AINTANDEM_HEARTBEAT_INTERVAL", "10"))
HEARTBEAT_LOG_INTERVAL = float(os.environ.get("AINTANDEM_HEARTBEAT_LOG_INTERVAL", "30"))

MAX_READ_BYTES = 1024 * 1024
MAX_OUTPUT_BYTES = 64 * 1024
MAX_LIST_ENTRIES = 10_000
MAX_COMMAND_TIMEOUT = 3600
DEFAULT_COMMAND_TIMEOUT = 300


# --------------------------------------------------------------------------------------------
# logging


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def log(level: str, message: str, **fields: Any) -> None:
    record = {"timestamp": _now_iso(), "level": level, "message": message, **fields}
    sys.stdout.write(json.dumps(record, separators=(",", ":"), default=str) + "\n")
    sys.stdout.flush()


# --------------------------------------------------------------------------------------------
# serve


def _write_heartbeat(started_at: float) -> None:
    data = {
        "pid": os.getpid(),
        "started_at": started_at,
        "last_heartbeat": time.time(),
        "version": RUNTIME_VERSION,
    }
    tmp = HEARTBEAT_FILE.with_name(HEARTBEAT_FILE.name + ".tmp")
    # Written then renamed so `health` never reads a half-written file.
    tmp.write_text(json.dumps(data))
    os.replace(tmp, HEARTBEAT_FILE)


def serve() -> int:
    started_at = time.time()
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    # Block the signals and wait for them synchronously: no handler races, no threads.
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    try:
        WORKSPACE.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        log("error", "Cannot create workspace", workspace=str(WORKSPACE), error=str(exc))
    log(
        "info",
        "Agent runtime started",
        version=RUNTIME_VERSION,
        pid=os.getpid(),
        workspace=str(WORKSPACE),
        sandbox_id=os.environ.get("AINTANDEM_SANDBOX_ID"),
        python=sys.version.split()[0],
    )
    last_log = time.monotonic()
    while True:
        try:
            _write_heartbeat(started_at)
        except OSError as exc:
            log("warn", "Cannot write heartbeat file", path=str(HEARTBEAT_FILE), error=str(exc))
        if time.monotonic() - last_log >= HEARTBEAT_LOG_INTERVAL:
            last_log = time.monotonic()
            log("debug", "Heartbeat", uptime_seconds=round(time.time() - started_at, 1))
        info = signal.sigtimedwait(stop_signals, HEARTBEAT_INTERVAL)
        if info is not None:
            log(
                "info",
                "Agent runtime stopping",
                signal=signal.Signals(info.si_signo).name,
                uptime_seconds=round(time.time() - started_at, 1),
            )
            with contextlib.suppress(OSError):
                HEARTBEAT_FILE.unlink()
            return 0


# --------------------------------------------------------------------------------------------
# tools


class ToolError(Exception):
    def __init__(self, type_: str, message: str) -> None:
        super().__init__(message)
        self.type = type_
        self.message = message


def _workspace_root() -> Path:
    return WORKSPACE.resolve()


def _resolve(path: Any, *, field: str = "path") -> Path:
    if not isinstance(path, str) or path == "":
        raise ToolError("invalid_arguments", f"'{field}' must be a non-empty string")
    if "\x00" in path:
        raise ToolError("invalid_arguments", f"'{field}' contains a NUL byte")
    root = _workspace_root()
    candidate = Path(path)
    if not candidate.is_absolute():
        candidate = root / candidate
    # resolve() follows every symlink that exists, so a link pointing out is caught too.
    resolved = candidate.resolve()
    if resolved != root and root not in resolved.parents:
        raise ToolError("path_outside_workspace", f"path {path!r} is outside the workspace")
    return resolved


def _rel(path: Path) -> str:
    rel = path.relative_to(_workspace_root()).as_posix()
    return rel if rel else "."


def _arg(args: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
    if name not in args or args[name] is None:
        if default is ...:
            raise ToolError("invalid_arguments", f"missing argument '{name}'")
        return default
    value = args[name]
    # bool is an int subclass: don't let True pass as a size or timeout.
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise ToolError("invalid_arguments", f"argument '{name}' has the wrong type")
    if not isinstance(value, kind):
        raise ToolError("invalid_arguments", f"argument '{name}' has the wrong type")
    return value


def _os_error(exc: OSError, path: str) -> ToolError:
    if isinstance(exc, FileNotFoundError):
        return ToolError("not_found", f"{path!r} does not exist")
    if isinstance(exc, IsADirectoryError):
        return ToolError("is_a_directory", f"{path!r} is a directory")
    if isinstance(exc, NotADirectoryError):
        return ToolError("not_a_directory", f"{path!r} is not a directory")
    if isinstance(exc, PermissionError):
        return ToolError("permission_denied", f"permission denied: {path!r}")
    return ToolError("io_error", f"{path!r}: {exc.strerror or exc}")


def tool_read_file(args: dict[str, Any]) -> dict[str, Any]:
    raw = _arg(args, "path", str)
    max_bytes = _arg(args, "max_bytes", int, MAX_READ_BYTES)
    if max_bytes < 0:
        raise ToolError("invalid_arguments", "'max_bytes' must be >= 0")
    path = _resolve(raw)
    try:
        if path.is_dir():
            raise IsADirectoryError
        size = path.stat().st_size
        with path.open("rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise _os_error(exc, raw) from exc
    truncated = len(data) > max_bytes
    data = data[:max_bytes]
    try:
        # final=False when truncated: a multi-byte character cut at the limit is not an error.
        content = codecs.getincrementaldecoder("utf-8")().decode(data, final=not truncated)
        encoding = "utf-8"
    except UnicodeDecodeError:
        content = base64.b64encode(data).decode("ascii")
        encoding = "base64"
    return {
        "path": _rel(path),
        "content": content,
        "encoding": encoding,
        "size": size,
        "truncated": truncated,
    }


def tool_write_file(args: dict[str, Any]) -> dict[str, Any]:
    raw = _arg(args, "path", str)
    content = _arg(args, "content", str)
    append = _arg(args, "append", bool, False)
    encoding = _arg(args, "encoding", str, "utf-8")
    if encoding == "utf-8":
        data = content.encode("utf-8")
    elif encoding == "base64":
        try:
            data = base64.b64decode(content, validate=True)
        except ValueError as exc:
            raise ToolError("invalid_arguments", "'content' is not valid base64") from exc
    else:
        raise ToolError("invalid_arguments", "'encoding' must be 'utf-8' or 'base64'")
    path = _resolve(raw)
    if path == _workspace_root():
        raise ToolError("is_a_directory", f"{raw!r} is a directory")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("ab" if append else "wb") as fh:
            fh.write(data)
        size = path.stat().st_size
    except OSError as exc:
        raise _os_error(exc, raw) from exc
    return {"path": _rel(path), "bytes_written": len(data), "size": size, "appended": append}


def tool_list_files(args: dict[str, Any]) -> dict[str, Any]:
    raw = _arg(args, "path", str, ".")
    recursive = _arg(args, "recursive", bool, False)
    base = _resolve(raw)
    entries: list[dict[str, Any]] = []
    truncated = False
    stack = [base]
    try:
        if not base.is_dir():
            raise NotADirectoryError if base.exists() else FileNotFoundError
        while stack and not truncated:
            current = stack.pop()
            with os.scandir(current) as it:
                children = sorted(it, key=lambda e: e.name)
            for entry in children:
                if len(entries) >= MAX_LIST_ENTRIES:
                    truncated = True
                    break
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                is_dir = entry.is_dir(follow_symlinks=False)
                child = current / entry.name
                entries.append(
                    {
                        "path": _rel(child),
                        "type": "dir" if is_dir else "file",
                        "size": 0 if is_dir else st.st_size,
                    }
                )
                # Symlinked directories are not followed: they may lead out of the workspace.
                if recursive and is_dir:
                    stack.append(child)
    except OSError as exc:
        raise _os_error(exc, raw) from exc
    entries.sort(key=lambda e: e["path"])
    return {"path": _rel(base), "entries": entries, "truncated": truncated}


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _oom_kill_count() -> int | None:
    # The container's own memory cgroup (mounted read-only inside it): v1 oom_control, v2 events.
    for path in ("/sys/fs/cgroup/memory/memory.oom_control", "/sys/fs/cgroup/memory.events"):
        try:
            for line in Path(path).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            continue
    return None


def tool_run_command(args: dict[str, Any]) -> dict[str, Any]:
    command = _arg(args, "command", str)
    timeout = _arg(args, "timeout_seconds", (int, float), DEFAULT_COMMAND_TIMEOUT)
    if not 0 < timeout <= MAX_COMMAND_TIMEOUT:
        raise ToolError(
            "invalid_arguments", f"'timeout_seconds' must be in (0, {MAX_COMMAND_TIMEOUT}]"
        )
    cwd = _resolve(_arg(args, "cwd", str, "."), field="cwd")
    if not cwd.is_dir():
        raise ToolError("not_a_directory", f"cwd {args.get('cwd')!r} is not a directory")
    env = os.environ.copy()
    extra_env = _arg(args, "env", dict, {})
    for key, value in extra_env.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ToolError("invalid_arguments", "'env' must map strings to strings")
        env[key] = value

    oom_before = _oom_kill_count()
    started = time.monotonic()
    try:
        # Own session = own process group, so a timeout kills the command and its children.
        proc = subprocess.Popen(
            ["/bin/sh", "-c", command],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        raise ToolError("spawn_failed", f"cannot start /bin/sh: {exc}") from exc

    assert proc.stdout is not None and proc.stderr is not None
    out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
    buffers = {out_fd: bytearray(), err_fd: bytearray()}
    totals = dict.fromkeys(buffers, 0)
    sel = selectors.DefaultSelector()
    for fd in buffers:
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ)
    deadline = started + timeout
    timed_out = False
    exited_at: float | None = None
    while sel.get_map():
        now = time.monotonic()
        if now >= deadline:
            timed_out = proc.poll() is None
            _kill_group(proc)
            break
        if proc.poll() is not None:
            exited_at = exited_at or now
            # Background children may keep the pipes open forever: stop reading shortly after
            # the shell itself has exited.
            if now - exited_at > 0.5:
                break
        for key, _ in sel.select(timeout=min(0.1, deadline - now)):
            fd = key.fd
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                continue
            if not chunk:
                sel.unregister(fd)
                continue
            totals[fd] += len(chunk)
            room = MAX_OUTPUT_BYTES - len(buffers[fd])
            if room > 0:
                buffers[fd] += chunk[:room]
    sel.close()
    try:
        returncode = proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        returncode = proc.wait()
    proc.stdout.close()
    proc.stderr.close()
    stdout_b, stderr_b = buffers[out_fd], buffers[err_fd]
    signal_name = None
    exit_code = returncode
    if returncode < 0:
        # Shell convention: killed by signal N -> 128 + N (SIGKILL -> 137).
        signal_name = signal.Signals(-returncode).name
        exit_code = 128 - returncode
    oom_after = _oom_kill_count()
    # The kernel's OOM killer picked a process of this command: the container's memory limit
    # was hit (the exit code alone cannot tell it from any other SIGKILL).
    oom_killed = (
        exit_code == 128 + signal.SIGKILL
        and oom_before is not None
        and oom_after is not None
        and oom_after > oom_before
    )
    return {
        "exit_code": exit_code,
        "signal": signal_name,
        "oom_killed": oom_killed,
        "stdout": stdout_b.decode("utf-8", errors="replace"),
        "stderr": stderr_b.decode("utf-8", errors="replace"),
        "stdout_truncated": totals[out_fd] > len(stdout_b),
        "stderr_truncated": totals[err_fd] > len(stderr_b),
        "timed_out": timed_out,
        "duration_ms": round((time.monotonic() - started) * 1000, 1),
    }


def _pid1_uptime() -> float | None:
    # Fallback when serve's heartbeat is missing: age of the container's PID 1 (its init).
    try:
        fields = Path("/proc/1/stat").read_text().rsplit(")", 1)[1].split()
        start_ticks = int(fields[19])
        boot_uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, boot_uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


def tool_health(args: dict[str, Any]) -> dict[str, Any]:
    now = time.time()
    result: dict[str, Any] = {
        "status": "unknown",
        "uptime_seconds": None,
        "workspace": str(WORKSPACE),
        "last_heartbeat": None,
        "version": RUNTIME_VERSION,
        # The worker runs this with `python3 -I`: no user site, no PYTHON* variables.
        "isolated": bool(sys.flags.isolated),
    }
    try:
        beat = json.loads(HEARTBEAT_FILE.read_text())
    except (OSError, ValueError):
        beat = None
    if beat is not None:
        result["uptime_seconds"] = round(max(0.0, now - float(beat["started_at"])), 1)
        last = float(beat["last_heartbeat"])
        result["last_heartbeat"] = (
            datetime.fromtimestamp(last, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        )
        pid_alive = Path(f"/proc/{int(beat['pid'])}").exists()
        fresh = now - last <= max(3 * HEARTBEAT_INTERVAL, 5.0)
        result["status"] = "healthy" if pid_alive and fresh else "unhealthy"
        if result["status"] != "healthy":
            result["reason"] = "agent process gone" if not pid_alive else "heartbeat is stale"
    else:
        uptime = _pid1_uptime()
        result["uptime_seconds"] = None if uptime is None else round(uptime, 1)
        result["status"] = "unhealthy"
        result["reason"] = "no heartbeat (agent process not running)"
    if not WORKSPACE.is_dir():
        result["status"] = "unhealthy"
        result["reason"] = "workspace missing"
    return result


TOOLS = {
    "read_file": tool_read_file,
    "write_file": tool_write_file,
    "list_files": tool_list_files,
    "run_command": tool_run_command,
    "health": tool_health,
}


def handle(request: Any) -> dict[str, Any]:
    try:
        if not isinstance(request, dict):
            raise ToolError("invalid_request", "request must be a JSON object")
        name = request.get("tool")
        args = request.get("args") or {}
        if not isinstance(args, dict):
            raise ToolError("invalid_request", "'args' must be a JSON object")
        func = TOOLS.get(name) if isinstance(name, str) else None
        if func is None:
            raise ToolError("unknown_tool", f"unknown tool {name!r}; known: {sorted(TOOLS)}")
        return {"ok": True, "result": func(args)}
    except ToolError as exc:
        return {"ok": False, "error": {"type": exc.type, "message": exc.message}}


def tool_main() -> int:
    # One line, not read-to-EOF: the request never contains a raw newline (JSON escapes them),
    # so the caller need not half-close stdin, which not every Docker transport supports.
    raw = sys.stdin.buffer.readline()
    try:
        request = json.loads(raw)
    except ValueError as exc:
        response: dict[str, Any] = {
            "ok": False,
            "error": {"type": "invalid_request", "message": f"request is not valid JSON: {exc}"},
        }
    else:
        response = handle(request)
    sys.stdout.write(json.dumps(response, ensure_ascii=False) + "\n")
    sys.stdout.flush()
    return 0


def main(argv: list[str]) -> int:
    command = argv[1] if len(argv) > 1 else "serve"
    if command == "serve":
        return serve()
    if command == "tool":
        return tool_main()
    if command == "version":
        print(RUNTIME_VERSION)
        return 0
    sys.stderr.write(f"usage: {argv[0]} serve|tool|version\n")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
