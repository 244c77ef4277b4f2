"""Start, stop and list training runs as separate processes.

The app never trains in its own process: a crash or an out-of-memory kill in
training must not take the UI down, and a run must outlive a page reload. The
run directory (config, events, pid, stdout log) is the whole interface.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import signal
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Iterator

from fracture.util.files import atomic_write_text, exclusive_lock, pid_alive, read_pid
from fracture.errors import TrainingError
from fracture.recipes.config import TrainConfig
from fracture.train.events import CONFIG_FILE, PID_FILE, RunStatus, run_status
from fracture.train.run_lock import INHERIT_ENV, claim_run_dir

log = logging.getLogger(__name__)
STDOUT_FILE = "stdout.log"
#: In the runs root: held (flock) while a launch checks the job limit and starts its process.
LAUNCH_LOCK_FILE = ".launch.lock"


def run_name_slug(name: str | None) -> str:
    """A person's run name as a folder-name part: lower-case letters, digits and dashes, at most 40."""
    slug = re.sub(r"[^a-z0-9]+", "-", (name or "").lower()).strip("-")[:40].strip("-")
    return slug


def new_run_dir(runs_root: str | Path, model: str, name: str | None = None) -> Path:
    """A new, empty run directory, created here so no two callers get the same one:
    ``20261123-101500-small_cnn-3f9a``, or with a ``name`` ``20261123-101500-my-baseline-small_cnn-3f9a``
    (sortable by time; the suffix tells same-second runs apart; the name can never leave the folder).

    Raises:
        TrainingError: no free name could be made (a runs folder that refuses new folders).
    """
    root = Path(runs_root)
    root.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for _ in range(100):
        named = f"{run_name_slug(name)}-" if run_name_slug(name) else ""
        run_dir = root / f"{stamp}-{named}{model}-{secrets.token_hex(2)}"
        try:
            run_dir.mkdir()
        except FileExistsError:
            continue
        return run_dir
    raise TrainingError(f"{root}: could not create a new run folder for {model}; check the folder")


def list_runs(runs_root: str | Path) -> list[RunStatus]:
    """Every run under ``runs_root``, newest first."""
    root = Path(runs_root)
    if not root.is_dir():
        return []
    runs = [run_status(d) for d in root.iterdir() if d.is_dir() and (d / CONFIG_FILE).is_file()]
    return sorted(runs, key=lambda r: r.run_dir.name, reverse=True)


def active_runs(runs_root: str | Path) -> list[RunStatus]:
    return [r for r in list_runs(runs_root) if r.state in ("running", "not_started") and _has_live_pid(r.run_dir)]


def _has_live_pid(run_dir: Path) -> bool:
    pid = read_pid(run_dir / PID_FILE)
    return pid is not None and pid_alive(pid)


@contextlib.contextmanager
def launch_guard(runs_root: str | Path | None) -> Iterator[None]:
    """Serialise launches under one runs root (``flock`` on :data:`LAUNCH_LOCK_FILE`), so that
    checking the job limit and starting the process are one step for every other launcher."""
    if runs_root is None:
        yield
        return
    with exclusive_lock(Path(runs_root) / LAUNCH_LOCK_FILE):  # held for milliseconds: the check and a fork/exec
        yield


def launch_training(
    config: TrainConfig,
    run_dir: str | Path,
    *,
    max_jobs: int | None = None,
    runs_root: str | Path | None = None,
    resume: bool = False,
) -> int:
    """Start ``python -m fracture train`` in a new session; return its pid.

    The job-limit check and the start happen under :func:`launch_guard`, and
    the run folder's lock (:mod:`fracture.train.run_lock`) is taken here and
    handed to the new process, so simultaneous launches can neither exceed
    the limit nor share a folder.

    Raises:
        TrainingError: the job limit is reached (names the running run), a
            training already runs in the directory, or the directory already
            holds a run and ``resume`` is False.
    """
    config.validate()
    run_dir = Path(run_dir)
    with launch_guard(runs_root):
        if max_jobs is not None and runs_root is not None:
            running = active_runs(runs_root)
            if len(running) >= max_jobs:
                with contextlib.suppress(OSError):
                    run_dir.rmdir()  # an empty folder from new_run_dir: nothing to keep
                names = ", ".join(r.run_dir.name for r in running)
                raise TrainingError(
                    f"{len(running)} training run(s) already running ({names}); this server allows "
                    f"{max_jobs} at once (FRACTURE_MAX_TRAINING_JOBS). Wait or stop one first."
                )
        if (run_dir / CONFIG_FILE).exists() and not resume:
            raise TrainingError(f"{run_dir}: already holds a run; choose a new directory or resume it")
        claim = claim_run_dir(run_dir, resume=resume)
        try:
            config_path = run_dir / CONFIG_FILE
            if not resume:
                config.save(config_path)
            cmd = [sys.executable, "-m", "fracture", "train", "--out", str(run_dir)]
            cmd += ["--resume", str(run_dir)] if resume else ["--config", str(config_path)]
            env = dict(os.environ, PYTHONUNBUFFERED="1", **{INHERIT_ENV: str(claim.fd)})
            with open(run_dir / STDOUT_FILE, "ab") as out:
                process = subprocess.Popen(
                    cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    start_new_session=True, env=env, cwd=Path(__file__).resolve().parents[2],
                    pass_fds=(claim.fd,),
                )
            atomic_write_text(run_dir / PID_FILE, str(process.pid))
            claim.set_pid(process.pid)
        except BaseException:
            claim.release()
            raise
        claim.hand_over()  # the child holds the folder's lock from now on
    log.info("started training pid %s in %s", process.pid, run_dir)
    return process.pid


def stop_run(run_dir: str | Path) -> bool:
    """Ask a run to stop after its current step (SIGTERM); False if it is not running."""
    run_dir = Path(run_dir)
    pid = read_pid(run_dir / PID_FILE)
    if pid is None or not pid_alive(pid):
        return False
    os.kill(pid, signal.SIGTERM)
    return True


def read_run_config(run_dir: str | Path) -> dict:
    """A run's ``config.json`` through the guarded reader.

    Raises:
        FileNotFoundError: no config yet.
        TrainingError: damaged, too large or deep, or not a JSON object (names the file).
    """
    from fracture.util.jsonio import read_json

    values = read_json(Path(run_dir) / CONFIG_FILE, max_bytes=1024 * 1024, error=TrainingError,
                       what="(the run's config)")
    if not isinstance(values, dict):
        raise TrainingError(f"{Path(run_dir) / CONFIG_FILE}: not a JSON object of training options")
    return values
