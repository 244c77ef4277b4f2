"""Start, stop and list training runs as separate processes.

The app never trains in its own process: a crash or an out-of-memory kill in
training must not take the UI down, and a run must outlive a page reload. The
run directory (config, events, pid, stdout log) is the whole interface.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from fracture.errors import TrainingError
from fracture.train.config import TrainConfig
from fracture.train.events import CONFIG_FILE, PID_FILE, RunStatus, pid_alive, run_status

log = logging.getLogger(__name__)
STDOUT_FILE = "stdout.log"


def new_run_dir(runs_root: str | Path, model: str) -> Path:
    """A fresh, sortable run directory name: ``20261123-101500-small_cnn``."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(runs_root) / f"{stamp}-{model}"
    run_dir, n = base, 1
    while run_dir.exists():
        n += 1
        run_dir = base.with_name(f"{base.name}-{n}")
    return run_dir


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
    try:
        return pid_alive(int((run_dir / PID_FILE).read_text().strip()))
    except (FileNotFoundError, ValueError):
        return False


def launch_training(
    config: TrainConfig,
    run_dir: str | Path,
    *,
    max_jobs: int | None = None,
    runs_root: str | Path | None = None,
    resume: bool = False,
) -> int:
    """Start ``python -m fracture train`` in a new session; return its pid.

    Raises:
        TrainingError: the job limit is reached (names the running run), or
            the run directory already holds a run and ``resume`` is False.
    """
    config.validate()
    run_dir = Path(run_dir)
    if max_jobs is not None and runs_root is not None:
        running = active_runs(runs_root)
        if len(running) >= max_jobs:
            names = ", ".join(r.run_dir.name for r in running)
            raise TrainingError(
                f"{len(running)} training run(s) already running ({names}); this server allows "
                f"{max_jobs} at once (FRACTURE_MAX_TRAINING_JOBS). Wait or stop one first."
            )
    if (run_dir / CONFIG_FILE).exists() and not resume:
        raise TrainingError(f"{run_dir}: already holds a run; choose a new directory or resume it")
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path = run_dir / CONFIG_FILE
    if not resume:
        config.save(config_path)
    cmd = [sys.executable, "-m", "fracture", "train", "--out", str(run_dir)]
    cmd += ["--resume", str(run_dir)] if resume else ["--config", str(config_path)]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(run_dir / STDOUT_FILE, "ab") as out:
        process = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env=env, cwd=Path(__file__).resolve().parents[2],
        )
    (run_dir / PID_FILE).write_text(str(process.pid))
    log.info("started training pid %s in %s", process.pid, run_dir)
    return process.pid


def stop_run(run_dir: str | Path) -> bool:
    """Ask a run to stop after its current step (SIGTERM); False if it is not running."""
    run_dir = Path(run_dir)
    try:
        pid = int((run_dir / PID_FILE).read_text().strip())
    except (FileNotFoundError, ValueError):
        return False
    if not pid_alive(pid):
        return False
    os.kill(pid, signal.SIGTERM)
    return True


def read_run_config(run_dir: str | Path) -> dict:
    return json.loads((Path(run_dir) / CONFIG_FILE).read_text())
