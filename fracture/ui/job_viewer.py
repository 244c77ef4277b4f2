"""The live view of one training run, read from its directory.

The view is a fragment that re-reads ``events.jsonl`` every couple of
seconds while the run's process is alive, so it keeps working after a page
switch, a browser reload or an app restart (the run is found again from its
folder), and a crash in training shows up as a failed or stale run instead of
taking the app down. When the run ends, the fragment triggers one full rerun
so the page stops polling and the sidebar lists the new checkpoint.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from fracture.train.events import CONFIG_FILE, PID_FILE, RunStatus, pid_alive, read_events, run_status
from fracture.train.launcher import STDOUT_FILE, stop_run
from fracture.ui import loaders

REFRESH_S = 2.0
LIVE_STATES = ("running", "not_started")
STATE_ICONS = {
    "running": "🟢", "not_started": "⏳", "finished": "✅", "cancelled": "⏹️",
    "failed": "❌", "stale": "⚠️",
}
EVENT_LOG_ROWS = 200
EVENT_COLUMNS = ("time", "event", "epoch", "step", "loss", "val_loss", "val_roc_auc", "message",
                 "error", "path", "reason")


def process_alive(run_dir: str | Path) -> bool:
    """True while the run's training process exists (a finished child of this server is reaped)."""
    try:
        pid = int((Path(run_dir) / PID_FILE).read_text().strip())
    except (FileNotFoundError, ValueError):
        return False
    reap(pid)
    return pid_alive(pid)


def reap(pid: int) -> None:
    """Collect a finished training process this server started, so it leaves no ``<defunct>``
    entry behind (a zombie also still answers "alive" to a signal-0 probe)."""
    import os

    try:
        os.waitpid(pid, os.WNOHANG)
    except (ChildProcessError, OSError):  # not our child (started elsewhere, or already reaped)
        pass


def is_live(run_dir: str | Path) -> bool:
    """The run has not ended and its process is alive (the view should keep polling)."""
    return run_status(run_dir).state in LIVE_STATES and process_alive(run_dir)


def newest_run(runs: list[RunStatus]) -> RunStatus:
    """The run whose folder was written last (its config is written when it starts)."""
    def started(run: RunStatus) -> float:
        try:
            return (run.run_dir / CONFIG_FILE).stat().st_mtime
        except FileNotFoundError:
            return 0.0

    return max(runs, key=started)


def format_seconds(seconds: float | None, *, precise: bool = False) -> str:
    """``95`` -> ``1 min 35 s``; None -> ``–``; with ``precise``, under 10 s to a tenth (``0.4 s``, not ``0 s``)."""
    if seconds is None:
        return "–"
    if precise and seconds < 10:
        return f"{seconds:.1f} s"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def stdout_tail(run_dir: str | Path, lines: int = 30) -> str:
    """The last lines the training process printed (its traceback when it crashed early)."""
    path = Path(run_dir) / STDOUT_FILE
    if not path.is_file():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def events_table(events: list[dict[str, Any]]) -> pd.DataFrame:
    """The newest events first, with the columns a person reads."""
    frame = pd.DataFrame(events[-EVENT_LOG_ROWS:][::-1])
    if frame.empty:
        return frame
    columns = [c for c in EVENT_COLUMNS if c in frame.columns]
    frame = frame[columns]
    if "time" in frame:
        frame["time"] = frame["time"].astype(str).str.slice(11, 19)
    return frame


def preparation_progress(events: list[dict[str, Any]]) -> tuple[float, str]:
    """Progress before the first epoch (image cache, feature extraction) from ``log`` events."""
    for record in reversed(events):
        if record.get("event") == "log" and record.get("total"):
            done, total = record.get("done", 0), record["total"]
            return min(1.0, done / total), f"preparing: {record.get('message', '')}"
    return 0.0, "starting: loading the data and the model…"


def phase_fraction(status: RunStatus) -> float:
    """How far the current phase is (0 when it reports no counts)."""
    if status.phase_done is None or not status.phase_total:
        return 0.0
    return min(1.0, max(0.0, status.phase_done / status.phase_total))


def phase_line(status: RunStatus) -> str:
    """``after 20 epochs: caching images 120/400 · about 1 min 05 s left`` (the progress bar's text)."""
    where = (f"after {status.epoch} epoch{'s' if status.epoch != 1 else ''}: " if status.epochs_log
             else "before the first epoch: ")
    counts = f" {status.phase_done}/{status.phase_total}" if status.phase_total else ""
    left = f" · about {format_seconds(status.phase_eta_s)} left" if status.phase_eta_s is not None else ""
    return f"{where}{status.phase}{counts}{left}"


def _run_mode(run_dir: str | Path) -> str:
    """The run's training mode from its config (``finetune`` when unreadable)."""
    from fracture.errors import FractureError
    from fracture.train.launcher import read_run_config

    try:  # the guarded reader: a damaged or hostile config.json never breaks the page
        return str(read_run_config(run_dir).get("mode", "finetune"))
    except (OSError, FractureError):
        return "finetune"


RESUMABLE_STATES = ("cancelled", "stale")


