"""Size-limited sandbox disks: one loop-mounted ext4 image per sandbox holds its /workspace.

Why this mechanism: the engine's own size limits need what this kind of machine does not have
(`--storage-opt size` and the local volume driver's `size` need overlay2/volumes on XFS with
project quotas; here the backing filesystem is ext4), and the local volume driver cannot
loop-mount an image file itself (`o=loop` is a mount(8) option, the engine calls mount(2)).
So the worker, on the engine's host as root, makes and mounts a sparse ext4 image per sandbox
under `AINTANDEM_SANDBOX_DISK_DIR` (default /var/lib/aintandem/sandbox-disks):

    <root>/<sandbox_id>/disk.img        sparse image, `disk_mb` MiB, ext4 with no root reserve
    <root>/<sandbox_id>/mnt             its mount point (nosuid, nodev)
    <root>/<sandbox_id>/mnt/workspace   what the container sees as /workspace (uid 1000)
    <root>/<sandbox_id>/installation    the installation that owns it (orphan sweep)

The sandbox's named volume binds `mnt/workspace`. That directory exists only inside the mounted
filesystem, so if the image is not mounted (after a reboot, before the worker ensured it) the
engine refuses to start the container instead of letting it write to the host's disk.
A write past the size fails with ENOSPC inside the sandbox; the host's disk only holds what was
written (sparse).

How far the host's disk is promised: the API caps `disk_mb` at the operator's
`AINTANDEM_SANDBOX_MAX_DISK_MB` (default 10240), and this module refuses to make or grow a disk
whose not-yet-written part is larger than the free space of the disk directory's filesystem at
that moment (`DiskSpaceExhausted`: the sandbox goes to `error` with the reason; a retry does not
help). So each disk, alone, could be filled completely when it was made; the sum of all disks may
still exceed the free space (sparse overcommit), bounded by the cap times the sandbox quotas.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from domain.containers import SANDBOX_GID, SANDBOX_UID

log = logging.getLogger("aintandem.sandbox_disk")

DEFAULT_DISK_ROOT = "/var/lib/aintandem/sandbox-disks"
_MIB = 1024 * 1024
_TOOL_TIMEOUT = 120


class DiskError(Exception):
    """A sandbox disk could not be made, mounted or resized."""


class DiskSpaceExhausted(DiskError):
    """The requested disk is larger than what the host's filesystem has free."""


@dataclass(frozen=True)
class DiskUsage:
    used_mb: float
    size_mb: float


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=_TOOL_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DiskError(f"{argv[0]}: {exc}") from exc
    return done


def _checked(*argv: str) -> str:
    done = _run(*argv)
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip()[-500:]
        raise DiskError(f"{' '.join(argv)} failed ({done.returncode}): {detail}")
    return done.stdout


def _allocated(image: Path) -> int:
    """Bytes of the sparse image actually on the host's disk."""
    return image.stat().st_blocks * 512


def _attached(image: Path) -> bool:
    """Whether a loop device still holds the image (mounted elsewhere, e.g. by a container)."""
    return bool(_checked("losetup", "-j", str(image)).strip())


