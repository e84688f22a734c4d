"""Per-workspace sandbox networks and the firewall rules that keep them apart.

Every workspace gets its own bridge network (`domain.containers.network_name`); its sandboxes
reach each other and nothing else, according to the workspace's `settings.egress`:

- `none` (default): an `internal` bridge whose host side has no IPv4 address
  (`com.docker.network.bridge.inhibit_ipv4`). Docker drops anything leaving the bridge for
  another interface, and with no address on the bridge the host itself is not reachable either
  (a plain internal network still answers on its gateway address: any host service listening on
  0.0.0.0 would be). Enforced by the engine alone; no iptables needed.
- `internet`: a normal (NATed) bridge plus rules this module installs, idempotently, whenever a
  sandbox of the network is created or started: in DOCKER-USER, traffic from the bridge to
  every IPv4 range that is not globally reachable (`BLOCKED_RANGES`: IANA's special-purpose
  registry, loopback, link-local, private, CGNAT, documentation/benchmark nets, multicast,
  reserved) and to each subnet the host itself is on (read from its routing table whenever the
  rules are installed: the host's own LAN may be any range) is dropped, except DNS to the host's
  own resolvers, which Docker's embedded DNS forwards from inside the container; in INPUT,
  anything from the bridge to the host itself is dropped. Needs the worker on the engine's host
  as root with iptables; otherwise starting such a sandbox fails with the reason (never silently
  open). An operator can forbid `internet` altogether (AINTANDEM_SANDBOX_INTERNET_EGRESS_ALLOWED=
  false): the API refuses the setting and the worker refuses to start such a sandbox.

Traffic between two different workspace networks is dropped by Docker itself
(DOCKER-ISOLATION-STAGE-1/2 for non-internal bridges, the internal network's own DROP rules).
Containers get no IPv6 (disabled by sysctl at creation), so no v6 rules are needed.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import shutil
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import docker.errors

from domain.containers import (
    EGRESS_INTERNET,
    EGRESS_NONE,
    LABEL_EGRESS,
    LABEL_INSTALLATION,
    LABEL_MANAGED,
    LABEL_WORKSPACE_ID,
    network_name,
)

log = logging.getLogger("aintandem.sandbox_network")

# Never reachable from a sandbox with `internet` egress: every IPv4 range of the IANA IPv4
# Special-Purpose Address Registry that is not globally reachable (what Python's
# `ipaddress.IPv4Address.is_global` is false for), plus multicast. Written out (not computed
# from `ipaddress` internals, which differ between Python versions); tests/unit/
# test_sandbox_egress_ranges.py checks every non-global range is covered.
BLOCKED_RANGES = (
    "0.0.0.0/8",  # "this network" (RFC 791)
    "10.0.0.0/8",  # private (RFC 1918)
    "100.64.0.0/10",  # shared address space, carrier-grade NAT (RFC 6598)
    "127.0.0.0/8",  # loopback (RFC 1122)
    "169.254.0.0/16",  # link-local, cloud metadata services (RFC 3927)
    "172.16.0.0/12",  # private (RFC 1918)
    "192.0.0.0/24",  # IETF protocol assignments (RFC 6890), incl. DS-Lite, NAT64 discovery
    "192.0.2.0/24",  # TEST-NET-1, documentation (RFC 5737); some hosts' LAN in practice
    "192.168.0.0/16",  # private (RFC 1918)
    "198.18.0.0/15",  # benchmarking (RFC 2544)
    "198.51.100.0/24",  # TEST-NET-2, documentation (RFC 5737)
    "203.0.113.0/24",  # TEST-NET-3, documentation (RFC 5737)
    "224.0.0.0/4",  # multicast (RFC 5771)
    "240.0.0.0/4",  # reserved (RFC 1112), incl. limited broadcast 255.255.255.255
)
_COMMENT_PREFIX = "aintandem:"


class EgressUnavailable(Exception):
    """The requested egress cannot be enforced here (no iptables, not root, remote engine)."""


def _host_resolvers(path: str = "/etc/resolv.conf") -> list[str]:
    """The host's IPv4 nameservers in blocked ranges (loopback ones Docker replaces anyway)."""
    found = []
    with contextlib.suppress(OSError):
        for line in Path(path).read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "nameserver":
                try:
                    ip = ipaddress.ip_address(parts[1].split("%")[0])
                except ValueError:
                    continue
                if ip.version == 4 and not ip.is_loopback:
                    found.append(str(ip))
    return found


