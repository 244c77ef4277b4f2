"""Fracture Lab: the Streamlit entry point and home page.

Run with ``streamlit run app.py`` (or ``make run``). This script draws the
sidebar every page shares (active dataset and model), then hands over to the
page chosen in the navigation: ``st.navigation`` over the scripts in
``pages/`` (:mod:`fracture.ui.navigation`), Streamlit's supported API.
"""
from __future__ import annotations

from importlib.machinery import ModuleSpec

import streamlit as st

# Streamlit runs this file as the module "__main__", and worker processes (image-cache builds,
# header scans) start by re-importing the main script: each ran the whole app in bare mode,
# logging hundreds of "missing ScriptRunContext" warnings. A spec named "__main__" tells
# multiprocessing there is nothing to re-import (the workers only need fracture modules).
__spec__ = ModuleSpec("__main__", None)  # noqa: A001

from fracture.errors import FractureError  # noqa: E402
from fracture.ui.context import active_context, checkpoint_label, forget_context, render_sidebar  # noqa: E402
from fracture.ui.navigation import declare_navigation, page_specs  # noqa: E402
from fracture.ui.xray_gallery import ATTRIBUTION, PARAM, gallery_items, gallery_strip, home_selection  # noqa: E402

st.set_page_config(page_title="Fracture Lab", page_icon="🦴", layout="wide")


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
                st.info("No model yet: train one on the Train page, or place a checkpoint in weights/.")
    try_real_xrays()
    st.subheader("Pages")
    per_row = 3  # page names stay whole on a laptop screen
    specs = page_specs()
    for start in range(0, len(specs), per_row):
        columns = st.columns(per_row)
        for column, spec in zip(columns, specs[start:start + per_row]):
            with column, st.container(border=True, height="stretch"):
                st.page_link(spec.page())
                if spec.blurb:
                    st.caption(spec.blurb)


def try_real_xrays() -> None:
    """A few shipped radiographs, each one click from a prediction on the Predict page."""
    try:
        items = home_selection(gallery_items(), n=6)
    except FractureError as exc:
        st.caption(f"No gallery of real X-rays: {exc}")
        return
    st.subheader("Try it on real X-rays")
    predict = next(spec.page() for spec in page_specs() if spec.file == "4_Predict.py")
    gallery_strip(items, per_row=6, link=lambda item: st.page_link(
        predict, label="Predict", icon="🔍", width="stretch", query_params={"input": "Sample", PARAM: item.key}))
    st.caption(ATTRIBUTION + " More on the Predict page's *Sample* input.")


navigation = declare_navigation(home)
render_sidebar()
try:
    navigation.run()
finally:
    forget_context()  # the next run draws the sidebar again; a page never sees a stale choice
