"""HTTP clients for user-chosen provider URLs that connect only where the operator allows.

The check sits at the socket, not at the URL: every connection the SDK opens (redirects
included) resolves its host here, refuses if any address is internal (`domain.egress`) and not
allowed, and then connects to one of the addresses it checked — never to a second DNS answer,
so a name that re-resolves to 127.0.0.1 between check and connect (DNS rebinding) gets nowhere.
TLS still verifies the certificate against the URL's host name (httpcore passes the original
host as SNI), so connecting by address changes nothing for HTTPS.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterable
from typing import Any

import httpcore2
import httpx2

from domain.egress import HostAllowList, parse_ip

__all__ = ["EgressRefused", "guarded_http_client", "refusal_in_chain"]


class EgressRefused(httpcore2.ConnectError):
    """A connection to an internal address the operator did not allow."""


class _GuardedBackend(httpcore2.AsyncNetworkBackend):
    def __init__(self, allowed: HostAllowList) -> None:
        self._allowed = allowed
        self._inner = httpcore2.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        addresses = await _resolve(host, port, timeout)
        refused = [ip for ip in addresses if not self._allowed.allows_address(host, ip)]
        if refused:
            raise EgressRefused(
                f"{host} resolves to an internal address ({refused[0]}); an operator may allow "
                "it with AINTANDEM_PROVIDER_ALLOWED_HOSTS"
            )
        last: Exception | None = None
        for ip in addresses:
            try:
                return await self._inner.connect_tcp(
                    str(ip), port, timeout, local_address, socket_options
                )
            except httpcore2.ConnectError as exc:  # try the next address, like happy eyeballs
                last = exc
        raise last or httpcore2.ConnectError(f"{host}: no address")

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore2.AsyncNetworkStream:
        raise EgressRefused("unix sockets are never reached for a user-chosen URL")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


async def _resolve(host: str, port: int, timeout: float | None) -> list[Any]:
    literal = parse_ip(host)
    if literal is not None:
        return [literal]
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout
        )
    except (OSError, TimeoutError) as exc:
        raise httpcore2.ConnectError(f"{host}: {exc}") from exc
    seen: list[Any] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        ip = parse_ip(str(sockaddr[0]).split("%")[0])  # drop an IPv6 zone id
        if ip is not None and ip not in seen:
            seen.append(ip)
    if not seen:
        raise httpcore2.ConnectError(f"{host}: no address")
    return seen


class _GuardedTransport(httpx2.AsyncHTTPTransport):
    def __init__(self, allowed: HostAllowList, limits: httpx2.Limits) -> None:
        super().__init__(limits=limits)
        # The same pool httpx builds, with our backend underneath (httpx has no argument for it).
        self._pool = httpcore2.AsyncConnectionPool(
            ssl_context=httpx2.create_ssl_context(),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_GuardedBackend(allowed),
        )


def guarded_http_client(allowed: HostAllowList) -> httpx2.AsyncClient:
    """An httpx client for the openai/anthropic SDKs (both accept `http_client=`). With an
    explicit transport httpx ignores proxy variables: a user-chosen URL goes direct."""
    limits = httpx2.Limits(max_connections=100, max_keepalive_connections=20)
    return httpx2.AsyncClient(
        transport=_GuardedTransport(allowed, limits),
        follow_redirects=True,
        timeout=httpx2.Timeout(600.0, connect=10.0),
    )


def refusal_in_chain(exc: BaseException) -> EgressRefused | None:
    """The refusal behind an SDK's connection error (the SDKs wrap httpx's, which wraps ours)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, EgressRefused):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None
