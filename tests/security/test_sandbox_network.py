"""Sandboxes of different workspaces cannot reach each other, the host, or private ranges.

Through the real stack (API, Temporal, worker, Docker engine): two users, each with a workspace;
a TCP listener inside a sandbox of user A, another on the host (this test's process, on
0.0.0.0). Connections are attempted from inside the sandboxes (docker exec), by IP.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from domain.containers import container_name, network_name
from tests.integration.conftest import (  # noqa: F401 (fixtures)
    Stack,
    _delete_test_workspaces,
    eventually,
    stack,
)

pytestmark = [pytest.mark.security, pytest.mark.docker, pytest.mark.temporal]

PORT = 8080
PROBE = """
import json, socket, sys
out = {}
for target in sys.argv[1:]:
    host, port = target.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=2) as s:
            out[target] = "open:" + s.recv(16).decode()
    except OSError as exc:
        out[target] = "blocked:" + type(exc).__name__
print(json.dumps(out))
"""
LISTENER = (
    "import socket\n"
    "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    f"s.bind(('0.0.0.0', {PORT})); s.listen()\n"
    "while True:\n"
    "    c, _ = s.accept(); c.sendall(b'tenant-a'); c.close()\n"
)


@pytest.fixture
def host_listener() -> Iterator[int]:
    """A TCP server on every host address (what a careless host service looks like)."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("0.0.0.0", 0))
    server.listen()
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.sendall(b"host")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    stop.set()
    server.close()
    thread.join(timeout=5)


def _host_addresses() -> list[str]:
    """The host's own addresses a sandbox might aim at: its primary address and docker0."""
    found = {"172.17.0.1"}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing address
        found.add(s.getsockname()[0])
    return sorted(found)


def _exec(container: Any, argv: list[str]) -> tuple[int, str]:
    result = container.exec_run(argv)
    return result.exit_code, result.output.decode(errors="replace").strip()


async def _probe(st: Stack, sid: str, targets: list[str]) -> dict[str, str]:
    container = await asyncio.to_thread(st.docker.containers.get, container_name(sid))
    code, out = await asyncio.to_thread(_exec, container, ["python3", "-c", PROBE, *targets])
    assert code == 0, out
    return dict(json.loads(out.splitlines()[-1]))


async def _ip(st: Stack, sid: str) -> str:
    container = await asyncio.to_thread(st.docker.containers.get, container_name(sid))
    networks = container.attrs["NetworkSettings"]["Networks"]
    assert len(networks) == 1, networks
    return str(next(iter(networks.values()))["IPAddress"])


def _gateways(st: Stack) -> list[str]:
    """Gateway addresses of the sandbox networks (the host side of each bridge)."""
    found = []
    for net in st.docker.api.networks(filters={"label": "aintandem.managed=true"}):
        for cfg in (net.get("IPAM") or {}).get("Config") or []:
            if cfg.get("Gateway"):
                found.append(cfg["Gateway"])
    return found


