"""Watching costs nothing (issue #14 item 6), on a real stack whose workspace bucket (it holds
GET /collaborations/{id}) allows only a handful of reads an hour.

`watch()` follows `WS /ws/collaborations/{id}`: two reads for the whole run, each snapshot a
new version, progress consistent to the end. When the socket cannot be had it polls with
back-off instead. The agents answer through a scripted loopback provider (a second a turn), so
a run lasts long enough to need many reads at the old rate yet the suite stays quick.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import pytest_asyncio
from aintandem import AInTandemClient, CollaborationInfo

from tests.live_stack import Stack
from tests.sdk.conftest import PASSWORD, running_sandbox
from tests.unit.test_llm_providers import (
    FakeProvider,
    Scripted,
    fake_server,  # noqa: F401 - the session fixture
    openai_reply,
)

pytestmark = pytest.mark.e2e
READS_PER_HOUR = 15  # the old watcher read once per stream event (and every 15 s): far more


@pytest.fixture(scope="module")
def low_limit_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(
        tmp_path_factory.mktemp("sdk-watch"),
        AINTANDEM_RATE_LIMIT_WORKSPACE_PER_HOUR=str(READS_PER_HOUR),
        AINTANDEM_SANDBOX_HEALTH_INTERVAL_SECONDS="2",
        AINTANDEM_PROVIDER_ALLOWED_HOSTS="127.0.0.1",  # the scripted provider below
    )
    s.start()
    try:
        yield s
    finally:
        s.stop()
        s.remove_sandboxes()


class Recording(httpx.AsyncBaseTransport):
    """The real transport, remembering every (method, path, status)."""

    def __init__(self) -> None:
        self.real = httpx.AsyncHTTPTransport()
        self.log: list[tuple[str, str, int, float]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.real.handle_async_request(request)
        path = request.url.path.split("/api/v1", 1)[-1]
        self.log.append((request.method, path, response.status_code, time.monotonic()))
        return response

    async def aclose(self) -> None:
        await self.real.aclose()

    def reads(self, collaboration_id: str) -> list[tuple[str, str, int, float]]:
        return [e for e in self.log if e[0] == "GET" and e[1].endswith(collaboration_id)]


@pytest_asyncio.fixture
async def client(low_limit_stack: Stack) -> AsyncIterator[tuple[AInTandemClient, Recording]]:
    """A fresh user (so a fresh bucket) with a recording transport; no automatic retry of a
    429, so a refused read shows."""
    email = f"watch-{uuid.uuid4().hex[:8]}@example.com"
    async with AInTandemClient(low_limit_stack.api_url) as anon:
        await anon.auth.register(email, PASSWORD, "Watcher")
    rec = Recording()
    async with AInTandemClient(
        low_limit_stack.api_url, email=email, password=PASSWORD, transport=rec, max_retries=0
    ) as c:
        yield c, rec


def _swarm_turn(body: dict[str, object]) -> Scripted:
    """A proposal or a vote (a JSON answer: votes are asked for by schema), a second each."""
    if body.get("response_format"):
        return Scripted(200, openai_reply('{"reason": "the clearest", "vote": 1}'), delay=1.0)
    return Scripted(200, openai_reply("## colour\nblue"), delay=1.0)


@pytest_asyncio.fixture
async def scripted(fake_server: FakeProvider) -> FakeProvider:  # noqa: F811 - the fixture
    fake_server.reset()
    fake_server.responder = _swarm_turn
    return fake_server


async def _team(c: AInTandemClient, provider: FakeProvider) -> str:
    ws = await c.workspaces.create(name=f"watch-{uuid.uuid4().hex[:6]}")  # one workspace read
    await c.workspaces.update_config(
        ws.id,
        llm_providers=[{"name": "openai", "api_key": "sk-test", "base_url": f"{provider.base}/v1"}],
    )
    await asyncio.gather(running_sandbox(c, ws.id, "alpha"), running_sandbox(c, ws.id, "beta"))
    return ws.id


def _assert_consistent(snaps: list[CollaborationInfo]) -> None:
    pct = [s.progress.percentage for s in snaps if s.progress]
    assert all(isinstance(p, int) for p in pct), pct
    assert pct == sorted(pct), f"progress went down: {pct}"
    versions = [getattr(s, "version", None) for s in snaps]
    keys = [(s.status, s.progress.model_dump_json() if s.progress else "") for s in snaps]
    assert len(keys) == len(set(keys)), f"the same snapshot twice: {versions}"
    totals = set()
    for s in snaps:
        assert s.progress is not None
        p = s.progress
        assert not set(p.completed_steps) & set(p.remaining_steps), p
        if s.status == "in_progress" and p.completed_steps:
            totals.add(p.steps_total)  # swarm's steps are known from the start
    assert len(totals) <= 1, f"the step total changed: {totals}"


async def test_watch_follows_the_stream_and_costs_two_reads(
    client: tuple[AInTandemClient, Recording], scripted: FakeProvider
) -> None:
    c, rec = client
    wid = await _team(c, scripted)
    collab = await c.collaborations.orchestrate(
        wid,
        "Name a colour",
        ["alpha", "beta"],
        collaboration_mode="swarm",
        timeout=240,  # the old watcher's reads (one per event, one every 15 s) exceed 15
        deliverables=["colour"],
    )
    snaps = [snap.model_copy(deep=True) async for snap in collab.watch(poll_interval=0.5)]
    final = snaps[-1]
    assert final.status == "completed", final
    # No 429, and two reads (the first snapshot, the finished one in full) however long it ran:
    # at the old rate (one read per event, 2 s polling) this run needed far more.
    assert not [e for e in rec.log if e[2] == 429], rec.log
    reads = rec.reads(collab.id)
    assert len(reads) == 2, reads
    assert len(snaps) > 2, snaps  # each change pushed, none read
    _assert_consistent(snaps)
    p = final.progress
    assert p is not None and p.current_step is None
    assert p.percentage == 100 and p.remaining_steps == [], p
    assert p.completed_steps[-1] == "consensus" and len(p.completed_steps) == 5, p
    assert final.deliverables and final.completed_at is not None  # the final read, in full


async def test_without_the_socket_it_polls_with_back_off(
    client: tuple[AInTandemClient, Recording], scripted: FakeProvider
) -> None:
    c, rec = client
    wid = await _team(c, scripted)
    # A network where WebSocket upgrades cannot get through: the stream's address answers
    # nothing (the port of a closed listener).
    c._core.ws_url = "ws://127.0.0.1:9"  # type: ignore[attr-defined]
    collab = await c.collaborations.orchestrate(
        wid, "Name a fruit", ["alpha", "beta"], collaboration_mode="swarm", timeout=150
    )
    snaps = [
        snap.model_copy(deep=True)
        async for snap in collab.watch(poll_interval=1.0, max_poll_interval=30.0)
    ]
    assert snaps[-1].done
    reads = rec.reads(collab.id)
    assert reads and not [e for e in rec.log if e[2] == 429], rec.log
    # Back-off: reads got sparser while nothing changed (never more than one a second).
    gaps = [b[3] - a[3] for a, b in itertools.pairwise(reads)]
    assert all(g > 0.9 for g in gaps), gaps
    assert max(gaps, default=0) >= 3.5 or len(reads) <= READS_PER_HOUR, gaps
    _assert_consistent(snaps)
