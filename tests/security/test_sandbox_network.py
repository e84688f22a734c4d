"""Sandboxes of different workspaces cannot reach each other, the host, or private ranges.

Through the real stack (API, Temporal, worker, Docker engine): two users, each with a workspace;
a TCP listener inside a sandbox of user A, another on the host (this test's process, on
0.0.0.0). Connections are attempted from inside the sandboxes (docker exec), by IP.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import shutil
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from activities.docker_runtime import DockerRuntime, IsolationUnavailable
from activities.sandbox_network import BLOCKED_RANGES, host_subnets
from api.app import create_app
from config.settings import get_settings
from domain.containers import ContainerSpec, container_name, network_name
from tests.conftest import app_client, assert_error, make_settings, new_account
from tests.integration.conftest import (  # noqa: F401 (fixtures)
    Stack,
    _delete_test_workspaces,
    eventually,
    stack,
)
from tests.integration.test_docker_runtime import sandbox_image  # noqa: F401 (fixture)

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


# -- security review of issue #13: the special-purpose ranges, the host's LAN, the switch -------

REVIEW_RANGES = (
    "192.0.0.0/24",
    "192.0.2.0/24",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
)


def _bridge(st: Stack, sid: str) -> str:
    container = st.docker.containers.get(container_name(sid))
    (joined,) = container.attrs["NetworkSettings"]["Networks"].values()
    net = st.docker.api.inspect_network(joined["NetworkID"])
    options = net.get("Options") or {}
    return options.get("com.docker.network.bridge.name") or f"br-{net['Id'][:12]}"


def _drops(bridge: str) -> dict[str, int]:
    """Destination -> packets dropped, of the DOCKER-USER DROP rules tagged for this bridge."""
    listing = subprocess.run(
        ["iptables", "-w", "10", "-L", "DOCKER-USER", "-v", "-n", "-x"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found = {}
    for line in listing.splitlines():
        fields = line.split()
        if len(fields) > 8 and fields[2] == "DROP" and f"aintandem:{bridge}" in line:
            found[fields[8]] = int(fields[0])
    return found


async def test_internet_egress_drops_every_special_range_and_the_hosts_lan(
    stack: Stack,  # noqa: F811
) -> None:
    if os.geteuid() != 0 or shutil.which("iptables") is None:
        pytest.skip("internet egress needs the worker as root with iptables")
    acc = await stack.account()
    wid = await stack.workspace(acc, egress="internet")
    sid = await stack.sandbox(acc, wid)
    await stack.wait_status(acc, sid, "running", timeout=120)
    bridge = await asyncio.to_thread(_bridge, stack, sid)

    drops = await asyncio.to_thread(_drops, bridge)
    for cidr in (*REVIEW_RANGES, *BLOCKED_RANGES):
        assert cidr in drops, (cidr, sorted(drops))
    lan = [c for c in host_subnets() if not c.startswith("172.")]  # docker0 is in 172.16/12
    for cidr in lan:
        net = ipaddress.IPv4Network(cidr)
        assert any(net.subnet_of(ipaddress.IPv4Network(d)) for d in drops), (cidr, drops)

    # A real probe to the host's LAN (local traffic only): a neighbour's address, not the
    # host's own (that one is INPUT's). It is dropped by the rule for its range, on the host.
    if not lan:
        pytest.skip("the host has no LAN subnet outside 172.16.0.0/12 to probe")
    net = ipaddress.IPv4Network(lan[0])
    own = set(_host_addresses())
    neighbour = next(str(ip) for ip in reversed(list(net.hosts())) if str(ip) not in own)
    rule = next(d for d in drops if net.subnet_of(ipaddress.IPv4Network(d)))
    before = drops[rule]
    seen = await _probe(stack, sid, [f"{neighbour}:9"])
    assert seen[f"{neighbour}:9"].startswith("blocked"), seen
    after = (await asyncio.to_thread(_drops, bridge))[rule]
    assert after > before, f"the probe to {neighbour} was not dropped by the {rule} rule"


async def test_the_operator_can_forbid_internet_egress(
    database_url: str,
    tmp_path: Path,
    sandbox_image: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The API refuses the setting at create and at both update routes.
    monkeypatch.setenv("AINTANDEM_SANDBOX_INTERNET_EGRESS_ALLOWED", "false")
    get_settings.cache_clear()
    try:
        settings = make_settings(database_url, tmp_path, sandbox_internet_egress_allowed=False)
        async with app_client(create_app(settings)) as client:
            acc = await new_account(client)
            r = await client.post(
                "/api/v1/workspaces",
                headers=acc.headers,
                json={"name": f"ws-{uuid.uuid4().hex[:6]}", "settings": {"egress": "internet"}},
            )
            body = assert_error(r, 422, "VALIDATION_ERROR")
            assert body["error"]["details"]["fields"][0]["field"] == "settings.egress", body
            r = await client.post(
                "/api/v1/workspaces",
                headers=acc.headers,
                json={"name": f"ws-{uuid.uuid4().hex[:6]}", "settings": {"egress": "none"}},
            )
            assert r.status_code == 201, r.text
            wid = r.json()["data"]["workspace_id"]
            r = await client.put(
                f"/api/v1/workspaces/{wid}",
                headers=acc.headers,
                json={"settings": {"egress": "internet"}},
            )
            assert r.status_code == 422 and "settings.egress" in r.text, r.text
            r = await client.put(
                f"/api/v1/workspaces/{wid}/config",
                headers=acc.headers,
                json={"settings": {"egress": "internet"}},
            )
            assert r.status_code == 422 and "settings.egress" in r.text, r.text
            r = await client.get(f"/api/v1/workspaces/{wid}", headers=acc.headers)
            assert r.json()["data"]["settings"]["egress"] == "none"
    finally:
        monkeypatch.delenv("AINTANDEM_SANDBOX_INTERNET_EGRESS_ALLOWED")
        get_settings.cache_clear()

    # The worker refuses to start a sandbox whose stored setting says internet (set before the
    # switch), before any network or container is made.
    runtime = DockerRuntime(image=sandbox_image, internet_egress_allowed=False)
    sid = f"sb_noinet{uuid.uuid4().hex[:10]}"
    try:
        spec = ContainerSpec(sandbox_id=sid, workspace_id="ws_noinet", name="n", egress="internet")
        with pytest.raises(IsolationUnavailable, match="disabled"):
            runtime.ensure_container(spec)
        assert not runtime.inspect(sid).exists
    finally:
        runtime.remove(sid)
        runtime.close()
