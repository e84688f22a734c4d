"""The SDK's HTTP behaviour against a scripted server (httpx.MockTransport): retries honouring
Retry-After, idempotency keys kept across retries, 401 → refresh → retry, error mapping."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import aintandem
import httpx
import pytest
from aintandem import (
    AInTandemClient,
    AInTandemError,
    APIConnectionError,
    AuthenticationFailed,
    RateLimitExceeded,
    ServiceUnavailable,
)

URL = "http://api.test/api/v1"


def envelope(
    data: object, status: int = 200, headers: dict[str, str] | None = None
) -> httpx.Response:
    body = {"success": True, "data": data, "meta": {"request_id": "r-1", "version": "0.1.0"}}
    return httpx.Response(status, json=body, headers=headers)


def failure(status: int, code: str, headers: dict[str, str] | None = None) -> httpx.Response:
    body = {
        "success": False,
        "error": {"code": code, "message": f"{code} happened", "details": {"x": 1}},
        "meta": {"request_id": "req-42"},
    }
    return httpx.Response(status, json=body, headers=headers)


def client_with(
    handler: Callable[[httpx.Request], httpx.Response], **kw: object
) -> AInTandemClient:
    return AInTandemClient(URL, transport=httpx.MockTransport(handler), **kw)  # type: ignore[arg-type]


WS = {"workspace_id": "ws_abcdefghij", "name": "w"}


async def test_429_is_retried_after_retry_after_with_the_same_idempotency_key() -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) < 3:
            return failure(429, "RATE_LIMIT_EXCEEDED", {"Retry-After": "1"})
        return envelope(WS, 201)

    async with client_with(handler, api_key="t") as c:
        started = time.monotonic()
        ws = await c.workspaces.create(name="w")
        elapsed = time.monotonic() - started
    assert ws.id == "ws_abcdefghij"
    assert len(calls) == 3
    assert elapsed >= 2.0  # two waits of Retry-After: 1
    keys = {r.headers["idempotency-key"] for r in calls}
    assert len(keys) == 1  # the same key on every retry of one POST
    assert len({r.headers["x-request-id"] for r in calls}) == 1


async def test_retries_are_bounded_and_the_last_answer_is_raised() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return failure(503, "SERVICE_UNAVAILABLE", {"Retry-After": "0"})

    async with client_with(handler, api_key="t", max_retries=2) as c:
        with pytest.raises(ServiceUnavailable) as err:
            await c.workspaces.get("ws_abcdefghij")
    assert calls == 3  # the first try and two retries
    assert err.value.status == 503 and err.value.request_id == "req-42"


async def test_a_retry_after_beyond_the_bound_is_not_waited_for() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return failure(429, "RATE_LIMIT_EXCEEDED", {"Retry-After": "3600"})

    async with client_with(handler, api_key="t", max_retry_wait=5) as c:
        started = time.monotonic()
        with pytest.raises(RateLimitExceeded) as err:
            await c.workspaces.get("ws_abcdefghij")
    assert calls == 1 and time.monotonic() - started < 1
    assert err.value.retry_after == 3600


async def test_other_errors_are_not_retried_and_map_to_their_class() -> None:
    cases = {
        "AUTHORIZATION_FAILED": (403, aintandem.AuthorizationFailed),
        "RESOURCE_EXHAUSTED": (409, aintandem.ResourceExhausted),
        "SANDBOX_NOT_READY": (409, aintandem.SandboxNotReady),
        "MESSAGE_DELIVERY_FAILED": (409, aintandem.MessageDeliveryFailed),
        "COLLABORATION_FAILED": (409, aintandem.CollaborationFailed),
        "CONFIGURATION_INVALID": (422, aintandem.ConfigurationInvalid),
        "RESOURCE_ALREADY_EXISTS": (409, aintandem.ResourceAlreadyExists),
        "INTERNAL_ERROR": (500, aintandem.InternalError),
        "SOMETHING_NEW": (418, AInTandemError),
    }
    for code, (status, cls) in cases.items():
        calls = 0

        def handler(
            request: httpx.Request, status: int = status, code: str = code
        ) -> httpx.Response:
            nonlocal calls
            calls += 1
            return failure(status, code)

        async with client_with(handler, api_key="t") as c:
            with pytest.raises(cls) as err:
                await c.workspaces.get("ws_abcdefghij")
        assert type(err.value) is cls, code
        assert (err.value.status, err.value.code, err.value.details) == (status, code, {"x": 1})
        assert err.value.request_id == "req-42"
        assert calls == 1


async def test_401_refreshes_once_and_replays_the_request() -> None:
    seen: list[tuple[str, str | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.path, request.headers.get("authorization")))
        if request.url.path.endswith("/auth/login"):
            return envelope(
                {
                    "access_token": "old",
                    "refresh_token": "r1",
                    "expires_in": 3600,
                    "user": {"user_id": "usr_abcdefghij", "email": "a@b.c", "name": "A"},
                }
            )
        if request.url.path.endswith("/auth/refresh"):
            assert json.loads(request.content) == {"refresh_token": "r1"}
            return envelope({"access_token": "new", "refresh_token": "r2", "expires_in": 3600})
        if request.headers["authorization"] == "Bearer old":
            return failure(401, "AUTHENTICATION_FAILED")
        return envelope(WS)

    async with client_with(handler, email="a@b.c", password="pw-long-enough") as c:
        ws = await c.workspaces.get("ws_abcdefghij")
        assert ws.name == "w"
        assert (c.access_token, c.refresh_token) == ("new", "r2")
    paths = [p.rsplit("/api/v1", 1)[1] for p, _ in seen]
    assert paths == [
        "/auth/login",
        "/workspaces/ws_abcdefghij",
        "/auth/refresh",
        "/workspaces/ws_abcdefghij",
    ]
    assert seen[-1][1] == "Bearer new"


async def test_a_static_token_is_not_refreshed() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return failure(401, "AUTHENTICATION_FAILED")

    async with client_with(handler, api_key="expired") as c:
        with pytest.raises(AuthenticationFailed):
            await c.workspaces.get("ws_abcdefghij")
    assert calls == 1


async def test_connection_refused_is_retried_then_raised() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        raise httpx.ConnectError("refused", request=request)

    async with client_with(handler, api_key="t", max_retries=2) as c:
        with pytest.raises(APIConnectionError):
            await c.workspaces.create(name="w")
    assert calls == 3


async def test_non_envelope_error_bodies_still_raise_by_status() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="<html>bad gateway</html>")

    async with client_with(handler, api_key="t", max_retries=0) as c:
        with pytest.raises(ServiceUnavailable) as err:
            await c.workspaces.get("ws_abcdefghij")
    assert err.value.status == 502 and "bad gateway" in err.value.message


def test_ws_url_is_derived_from_the_base_url() -> None:
    from aintandem._http import _ws_base

    assert _ws_base("http://h:8000/api/v1") == "ws://h:8000"
    assert _ws_base("https://api.aintandem.com/api/v1") == "wss://api.aintandem.com"
    assert _ws_base("https://example.com/prefix/api/v1") == "wss://example.com/prefix"


def in_flight() -> httpx.Response:
    """The server's answer while the first attempt with the same Idempotency-Key runs."""
    body = {
        "success": False,
        "error": {
            "code": "RESOURCE_ALREADY_EXISTS",
            "message": "A request with this Idempotency-Key is still in progress; retry shortly",
            "details": {"field": "Idempotency-Key", "state": "in_flight", "retry_after_seconds": 1},
        },
        "meta": {"request_id": "req-42"},
    }
    return httpx.Response(409, json=body, headers={"Retry-After": "1"})