def resume_button(run_dir: str | Path) -> None:
    """"Resume": start the run's process again from its last finished epoch (``train --resume``)."""
    from fracture.errors import FractureError
    from fracture.settings import get_settings
    from fracture.recipes.config import TrainConfig
    from fracture.train.launcher import launch_training

    if not st.button("▶ Resume", key=f"resume-{Path(run_dir).name}",
                     help="Continue this stopped run from its last finished epoch, in the same folder."):
        return
    settings = get_settings()
    try:
        launch_training(TrainConfig.from_json(Path(run_dir) / CONFIG_FILE), run_dir, resume=True,
                        max_jobs=settings.max_training_jobs, runs_root=settings.runs_dir)
    except FractureError as exc:
        st.error(str(exc))
        return
    st.rerun()


def show_run(run_dir: str | Path, *, refresh_s: float = REFRESH_S) -> None:
    """Draw the run view; it refreshes itself while the run is alive."""
    live = is_live(run_dir)
    view = st.fragment(_run_view, run_every=refresh_s if live else None)
    view(str(run_dir), live)


def _run_view(run_dir: str, was_live: bool) -> None:
    from fracture.viz.charts import step_loss_chart, training_curves_chart

    events = read_events(run_dir)
    status = run_status(run_dir, events)
    alive = process_alive(run_dir)
    if was_live and not (status.state in LIVE_STATES and alive):
        loaders.refresh_checkpoints()
        st.rerun()  # the whole page: stop polling, list the new checkpoint
    icon = STATE_ICONS.get(status.state, "")
    st.markdown(f"#### {icon} `{Path(run_dir).name}` — {status.state.replace('_', ' ')}")
    if status.state == "not_started" and not alive:
        st.error("The training process ended before it started the run. Its output:")
        st.code(stdout_tail(run_dir) or "(no output)")
        return
    preparing = status.state in LIVE_STATES and not status.epochs
    in_phase = status.state in LIVE_STATES and status.phase
    if in_phase:  # caching, feature extraction, the test evaluation, calibration: named, with time left
        st.progress(phase_fraction(status), text=phase_line(status))
    elif preparing:
        fraction, text = preparation_progress(events)
        st.progress(fraction, text=text)
    else:
        text = (
            f"epoch {min(status.epoch + 1, status.epochs)}/{status.epochs}"
            f" · step {status.step}/{status.steps_per_epoch}"
            if status.state in LIVE_STATES else f"{status.epoch}/{status.epochs} epochs done"
        )
        st.progress(status.progress, text=text)
    cols = st.columns(4)
    if _run_mode(run_dir) == "frozen":  # the head trains on cached features: images/s would read 12,000
        epoch_s = [e["seconds"] for e in status.epochs_log if e.get("seconds") is not None]
        cols[0].metric("Head epoch", format_seconds(epoch_s[-1], precise=True) if epoch_s else "–",
                       help="Frozen mode: the backbone's features were computed once (the preparation "
                            "step); each epoch only trains the head on them.")
    else:
        cols[0].metric("Images/s", f"{status.images_per_s:.1f}" if status.images_per_s else "–",
                       help="Training images per second over the last steps.")
    if in_phase:
        cols[1].metric("Time left", format_seconds(status.phase_eta_s),
                       help=f"Of this phase ({status.phase}), at its pace so far; '–' until it can be measured.")
    else:
        cols[1].metric("Time left (epochs)", format_seconds(status.eta_s) if status.state in LIVE_STATES else "–",
                       help="At the pace of the last steps; the test evaluation and calibration come after.")
    cols[2].metric(
        f"Best {status.monitor or 'metric'}",
        f"{status.best_metric:.3f}" if status.best_metric is not None else "–",
    )
    finished = next((e for e in reversed(events) if e["event"] == "finished"), None)
    test_auc = finished.get("test_image_roc_auc") if finished else None
    pending = "evaluating…" if in_phase and "evaluating" in str(status.phase) else "–"
    cols[3].metric("Test ROC AUC (image)", f"{test_auc:.3f}" if test_auc is not None else pending,
                   help="Computed at the end of the run on the held-out test split.")
    if status.error:
        st.error(status.error)
        tail = stdout_tail(run_dir)
        if tail:
            with st.expander("Training process output"):
                st.code(tail)
    if alive and status.state in LIVE_STATES:
        if st.button("⏹ Stop", key=f"stop-{Path(run_dir).name}",
                     help="Stop after the current step; the best checkpoint so far is kept."):
            if stop_run(run_dir):
                st.toast("Stop requested: the run ends after its current step.")
    if not alive and status.state in RESUMABLE_STATES:
        resume_button(run_dir)
    epochs = pd.DataFrame(status.epochs_log)
    steps = pd.DataFrame([e for e in events if e["event"] == "step"])
    if not epochs.empty:
        st.plotly_chart(training_curves_chart(epochs), key=f"curves-{Path(run_dir).name}")
    else:
        st.caption("Epoch curves appear after the first epoch.")
    if not steps.empty:
        st.plotly_chart(step_loss_chart(steps, steps_per_epoch=status.steps_per_epoch or None),
                        key=f"steps-{Path(run_dir).name}", height=320)
    with st.expander("Event log", expanded=False):
        st.dataframe(events_table(events), hide_index=True, height=300)