async def test_sandboxes_of_other_workspaces_the_host_and_the_outside_are_unreachable(
    stack: Stack,  # noqa: F811 (the integration fixture, imported above)
    host_listener: int,
) -> None:
    alice, bob = await stack.account(), await stack.account()
    ws_a = await stack.workspace(alice)
    ws_b = await stack.workspace(bob)
    ws_c = await stack.workspace(bob, egress="internet")
    a1 = await stack.sandbox(alice, ws_a)
    a2 = await stack.sandbox(alice, ws_a)
    b1 = await stack.sandbox(bob, ws_b)
    c1 = await stack.sandbox(bob, ws_c)
    for sid, acc in ((a1, alice), (a2, alice), (b1, bob), (c1, bob)):
        await stack.wait_status(acc, sid, "running", timeout=120)

    # The workspace setting is visible (and defaults to none).
    r = await stack.client.get(f"/api/v1/workspaces/{ws_a}", headers=alice.headers)
    assert r.json()["data"]["settings"]["egress"] == "none"
    r = await stack.client.get(f"/api/v1/workspaces/{ws_c}", headers=bob.headers)
    assert r.json()["data"]["settings"]["egress"] == "internet"

    # A listener inside user A's sandbox, through the agent's own tool (runs in background).
    r = await stack.client.get(f"/api/v1/sandboxes/{a1}", headers=alice.headers)
    assert r.status_code == 200
    container_a1 = await asyncio.to_thread(stack.docker.containers.get, container_name(a1))
    await asyncio.to_thread(
        container_a1.exec_run, ["python3", "-c", LISTENER], detach=True, user="1000"
    )
    a1_ip = await _ip(stack, a1)
    target_a1 = f"{a1_ip}:{PORT}"
    await eventually(
        lambda: _probe(stack, a1, [f"127.0.0.1:{PORT}"]),
        lambda out: out[f"127.0.0.1:{PORT}"] == "open:tenant-a",
        30,
        "the listener in sandbox A1",
    )

    # Same workspace: reachable (that is what a workspace is).
    same = await _probe(stack, a2, [target_a1])
    assert same[target_a1] == "open:tenant-a", same

    host_targets = [f"{ip}:{host_listener}" for ip in _host_addresses() + _gateways(stack)]
    outside = "1.1.1.1:80"
    # The test's own view: the host listener answers on these addresses from the host.
    for target in host_targets[:1]:
        host, port = target.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=2) as s:
            assert s.recv(8) == b"host"

    # Another user's sandbox (egress none): nothing of A, nothing of the host, nothing outside.
    seen = await _probe(stack, b1, [target_a1, *host_targets, outside])
    assert all(v.startswith("blocked") for v in seen.values()), seen

    # Another user's sandbox with egress internet: still neither A nor the host.
    seen = await _probe(stack, c1, [target_a1, *host_targets, "10.255.255.53:53"])
    assert all(v.startswith("blocked") for v in seen.values()), seen

    # Each workspace has its own network; the egress mode is part of it.
    def networks_of(sid: str) -> list[str]:
        return list(
            stack.docker.containers.get(container_name(sid)).attrs["NetworkSettings"]["Networks"]
        )

    inst = stack.settings.installation_id
    assert networks_of(a1) == [network_name(inst, ws_a, "none")]
    assert networks_of(b1) == [network_name(inst, ws_b, "none")]
    assert networks_of(c1) == [network_name(inst, ws_c, "internet")]
    internal = stack.docker.networks.get(network_name(inst, ws_a, "none")).attrs
    assert internal["Internal"] is True


async def test_egress_change_applies_at_restart_and_networks_go_with_their_sandboxes(
    stack: Stack,  # noqa: F811
) -> None:
    acc = await stack.account()
    wid = await stack.workspace(acc)
    sid = await stack.sandbox(acc, wid)
    await stack.wait_status(acc, sid, "running", timeout=120)
    inst = stack.settings.installation_id

    r = await stack.client.put(
        f"/api/v1/workspaces/{wid}", headers=acc.headers, json={"settings": {"egress": "open"}}
    )
    assert r.status_code == 422, r.text
    r = await stack.client.put(
        f"/api/v1/workspaces/{wid}", headers=acc.headers, json={"settings": {"egress": "internet"}}
    )
    assert r.status_code == 200, r.text
    assert r.json()["data"]["settings"]["egress"] == "internet"

    # The running container keeps its network until the next start/restart re-creates it.
    c = await asyncio.to_thread(stack.docker.containers.get, container_name(sid))
    assert list(c.attrs["NetworkSettings"]["Networks"]) == [network_name(inst, wid, "none")]
    r = await stack.client.post(f"/api/v1/sandboxes/{sid}/restart", headers=acc.headers)
    assert r.status_code == 202, r.text
    await stack.wait_status(acc, sid, "running", timeout=120)
    c = await asyncio.to_thread(stack.docker.containers.get, container_name(sid))
    assert list(c.attrs["NetworkSettings"]["Networks"]) == [network_name(inst, wid, "internet")]
    # The old network had no other user: it went with the old container.
    old = network_name(inst, wid, "none")
    assert all(n["Name"] != old for n in stack.docker.api.networks(names=[old]))

    r = await stack.client.delete(f"/api/v1/sandboxes/{sid}", headers=acc.headers)
    assert r.status_code == 204, r.text
    new = network_name(inst, wid, "internet")
    assert all(n["Name"] != new for n in stack.docker.api.networks(names=[new]))