class SandboxDisks:
    """Makes, mounts, resizes, measures and removes the per-sandbox disk images."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root or os.environ.get("AINTANDEM_SANDBOX_DISK_DIR") or DEFAULT_DISK_ROOT)
        self._available: str | bool | None = False  # False: not checked yet
        self._lock = threading.Lock()

    # -- capability ------------------------------------------------------------------------------

    def unavailable_reason(self) -> str | None:
        """None when disks can be made here, else why not (checked once per process)."""
        if self._available is False:
            self._available = self._check()
            if self._available is not None:
                log.warning("sandbox disk limits are NOT enforced: %s", self._available)
        return self._available if isinstance(self._available, str) else None

    def _check(self) -> str | None:
        if os.geteuid() != 0:
            return "the worker is not root (loop-mounting disk images needs root on the host)"
        if not (Path("/dev/loop-control").exists() or Path("/dev/loop0").exists()):
            return "no loop devices on this host (/dev/loop-control)"
        for tool in ("mount", "umount", "mkfs.ext4", "resize2fs", "e2fsck", "losetup"):
            if shutil.which(tool) is None:
                return f"{tool} is not installed (e2fsprogs/mount)"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self.root.chmod(0o700)
        except OSError as exc:
            return f"cannot create {self.root}: {exc}"
        return None

    @property
    def available(self) -> bool:
        return self.unavailable_reason() is None

    # -- paths -----------------------------------------------------------------------------------

    def _dir(self, sandbox_id: str) -> Path:
        if not sandbox_id or "/" in sandbox_id or sandbox_id.startswith("."):
            raise DiskError(f"invalid sandbox id {sandbox_id!r}")
        return self.root / sandbox_id

    def image(self, sandbox_id: str) -> Path:
        return self._dir(sandbox_id) / "disk.img"

    def mount_point(self, sandbox_id: str) -> Path:
        return self._dir(sandbox_id) / "mnt"

    def workspace_dir(self, sandbox_id: str) -> Path:
        """The host directory the sandbox's /workspace volume binds (inside the mounted disk)."""
        return self.mount_point(sandbox_id) / "workspace"

    @contextlib.contextmanager
    def _locked(self, sandbox_id: str) -> Iterator[Path]:
        """One process at a time per sandbox disk (two workers may both run activities)."""
        directory = self._dir(sandbox_id)
        directory.mkdir(parents=True, exist_ok=True)
        with self._lock, open(directory / "lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield directory
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # -- lifecycle -------------------------------------------------------------------------------

    def ensure(self, sandbox_id: str, disk_mb: int, installation: str = "") -> Path:
        """Make (first time), resize (size changed) and mount the disk; returns the host path
        of its workspace directory. Idempotent and cheap when everything is in place."""
        with self._locked(sandbox_id) as directory:
            image, mnt = self.image(sandbox_id), self.mount_point(sandbox_id)
            owner = directory / "installation"
            if not owner.exists():
                owner.write_text(installation)
            want = int(disk_mb) * _MIB
            if not image.exists():
                self._check_free(want, 0)
                self._make(image, want)
            else:
                if want > image.stat().st_size:
                    self._check_free(want, _allocated(image))
                self._resize(image, mnt, want)
            if not os.path.ismount(mnt):
                mnt.mkdir(exist_ok=True)
                options = "loop,nosuid,nodev,noatime"
                _checked("mount", "-t", "ext4", "-o", options, str(image), str(mnt))
            workspace = mnt / "workspace"
            if not workspace.is_dir():
                workspace.mkdir(mode=0o755)
                os.chown(workspace, SANDBOX_UID, SANDBOX_GID)
            return workspace

    def free_bytes(self) -> int:
        """Free space of the disk directory's filesystem, for an unprivileged writer (the
        images are written by the kernel's loop driver: root's reserve is not promised)."""
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize

    def _check_free(self, want: int, allocated: int) -> None:
        """Refuse a disk (or growth) whose unwritten part the host could not hold right now:
        `want` bytes promised, `allocated` of them already on the host's disk."""
        missing = want - allocated
        free = self.free_bytes()
        if missing > free:
            raise DiskSpaceExhausted(
                f"a {want // _MIB} MiB disk does not fit: the host's filesystem holding "
                f"{self.root} has {free // _MIB} MiB free (lower resources.disk_mb or free space)"
            )

    @staticmethod
    def _make(image: Path, size: int) -> None:
        partial = image.with_name(image.name + ".new")
        with open(partial, "wb") as fh:
            fh.truncate(size)  # sparse: the host's disk holds only what is written
        # -m 0: no blocks reserved for root (the agent is not root: it would hit ENOSPC early).
        _checked("mkfs.ext4", "-q", "-F", "-m", "0", "-L", "aintandem", str(partial))
        os.replace(partial, image)

    def _resize(self, image: Path, mnt: Path, want: int) -> None:
        """Grow or shrink the filesystem to `want` bytes, offline: online growing is refused
        by some kernels, and this only runs while no container uses the disk (re-creation).
        A shrink that the data does not fit into keeps the old size (logged)."""
        have = image.stat().st_size
        if want == have:
            return
        if os.path.ismount(mnt):
            _checked("umount", str(mnt))
        if _attached(image):
            log.warning("cannot resize %s while it is still in use; keeping its size", image)
            return
        _checked("e2fsck", "-f", "-p", str(image))
        if want > have:
            with open(image, "r+b") as fh:
                fh.truncate(want)
            _checked("resize2fs", str(image))
            return
        done = _run("resize2fs", str(image), f"{want // 1024}K")
        if done.returncode != 0:
            log.warning(
                "cannot shrink %s to %d MiB (keeping %d MiB): %s",
                image,
                want // _MIB,
                have // _MIB,
                (done.stderr or done.stdout).strip()[-300:],
            )
            return
        with open(image, "r+b") as fh:
            fh.truncate(want)

    def adopt(self, sandbox_id: str, source: Path) -> None:
        """Copy an older, unlimited workspace volume's files into the disk (upgrade path)."""
        target = self.workspace_dir(sandbox_id)
        if not source.is_dir() or not os.path.ismount(self.mount_point(sandbox_id)):
            return
        # cp -a keeps owners, modes, links and times; a full disk fails loudly (ENOSPC).
        _checked("cp", "-a", "--", f"{source}/.", f"{target}/")

    def usage(self, sandbox_id: str) -> DiskUsage | None:
        """Used and total space of the mounted disk (None when it is not mounted here)."""
        try:
            mnt = self.mount_point(sandbox_id)
            if not os.path.ismount(mnt):
                return None
            st = os.statvfs(mnt)
        except (OSError, DiskError):
            return None
        used = (st.f_blocks - st.f_bfree) * st.f_frsize
        return DiskUsage(used_mb=round(used / _MIB, 2), size_mb=float(self.size_mb(sandbox_id)))

    def size_mb(self, sandbox_id: str) -> int:
        """The disk's current size (0: none)."""
        try:
            return self.image(sandbox_id).stat().st_size // _MIB
        except OSError:
            return 0

    def remove(self, sandbox_id: str) -> None:
        """Unmount and delete the disk (absent is success). The volume binding it is gone."""
        directory = self._dir(sandbox_id)
        if not directory.exists():
            return
        mnt = self.mount_point(sandbox_id)
        if os.path.ismount(mnt):
            done = _run("umount", str(mnt))
            if done.returncode != 0:
                # Still bound somewhere (a container being removed): detach lazily; the loop
                # device is released with its last user.
                _checked("umount", "-l", str(mnt))
        shutil.rmtree(directory, ignore_errors=True)

    def owned(self, installation: str) -> list[str]:
        """Sandbox ids of the disks this installation made."""
        if not self.root.is_dir():
            return []
        found = []
        for directory in self.root.iterdir():
            with contextlib.suppress(OSError):
                if (directory / "installation").read_text() == installation:
                    found.append(directory.name)
        return found
