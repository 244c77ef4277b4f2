"""The one home of the small file helpers every part of the core needs.

Atomic writes (temporary file in the same folder, fsync, ``os.replace``),
file stamps, pid checks and pid-stamped locks, and opening only regular files
with bounded reads: a FIFO, a device or a symlink to ``/dev/zero`` named
``x.jpg`` must never hang or exhaust a reader. Import from here; do not write
another copy.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

from fracture.errors import FractureError

NO_STAMP = (-1, -1)


class NotRegularFileError(FractureError):
    """A path that is not a regular file (FIFO, device, socket, directory) was to be read."""


class FileTooLargeError(FractureError):
    """A file is larger than the limit its reader allows."""


# --------------------------------------------------------------------------
# Regular files and bounded reads.


def regular_file_stat(path: str | os.PathLike[str]) -> os.stat_result:
    """``os.stat`` (following links) that refuses anything but a regular file.

    Raises:
        FileNotFoundError / PermissionError: as ``os.stat``.
        NotRegularFileError: a FIFO, device, socket or directory.
    """
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        kind = _kind(st.st_mode)
        raise NotRegularFileError(f"{os.fspath(path)}: is a {kind}, not a regular file; give an image file")
    return st


def is_regular_file(path: str | os.PathLike[str]) -> bool:
    """True only for an existing regular file (links followed); never opens it."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def open_regular(path: str | os.PathLike[str], mode: str = "rb"):
    """Open a file for reading only if it is a regular file, without blocking on a FIFO.

    ``O_NONBLOCK`` makes opening a FIFO return at once (so the check after
    opening cannot hang); the descriptor's own ``fstat`` is then checked, which
    also closes the race between a stat and the open.

    Raises:
        FileNotFoundError / PermissionError: as ``open``.
        NotRegularFileError: anything that is not a regular file.
    """
    if "r" not in mode or "+" in mode:
        raise ValueError("open_regular is for reading")
    fd = os.open(os.fspath(path), os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFileError(
                f"{os.fspath(path)}: is a {_kind(st.st_mode)}, not a regular file; give an image file"
            )
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, mode)
    except BaseException:
        os.close(fd)
        raise


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file's bytes, read in 1 MiB chunks: the one digest for checkpoints, caches and exports."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_bytes_bounded(path: str | os.PathLike[str], max_bytes: int) -> bytes:
    """A regular file's bytes, refusing files over ``max_bytes`` before reading them.

    Raises:
        NotRegularFileError: not a regular file.
        FileTooLargeError: larger than ``max_bytes``.
        OSError: missing, unreadable.
    """
    with open_regular(path) as fh:
        size = os.fstat(fh.fileno()).st_size
        if size > max_bytes:
            raise FileTooLargeError(
                f"{os.fspath(path)}: {size / 1e6:.1f} MB is over the {max_bytes / 1e6:.1f} MB limit for this file"
            )
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:  # grew while reading
        raise FileTooLargeError(f"{os.fspath(path)}: over the {max_bytes / 1e6:.1f} MB limit for this file")
    return data


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISDIR(mode):
        return "directory"
    return "special file"


# --------------------------------------------------------------------------
# Stamps.


def file_stamp(path: str | os.PathLike[str]) -> tuple[int, int]:
    """``(size, mtime_ns)`` of a regular file (links followed); :data:`NO_STAMP` when it
    cannot be stat'ed or is not a regular file -- reading it then reports why."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return NO_STAMP
    if not stat.S_ISREG(st.st_mode):
        return NO_STAMP
    return (st.st_size, st.st_mtime_ns)


def file_stamps(paths: Sequence[str | os.PathLike[str]]) -> list[tuple[int, int]]:
    return [file_stamp(p) for p in paths]


# --------------------------------------------------------------------------
# Atomic writes.


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, mode: int | None = None) -> Path:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half.

    The temporary file is removed on any failure (a full disk included), so no
    ``.tmp`` is left behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if mode is None:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask  # mkstemp makes 0600; these are ordinary files
        os.chmod(tmp_name, mode)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))




def atomic_temp_path(path: str | os.PathLike[str]) -> Path:
    """A fresh temporary name beside ``path`` (for writers that need a filename, e.g. safetensors);
    the caller must ``os.replace`` it onto ``path`` or unlink it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    return Path(tmp_name)


@contextlib.contextmanager
def atomic_replace(path: str | os.PathLike[str]) -> Iterator[Path]:
    """``with atomic_replace(p) as tmp: writer(tmp)``: for writers that need a filename (``torch.save``,
    ``np.save``); ``tmp`` replaces ``path`` when the block ends, and is removed if it raises."""
    tmp = atomic_temp_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------
# Processes and locks.


@contextlib.contextmanager
def exclusive_lock(lock_path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_path`` (created, with its folder) for the block: one writer at a
    time across threads and processes. The descriptor is not inherited by children; closing it drops the lock,
    so a process that dies frees it."""
    path = Path(lock_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def pid_alive(pid: int) -> bool:
    """True when a process with this pid exists (another user's included)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def read_pid(path: str | os.PathLike[str]) -> int | None:
    """The pid in a pid/lock file; None when absent, garbage or not a regular file (never blocks)."""
    try:
        return int(read_bytes_bounded(path, 64).split()[0])
    except (OSError, ValueError, IndexError, FractureError):
        return None


class LockHeldError(FractureError):
    """Another live process holds a pid lock."""


def acquire_pid_lock(path: str | os.PathLike[str], *, pid: int | None = None) -> Path:
    """Create ``path`` holding our pid, atomically (``O_EXCL``); a lock whose pid is dead is stale
    and taken over.

    Raises:
        LockHeldError: a live process holds it (its pid is named).
    """
    path = Path(path)
    pid = os.getpid() if pid is None else pid
    for _ in range(3):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            holder = read_pid(path)
            if holder is not None and pid_alive(holder) and holder != pid:
                raise LockHeldError(f"{path}: held by the running process {holder}")
            try:  # stale (dead pid or unreadable): take it over
                path.unlink()
            except FileNotFoundError:
                pass
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{pid}\n")
        return path
    raise LockHeldError(f"{path}: could not take the lock (another process keeps taking it)")


def release_pid_lock(path: str | os.PathLike[str], *, pid: int | None = None) -> None:
    """Remove the lock if it is ours."""
    path = Path(path)
    pid = os.getpid() if pid is None else pid
    if read_pid(path) == pid:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
