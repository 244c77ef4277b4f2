"""Training events: an append-only JSON-lines log in the run directory.

The log is the single source of truth about a run. The Train page, the CLI and
``fracture runs`` read it, so a run can be watched from another process, after
a page reload or after an app restart, and a crash in training leaves a
readable record.
"""
from __future__ import annotations

import json
import logging
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from fracture.util.files import is_disk_full, open_regular, pid_alive, read_pid
from fracture.util.jsonio import json_default, parse_json
from fracture.errors import FractureError, TrainingError
from fracture.train.append_log import RESERVE_BYTES, AppendLog

log = logging.getLogger(__name__)

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
    "phase",  # {"name": "caching images" | "extracting features" | "evaluating on the test split" | ..., done, total}
)
TERMINAL_EVENTS = ("finished", "cancelled", "failed")

EventCallback = Callable[[dict[str, Any]], None]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class EventLog:
    """Writes events to ``RUN_DIR/events.jsonl`` (one whole line each) and a callback.

    The file stays open for the run, with space kept for the final event
    (:mod:`fracture.train.append_log`): a full disk still leaves a complete
    ``failed`` event, never half a line.
    """

    def __init__(self, run_dir: str | Path, callback: EventCallback | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / EVENTS_FILE
        self.callback = callback
        self._log = AppendLog(self.path)

    def emit(self, event: str, **fields: Any) -> dict[str, Any]:
        """Append one event; a terminal one may use the space kept for it.

        Raises:
            ValueError: an unknown event type.
            OSError: it could not be written (ENOSPC for an ordinary event on a full disk).
        """
        if event not in EVENT_TYPES:
            raise ValueError(f"unknown event type {event!r}")
        record = {"event": event, "time": _now(), "unix": time.time(), **fields}
        final = event in TERMINAL_EVENTS
        line = _fit(record) if final else json.dumps(record, default=json_default)
        self._log.append((line + "\n").encode("utf-8"), final=final)
        if self.callback is not None:
            self.callback(record)
        return record

    def record_failure(self, exc: BaseException) -> BaseException:
        """:func:`record_failure` on this log."""
        return record_failure(self, exc)

    def close(self) -> None:
        """Close the log and give back the space kept for a final event."""
        self._log.close()


def record_failure(events: Any, exc: BaseException) -> BaseException:
    """Emit the ``failed`` event for ``exc`` through ``events`` (anything with ``emit``) and
    return the exception to raise.

    A full disk becomes a :class:`TrainingError` that says so; anything else is
    returned as it is. Never raises: if even the final event cannot be written,
    that is logged and the original error still propagates.
    """
    to_raise: BaseException = exc
    if isinstance(exc, FractureError):
        fields: dict[str, Any] = {"error": str(exc), "error_type": type(exc).__name__}
    else:
        fields = {"error": f"{type(exc).__name__}: {exc}", "error_type": type(exc).__name__,
                  "traceback": "".join(traceback.format_exception(exc))}
        if _disk_full(exc):
            where = getattr(events, "run_dir", "the run folder")
            fields["error"] = (
                f"{where}: the disk is full ({getattr(exc, 'strerror', None) or exc}); free space, then "
                "resume the run (--resume) or start it again"
            )
            fields["error_type"] = "DiskFull"
            to_raise = TrainingError(fields["error"])
    try:
        events.emit("failed", **fields)
    except Exception as write_exc:  # noqa: BLE001 -- the original error matters more
        log.error("could not record the failed event (%s); the error was: %s", write_exc, fields["error"])
    return to_raise


def _disk_full(exc: BaseException | None) -> bool:
    """ENOSPC/EDQUOT anywhere in the exception's chain, or named in a library's own error
    (safetensors raises ``SafetensorError: ... No space left on device (os error 28)``)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if is_disk_full(exc) or "No space left on device" in str(exc) or "(os error 28)" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


#: A terminal event must fit in the space kept for it (with room to spare).
FINAL_LINE_LIMIT = RESERVE_BYTES // 2
_FIELD_LIMIT = 8192


def _fit(record: dict[str, Any]) -> str:
    """The JSON line of a terminal event, long strings cut so it fits :data:`FINAL_LINE_LIMIT`."""
    line = json.dumps(record, default=json_default)
    if len(line.encode("utf-8")) <= FINAL_LINE_LIMIT:
        return line
    short = {k: (_shorten(v) if isinstance(v, str) else v) for k, v in record.items()}
    line = json.dumps(short, default=json_default)
    if len(line.encode("utf-8")) <= FINAL_LINE_LIMIT:
        return line
    keep = {k: short[k] for k in ("event", "time", "unix", "error", "error_type", "best_checkpoint") if k in short}
    return json.dumps(keep, default=str)


def _shorten(text: str) -> str:
    if len(text) <= _FIELD_LIMIT:
        return text
    half = _FIELD_LIMIT // 2
    return f"{text[:half]}\n... [{len(text) - 2 * half} characters cut] ...\n{text[-half:]}"


#: A line longer than this is no event of ours (the longest, a final one, is cut to 128 KB).
MAX_EVENT_LINE = 1 << 20


def read_events(run_dir: str | Path) -> list[dict[str, Any]]:
    """All complete events of a run; a half-written last line is ignored, and so is any
    line that is not an event (garbage, not UTF-8, too long, too deep, not an object).
    Only a regular file is read (a FIFO named ``events.jsonl`` gives no events, not a hang)."""
    path = Path(run_dir) / EVENTS_FILE
    try:
        handle = open_regular(path)
    except (OSError, FractureError):
        return []
    events = []
    with handle:
        while True:
            line = handle.readline(MAX_EVENT_LINE + 1)
            if not line:
                break
            if not line.endswith(b"\n"):
                if len(line) <= MAX_EVENT_LINE:
                    break  # being written right now
                while line and not line.endswith(b"\n"):  # skip the rest of an overlong line
                    line = handle.readline(MAX_EVENT_LINE + 1)
                continue
            try:  # the guarded reader: a deep, huge-number or non-UTF-8 line is skipped, never raised
                record = parse_json(line, source=path, max_bytes=MAX_EVENT_LINE, nonfinite="allow")
            except FractureError:
                continue
            if isinstance(record, dict) and record.get("event") in EVENT_TYPES:
                events.append(record)
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
    #: What the run is doing outside the epochs (``phase`` events): caching, feature extraction, the
    #: test evaluation, calibration. None while epochs run, and once the run has ended.
    phase: str | None = None
    phase_done: int | None = None
    phase_total: int | None = None
    phase_eta_s: float | None = None

    @property
    def progress(self) -> float:
        if not self.epochs:
            return 0.0
        if self.state == "finished":
            return 1.0
        within = self.step / self.steps_per_epoch if self.steps_per_epoch else 0.0
        return min(1.0, (self.epoch + within) / self.epochs)


def run_status(run_dir: str | Path, events: list[dict[str, Any]] | None = None) -> RunStatus:
    """Summarise a run directory; a run whose process died without a final event is ``stale``."""
    run_dir = Path(run_dir)
    events = read_events(run_dir) if events is None else events
    if not events:
        return RunStatus(run_dir=run_dir, state="not_started")
    status = RunStatus(run_dir=run_dir, state="running")
    phase_start: tuple[float, int] | None = None  # (unix time, done) of the phase's first event
    for record in events:
        kind = record["event"]
        if kind == "phase":
            name = str(record.get("name") or "")
            done, total = record.get("done"), record.get("total")
            if name != status.phase:
                phase_start = None
            status.phase, status.phase_done, status.phase_total = name, done, total
            status.phase_eta_s = None
            unix = record.get("unix")
            if isinstance(unix, (int, float)) and isinstance(done, int):
                if phase_start is None:
                    phase_start = (float(unix), done)
                elif isinstance(total, int) and done > phase_start[1]:  # the rate so far in this phase
                    rate = (float(unix) - phase_start[0]) / (done - phase_start[1])
                    status.phase_eta_s = max(0.0, rate * (total - done))
            continue
        if kind in ("run_started", "step", "epoch_end") or kind in TERMINAL_EVENTS:
            status.phase = status.phase_done = status.phase_total = status.phase_eta_s = None
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
        pid = read_pid(run_dir / PID_FILE)
        if pid is not None and not pid_alive(pid):
            status.state = "stale"
            status.error = "the training process ended without a final event (killed or crashed)"
    return status
