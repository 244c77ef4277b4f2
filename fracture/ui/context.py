"""The sidebar every page shares: which dataset and which model are active.

``app.py`` calls :func:`render_sidebar` on every run, before the page runs, so
the choice persists while a person moves between pages. Pages call
:func:`active_context` to read it, and :func:`require_manifest` /
:func:`require_checkpoint` to stop with a clear note when nothing is there yet.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import streamlit as st

from fracture.errors import FractureError
from fracture.settings import Settings, check_data_path, get_settings, settings_problems
from fracture.ui import loaders
from fracture.ui.demo import demo_studies, ensure_demo_dataset, start_demo_build
from fracture.ui.navigation import run_under_app

if TYPE_CHECKING:
    from fracture.data.manifest import Manifest

#: This script run's sidebar choice, handed from ``app.py`` to the page it runs (same thread, same run).
#: Not session state: after a page's ``st.stop()`` every session-state access raises ``StopException``
#: (it is a yield point), so ``app.py``'s ``finally`` could not clear it and the next run that Streamlit
#: served without ``app.py`` took a stale choice for "app.py ran" and drew no sidebar.
_THIS_RUN = threading.local()
DATASET_SOURCE_KEY = "sidebar_dataset_source"
DATASET_PATH_KEY = "sidebar_dataset_path"
MODEL_KEY = "sidebar_model"
FOUND_KEY = "sidebar_dataset_found"
DEMO_SOURCE = "Built-in demo"
FOLDER_SOURCE = "Folder path"
DEMO_LABEL = "demo (synthetic)"
DEMO_PENDING = ("The built-in demo set is being generated in the background (first start only, "
                "about 15 s); a page that needs it waits for it.")


@dataclass(frozen=True)
class ActiveContext:
    """What the sidebar chose for this run.

    Attributes:
        settings: the server settings (folders, limits).
        dataset_root: the active dataset folder, or None.
        dataset_label: a short name for it.
        dataset_error: why no dataset is active (shown by pages), or None.
        checkpoint: the active model's checkpoint entry
            (``fracture.serve.predictor.CheckpointEntry``), or None.
        checkpoints: every checkpoint the sidebar offered.
        model_error: why the model list could not be read, or None.
    """

    settings: Settings
    dataset_root: Path | None = None
    dataset_label: str = ""
    dataset_error: str | None = None
    checkpoint: Any = None
    checkpoints: list[Any] = field(default_factory=list)
    model_error: str | None = None

    @property
    def checkpoint_path(self) -> Path | None:
        return Path(self.checkpoint.path) if self.checkpoint is not None else None


def _use_found_dataset() -> None:
    """The dropdown's choice becomes the typed folder (the text box stays free to edit)."""
    chosen = st.session_state.get(FOUND_KEY)
    if chosen:
        st.session_state[DATASET_PATH_KEY] = chosen


def _dataset_sidebar(settings: Settings) -> tuple[Path | None, str, str | None]:
    st.sidebar.subheader("Dataset")
    source = st.sidebar.radio(  # in the URL: a reload (or a shared link) keeps the dataset
        "Source", (DEMO_SOURCE, FOLDER_SOURCE), key=DATASET_SOURCE_KEY, horizontal=True, bind="query-params",
        help="The demo set is synthetic and generated on first start. A folder must hold "
             "a MURA-v1.1, FracAtlas or class-folder dataset under an allowed data root.",
    )
    if source == DEMO_SOURCE:
        if start_demo_build(settings.demo_dir, studies=demo_studies()):  # Home does not wait for it
            st.sidebar.caption("⏳ " + DEMO_PENDING)
            return None, DEMO_LABEL, DEMO_PENDING
        root = Path(loaders.demo_dataset_root(str(settings.demo_dir), demo_studies()))
        return root, DEMO_LABEL, None
    found = {str(d.path): d for d in loaders.found_datasets(tuple(str(r) for r in settings.data_roots),
                                                             str(settings.demo_dir))}
    if found:
        typed_now = str(st.session_state.get(DATASET_PATH_KEY) or "").strip()
        st.session_state[FOUND_KEY] = typed_now if typed_now in found else None
        st.sidebar.selectbox(
            "Datasets found", [None, *found], key=FOUND_KEY, on_change=_use_found_dataset,
            format_func=lambda p: "— pick one, or type a folder below —" if p is None
            else f"{found[p].path.name} ({found[p].layout})",
            help="Dataset folders under the allowed data roots: "
                 + ", ".join(str(r) for r in settings.data_roots))
    typed = st.sidebar.text_input(
        "Dataset folder", key=DATASET_PATH_KEY, bind="query-params",
        placeholder=str(settings.data_roots[0]) if settings.data_roots else "",
        help="Allowed roots: " + ", ".join(str(r) for r in settings.data_roots),
    ).strip()
    if not typed:
        message = ("Pick a dataset found under the allowed roots, or type a folder, in the sidebar "
                   "(or switch to the built-in demo).")
        st.sidebar.info(message)
        return None, "", message
    try:
        root = check_data_path(typed, settings)
    except FractureError as exc:
        st.sidebar.error(str(exc))
        return None, "", str(exc)
    return root, root.name, None


