"""The offline provider: a real model, with no key and no network.

An embedded model (`domain.offline_models`: Qwen2.5-Coder-0.5B-Instruct by default, chosen with
`AINTANDEM_OFFLINE_MODEL`, installed by `aintandem offline-model install`) served by llama.cpp's
own HTTP server through `xllamacpp`, on 127.0.0.1 and a free port, with an API key of its own
(random per start) so no other local process can use it. It speaks OpenAI Chat
Completions (`/v1/chat/completions`) and Anthropic Messages (`/v1/messages`), so `activities.llm`
reaches it with the same SDKs as the hosted providers.

The server runs in a child process, not in the worker: `xllamacpp.Server` has no stop (its
threads live as long as the process), a native crash must not take the worker with it, and a
child can be stopped and accounted for (RSS) on its own. The child lives exactly as long as its
stdin pipe: when the worker stops it, or dies, the child exits.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import importlib.util
import json
import logging
import os
import secrets
import select
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from config.settings import get_settings
from domain.llm import LLMProviderConfig, offline_provider
from domain.offline_models import OfflineModel

__all__ = [
    "OfflineModelError",
    "OfflineModelNotInstalled",
    "OfflineModelServer",
    "available",
    "model_file",
    "model_path",
    "models_dir",
]

log = logging.getLogger("aintandem.offline_llm")

DEFAULT_CTX_SIZE = 4096  # tokens per slot: plenty for the short prompts small models need
STDERR_LINES_KEPT = 200


class OfflineModelError(RuntimeError):
    """The offline model server could not start or stopped answering."""


class OfflineModelNotInstalled(OfflineModelError):
    """xllamacpp or the model package is missing (see scripts/llm-deps.sh)."""


def models_dir() -> Path:
    return get_settings().resolved_models_dir()


def model_file(model: OfflineModel) -> Path:
    return models_dir() / model.file


def selected_model() -> OfflineModel:
    """`AINTANDEM_OFFLINE_MODEL`'s model, else the default."""
    return get_settings().offline_model_spec()


def model_path(model: OfflineModel | None = None) -> Path:
    """The installed GGUF file of `model` (default: the selected one)."""
    model = model or selected_model()
    path = model_file(model)
    if not path.is_file():
        raise OfflineModelNotInstalled(
            f"{model.name} is not installed ({path} is missing): run "
            f"`aintandem offline-model install {model.name}` (scripts/llm-deps.sh does)"
        )
    return path


def available(model: OfflineModel | None = None, path: Path | None = None) -> bool:
    """Whether this environment can run the offline model (nothing is loaded)."""
    try:
        if path is None:
            model_path(model)
        elif not path.is_file():
            return False
    except OfflineModelNotInstalled:
        return False
    return importlib.util.find_spec("xllamacpp") is not None


