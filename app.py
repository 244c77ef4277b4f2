"""Fracture Lab: the Streamlit entry point and home page.

Run with ``streamlit run app.py`` (or ``make run``). This script draws the
sidebar every page shares (active dataset and model), then hands over to the
page chosen in the navigation.

The page scripts live in ``pages/``. Streamlit serves a fresh server's first
request from such a folder in its older directory mode (a nameless "app"
page, no shared sidebar); :func:`~fracture.ui.context.leave_directory_mode`,
called here and by every page, turns that off and reruns through this script.
"""
from __future__ import annotations

from importlib.machinery import ModuleSpec
from pathlib import Path

import streamlit as st

from fracture.ui.directory_mode import leave_directory_mode

leave_directory_mode()  # before the heavier imports: a fresh server's first request reruns at once

# Streamlit runs this file as the module "__main__", and worker processes (image-cache builds,
# header scans) start by re-importing the main script: each ran the whole app in bare mode,
# logging hundreds of "missing ScriptRunContext" warnings. A spec named "__main__" tells
# multiprocessing there is nothing to re-import (the workers only need fracture modules).
__spec__ = ModuleSpec("__main__", None)  # noqa: A001

from fracture.errors import FractureError  # noqa: E402
from fracture.ui.context import active_context, checkpoint_label, forget_context, render_sidebar  # noqa: E402
from fracture.ui.xray_gallery import ATTRIBUTION, PARAM, gallery_items, gallery_strip, home_selection  # noqa: E402

st.set_page_config(page_title="Fracture Lab", page_icon="🦴", layout="wide")

APP_DIR = Path(__file__).resolve().parent
PAGES = {
    "pages/1_Dataset_Explorer.py": ("Dataset Explorer", "🗂️",
                                    "Counts, label balance, image sizes and a study gallery."),
    "pages/2_Preprocessing_Lab.py": ("Preprocessing Lab", "🧪",
                                     "CLAHE, Canny and diffusion side by side, with the model's "
                                     "probability and Grad-CAM for each."),
    "pages/3_Train.py": ("Train", "🏋️",
                         "Train a model in the background and watch it learn live."),
    "pages/4_Predict.py": ("Predict", "🔍",
                           "Drop X-rays, get a probability, a body part and a Grad-CAM overlay."),
    "pages/5_Compare.py": ("Compare", "📊",
                           "Metrics, ROC curves and confusion matrices of several models "
                           "and their ensemble."),
    "pages/6_Reader_Study.py": ("Reader Study", "👩‍🏫",
                                "A class reads X-rays, then sees the truth, the model and its heatmap."),
}


def home() -> None:
    """What the app is, what is active, and where to go."""
    context = active_context()
    st.title("🦴 Fracture Lab")
    st.markdown(
        "Fracture and abnormality detection in musculoskeletal radiographs: inspect a dataset, "
        "see how preprocessing changes what a network sees, train a model and watch it learn, "
        "get a prediction with a Grad-CAM explanation, and compare models. It reads "
        "**MURA-v1.1**, **FracAtlas** and plain class-folder datasets, and ships 40 real "
        "radiographs (FracAtlas) and a synthetic demo set so that every page works without a download."
    )
    st.warning(
        "Fracture Lab is a teaching and research tool, **not a medical device**. Its outputs "
        "must not be used for diagnosis or treatment decisions.",
        icon="⚠️",
    )
    left, right = st.columns(2)
    with left:
        with st.container(border=True):
            st.markdown("**Active dataset**")
            if context.dataset_root is not None:
                st.markdown(f"`{context.dataset_label}` — {context.dataset_root}")
            else:
                st.info(context.dataset_error or "No dataset selected.")
    with right:
        with st.container(border=True):
            st.markdown("**Active model**")
            if context.checkpoint is not None:
                meta = context.checkpoint.meta or {}
                st.markdown(
                    f"`{checkpoint_label(context.checkpoint)}` — {meta.get('architecture', '?')} "
                    f"at {meta.get('image_size', '?')} px"
                )
            else:
                st.info("No model yet: train one on the Train page (about a minute on the demo set).")
    try_real_xrays()
    st.subheader("Pages")
    per_row = 3  # page names stay whole on a laptop screen
    for start in range(0, len(page_objects), per_row):
        columns = st.columns(per_row)
        for column, page, (_, _, blurb) in zip(columns, page_objects[start:start + per_row],
                                               list(PAGES.values())[start:start + per_row]):
            with column, st.container(border=True, height="stretch"):
                st.page_link(page)
                st.caption(blurb)


def try_real_xrays() -> None:
    """A few shipped radiographs, each one click from a prediction on the Predict page."""
    try:
        items = home_selection(gallery_items(), n=6)
    except FractureError as exc:
        st.caption(f"No gallery of real X-rays: {exc}")
        return
    st.subheader("Try it on real X-rays")
    predict = page_objects[list(PAGES).index("pages/4_Predict.py")]
    gallery_strip(items, per_row=6, link=lambda item: st.page_link(
        predict, label="Predict", icon="🔍", width="stretch", query_params={"input": "Sample", PARAM: item.key}))
    st.caption(ATTRIBUTION + " More on the Predict page's *Sample* input.")


# Absolute paths: the pages resolve the same whichever folder Streamlit was started from.
page_objects = [st.Page(APP_DIR / path, title=title, icon=icon) for path, (title, icon, _) in PAGES.items()]
navigation = st.navigation([st.Page(home, title="Home", icon="🏠", default=True), *page_objects])
render_sidebar()
try:
    navigation.run()
finally:
    forget_context()  # the next run draws the sidebar again; a page never sees a stale choice
