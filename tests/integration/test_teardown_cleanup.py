"""A test installation's teardown leaves nothing on the machine (tests/cleanup.py).

Docker's default address pools hold ~30 bridge networks and every sandbox holds a loop device:
a suite that force-removed only containers ran out of both. Here an installation's worker
leaves two running sandboxes behind (as `aintandem up` does when it stops: by design), one per
egress mode; the shared teardown must remove their containers, volumes, disks (image directory,
mount, loop device), workspace networks and firewall rules. Checked directly on the host, not
through the helper's own leftover list.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest

from activities.docker_runtime import DockerRuntime
from domain.containers import (
    EGRESS_INTERNET,
    EGRESS_NONE,
    ContainerSpec,
    container_name,
    network_name,
    workspace_volume,
)
from tests.cleanup import leftovers, remove_installation_sandboxes
from tests.integration.test_docker_runtime import sandbox_image  # noqa: F401 (fixture)

pytestmark = pytest.mark.docker


@pytest.fixture
def installation() -> Iterator[str]:
    name = f"teardown{uuid.uuid4().hex[:8]}"
    yield name
    # Whatever a failure of the test left (no check: the test reports what failed).
    remove_installation_sandboxes(name, check=False)


def _loop_devices(image: Path) -> list[str]:
    # `losetup -a`, not `-j image`: a device whose image was deleted under it still shows here.
    listing = subprocess.run(["losetup", "-a"], capture_output=True, text=True, check=True).stdout
    return [line for line in listing.splitlines() if f"{image.parent}/" in line]


def _firewall(bridge: str) -> list[str]:
    found = []
    for chain in ("DOCKER-USER", "INPUT"):
        listing = subprocess.run(
            ["iptables", "-w", "10", "-S", chain], capture_output=True, text=True, check=False
        ).stdout
        found += [line for line in listing.splitlines() if f"aintandem:{bridge}" in line]
    return found


def test_a_stopped_stack_with_running_sandboxes_leaves_nothing_behind(
    installation: str,
    sandbox_image: str,  # noqa: F811
) -> None:
    runtime = DockerRuntime(image=sandbox_image, installation=installation)
    if runtime.disks.unavailable_reason():
        pytest.skip(f"sandbox disks unavailable here: {runtime.disks.unavailable_reason()}")
    egress_modes = [EGRESS_NONE]
    if runtime.networks.firewall.unavailable_reason() is None:
        egress_modes.append(EGRESS_INTERNET)
    sandboxes = {}
    for egress in egress_modes:
        sid = f"sb_td{uuid.uuid4().hex[:10]}"
        wid = f"ws_td{uuid.uuid4().hex[:10]}"
        spec = ContainerSpec(
            sandbox_id=sid, workspace_id=wid, name=egress, memory_mb=256, disk_mb=64, egress=egress
        )
        runtime.ensure_container(spec)
        assert runtime.start(sid).running
        sandboxes[sid] = network_name(installation, wid, egress)
    dk = runtime.client
    bridges = {}
    for sid, net in sandboxes.items():
        bridges[sid] = f"br-{dk.api.inspect_network(net)['Id'][:12]}"
    # The worker is gone; its sandboxes keep running, and everything they hold is in place.
    runtime.close()
    dk = docker.from_env()
    try:
        before = leftovers(installation, client=dk)
        for sid, net in sandboxes.items():
            image = runtime.disks.image(sid)
            assert _loop_devices(image), f"{sid}: no loop device before the teardown"
            assert os.path.ismount(runtime.disks.mount_point(sid))
            assert any(net in entry for entry in before), before
            assert any("loop device" in e and sid in e for e in before), before
        if EGRESS_INTERNET in egress_modes:
            sid = list(sandboxes)[-1]
            assert _firewall(bridges[sid]), "no firewall rules for the internet network"

        done = remove_installation_sandboxes(installation, client=dk)

        assert sorted(done.removed) == sorted(sandboxes)
        assert done.leftovers == []
        label = {"label": f"aintandem.installation={installation}"}
        assert dk.api.containers(all=True, filters=label) == []
        assert dk.api.networks(filters=label) == []
        mounts = Path("/proc/self/mountinfo").read_text()
        for sid, net in sandboxes.items():
            with pytest.raises(docker.errors.NotFound):
                dk.api.inspect_container(container_name(sid))
            with pytest.raises(docker.errors.NotFound):
                dk.api.inspect_volume(workspace_volume(sid))
            with pytest.raises(docker.errors.NotFound):
                dk.api.inspect_network(net)
            directory = runtime.disks.root / sid
            assert not directory.exists(), f"{directory} is still there"
            assert str(directory) not in mounts, f"{directory} is still mounted"
            assert workspace_volume(sid) not in mounts, f"{sid}'s volume is still mounted"
            assert not _loop_devices(runtime.disks.image(sid)), f"{sid}: loop device left"
            assert not _firewall(bridges[sid]), f"{sid}: firewall rules left"
    finally:
        dk.close()


def test_an_installation_id_is_required() -> None:
    # "" labels nothing: it would sweep every installation's networks and disks on the engine.
    with pytest.raises(ValueError):
        remove_installation_sandboxes("")
