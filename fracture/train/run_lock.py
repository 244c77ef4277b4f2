"""One training per run folder: a lock file with the holder's pid.

Two trainings writing into one folder mix their events and replace each
other's checkpoints, so whoever trains in a folder (the CLI, ``train()``, the
launcher on behalf of the process it starts) first takes ``RUN_DIR/train.lock``.
A second taker fails at once with a :class:`TrainingError` naming the folder
and the running pid, before it has touched any file there.

Exclusivity comes from ``flock`` on the lock file, not from the pid written in
it: the kernel drops the lock when the holder dies (SIGKILL and out-of-memory
included), so a stale lock of a dead pid is taken over by the next run with no
guessing, and pid reuse cannot keep a folder locked. The pid is there for the
message and for other tools (``read_pid``).

The launcher hands its lock to the process it starts (the descriptor is
inherited, named in :data:`INHERIT_ENV`), so no other launch can slip in
between the spawn and the child's own start-up.

The holder owns the folder's temporary files: ``*.tmp`` left by a killed
writer are removed when the lock is taken, and ours when it is released.
"""
from __future__ import annotations

import errno
import fcntl
import logging
import os
import threading
from pathlib import Path

from fracture.util.files import read_pid
from fracture.errors import TrainingError
from fracture.train.events import EVENTS_FILE, PID_FILE, run_status

log = logging.getLogger(__name__)

LOCK_FILE = "train.lock"
#: Environment variable through which a launcher passes its locked descriptor to the child.
INHERIT_ENV = "FRACTURE_RUN_LOCK_FD"
#: What may already lie in a folder a new run starts in: the lock, and what the launcher writes
#: before the process starts (its pid and ``launcher.STDOUT_FILE``; the launcher imports this module).
#: Anything else (a ``config.json``, ``metrics.json`` or ``predictions_test.csv`` from elsewhere) would
#: be overwritten by the run, so the folder is refused.
START_FILES = frozenset({LOCK_FILE, PID_FILE, "stdout.log"})

_held: dict[str, "_Held"] = {}  # lock path -> this process's hold (re-entrant)
_guard = threading.Lock()


class _Held:
    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.depth = 1
        self.thread = threading.get_ident()