def host_subnets(route_table: str = "/proc/net/route") -> list[str]:
    """The IPv4 subnets the host is directly on (its interfaces' on-link routes), read from the
    kernel's main routing table. A sandbox with `internet` egress must not reach the host's
    neighbours whatever range the host's LAN uses (a public one included)."""
    found: list[str] = []
    with contextlib.suppress(OSError):
        lines = Path(route_table).read_text().splitlines()[1:]
        for line in lines:
            fields = line.split()
            if len(fields) < 8:
                continue
            try:
                dest, gateway, mask = (int(fields[i], 16) for i in (1, 2, 7))
            except ValueError:
                continue
            if gateway != 0 or mask == 0:
                continue  # via a router (or the default route): not a subnet the host is on
            # /proc/net/route prints addresses as little-endian hex.
            net = ipaddress.IPv4Network(
                (dest.to_bytes(4, "little"), bin(mask).count("1")), strict=False
            )
            if str(net) not in found:
                found.append(str(net))
    return found


def blocked_destinations(extra: list[str] | None = None) -> list[str]:
    """`BLOCKED_RANGES` plus the host's own subnets that they do not already cover."""
    ranges = [ipaddress.IPv4Network(r) for r in BLOCKED_RANGES]
    out = list(BLOCKED_RANGES)
    for cidr in host_subnets() if extra is None else extra:
        net = ipaddress.IPv4Network(cidr, strict=False)
        if not any(net.subnet_of(r) for r in ranges):
            ranges.append(net)
            out.append(str(net))
    return out


def _bridge_of(network_id: str, options: dict[str, str] | None) -> str:
    # Docker names a user bridge br-<first 12 hex of the id> unless the network names it.
    return (options or {}).get("com.docker.network.bridge.name") or f"br-{network_id[:12]}"


class Firewall:
    """iptables rules per sandbox bridge, tagged with a comment so they are found again."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def unavailable_reason(self) -> str | None:
        if shutil.which("iptables") is None:
            return "iptables is not installed on the worker's host"
        if os.geteuid() != 0:
            return "the worker is not root (installing firewall rules needs root on the host)"
        return None

    @staticmethod
    def _iptables(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["iptables", "-w", "10", *args], capture_output=True, text=True, timeout=30
        )

    def _rules(self, bridge: str) -> list[tuple[str, list[str]]]:
        tag = ["-m", "comment", "--comment", f"{_COMMENT_PREFIX}{bridge}"]
        rules: list[tuple[str, list[str]]] = [
            ("DOCKER-USER", ["-i", bridge, "-o", bridge, *tag, "-j", "RETURN"])
        ]
        for resolver in _host_resolvers():
            for proto in ("udp", "tcp"):
                rules.append(
                    (
                        "DOCKER-USER",
                        [
                            *("-i", bridge, "-d", f"{resolver}/32"),
                            *("-p", proto, "--dport", "53", *tag, "-j", "RETURN"),
                        ],
                    )
                )
        for cidr in blocked_destinations():
            rules.append(("DOCKER-USER", ["-i", bridge, "-d", cidr, *tag, "-j", "DROP"]))
        rules.append(("INPUT", ["-i", bridge, *tag, "-j", "DROP"]))
        return rules

    def ensure(self, bridge: str) -> None:
        """Install the bridge's rules at the top of their chains unless all are there."""
        reason = self.unavailable_reason()
        if reason is not None:
            raise EgressUnavailable(f"egress 'internet' cannot be enforced: {reason}")
        rules = self._rules(bridge)
        with self._lock:
            if all(self._iptables("-C", chain, *spec).returncode == 0 for chain, spec in rules):
                return
            self.remove(bridge)
            # Inserted at position 1 in reverse: they end up in order, before Docker's ACCEPTs.
            for chain, spec in reversed(rules):
                done = self._iptables("-I", chain, "1", *spec)
                if done.returncode != 0:
                    raise EgressUnavailable(
                        f"iptables -I {chain} failed: {(done.stderr or done.stdout).strip()}"
                    )

    def remove(self, bridge: str) -> None:
        """Delete every rule tagged for this bridge (none is fine)."""
        if self.unavailable_reason() is not None:
            return
        marker = f"{_COMMENT_PREFIX}{bridge}"
        for chain in ("DOCKER-USER", "INPUT"):
            listing = self._iptables("-S", chain)
            for line in listing.stdout.splitlines():
                if marker in line and line.startswith("-A "):
                    args = line.split()[2:]
                    self._iptables("-D", chain, *[a.strip('"') for a in args])