def _describe_manifest(root: Path) -> str | None:
    """Show the active dataset's size under the picker; return an error text, if any."""
    try:
        manifest = loaders.load_manifest(root)
    except FractureError as exc:
        st.sidebar.error(str(exc))
        return str(exc)
    frame = manifest.frame
    st.sidebar.caption(
        f"{manifest.layout} layout · {len(frame):,} images · "
        f"{frame['study_id'].nunique():,} studies · {len(manifest.problems)} problem file(s)"
    )
    return None


def checkpoint_label(entry: Any) -> str:
    """How a checkpoint is named in pickers: ``name (shipped)`` or ``name (run)``."""
    return f"{entry.name} ({entry.source})"


def _model_sidebar(settings: Settings) -> tuple[Any, list[Any], str | None]:
    st.sidebar.subheader("Model")
    try:
        entries = loaders.list_checkpoint_entries(settings.weights_dir, settings.runs_dir)
    except FractureError as exc:
        st.sidebar.error(str(exc))
        return None, [], str(exc)
    broken = [e for e in entries if getattr(e, "error", None)]
    entries = [e for e in entries if not getattr(e, "error", None)]
    if broken:  # listed with the reason, never offered, never a page error
        with st.sidebar.expander(f"{len(broken)} checkpoint(s) could not be read"):
            for e in broken:
                st.caption(f"`{e.path}`: {e.error}")
    if not entries:
        st.sidebar.info("No model yet: train one on the Train page, or put a checkpoint in weights/.")
        return None, [], None
    from fracture.serve.predictor import default_checkpoint

    labels = [checkpoint_label(e) for e in entries]
    by_label = dict(zip(labels, entries))
    if st.session_state.get(MODEL_KEY) not in by_label:
        default = default_checkpoint(settings.weights_dir)
        index = next(
            (i for i, e in enumerate(entries) if default and Path(e.path) == Path(default)), 0
        )
        st.session_state[MODEL_KEY] = labels[index]
    label = st.sidebar.selectbox("Active model", labels, key=MODEL_KEY)
    entry = by_label[label]
    meta = entry.meta or {}
    threshold = meta.get("threshold")
    if isinstance(threshold, (int, float)):  # on the scale of the probabilities shown (calibrated, if stored)
        from fracture.checkpoints.decision import calibrated_threshold

        threshold = calibrated_threshold(meta)
    st.sidebar.caption(
        f"{meta.get('architecture', '?')} · {meta.get('image_size', '?')} px · threshold "
        + (f"{threshold:.3f}" if isinstance(threshold, (int, float)) else "?")
    )
    return entry, entries, None


def render_sidebar(*, remember: bool = True) -> ActiveContext:
    """Draw the shared sidebar; with ``remember``, keep the choice for the page about to run."""
    settings = get_settings()
    refused = settings_problems()
    if refused:  # one clear error; the app keeps running on the defaults
        st.error("Settings refused, using the defaults: " + "; ".join(str(p) for p in refused))
    with st.sidebar:
        st.markdown("### 🦴 Fracture Lab")
    root, label, error = _dataset_sidebar(settings)
    if root is not None:
        error = _describe_manifest(root)
        if error:
            root = None
    entry, entries, model_error = _model_sidebar(settings)
    st.sidebar.caption("A teaching and research tool, not a medical device.")
    context = ActiveContext(
        settings=settings, dataset_root=root, dataset_label=label, dataset_error=error,
        checkpoint=entry, checkpoints=entries, model_error=model_error,
    )
    if remember:
        _THIS_RUN.context = context
    return context


def active_context() -> ActiveContext:
    """The sidebar's choice for this run (drawn now if the page runs on its own).

    A page runs on its own when Streamlit serves it without the entry script
    (a fresh server's first request in directory mode): it reruns under
    ``app.py`` (:func:`fracture.ui.navigation.run_under_app`).
    """
    context = getattr(_THIS_RUN, "context", None)
    if context is None:
        run_under_app()
        context = render_sidebar(remember=False)
    return context


def forget_context() -> None:
    """Drop this run's choice once the page has run (``app.py`` calls it in ``finally``; plain Python,
    so it holds after ``st.stop()`` or ``st.rerun()`` too)."""
    _THIS_RUN.context = None


def dataset_root(context: ActiveContext) -> Path | None:
    """The active dataset folder, waiting for a demo set still being generated (the first page that
    needs it waits, Home never does); None when no dataset is active."""
    if context.dataset_root is None and context.dataset_error == DEMO_PENDING:
        with st.spinner("Generating the built-in demo dataset (first start only)…"):
            return Path(ensure_demo_dataset(context.settings.demo_dir, studies=demo_studies()))
    return context.dataset_root


def require_manifest(context: ActiveContext) -> "Manifest":
    """The active dataset's manifest, or an info box and a stop of this page run."""
    root = dataset_root(context)
    if root is not None:
        return loaders.load_manifest(root)
    if context.dataset_root is None:
        st.info(context.dataset_error or "No dataset is active: pick one in the sidebar.")
        st.stop()
    return loaders.load_manifest(context.dataset_root)


def require_checkpoint(context: ActiveContext, what: str = "this page") -> Any:
    """The active checkpoint entry, or an info box and a stop of this page run."""
    if context.checkpoint is None:
        st.info(
            f"No model is available for {what} yet. Train one on the Train page (it shows the time left "
            "as it goes), or place a checkpoint in weights/."
        )
        st.stop()
    return context.checkpoint