class RunClaim:
    """This process's hold on a run folder; release it (or use ``with``) when the run ends."""

    def __init__(self, run_dir: Path, path: Path, key: str) -> None:
        self.run_dir = run_dir
        self.path = path
        self._key = key
        self._released = False

    @property
    def fd(self) -> int:
        """The locked descriptor (to pass to a child with :meth:`hand_over`)."""
        return _held[self._key].fd

    def release(self) -> None:
        """Drop this hold; the last one removes the lock file and our temporary files."""
        with _guard:
            if self._released:
                return
            self._released = True
            held = _held.get(self._key)
            if held is None:
                return
            held.depth -= 1
            if held.depth:
                return
            del _held[self._key]
            remove_temp_files(self.run_dir)
            try:  # unlink while still locked: a waiter re-checks the inode (see _lock)
                self.path.unlink()
            except FileNotFoundError:
                pass
            os.close(held.fd)

    def set_pid(self, pid: int) -> None:
        """Name another process (the child a launcher started) as the holder in the lock file."""
        _write_pid(self.fd, pid)

    def hand_over(self) -> None:
        """Forget our hold without unlocking: a child started with :meth:`fd` in ``pass_fds``
        keeps the lock (the lock belongs to the open file, shared with the child)."""
        with _guard:
            if self._released:
                return
            self._released = True
            held = _held.pop(self._key, None)
            if held is not None:
                os.close(held.fd)

    def __enter__(self) -> "RunClaim":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def claim_run_dir(run_dir: str | Path, *, resume: bool = False, own_files: frozenset[str] | set[str] = frozenset()
                  ) -> RunClaim:
    """Take the folder's run lock; refuse a folder that already holds a run unless resuming.

    Re-entrant within a thread (the CLI claims, then ``train()`` claims again).

    Args:
        own_files: names this run wrote itself before claiming (the launcher's
            ``config.json``), accepted beside :data:`START_FILES` in a new run's folder.

    Raises:
        TrainingError: ``run_dir`` is a file (or cannot be made), another live
            process trains there (its pid is named), the folder holds a run
            (finished, failed, cancelled) and ``resume`` is False, or a new run's
            folder holds files the run did not write (named; nothing is touched).
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise TrainingError(f"{run_dir}: exists and is not a folder; give a new folder as --out")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a parent is a file, read-only, ...
        raise TrainingError(f"{run_dir}: cannot create the run folder ({exc.strerror or exc}); "
                            "give a new folder as --out") from None
    path = run_dir / LOCK_FILE
    key = os.path.realpath(path)  # one folder, however it is spelled
    with _guard:
        held = _held.get(key)
        if held is not None and held.thread != threading.get_ident():
            raise TrainingError(
                f"{run_dir}: a training is already running in this folder (this process {os.getpid()}, "
                "another thread); wait for it, or choose another --out"
            )
        reentrant = held is not None
        if held is not None:
            held.depth += 1
        else:
            fd = _adopt_inherited(path)
            if fd is None:
                fd = _lock(path, run_dir)
            _held[key] = _Held(fd)
            _write_pid(fd)
            remove_temp_files(run_dir)  # left by a killed writer: nobody else writes here now
    claim = RunClaim(run_dir, path, key)
    if not resume:
        try:
            _refuse_existing_run(run_dir)
            if not reentrant:  # the outer claim checked the folder; files written since are ours
                _refuse_foreign_files(run_dir, START_FILES | set(own_files))
        except BaseException:
            claim.release()
            raise
    return claim


def remove_temp_files(run_dir: str | Path) -> list[Path]:
    """Delete ``*.tmp`` files (atomic writers' temporaries) directly in ``run_dir``."""
    removed = []
    for tmp in Path(run_dir).glob("*.tmp"):
        try:
            if tmp.is_file() and not tmp.is_symlink():
                tmp.unlink()
                removed.append(tmp)
        except OSError as exc:
            log.warning("could not remove the temporary file %s: %s", tmp, exc)
    if removed:
        log.info("removed %d leftover temporary file(s) in %s", len(removed), run_dir)
    return removed


# --------------------------------------------------------------------------


def _lock(path: Path, run_dir: Path) -> int:
    for _ in range(10):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            holder = read_pid(path)
            who = f"process {holder}" if holder else "another process"
            raise TrainingError(
                f"{run_dir}: a training is already running in this folder ({who}, lock {path.name}); "
                "wait for it or stop it, or choose another --out"
            ) from None
        try:  # the holder before us may have unlinked the file: lock the one on disk
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)
    raise TrainingError(f"{path}: could not take the run lock (another process keeps replacing it)")


def _adopt_inherited(path: Path) -> int | None:
    """The descriptor a launcher passed us, if it is this folder's lock (then we hold it)."""
    value = os.environ.get(INHERIT_ENV, "")
    if not value.isdigit():
        return None
    fd = int(value)
    try:
        if not os.path.samestat(os.fstat(fd), os.stat(path)):
            return None
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # ours already (same open file): succeeds
    except OSError:
        return None
    os.environ.pop(INHERIT_ENV, None)
    os.set_inheritable(fd, False)
    return fd


def _write_pid(fd: int, pid: int | None = None) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid() if pid is None else pid}\n".encode(), 0)


def _refuse_existing_run(run_dir: Path) -> None:
    if not (run_dir / EVENTS_FILE).is_file():
        return
    status = run_status(run_dir)
    if status.state == "not_started":
        return
    if status.state == "finished":
        raise TrainingError(
            f"{run_dir}: already holds a finished run (best checkpoint {status.best_checkpoint}); "
            "choose another --out, or delete the folder to train there again"
        )
    hint = "resume it (--resume) or choose another --out" if status.state in ("cancelled", "stale", "running") \
        else "choose another --out, or delete the folder to train there again"
    raise TrainingError(f"{run_dir}: already holds a {status.state} run; {hint}")


def _refuse_foreign_files(run_dir: Path, allowed: frozenset[str] | set[str]) -> None:
    """A new run writes ``config.json``, ``metrics.json``, ``predictions_*.csv``...: refuse a folder
    where such files (or any others) already lie, rather than overwrite what this run did not create."""
    foreign = sorted(p.name for p in run_dir.iterdir()
                     if p.name not in allowed and not p.name.startswith(".") and not p.name.endswith(".tmp"))
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise TrainingError(
            f"{run_dir}: holds files this run did not write ({shown}); a new run would overwrite them. "
            "Choose a new or empty folder as --out"
        )
