"""Which hosts a user-chosen URL may make the platform reach, and which `${VAR}` names a user
may make it read (pure rules, no I/O).

A workspace's provider `base_url` is fetched by the worker, inside the operator's network: left
unchecked, any user could make the worker call loopback services, the cloud metadata endpoint or
private hosts and read the answer back (SSRF). So a user-chosen URL may name only globally
routable addresses, unless the operator lists the host in `AINTANDEM_PROVIDER_ALLOWED_HOSTS`
(a local model server is a legitimate operator choice). The API checks what it can statically
at `PUT /config`; the worker checks every address it actually connects to (`activities/
provider_http.py`), which also covers DNS names that resolve (or re-resolve) to internal ones.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# `${NAME}` references a user may write when the operator lists none: the providers' own key names.
DEFAULT_ENV_ALLOWLIST = (
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "DASHSCOPE_API_KEY",
    "QWEN_API_KEY",
    "ZHIPUAI_API_KEY",
    "GLM_API_KEY",
)

# Names that mean "this machine" without any DNS lookup (RFC 6761 reserves *.localhost).
LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})


def parse_ip(host: str) -> IPAddress | None:
    """The address a URL host names literally (IPv6 may come in brackets), else None."""
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    return ip


def is_internal(ip: IPAddress) -> bool:
    """Not a globally routable unicast address: loopback, private (RFC 1918, ULA), link-local
    (the cloud metadata endpoint 169.254.169.254), shared (100.64/10), reserved, unspecified or
    multicast."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


@dataclass(frozen=True)
class HostAllowList:
    """The operator's exceptions: host names (exact, case-insensitive) and addresses/CIDRs."""

    names: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> HostAllowList:
        names: set[str] = set()
        networks: list[IPNetwork] = []
        for raw in entries:
            entry = raw.strip().lower()
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                names.add(entry.rstrip("."))
        return cls(frozenset(names), tuple(networks))

    def allows_name(self, host: str) -> bool:
        return host.strip("[]").lower().rstrip(".") in self.names

    def allows_ip(self, ip: IPAddress) -> bool:
        return any(ip in net for net in self.networks if net.version == ip.version)

    def allows_address(self, host: str, ip: IPAddress) -> bool:
        """May the worker connect to `ip`, reached through the URL host `host`?"""
        return not is_internal(ip) or self.allows_name(host) or self.allows_ip(ip)


def url_refusal(url: str, allowed: HostAllowList) -> str | None:
    """Why `url` may not be fetched on a user's behalf, judged without DNS; None if it may
    (a name that resolves to an internal address is caught when the worker connects)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        return "is not a valid URL"
    if parts.scheme not in ("http", "https"):
        return "must be an http or https URL"
    if not host:
        return "has no host"
    if parts.username is not None or parts.password is not None:
        return "must not carry credentials (put the key in api_key)"
    if allowed.allows_name(host):
        return None
    ip = parse_ip(host)
    name = host.lower().rstrip(".")
    if ip is None and (name in LOCAL_NAMES or name.endswith(".localhost")):
        return (
            f"names this machine ({host}); an operator may allow it with "
            "AINTANDEM_PROVIDER_ALLOWED_HOSTS"
        )
    if ip is not None and not allowed.allows_address(host, ip):
        return (
            f"names an internal address ({ip}: loopback, private or link-local); an operator "
            "may allow it with AINTANDEM_PROVIDER_ALLOWED_HOSTS"
        )
    return None


def env_ref_refusal(name: str, allowed: Iterable[str]) -> str | None:
    """Why a `${name}` reference may not be resolved from the worker's environment."""
    names = sorted(set(allowed))
    if name in names:
        return None
    listed = ", ".join(names) if names else "none"
    return (
        f"${{{name}}} is not an allowed variable (allowed: {listed}; an operator extends the "
        "list with AINTANDEM_PROVIDER_ENV_ALLOWLIST)"
    )


@dataclass(frozen=True)
class ProviderAccess:
    """What a workspace's provider config may make the worker read and reach: the operator's
    `${VAR}` allow-list and host exceptions. The defaults are the safe ones."""

    env_names: frozenset[str] = frozenset(DEFAULT_ENV_ALLOWLIST)
    hosts: HostAllowList = HostAllowList()

    @classmethod
    def of(cls, env_allowlist: Iterable[str], allowed_hosts: Iterable[str]) -> ProviderAccess:
        return cls(frozenset(env_allowlist), HostAllowList.parse(allowed_hosts))


def key_destination_refusal(
    name: str, base_url: str | None, default_url: str | None, allowed: HostAllowList
) -> str | None:
    """Why the worker may not send the key `${name}` (the operator's, from its environment) to
    `base_url`: such a key goes only to its provider's own endpoint, or to a host the operator
    lists in AINTANDEM_PROVIDER_ALLOWED_HOSTS. Anything else would hand the operator's key to
    whoever runs the server a user names."""
    if not base_url:
        return None
    host = (urlsplit(base_url).hostname or "").lower().rstrip(".")
    own = (urlsplit(default_url).hostname or "").lower() if default_url else ""
    if host and (host == own or allowed.allows_name(host)):
        return None
    ip = parse_ip(host)
    if ip is not None and allowed.allows_ip(ip):
        return None
    return (
        f"${{{name}}} is the operator's key and goes only to the provider's own endpoint"
        f"{f' ({own})' if own else ''}, not to {host or base_url}; write the key itself, or "
        "ask the operator to list the host in AINTANDEM_PROVIDER_ALLOWED_HOSTS"
    )