class SandboxNetworks:
    """Creates, finds and removes the workspace networks of one installation."""

    def __init__(self, client: Callable[[], docker.DockerClient], installation: str) -> None:
        self._client = client
        self.installation = installation
        self.firewall = Firewall()
        self._lock = threading.Lock()

    def _labels(self, workspace_id: str, egress: str) -> dict[str, str]:
        labels = {
            LABEL_MANAGED: "true",
            LABEL_WORKSPACE_ID: workspace_id,
            LABEL_EGRESS: egress,
        }
        if self.installation:
            labels[LABEL_INSTALLATION] = self.installation
        return labels

    def ensure(self, workspace_id: str, egress: str) -> tuple[str, str]:
        """The workspace's network for `egress` (created if missing) and its firewall rules;
        returns (name, id)."""
        if egress not in (EGRESS_NONE, EGRESS_INTERNET):
            raise ValueError(f"unknown egress mode {egress!r}")
        if egress == EGRESS_INTERNET:
            reason = self.firewall.unavailable_reason()
            if reason is not None:  # before creating anything: never a network left open
                raise EgressUnavailable(f"egress 'internet' cannot be enforced: {reason}")
        name = network_name(self.installation, workspace_id, egress)
        api = self._client().api
        with self._lock:
            info = self._inspect(name)
            if info is None:
                options = {"com.docker.network.bridge.enable_icc": "true"}
                if egress == EGRESS_NONE:
                    options["com.docker.network.bridge.inhibit_ipv4"] = "true"
                try:
                    api.create_network(
                        name,
                        driver="bridge",
                        internal=egress == EGRESS_NONE,
                        options=options,
                        labels=self._labels(workspace_id, egress),
                        check_duplicate=True,
                    )
                except docker.errors.APIError as exc:
                    if exc.status_code != 409:  # 409: a concurrent create won; use that one
                        raise
                info = self._inspect(name)
                if info is None:
                    raise docker.errors.NotFound(f"network {name} vanished after creation")
        if egress == EGRESS_INTERNET:
            self.firewall.ensure(_bridge_of(info["Id"], info.get("Options")))
        return name, str(info["Id"])

    def remove_if_unused(self, network_ids: list[str]) -> None:
        """Remove these sandbox networks (whoever's installation made them) once unused."""
        api = self._client().api
        for network_id in network_ids:
            try:
                row = api.inspect_network(network_id)
            except docker.errors.NotFound:
                continue
            labels = row.get("Labels") or {}
            if labels.get(LABEL_MANAGED) != "true" or not labels.get(LABEL_EGRESS):
                continue
            if self._in_use(row):
                continue
            try:
                api.remove_network(row["Id"])
            except docker.errors.APIError as exc:  # joined meanwhile, or already gone
                log.debug("network %s kept: %s", row.get("Name"), exc)
                continue
            self.firewall.remove(_bridge_of(row["Id"], row.get("Options")))

    def _in_use(self, row: dict[str, Any]) -> bool:
        """Whether any container, in any state, is configured for this network. (The engine's
        `network` filter sees only connected, i.e. running, containers.)"""
        name, network_id = row.get("Name"), row.get("Id")
        for c in self._client().api.containers(all=True):
            mode = (c.get("HostConfig") or {}).get("NetworkMode")
            joined = ((c.get("NetworkSettings") or {}).get("Networks") or {}).items()
            if mode in (name, network_id) or any(
                key == name or (v or {}).get("NetworkID") == network_id for key, v in joined
            ):
                return True
        return False

    def ensure_rules(self, network_ids: list[str]) -> None:
        """Re-install the firewall rules of the `internet` sandbox networks among these (an
        existing container's networks; rules do not survive a reboot or a firewall reload)."""
        for network_id in network_ids:
            try:
                info = self._client().api.inspect_network(network_id)
            except docker.errors.NotFound:
                continue
            labels = info.get("Labels") or {}
            if labels.get(LABEL_MANAGED) == "true" and labels.get(LABEL_EGRESS) == EGRESS_INTERNET:
                self.firewall.ensure(_bridge_of(info["Id"], info.get("Options")))

    def _inspect(self, name: str) -> dict[str, Any] | None:
        try:
            info: dict[str, Any] = self._client().api.inspect_network(name)
        except docker.errors.NotFound:
            return None
        # inspect matches id prefixes too: only the exact name is ours.
        return info if info.get("Name") == name else None

    def owned(self) -> list[dict[str, Any]]:
        wanted = [f"{LABEL_MANAGED}=true"]
        if self.installation:
            wanted.append(f"{LABEL_INSTALLATION}={self.installation}")
        rows: list[dict[str, Any]] = self._client().api.networks(filters={"label": wanted})
        return [r for r in rows if (r.get("Labels") or {}).get(LABEL_EGRESS)]

    def remove_unused(self, workspace_id: str | None = None, keep: str | None = None) -> list[str]:
        """Remove this installation's networks (of one workspace, or all; but not `keep`) that
        no container, running or stopped, refers to; a stopped one needs its network to start."""
        api = self._client().api
        removed = []
        for row in self.owned():
            labels = row.get("Labels") or {}
            if workspace_id is not None and labels.get(LABEL_WORKSPACE_ID) != workspace_id:
                continue
            if keep is not None and row.get("Name") == keep:
                continue
            if self._in_use(row):
                continue
            try:
                api.remove_network(row["Id"])
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as exc:
                # A container joined meanwhile ("has active endpoints"): it stays.
                log.debug("network %s kept: %s", row.get("Name"), exc)
                continue
            self.firewall.remove(_bridge_of(row["Id"], row.get("Options")))
            removed.append(str(row.get("Name")))
        return removed
