"""`internet` egress drops every IPv4 destination that is not globally reachable, and the host's own
subnets: the rule list is checked against Python's `ipaddress` view of the IANA special-purpose
registry and against this host's routing table (no iptables, no Docker needed)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from activities.sandbox_network import (
    BLOCKED_RANGES,
    Firewall,
    blocked_destinations,
    host_subnets,
)

BLOCKED = [ipaddress.IPv4Network(r) for r in BLOCKED_RANGES]
# The special-purpose ranges the security review found missing (192.0.2.0/24 is this host's LAN).
REVIEW_MISSING = (
    "192.0.0.0/24",
    "192.0.2.0/24",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
)


def _covered(net: ipaddress.IPv4Network, rules: list[ipaddress.IPv4Network]) -> bool:
    return any(net.subnet_of(r) for r in rules)


def _non_global_networks() -> list[ipaddress.IPv4Network]:
    """Python's own table of non-global IPv4 networks (3.11-3.13 keep it here), plus the shared
    address space that `is_global` excludes separately."""
    constants = getattr(ipaddress, "_IPv4Constants", None)
    table = list(getattr(constants, "_private_networks", []))
    assert table, "this Python keeps its special-purpose table elsewhere: update the test"
    return [*table, ipaddress.IPv4Network("100.64.0.0/10")]


def test_every_non_global_range_python_knows_is_blocked() -> None:
    missing = [str(n) for n in _non_global_networks() if not _covered(n, BLOCKED)]
    assert not missing, f"not blocked for internet egress: {missing}"


def test_a_sweep_of_the_address_space_finds_no_non_global_address_unblocked() -> None:
    # The first and last address of every /16, and every address of the /16s holding the
    # small special-purpose blocks: any non-global (or multicast) one must be in a rule.
    probes: list[ipaddress.IPv4Address] = []
    for i in range(65536):
        probes.append(ipaddress.IPv4Address(i << 16))
        probes.append(ipaddress.IPv4Address((i << 16) | 0xFFFF))
    for prefix in ("192.0.0.0/16", "198.51.0.0/16", "203.0.0.0/16", "198.18.0.0/15"):
        probes.extend(ipaddress.IPv4Network(prefix))
    unblocked = [
        str(ip)
        for ip in probes
        if (not ip.is_global or ip.is_multicast) and not any(ip in r for r in BLOCKED)
    ]
    assert not unblocked, f"non-global addresses not blocked: {unblocked[:20]}"


def test_no_rule_blocks_public_address_space() -> None:
    # Each rule is special-purpose space: its first and last address are not global (or are
    # multicast, which no sandbox needs).
    for net in BLOCKED:
        for ip in (net.network_address, net.broadcast_address):
            assert (
                not ip.is_global or ip.is_multicast or net == ipaddress.IPv4Network("192.0.0.0/24")
            ), (net, ip)
    # 192.0.0.0/24 is blocked whole although two anycast addresses in it are global.
    assert ipaddress.IPv4Address("8.8.8.8") not in ipaddress.IPv4Network("0.0.0.0/8")


@pytest.mark.parametrize("cidr", REVIEW_MISSING)
def test_the_ranges_the_review_found_are_dropped_for_a_bridge(cidr: str) -> None:
    rules = Firewall()._rules("br-unit")
    drops = {
        spec[spec.index("-d") + 1] for chain, spec in rules if spec[-1] == "DROP" and "-d" in spec
    }
    assert cidr in drops, sorted(drops)


def test_the_hosts_own_subnets_are_dropped() -> None:
    subnets = host_subnets()
    assert subnets, "no on-link IPv4 route found on this host"
    rules = [ipaddress.IPv4Network(c) for c in blocked_destinations()]
    for cidr in subnets:
        assert _covered(ipaddress.IPv4Network(cidr), rules), (cidr, rules)
    drops = [
        ipaddress.IPv4Network(spec[spec.index("-d") + 1])
        for chain, spec in Firewall()._rules("br-unit")
        if chain == "DOCKER-USER" and spec[-1] == "DROP"
    ]
    for cidr in subnets:
        assert _covered(ipaddress.IPv4Network(cidr), drops), (cidr, drops)


def test_a_public_lan_of_the_host_is_dropped_too(tmp_path: Path) -> None:
    # A host whose LAN is public space (a server with a routed /28): its neighbours are not
    # "the internet" for a sandbox. Gateway routes and the default route are not subnets.
    table = tmp_path / "route"
    table.write_text(
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
        "eth0\t00000000\t0171A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"  # default via ...
        "eth0\t207B3305\t00000000\t0001\t0\t0\t0\tF0FFFFFF\t0\t0\t0\n"  # 5.51.123.32/28
        "eth1\t0000080A\t0101010A\t0003\t0\t0\t0\t0000FFFF\t0\t0\t0\n"  # 10.8.0.0/16 via gw
    )
    assert host_subnets(str(table)) == ["5.51.123.32/28"]
    rules = blocked_destinations(host_subnets(str(table)))
    assert "5.51.123.32/28" in rules
    # Already covered by a special-purpose rule: not repeated.
    assert blocked_destinations(["172.17.0.0/16"]) == list(BLOCKED_RANGES)
