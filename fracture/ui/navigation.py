"""The app's pages and their navigation, through Streamlit's supported ``st.navigation`` only.

Why a module: ``app.py`` declares the navigation on every run, and a page
script that Streamlit runs without ``app.py`` declares the same one. That
happens once per server process: a server whose entry script has a ``pages/``
folder beside it serves its very first request in its older directory mode
(each page script run on its own) until some script calls ``st.navigation``.
:func:`run_under_app` makes that first run declare the app's navigation and
rerun, so the request ends under ``app.py`` with its sidebar and labelled
navigation. ``tests/app/test_first_request.py`` proves it against a real server.

A page knows it ran without ``app.py`` when no sidebar choice was handed to it
in this run (:func:`fracture.ui.context.active_context`; a thread-local that
``app.py`` sets and clears, never session state, which a page's ``st.stop()``
makes unwritable for the rest of the run). The rerun happens once per session:
a rerun drops the triggers of that run (a clicked button), so any later run
outside ``app.py`` (Streamlit's AppTest starts every run that way) draws the
sidebar itself and keeps its clicks. No Streamlit internals are touched.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

APP_DIR = Path(__file__).resolve().parents[2]
PAGES_DIR = APP_DIR / "pages"
#: Session state: this session already reran once to leave directory mode (never loop).
RERAN_KEY = "fracture_navigation_reran"


@dataclass(frozen=True)
class PageSpec:
    """One page script: its file under ``pages/``, its name in the navigation, icon and blurb on Home."""

    file: str
    title: str
    icon: str
    blurb: str = ""

    @property
    def path(self) -> Path:
        return PAGES_DIR / self.file

    def page(self) -> st.Page:
        """The ``st.Page`` (an absolute path: the same whichever folder Streamlit started in)."""
        return st.Page(self.path, title=self.title, icon=self.icon)


KNOWN_PAGES = (
    PageSpec("1_Dataset_Explorer.py", "Dataset Explorer", "🗂️",
             "Counts, label balance, image sizes and a study gallery."),
    PageSpec("2_Preprocessing_Lab.py", "Preprocessing Lab", "🧪",
             "CLAHE, Canny and diffusion side by side, with the model's probability and heatmap for each."),
    PageSpec("3_Train.py", "Train", "🏋️", "Train a model in the background and watch it learn live."),
    PageSpec("4_Predict.py", "Predict", "🔍",
             "Drop X-rays, get a probability, a body part and a heatmap you can zoom, window and invert."),
    PageSpec("5_Compare.py", "Compare",
             "📊", "Metrics, ROC curves and confusion matrices of several models and their ensemble."),
    PageSpec("6_Reader_Study.py", "Reader Study", "👩‍🏫",
             "A class reads X-rays, then sees the truth, the model and its heatmap."),
    PageSpec("7_Shortcut_Lab.py", "Shortcut Lab", "🏷️",
             "Put a lead marker, a label or a ruler on an X-ray and watch the model react."),
)


def page_specs() -> list[PageSpec]:
    """Every page script under ``pages/``, in file order: the known ones as listed, any other one named
    from its file name (``7_Shortcut_Lab.py`` -> "Shortcut Lab"), so a new page needs no edit here."""
    known = {spec.file: spec for spec in KNOWN_PAGES}
    specs = []
    for path in sorted(PAGES_DIR.glob("[0-9]*_*.py"), key=lambda p: (int(p.name.split("_", 1)[0]), p.name)):
        specs.append(known.get(path.name) or PageSpec(
            path.name, re.sub(r"_+", " ", path.stem.split("_", 1)[1]).strip(), "📄"))
    return specs


def page_objects() -> list[st.Page]:
    """The pages as ``st.Page`` objects (absolute paths: the same whichever folder Streamlit started in)."""
    return [spec.page() for spec in page_specs()]


def declare_navigation(home) -> st.Page:
    """``st.navigation`` with Home (the callable ``home``) first, then every page; returns the page to run."""
    return st.navigation([st.Page(home, title="Home", icon="🏠", default=True), *page_objects()])


def _placeholder_home() -> None:  # never drawn: the rerun goes through app.py's own Home
    st.stop()


def run_under_app() -> None:
    """Called by a page that finds itself run without ``app.py`` (Streamlit's directory mode on a fresh
    server's first request): declare the app's navigation (which ends that mode for the process) and
    rerun, so ``app.py`` draws the sidebar and runs this page under its navigation. Once per session
    at most; returns (the page then draws the sidebar itself) if that rerun did not help."""
    if st.session_state.get(RERAN_KEY):
        return
    st.session_state[RERAN_KEY] = True
    declare_navigation(_placeholder_home)
    st.rerun()