async def test_a_key_still_in_flight_is_retried_after_retry_after_with_the_same_key() -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return in_flight() if len(calls) == 1 else envelope(WS, 201)

    async with client_with(handler, api_key="t") as c:
        started = time.monotonic()
        ws = await c.workspaces.create(name="w")
        elapsed = time.monotonic() - started
    assert ws.id == "ws_abcdefghij"
    assert len(calls) == 2 and elapsed >= 1.0  # waited Retry-After: 1
    assert len({r.headers["idempotency-key"] for r in calls}) == 1  # the same key


async def test_in_flight_retries_are_bounded_and_other_conflicts_are_final() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return in_flight()

    async with client_with(handler, api_key="t", max_retries=1) as c:
        with pytest.raises(aintandem.ResourceAlreadyExists) as err:
            await c.workspaces.create(name="w")
    assert calls == 2  # the first try and one retry
    assert err.value.details["state"] == "in_flight"

    # The same code without the in-flight state (a real conflict) is not retried.
    calls = 0

    def conflict(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return failure(409, "RESOURCE_ALREADY_EXISTS", {"Retry-After": "0"})

    async with client_with(conflict, api_key="t") as c:
        with pytest.raises(aintandem.ResourceAlreadyExists):
            await c.workspaces.create(name="w")
    assert calls == 1
