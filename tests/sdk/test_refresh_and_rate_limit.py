"""Token expiry and rate limiting on a real stack configured for them: access tokens live 4 s,
authentication allows 30 requests a minute (one every 2 s once the burst is spent)."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from aintandem import AInTandemClient, AuthenticationFailed

from tests.live_stack import Stack
from tests.sdk.conftest import PASSWORD

pytestmark = pytest.mark.e2e
TTL = 4


@pytest.fixture(scope="module")
def short_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(
        tmp_path_factory.mktemp("sdk-short-tokens"),
        AINTANDEM_ACCESS_TOKEN_TTL_SECONDS=str(TTL),
        AINTANDEM_RATE_LIMIT_AUTH_PER_MINUTE="30",
        AINTANDEM_WEBSOCKET_SESSION_CHECK_SECONDS="1",
    )
    s.start()
    try:
        yield s
    finally:
        s.stop()
        s.remove_sandboxes()  # what a test's own cleanup missed


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


async def _account(stack: Stack) -> tuple[str, str]:
    email = f"short-{uuid.uuid4().hex[:8]}@example.com"
    async with AInTandemClient(stack.api_url) as anon:
        await anon.auth.register(email, PASSWORD, "Short")
    return email, PASSWORD


async def test_expired_access_token_is_refreshed_before_use(short_stack: Stack) -> None:
    email, password = await _account(short_stack)
    rec = Recording()
    async with AInTandemClient(
        short_stack.api_url, email=email, password=password, transport=rec
    ) as c:
        ws = await c.workspaces.create(name="refresh")
        first = c.access_token
        await asyncio.sleep(TTL + 1)
        assert (await c.workspaces.get(ws.id)).name == "refresh"
        assert c.access_token != first
    calls = [(m, p, s) for m, p, s, _ in rec.log]
    assert calls == [
        ("POST", "/auth/login", 200),
        ("POST", "/workspaces", 201),
        ("POST", "/auth/refresh", 200),  # proactive: the token's lifetime is known
        ("GET", f"/workspaces/{ws.id}", 200),
    ]


async def test_a_401_token_expired_triggers_refresh_and_replay(short_stack: Stack) -> None:
    """When the client cannot know the token expired (clock skew), the server's 401 does it."""
    email, password = await _account(short_stack)
    rec = Recording()
    async with AInTandemClient(
        short_stack.api_url, email=email, password=password, transport=rec
    ) as c:
        ws = await c.workspaces.create(name="reactive")
        c._core.tokens.expires_at = None  # forget the lifetime: no proactive refresh
        await asyncio.sleep(TTL + 1)
        assert (await c.workspaces.get(ws.id)).name == "reactive"
    calls = [(m, p, s) for m, p, s, _ in rec.log]
    assert calls[2:] == [
        ("GET", f"/workspaces/{ws.id}", 401),
        ("POST", "/auth/refresh", 200),
        ("GET", f"/workspaces/{ws.id}", 200),
    ]


async def test_a_static_expired_token_raises(short_stack: Stack) -> None:
    email, password = await _account(short_stack)
    async with AInTandemClient(short_stack.api_url) as anon:
        token = (await anon.auth.login(email, password)).access_token
    async with AInTandemClient(short_stack.api_url, api_key=token) as c:
        await c.workspaces.list().page(1)
        await asyncio.sleep(TTL + 1)
        with pytest.raises(AuthenticationFailed) as err:
            await c.workspaces.list().page(1)
        assert "expired" in err.value.message.lower()


async def test_stream_survives_token_expiry(short_stack: Stack) -> None:
    """The server closes a stream whose token expired (1008); the SDK refreshes and resumes."""
    email, password = await _account(short_stack)
    async with AInTandemClient(short_stack.api_url, email=email, password=password) as c:
        ws = await c.workspaces.create(name="stream-expiry")
        sandbox = await c.sandboxes.create(
            ws.id,
            name="s",
            agent_config={"primary_agent": {"name": "a", "role": "b"}},
            resources={"memory_mb": 256, "cpu_cores": 0.5},
        )
        try:
            await sandbox.wait_until("running", timeout=90)
            async with sandbox.stream(["events"], include_system=True) as events:
                connected = 0
                async for event in events:
                    if event.event == "connected":
                        connected += 1
                        if connected == 2:
                            break
            assert events.reconnects >= 1
        finally:
            await c.workspaces.delete(ws.id)


async def test_429_is_retried_after_the_servers_retry_after(short_stack: Stack) -> None:
    email, password = await _account(short_stack)
    # Spend the auth bucket (30 requests a minute) from this address, with cheap requests
    # (a bogus refresh token is refused at once, but counted).
    async with httpx.AsyncClient(base_url=short_stack.api_url) as raw:
        answers = await asyncio.gather(
            *(raw.post("/auth/refresh", json={"refresh_token": "bogus"}) for _ in range(40))
        )
    limited = [r for r in answers if r.status_code == 429]
    assert limited, [r.status_code for r in answers]
    assert all(int(r.headers["retry-after"]) >= 1 for r in limited)

    rec = Recording()
    async with AInTandemClient(
        short_stack.api_url, email=email, password=password, transport=rec, max_retries=3
    ) as c:
        await c.workspaces.list().page(1)  # logs in through the 429s
    logins = [(s, t) for m, p, s, t in rec.log if p == "/auth/login"]
    assert logins[0][0] == 429 and logins[-1][0] == 200
    # Each retry came no sooner than the server asked (Retry-After ≥ 1 s).
    gaps = [b[1] - a[1] for a, b in itertools.pairwise(logins)]
    assert all(gap >= 0.95 for gap in gaps), gaps
