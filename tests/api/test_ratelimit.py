"""Rate limits: 429 RATE_LIMIT_EXCEEDED with Retry-After, per user and per IP, as settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from api.app import create_app
from api.ratelimit import RateLimiter
from domain.errors import RateLimited
from tests.conftest import app_client, assert_error, make_settings, new_account


async def test_auth_limit_per_ip(database_url: str, tmp_path: Path) -> None:
    app = create_app(make_settings(database_url, tmp_path, rate_limit_auth_per_minute=10))
    async with app_client(app) as c:
        codes = []
        for _ in range(10):
            r = await c.post(
                "/api/v1/auth/login", json={"email": "x@y.co", "password": "whatever1"}
            )
            codes.append(r.status_code)
        assert codes == [401] * 10
        r = await c.post("/api/v1/auth/login", json={"email": "x@y.co", "password": "whatever1"})
        body = assert_error(r, 429, "RATE_LIMIT_EXCEEDED")
        assert 1 <= int(r.headers["retry-after"]) <= 60
        assert body["error"]["details"]["retry_after_seconds"] == int(r.headers["retry-after"])
        # Changing the request id, or the endpoint within the group, does not reset it.
        r = await c.post(
            "/api/v1/auth/register",
            headers={"X-Request-ID": "new"},
            json={"email": "q@y.co", "password": "whatever1", "name": "Q"},
        )
        assert_error(r, 429, "RATE_LIMIT_EXCEEDED")


async def test_workspace_limit_is_per_user(database_url: str, tmp_path: Path) -> None:
    app = create_app(make_settings(database_url, tmp_path, rate_limit_workspace_per_hour=3))
    async with app_client(app) as c:
        a, b = await new_account(c), await new_account(c)
        for _ in range(3):
            assert (await c.get("/api/v1/workspaces", headers=a.headers)).status_code == 200
        r = await c.get("/api/v1/workspaces", headers=a.headers)
        assert_error(r, 429, "RATE_LIMIT_EXCEEDED")
        assert int(r.headers["retry-after"]) > 60  # 3 per hour: the next slot is ~20 minutes away
        assert (await c.get("/api/v1/workspaces", headers=b.headers)).status_code == 200
        metrics = (await c.get("/metrics")).text
        assert 'aintandem_api_rate_limit_rejections_total{group="workspace"}' in metrics


def test_gcra_refills_over_time() -> None:
    limiter = RateLimiter(
        make_settings("sqlite+aiosqlite:///:memory:", Path("/tmp"), rate_limit_auth_per_minute=2)
    )
    now = [1000.0]
    limiter._now = lambda: now[0]
    limiter.hit("auth", "k")
    limiter.hit("auth", "k")
    with pytest.raises(RateLimited) as exc:
        limiter.hit("auth", "k")
    assert exc.value.retry_after == 30
    now[0] += 30
    limiter.hit("auth", "k")  # one slot back after period/count seconds
    with pytest.raises(RateLimited):
        limiter.hit("auth", "k")
    limiter.hit("auth", "other-key")
