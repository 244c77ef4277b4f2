"""An append-only line log whose final line lands even on a full disk.

A training that dies because the disk is full must still say so in its event
log; otherwise the run shows as "stale" and the error is lost. So space for
the final line is set aside while there still is some:

* Where the filesystem supports it (Linux ext4, xfs, btrfs, tmpfs), the log
  keeps ``RESERVE_BYTES`` of blocks allocated past its end with
  ``fallocate(FALLOC_FL_KEEP_SIZE)`` -- readers see no extra bytes, and
  ``fallocate(2)`` guarantees that writes into that range cannot fail for lack
  of space. Ordinary lines first extend the reservation by their own length
  (failing with ENOSPC when the disk is full, before writing anything), so
  the reservation is always whole for a final line.
* Elsewhere a spare file of ``RESERVE_BYTES`` beside the log is deleted to
  make room when a final line meets ENOSPC.

A line is written whole or not at all: after a failed or short write the file
is cut back to where the line started, so a later line is never glued to half
of an earlier one.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import logging
import os
import stat
import threading
from pathlib import Path

from fracture.util.files import NotRegularFileError, is_disk_full

log = logging.getLogger(__name__)

RESERVE_BYTES = 256 * 1024
_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_UNSUPPORTED = (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL, errno.ENOTTY)


def _load_fallocate():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        func = libc.fallocate
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    func.restype = ctypes.c_int
    return func


_libc_fallocate = _load_fallocate()


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    """``fallocate(2)``; OSError(EOPNOTSUPP) where the platform has none."""
    if _libc_fallocate is None:
        raise OSError(errno.EOPNOTSUPP, "fallocate is not available on this platform")
    if _libc_fallocate(fd, mode, offset, length) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


class AppendLog:
    """Whole lines appended to ``path``; a final line of up to ``reserve_bytes`` always fits."""

    def __init__(self, path: str | Path, *, reserve_bytes: int = RESERVE_BYTES) -> None:
        self.path = Path(path)
        self.reserve_bytes = int(reserve_bytes)
        self.spare_path = self.path.with_name(f".{self.path.name}.reserve")
        self._lock = threading.Lock()
        self._tail_mode = True  # fallocate past the end; False: spare file
        self.reserved_end = 0  # file offset up to which blocks are set aside (tail mode)
        self._file = self._open()
        try:
            self._reserve(0)
        except OSError as exc:
            log.warning("%s: no space could be set aside for the final event (%s)", self.path, exc)

    @property
    def fd(self) -> int:
        return self._file.fileno()

    def append(self, data: bytes, *, final: bool = False) -> None:
        """Write ``data`` (one or more whole lines) at the end of the log.

        An ordinary line never uses the space kept for the final one: on a full
        disk it raises ENOSPC and writes nothing. A ``final`` line uses it.

        Raises:
            OSError: the write failed (the file is left as it was).
        """
        with self._lock:
            if self._file.closed:
                self._file = self._open()
            if not final:
                self._reserve(len(data))
                self._write(data)
                return
            try:
                self._write(data)
            except OSError as exc:
                if not (is_disk_full(exc) and self._free_spare()):
                    raise
                log.warning("%s: disk full; wrote the final event into the space kept for it", self.path)
                self._write(data)

    def close(self) -> None:
        """Give the unused reservation back and close the file."""
        with self._lock:
            if self._file.closed:
                return
            try:
                size = os.fstat(self.fd).st_size
                if self._tail_mode and self.reserved_end > size:
                    fallocate(self.fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, size, self.reserved_end - size)
            except OSError as exc:
                log.debug("%s: could not release the reserved tail (%s)", self.path, exc)
            self.reserved_end = 0
            self._free_spare()
            self._file.close()

    # ------------------------------------------------------------------

    def _open(self):
        """The log opened for appending -- only if it is a regular file (a FIFO would block)."""
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NONBLOCK
        try:
            fd = os.open(self.path, flags, 0o644)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # a FIFO without a reader
                raise NotRegularFileError(f"{self.path}: is a FIFO (named pipe), not a log file; remove it") from None
            raise
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise NotRegularFileError(f"{self.path}: is not a regular file; remove it")
            os.set_blocking(fd, True)
            return os.fdopen(fd, "ab", buffering=0)  # the fd closes with the object
        except BaseException:
            os.close(fd)
            raise

    def _write(self, data: bytes) -> None:
        fd = self.fd
        start = os.fstat(fd).st_size
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(fd, view):]
        except BaseException:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)  # no half line left behind
            if self._tail_mode:  # truncation can free the reserved tail's blocks: take them back
                with contextlib.suppress(OSError):
                    self.reserved_end = 0
                    self._reserve(0)
            raise

    def _reserve(self, extra: int) -> None:
        """Make sure ``extra + reserve_bytes`` past the end are set aside (ENOSPC if not)."""
        if self._tail_mode:
            size = os.fstat(self.fd).st_size
            want = size + extra + self.reserve_bytes
            if want <= self.reserved_end:
                return
            try:
                fallocate(self.fd, _FALLOC_FL_KEEP_SIZE, size, want - size)
            except OSError as exc:
                if exc.errno not in _UNSUPPORTED:
                    raise
                log.debug("%s: fallocate unsupported (%s); keeping a spare file instead", self.path, exc)
                self._tail_mode = False
            else:
                self.reserved_end = want
                return
        if not self.spare_path.exists():
            self._make_spare()

    def _make_spare(self) -> None:
        tmp = self.spare_path.with_name(self.spare_path.name + ".part")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            try:
                block = bytes(min(self.reserve_bytes, 1 << 16))
                left = self.reserve_bytes
                while left > 0:
                    left -= os.write(fd, block[:left])
                os.fsync(fd)  # real blocks, not promises
            finally:
                os.close(fd)
            os.replace(tmp, self.spare_path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise

    def _free_spare(self) -> bool:
        try:
            self.spare_path.unlink()
        except FileNotFoundError:
            return False
        return True
