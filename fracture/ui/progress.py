"""A progress bar with "images done / time left" and a Cancel button, for long core work on a page.

Why: evaluating a model on a whole split takes a while the first time; a
spinner says nothing about how long. The core reports
:class:`fracture.serve.onnx_backend.InferenceProgress` per chunk; this draws it.

Cancel is Streamlit's own mechanism: a click reruns the script, which stops
the running one at its next Streamlit call (the next progress update), inside
the core, before anything is cached; the button's callback leaves a flag that
the page reads with :func:`was_cancelled` to show "cancelled" instead of
starting again.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import streamlit as st


def _flag(key: str) -> str:
    return f"{key}-cancelled"


def was_cancelled(key: str) -> bool:
    """True (once) after the user pressed this panel's Cancel."""
    return bool(st.session_state.pop(_flag(key), False))


class ProgressPanel:
    """Call it with InferenceProgress events; the bar and the Cancel button appear on the first one."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.slot = st.empty()
        self._bar = None
        self.label = ""  # e.g. the model's name, shown before the counts

    def __call__(self, event) -> None:
        if self._bar is None:
            box = self.slot.container()
            self._bar = box.progress(0.0, text="starting…")
            box.button("Cancel", key=f"{self.key}-cancel-button", help="Stop; nothing is saved.",
                       on_click=st.session_state.__setitem__, args=(_flag(self.key), True))
        text = f"{self.label}: {event.line()}" if self.label else event.line()
        self._bar.progress(min(max(event.fraction, 0.0), 1.0), text=text)

    def clear(self) -> None:
        self.slot.empty()


def model_name(checkpoint: str) -> str:
    """A checkpoint's short name: its file stem, or its run folder for a run's ``best.safetensors``."""
    path = Path(checkpoint)
    return path.parent.name if path.name == "best.safetensors" else path.stem


def prepare_predictions(checkpoints: Sequence[str], signatures: Sequence[int], data_root: str, split: str,
                        fingerprint: str, *, key: str = "compare") -> None:
    """Run (or find on disk) each checkpoint's predictions for a split, with the panel, once per session.

    Afterwards the cached evaluation loaders read the predictions from the
    core's disk cache instead of running the network behind a spinner.

    Raises:
        FractureError: as :func:`fracture.assess.compare.predict_split`.
    """
    from fracture.assess.compare import predict_split

    done: set = st.session_state.setdefault(f"{key}-prepared", set())
    todo = [(c, s) for c, s in zip(checkpoints, signatures) if (c, s, data_root, split, fingerprint) not in done]
    if not todo:
        return
    panel = ProgressPanel(key)
    try:
        for number, (checkpoint, signature) in enumerate(todo, start=1):
            panel.label = f"Predicting, model {number} of {len(todo)} ({model_name(checkpoint)})"
            predict_split(checkpoint, data_root, split, on_progress=panel)
            done.add((checkpoint, signature, data_root, split, fingerprint))
    finally:
        panel.clear()


def evaluate_with_progress(checkpoints: Sequence[str], signatures: Sequence[int], data_root: str, split: str,
                           fingerprint: str, *, ensemble: Sequence[str] = ()) -> dict:
    """Metrics of each checkpoint (and of the ``ensemble`` members' mean), saying "model k of n" meanwhile.

    Why: after the predictions, metrics with bootstrap intervals, calibration and
    localisation take a while per model; a spinner without a count looked hung.

    Returns:
        ``{checkpoint: EvaluationResult}`` plus ``"ensemble"`` when ``ensemble`` has two or more paths.

    Raises:
        FractureError: as :func:`fracture.assess.compare.evaluate_checkpoint`.
    """
    from fracture.ui import loaders

    steps = len(checkpoints) + (1 if len(ensemble) >= 2 else 0)
    bar = st.empty()
    results: dict = {}
    try:
        for number, (checkpoint, signature) in enumerate(zip(checkpoints, signatures), start=1):
            bar.progress((number - 1) / steps,
                         text=f"Metrics, model {number} of {len(checkpoints)} ({model_name(checkpoint)})…")
            results[checkpoint] = loaders.evaluate_one(checkpoint, signature, data_root, split, fingerprint)
        if len(ensemble) >= 2:
            bar.progress((steps - 1) / steps, text=f"Metrics, the ensemble of {len(ensemble)} models…")
            members = tuple(ensemble)
            member_signatures = tuple(signatures[list(checkpoints).index(p)] for p in members)
            results["ensemble"] = loaders.evaluate_ensemble(members, member_signatures, data_root, split,
                                                            fingerprint)
    finally:
        bar.empty()
    return results
