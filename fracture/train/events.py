"""Training events: an append-only JSON-lines log in the run directory.

The log is the single source of truth about a run. The Train page, the CLI and
``fracture runs`` read it, so a run can be watched from another process, after
a page reload or after an app restart, and a crash in training leaves a
readable record.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from fracture._json import json_default

EVENTS_FILE = "events.jsonl"
CONFIG_FILE = "config.json"
PID_FILE = "train.pid"
STOP_FILE = "STOP"
EVENT_TYPES = (
    "run_started",
    "step",
    "epoch_end",
    "checkpoint_saved",
    "finished",
    "cancelled",
    "failed",
    "data_problem",
    "log",
)
TERMINAL_EVENTS = ("finished", "cancelled", "failed")

EventCallback = Callable[[dict[str, Any]], None]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class EventLog:
    """Writes events to ``RUN_DIR/events.jsonl`` (one flushed line each) and a callback."""

    def __init__(self, run_dir: str | Path, callback: EventCallback | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / EVENTS_FILE
        self.callback = callback

    def emit(self, event: str, **fields: Any) -> dict[str, Any]:
        if event not in EVENT_TYPES:
            raise ValueError(f"unknown event type {event!r}")
        record = {"event": event, "time": _now(), "unix": time.time(), **fields}
        line = json.dumps(record, default=json_default)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
            handle.flush()
        if self.callback is not None:
            self.callback(record)
        return record


def read_events(run_dir: str | Path) -> list[dict[str, Any]]:
    """All complete events of a run; a half-written last line is ignored."""
    path = Path(run_dir) / EVENTS_FILE
    if not path.is_file():
        return []
    events = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if not line.endswith("\n"):
                break  # being written right now
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return events


@dataclass
class RunStatus:
    """What a run is doing, derived from its files only."""

    run_dir: Path
    state: str  # running | finished | cancelled | failed | stale | not_started
    epoch: int = 0
    epochs: int = 0
    step: int = 0
    steps_per_epoch: int = 0
    images_per_s: float | None = None
    eta_s: float | None = None
    best_metric: float | None = None
    monitor: str = ""
    best_checkpoint: str | None = None
    error: str | None = None
    model: str = ""
    started: str | None = None
    epochs_log: list[dict[str, Any]] = field(default_factory=list)

    @property
    def progress(self) -> float:
        if not self.epochs:
            return 0.0
        if self.state == "finished":
            return 1.0
        within = self.step / self.steps_per_epoch if self.steps_per_epoch else 0.0
        return min(1.0, (self.epoch + within) / self.epochs)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_status(run_dir: str | Path, events: list[dict[str, Any]] | None = None) -> RunStatus:
    """Summarise a run directory; a run whose process died without a final event is ``stale``."""
    run_dir = Path(run_dir)
    events = read_events(run_dir) if events is None else events
    if not events:
        return RunStatus(run_dir=run_dir, state="not_started")
    status = RunStatus(run_dir=run_dir, state="running")
    for record in events:
        kind = record["event"]
        if kind == "run_started":
            status.epochs = record.get("epochs", 0)
            status.steps_per_epoch = record.get("steps_per_epoch", 0)
            status.monitor = record.get("monitor", "")
            status.model = record.get("model", "")
            status.started = record.get("time")
            status.state = "running"
        elif kind == "step":
            status.epoch = record.get("epoch", status.epoch)
            status.step = record.get("step", status.step)
            status.images_per_s = record.get("images_per_s", status.images_per_s)
            status.eta_s = record.get("eta_s", status.eta_s)
        elif kind == "epoch_end":
            status.epoch = record.get("epoch", status.epoch) + 1
            status.step = 0
            status.epochs_log.append(record)
            if record.get("best_metric") is not None:
                status.best_metric = record["best_metric"]
        elif kind == "checkpoint_saved":
            status.best_checkpoint = record.get("path")
        elif kind in TERMINAL_EVENTS:
            status.state = kind
            status.error = record.get("error")
            if record.get("best_checkpoint"):
                status.best_checkpoint = record["best_checkpoint"]
    if status.state == "running":
        pid_path = run_dir / PID_FILE
        try:
            pid = int(pid_path.read_text().strip())
        except (FileNotFoundError, ValueError):
            pid = None
        if pid is not None and not pid_alive(pid):
            status.state = "stale"
            status.error = "the training process ended without a final event (killed or crashed)"
    return status
