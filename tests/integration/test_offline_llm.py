"""The offline provider for real: an embedded model on llama.cpp (xllamacpp) in a child process,
called through `activities.llm.complete` with both the OpenAI and the Anthropic SDK. These
tests need a model, not a good one: they run the tiny SmolLM2-135M (the default model's quality
is tested in test_offline_structured.py)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.llm import LLMActivities, complete
from activities.offline_llm import (
    OfflineModelError,
    OfflineModelNotInstalled,
    OfflineModelServer,
    available,
)
from domain.egress import HostAllowList, ProviderAccess
from domain.llm import AgentTurnRequest, ChatMessage, LLMProviderConfig
from domain.offline_models import SMOLLM2_135M, OfflineModel

MODEL = SMOLLM2_135M
MODEL_NAME = MODEL.name
# The server is the worker's own on loopback: reaching it by URL is an operator's choice.
LOOPBACK = ProviderAccess(hosts=HostAllowList.parse(["127.0.0.1"]))

ROOT = Path(__file__).resolve().parents[2]
MAX_TOKENS = 12
QUESTION = [ChatMessage("user", "What is the capital of France? Answer in one word.")]


def serving(model: OfflineModel) -> Iterator[OfflineModelServer]:
    """A started server of `model` for a module's tests (installed by scripts/llm-deps.sh)."""
    if not available(model):
        pytest.fail(f"{model.name} is not installed: run scripts/llm-deps.sh")
    srv = OfflineModelServer(spec=model)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def server() -> Iterator[OfflineModelServer]:
    yield from serving(MODEL)


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie (exited, not yet reaped by its parent) no longer serves anything either.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"


def refused(base_url: str) -> bool:
    parts = urlsplit(base_url)
    try:
        socket.create_connection((parts.hostname, parts.port), timeout=1).close()
    except OSError:
        return True
    return False


def request(cfg: LLMProviderConfig) -> AgentTurnRequest:
    return AgentTurnRequest(
        provider=cfg, system_prompt="You are a concise assistant.", messages=QUESTION
    )


async def test_openai_protocol(server: OfflineModelServer) -> None:
    assert server.base_url
    # As a workflow passes it (the worker supplies the URL), and as an explicit OpenAI endpoint.
    offline = LLMProviderConfig(
        name="offline",
        api_key=None,
        base_url=None,
        model=MODEL_NAME,
        temperature=0.0,
        max_tokens=MAX_TOKENS,
    )
    explicit = LLMProviderConfig(
        name="openai",
        api_key=server.api_key,
        base_url=f"{server.base_url}/v1",
        model=MODEL_NAME,
        temperature=0.0,
        max_tokens=MAX_TOKENS,
    )
    first = await complete(
        request(offline), offline_base_url=server.base_url, offline_key=server.api_key
    )
    second = await complete(request(explicit), access=LOOPBACK)

    assert first.content.strip() and first.content == second.content  # deterministic at 0
    assert first.provider == "offline" and second.provider == "openai"
    assert first.model == MODEL_NAME
    assert first.input_tokens > 10 and 0 < first.output_tokens <= MAX_TOKENS
    assert (first.input_tokens, first.output_tokens) == (second.input_tokens, second.output_tokens)
    assert first.finish_reason in ("stop", "length") and first.tool_calls == []


async def test_anthropic_protocol(server: OfflineModelServer) -> None:
    assert server.base_url
    # The Anthropic SDK appends /v1/messages to the root URL.
    cfg = LLMProviderConfig(
        name="claude",
        api_key=server.api_key,
        base_url=server.base_url,
        model=MODEL_NAME,
        temperature=0.0,
        max_tokens=MAX_TOKENS,
    )
    first = await complete(request(cfg), access=LOOPBACK)
    second = await complete(request(cfg), access=LOOPBACK)

    assert first.content.strip() and first.content == second.content
    # The second prompt is served from llama.cpp's prompt cache: still counted as input.
    assert first.input_tokens > 10 and first.input_tokens == second.input_tokens
    assert 0 < first.output_tokens <= MAX_TOKENS
    assert first.finish_reason in ("stop", "length") and first.provider == "claude"


async def test_activity_uses_the_workers_server(server: OfflineModelServer) -> None:
    acts = LLMActivities(offline=server)
    pid = server.pid
    result = await ActivityEnvironment().run(
        acts.complete, request(server.provider_config(max_tokens=MAX_TOKENS))
    )
    assert result.content.strip() and result.provider == "offline"
    assert server.pid == pid  # start() found it running
    await acts.aclose()
    assert server.healthy()  # the activities do not own the server


def test_lifecycle_health_memory_and_stop() -> None:
    srv = OfflineModelServer(spec=MODEL, ctx_size=1024)
    assert not srv.healthy() and srv.rss_bytes() is None
    base_url = srv.start()
    pid = srv.pid
    assert pid is not None
    try:
        assert srv.start() == base_url and srv.pid == pid  # idempotent
        assert srv.healthy()
        assert srv.load_seconds is not None and srv.load_seconds < 60
        rss = srv.rss_bytes()
        assert rss is not None and 50 * 2**20 < rss < 1024 * 2**20
        assert urlsplit(base_url).hostname == "127.0.0.1"
    finally:
        srv.stop()
    assert gone(pid) and refused(base_url)
    assert not srv.running and srv.base_url is None and not srv.healthy()
    srv.stop()  # stopping twice is fine


def test_a_broken_model_fails_clearly(tmp_path: Path) -> None:
    bogus = tmp_path / "broken.gguf"
    bogus.write_bytes(b"GGUF" + bytes(4096))
    srv = OfflineModelServer(model=bogus)
    with pytest.raises(OfflineModelError, match="did not start"):
        srv.start()
    assert not srv.running and srv.pid is None
    with pytest.raises(OfflineModelNotInstalled):
        OfflineModelServer(model=tmp_path / "missing.gguf").start()


def test_server_dies_with_its_parent() -> None:
    """A SIGKILLed worker leaves no model server behind: the child exits on stdin EOF."""
    code = (
        "from activities.offline_llm import OfflineModelServer\n"
        "from domain.offline_models import SMOLLM2_135M\n"
        "s = OfflineModelServer(spec=SMOLLM2_135M, ctx_size=512); s.start()\n"
        "print(s.pid, flush=True)\n"
        "import time; time.sleep(600)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        if parent.stdout:
            parent.stdout.close()
    deadline = time.monotonic() + 15
    while not gone(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert gone(child)


async def test_the_server_answers_only_with_its_key(server: OfflineModelServer) -> None:
    """Another local process (a sandbox's port forward, another user's shell) cannot use the
    worker's model: llama.cpp checks the per-start key."""
    cfg = LLMProviderConfig(
        name="openai", api_key="guessed", base_url=f"{server.base_url}/v1", model=MODEL_NAME
    )
    with pytest.raises(ApplicationError) as info:
        await complete(request(cfg), access=LOOPBACK)
    assert info.value.type == "LLMAuthError"