class OfflineModelServer:
    """A llama.cpp server for the offline model, in a child process.

    `start()` is idempotent (and restarts a child that died); `stop()` ends the child and waits
    for it. Blocking: call from a thread (`asyncio.to_thread`) when on an event loop.
    """

    def __init__(
        self,
        *,
        model: Path | str | None = None,
        spec: OfflineModel | None = None,
        ctx_size: int = DEFAULT_CTX_SIZE,
        parallel: int = 1,
        threads: int | None = None,
        start_timeout: float = 120.0,
    ) -> None:
        self.spec = spec or selected_model()
        self._model = Path(model) if model else None
        self.ctx_size = ctx_size
        self.parallel = parallel
        self.threads = threads
        self.start_timeout = start_timeout
        self.model_name = self.spec.name
        # The server's key: nothing else on this machine may use the model (llama.cpp warns
        # "no API key is set and CORS allows all origins" without one).
        self.api_key = secrets.token_urlsafe(24)
        self.base_url: str | None = None  # http://127.0.0.1:<port>, without /v1
        self.load_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: collections.deque[str] = collections.deque(maxlen=STDERR_LINES_KEPT)
        self._lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.running and self._proc else None

    def start(self) -> str:
        """Start the server unless it runs; return its base URL (no /v1)."""
        with self._lock:
            if self.running and self.base_url:
                return self.base_url
            self._stop_locked(timeout=5.0)
            return self._start_locked()

    def _start_locked(self) -> str:
        model = self._model or model_path(self.spec)
        if not model.is_file():
            raise OfflineModelNotInstalled(f"model file {model} does not exist")
        if importlib.util.find_spec("xllamacpp") is None:
            raise OfflineModelNotInstalled(
                "xllamacpp is not installed: `pip install xllamacpp==2026.10.11549`"
            )
        root = str(Path(__file__).resolve().parents[1])
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p),
            "AINTANDEM_OFFLINE_API_KEY": self.api_key,
        }
        cmd = [
            sys.executable,
            "-m",
            "activities.offline_llm",
            "--model",
            str(model),
            "--alias",
            self.model_name,
            "--ctx-size",
            str(self.ctx_size),
            "--parallel",
            str(self.parallel),
        ]
        # The key travels in the environment, not argv (other users can read argv in ps).
        if self.threads:
            cmd += ["--threads", str(self.threads)]
        started = time.perf_counter()
        self._stderr.clear()
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=root,
        )
        self._proc = proc
        assert proc.stderr is not None and proc.stdout is not None
        drainer = threading.Thread(
            target=self._drain,
            args=(proc.stderr,),
            daemon=True,
            name=f"offline-llm-stderr-{proc.pid}",
        )
        drainer.start()
        line = _read_line(proc, self.start_timeout)
        try:
            ready = json.loads(line)
            base_url = str(ready["base_url"]).rstrip("/")
        except (ValueError, KeyError, TypeError):
            self._stop_locked(timeout=5.0)
            drainer.join(2.0)  # the child's last words explain the failure
            tail = "\n".join(list(self._stderr)[-20:])
            raise OfflineModelError(
                f"offline model server did not start (exit {proc.returncode}): {tail}"
            ) from None
        self.base_url = base_url
        self.load_seconds = time.perf_counter() - started
        log.info(
            "offline model %s serving at %s (pid %d, ready in %.2f s)",
            self.model_name,
            base_url,
            proc.pid,
            self.load_seconds,
        )
        return base_url

    def stop(self, timeout: float = 10.0) -> None:
        """End the child (closing its stdin asks it to exit) and wait for it."""
        with self._lock:
            self._stop_locked(timeout)

    def _stop_locked(self, timeout: float) -> None:
        proc, self._proc, self.base_url = self._proc, None, None
        if proc is None:
            return
        if proc.stdin:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if proc.stdout:
            proc.stdout.close()

    def _drain(self, stream: object) -> None:
        for raw in iter(stream.readline, b""):  # type: ignore[attr-defined]
            text = raw.decode(errors="replace").rstrip()
            self._stderr.append(text)
            log.debug("%s", text)
        with contextlib.suppress(OSError):
            stream.close()  # type: ignore[attr-defined]

    def __enter__(self) -> OfflineModelServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- state -------------------------------------------------------------------------------------

    def healthy(self, timeout: float = 2.0) -> bool:  # /health needs no key
        """The child runs and llama.cpp's /health says ok (model loaded)."""
        base = self.base_url
        if not self.running or not base:
            return False
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=timeout) as resp:
                return bool(resp.status == 200 and json.load(resp).get("status") == "ok")
        except (OSError, ValueError, urllib.error.URLError):
            return False

    def rss_bytes(self) -> int | None:
        """Resident memory of the server process (Linux), None when not running."""
        pid = self.pid
        if pid is None:
            return None
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except (OSError, ValueError):
            return None
        return None

    def provider_config(
        self, *, max_tokens: int = 512, temperature: float | None = 0.0
    ) -> LLMProviderConfig:
        """The config a workflow passes for this model (`domain.llm.offline_provider`)."""
        return offline_provider(max_tokens=max_tokens, temperature=temperature)


def _read_line(proc: subprocess.Popen[bytes], timeout: float) -> bytes:
    """The child's ready line, or b"" when it exits or stays silent past `timeout`."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([proc.stdout], [], [], min(remaining, 0.5))
        if ready:
            return proc.stdout.readline()
        if proc.poll() is not None:
            return b""
    return b""


# -- the child process ----------------------------------------------------------------------


def _serve(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve the offline model on 127.0.0.1")
    parser.add_argument("--model", required=True)
    parser.add_argument("--alias", default="offline")
    parser.add_argument("--ctx-size", type=int, default=DEFAULT_CTX_SIZE)
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)

    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = args.model
    params.model_alias = {args.alias}
    params.hostnames = ["127.0.0.1"]
    if key := os.environ.get("AINTANDEM_OFFLINE_API_KEY"):
        params.api_keys = [key]
    params.port = 0  # the OS picks a free port; listening_address tells which
    params.n_parallel = args.parallel
    params.n_ctx = args.ctx_size * args.parallel  # llama.cpp splits n_ctx across the slots
    if args.threads:
        params.cpuparams.n_threads = args.threads
        params.cpuparams_batch.n_threads = args.threads
    server = xllamacpp.Server(params)
    sys.stdout.write(json.dumps({"base_url": server.listening_address}) + "\n")
    sys.stdout.flush()
    # Serve until the parent closes our stdin, which it also does by dying.
    with contextlib.suppress(KeyboardInterrupt):
        while sys.stdin.buffer.read(65536):
            pass
    # Skip the server's slow native teardown: the process is ending anyway.
    os._exit(0)


if __name__ == "__main__":
    _serve()
