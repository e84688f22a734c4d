"""Removing what a test (or bench) installation left on the machine, through the runtime.

A sandbox is more than its container: a loop-mounted ext4 disk holds its /workspace
(activities/sandbox_disk.py: an image, a loop device, a mount, a directory under
AINTANDEM_SANDBOX_DISK_DIR) and its workspace has a bridge network (activities/sandbox_network.py,
plus iptables rules for `internet` egress). Force-removing the container leaves all of that
behind, and Docker's default address pools hold only ~30 bridge networks: a suite that creates
many stacks soon cannot create another. So every teardown that removes a test installation's
sandboxes goes through `DockerRuntime.remove()` here, then removes the installation's networks
that nothing uses, then checks (by default) that nothing of it is left, failing loudly.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import docker
import docker.errors

from activities.docker_runtime import DockerRuntime
from activities.sandbox_disk import SandboxDisks
from activities.sandbox_network import _COMMENT_PREFIX, _bridge_of
from domain.containers import (
    LABEL_EGRESS,
    LABEL_INSTALLATION,
    LABEL_MANAGED,
    LABEL_SANDBOX_ID,
    LABEL_WORKSPACE_ID,
    workspace_volume,
)

# Unmounting a disk a container still binds is lazy: its loop device goes with the last user,
# a moment after the container is gone. Leftovers are checked until this deadline.
SETTLE_SECONDS = 15.0


@dataclass
class Cleanup:
    """What `remove_installation_sandboxes` removed, and what is still there afterwards."""

    removed: list[str] = field(default_factory=list)  # sandbox ids
    leftovers: list[str] = field(default_factory=list)


@dataclass
class _Scope:
    installation: str
    disks: SandboxDisks
    workspace_ids: Collection[str] | None  # None: the whole installation
    sandbox_ids: set[str] = field(default_factory=set)
    network_ids: set[str] = field(default_factory=set)

    @property
    def everything(self) -> bool:
        return self.workspace_ids is None

    def covers(self, labels: dict[str, str]) -> bool:
        if self.everything:
            return True
        assert self.workspace_ids is not None
        return (
            labels.get(LABEL_WORKSPACE_ID) in self.workspace_ids
            or labels.get(LABEL_SANDBOX_ID) in self.sandbox_ids
        )


def remove_installation_sandboxes(
    installation: str,
    *,
    workspace_ids: Collection[str] | None = None,
    sandbox_ids: Iterable[str] = (),
    disk_root: str | os.PathLike[str] | None = None,
    client: docker.DockerClient | None = None,
    check: bool = True,
) -> Cleanup:
    """Remove an installation's sandboxes (containers, volumes, disks, loop devices, mounts) via
    `DockerRuntime.remove()`, then its workspace networks no container uses (and their firewall
    rules). Without `workspace_ids` and `sandbox_ids`: everything the installation owns;
    otherwise only the sandboxes of those workspaces plus those sandbox ids (a disk whose
    container is already gone is found by its id). With `check`, raise AssertionError listing
    whatever is still there afterwards (see `leftovers`)."""
    if not installation:
        # Unlabelled (installation "") means every managed network and disk on the engine.
        raise ValueError("an installation id is required (never sweep every installation)")
    scoped = workspace_ids is not None or bool(sandbox_ids)
    scope = _Scope(
        installation,
        SandboxDisks(disk_root),
        (set(workspace_ids or ()) if scoped else None),
        set(sandbox_ids),
    )
    own_client = client is None
    dk = client or docker.from_env()
    runtime = DockerRuntime(dk, installation=installation, disks=scope.disks)
    result = Cleanup()
    try:
        _collect(dk, scope)
        for sid in sorted(scope.sandbox_ids):
            runtime.remove(sid)
            result.removed.append(sid)
        # Networks of workspaces whose sandboxes were already gone (or never started).
        runtime.networks.remove_unused()
        result.leftovers = _settled_leftovers(dk, scope)
    finally:
        if own_client:
            dk.close()
    if check and result.leftovers:
        raise AssertionError(
            f"installation {installation}: still there after its teardown: {result.leftovers}"
        )
    return result


def leftovers(
    installation: str,
    *,
    sandbox_ids: Iterable[str] = (),
    workspace_ids: Collection[str] | None = None,
    disk_root: str | os.PathLike[str] | None = None,
    client: docker.DockerClient | None = None,
) -> list[str]:
    """What of an installation (or of some of its workspaces/sandboxes) is on the machine now:
    containers, volumes, networks, disk directories, mounts, loop devices, firewall rules."""
    scoped = workspace_ids is not None or bool(sandbox_ids)
    scope = _Scope(
        installation,
        SandboxDisks(disk_root),
        (set(workspace_ids or ()) if scoped else None),
        set(sandbox_ids),
    )
    own_client = client is None
    dk = client or docker.from_env()
    try:
        _collect(dk, scope)
        return _leftovers(dk, scope)
    finally:
        if own_client:
            dk.close()


def _collect(dk: docker.DockerClient, scope: _Scope) -> None:
    """Every sandbox id and network id in scope, before anything is removed (afterwards the
    disk's owner file and the containers' labels that name them are gone)."""
    label = [f"{LABEL_MANAGED}=true", f"{LABEL_INSTALLATION}={scope.installation}"]
    for c in dk.api.containers(all=True, filters={"label": label}):
        labels = c.get("Labels") or {}
        if labels.get(LABEL_SANDBOX_ID) and scope.covers(labels):
            scope.sandbox_ids.add(labels[LABEL_SANDBOX_ID])
            if scope.workspace_ids is not None and labels.get(LABEL_WORKSPACE_ID):
                # A sandbox named by id: its workspace's network is in scope too.
                scope.workspace_ids = {*scope.workspace_ids, labels[LABEL_WORKSPACE_ID]}
    for n in dk.api.networks(filters={"label": label}):
        labels = n.get("Labels") or {}
        if labels.get(LABEL_EGRESS) and scope.covers(labels):
            scope.network_ids.add(str(n["Id"]))
    if scope.everything:
        scope.sandbox_ids.update(scope.disks.owned(scope.installation))
        volumes = dk.api.volumes(filters={"label": label}).get("Volumes") or []
        for v in volumes:
            sid = (v.get("Labels") or {}).get(LABEL_SANDBOX_ID)
            if sid:
                scope.sandbox_ids.add(sid)


def _settled_leftovers(dk: docker.DockerClient, scope: _Scope) -> list[str]:
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        found = _leftovers(dk, scope)
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)  # a lazily detached loop device is released by the kernel, not by us


def _leftovers(dk: docker.DockerClient, scope: _Scope) -> list[str]:
    found: list[str] = []
    label = [f"{LABEL_MANAGED}=true", f"{LABEL_INSTALLATION}={scope.installation}"]
    for c in dk.api.containers(all=True, filters={"label": label}):
        if scope.covers(c.get("Labels") or {}):
            found.append(f"container {c['Names'][0].lstrip('/')}")
    for n in dk.api.networks(filters={"label": label}):
        if scope.covers(n.get("Labels") or {}) or str(n["Id"]) in scope.network_ids:
            found.append(f"network {n['Name']}")
    for sid in sorted(scope.sandbox_ids):
        with contextlib.suppress(docker.errors.NotFound):
            dk.api.inspect_volume(workspace_volume(sid))
            found.append(f"volume {workspace_volume(sid)}")
    if scope.everything:
        found.extend(
            f"disk directory {scope.disks.root / s}"
            for s in scope.disks.owned(scope.installation)
            if s not in scope.sandbox_ids
        )
    dirs = [scope.disks.root / sid for sid in sorted(scope.sandbox_ids)]
    found.extend(f"disk directory {d}" for d in dirs if d.exists())
    found.extend(_mounts_and_loops(dirs, scope.sandbox_ids))
    found.extend(_firewall_rules(scope.network_ids))
    return found


def _mounts_and_loops(dirs: list[Path], sandbox_ids: set[str]) -> list[str]:
    """Loop devices backed by one of these disk images, and mounts of their mount points, of
    those loop devices, or of the sandboxes' volume directories."""
    if not dirs:
        return []
    prefixes = tuple(f"{d}/" for d in dirs)
    found, loops = [], set()
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        listing = subprocess.run(
            ["losetup", "-a"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
        for line in listing.splitlines():
            device, _, rest = line.partition(":")
            if any(p in rest for p in prefixes):
                loops.add(device.strip())
                found.append(f"loop device {line.strip()}")
    volumes = tuple(f"/volumes/{workspace_volume(s)}/" for s in sandbox_ids)
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            fields = line.split()
            point = fields[4]
            source = line.split(" - ", 1)[1].split()[1] if " - " in line else ""
            if (
                f"{point}/".startswith(prefixes)
                or source in loops
                or any(v in f"{point}/" for v in volumes)
            ):
                found.append(f"mount {source} on {point}")
    return found


def _firewall_rules(network_ids: set[str]) -> list[str]:
    """iptables rules still tagged for the bridges of these (removed) networks."""
    if not network_ids or os.geteuid() != 0:
        return []
    markers = {f"{_COMMENT_PREFIX}{_bridge_of(n, None)}" for n in network_ids}
    found = []
    for chain in ("DOCKER-USER", "INPUT"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            listing = subprocess.run(
                ["iptables", "-w", "10", "-S", chain],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            ).stdout
            found.extend(
                f"iptables rule {line}"
                for line in listing.splitlines()
                if any(m in line for m in markers)
            )
    return found
