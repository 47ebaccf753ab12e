"""A hard disk bound for a workspace: an ext4 image of fixed size, loop-mounted on it.

Polling a workspace's size (engine.toolrun) lets a call overshoot by what it writes
between two measurements, and RLIMIT_FSIZE caps one file, not a total. A filesystem of
its own is a bound the kernel enforces: a write past it fails with ENOSPC. Each
workspace directory gets an image file (sparse: it takes disk only as it fills, never
more than its size) holding an ext4 filesystem, mounted ``nosuid,nodev`` on the
directory through a loop device; its root belongs to the sandbox user, mode 0700.

Needs root with CAP_SYS_ADMIN (mount), ``mkfs.ext4``, ``mount`` and a loop device
(``/dev/loop-control``): `volume_problem()` says what is missing. The shipped systemd unit has
no CAP_SYS_ADMIN, so there it is unavailable and the caller falls back to polling.

Mounts live in the host's mount namespace and outlive the process: `ensure_volume()` finds a
workspace already mounted and leaves it; `unmount_volume()` detaches one (mount's loop option
sets autoclear, so the loop device is released with it). A directory that already holds
files is never mounted over (they would be hidden): `ensure_volume()` refuses it.

Blocking (mkfs, mount): call from a worker thread. Errors: `VolumeError` with the reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess

_CAP_SYS_ADMIN = 21
_TOOLS = ("mkfs.ext4", "mount", "umount")


class VolumeError(OSError):
    """A workspace volume could not be made or mounted (the message says why)."""


def _which(name: str) -> str | None:
    return shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")


def volume_problem() -> str | None:
    """Why workspace volumes cannot be used here, or None when they can."""
    if os.geteuid() != 0:
        return "the engine is not root"
    try:
        with open("/proc/self/status") as handle:
            caps = next(line.split()[1] for line in handle if line.startswith("CapEff:"))
    except (OSError, StopIteration):
        return "cannot read our capabilities"
    if not int(caps, 16) >> _CAP_SYS_ADMIN & 1:
        return "no CAP_SYS_ADMIN (mounting needs it)"
    missing = [name for name in _TOOLS if _which(name) is None]
    if missing:
        return f"{', '.join(missing)} not installed (e2fsprogs, mount)"
    if not os.path.exists("/dev/loop-control"):
        return "no loop devices (/dev/loop-control is missing)"
    return None


def volume_mounted(path: str) -> bool:
    """Whether a filesystem is mounted exactly on ``path``."""
    target = os.path.realpath(path)
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            point = line.split()[4].replace("\\040", " ").replace("\\011", "\t").replace("\\134", "\\")
            if point == target:
                return True
    return False


def _run(argv: list[str]) -> None:
    done = subprocess.run(argv, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}, capture_output=True,
                          timeout=60, check=False)
    if done.returncode != 0:
        why = (done.stderr or done.stdout).decode("utf-8", "replace").strip().splitlines()[-1:] or ["failed"]
        raise VolumeError(f"{os.path.basename(argv[0])}: {why[0]}")


def ensure_volume(path: str, image: str, size_bytes: int, uid: int, gid: int) -> None:
    """Mount an ext4 image of ``size_bytes`` (created at ``image`` when missing) on the
    directory ``path``, owned by ``uid``:``gid``, mode 0700. A no-op when something is
    mounted there already. Raises VolumeError (nothing mounted) when it cannot."""
    if volume_mounted(path):
        return
    if any(True for _ in os.scandir(path)):
        raise VolumeError(f"{path} already holds files; not mounting a volume over them")
    if not os.path.exists(image):
        os.makedirs(os.path.dirname(image), mode=0o700, exist_ok=True)
        fd = os.open(image + ".new", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.ftruncate(fd, size_bytes)
        finally:
            os.close(fd)
        try:
            # -m 0: no blocks reserved for root; the tool may use all of it.
            _run([_which("mkfs.ext4") or "mkfs.ext4", "-q", "-F", "-m", "0", "-E",
                  f"root_owner={uid}:{gid}", image + ".new"])
        except BaseException:
            os.unlink(image + ".new")
            raise
        os.rename(image + ".new", image)
    _run([_which("mount") or "mount", "-t", "ext4", "-o", "loop,nosuid,nodev", image, path])
    try:
        os.chmod(path, 0o700)
        lost = os.path.join(path, "lost+found")
        if os.path.isdir(lost) and not os.listdir(lost):
            os.rmdir(lost)  # fsck recreates it when needed; a tool need not see it
    except OSError as exc:
        unmount_volume(path)
        raise VolumeError(f"{path}: {exc.strerror}") from None


def unmount_volume(path: str) -> None:
    """Unmount the volume on ``path`` (its loop device is released with it)."""
    _run([_which("umount") or "umount", path])
