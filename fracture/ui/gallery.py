"""A paginated study gallery with a full-size view (Dataset Explorer).

Only the images of the page on screen are decoded (as cached thumbnails), so
the gallery stays quick on a 40k-image dataset.
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import streamlit as st

from fracture.errors import ImageLoadError
from fracture.ui import loaders
from fracture.ui.samples import ALL, filter_frame, study_table

STUDIES_PER_PAGE = 6
IMAGES_PER_ROW = 6


@st.dialog("Full-size image", width="large")
def show_full_size(path: str, caption: str) -> None:
    """A dialog with the image at full resolution."""
    try:
        image = loaders.load_full_image(path, loaders.path_signature(path))
    except ImageLoadError as exc:
        st.error(str(exc))
        return
    st.image(image, caption=f"{caption} — {image.shape[1]}×{image.shape[0]} px", width="content")
    st.caption(path)


def page_count(n_items: int, per_page: int) -> int:
    """Number of pages (at least 1)."""
    return max(1, math.ceil(n_items / per_page))


@st.fragment
def gallery_section(frame: pd.DataFrame, class_names: tuple[str, str], body_parts: list[str], *,
                    key: str) -> None:
    """Filters and the paginated gallery; a fragment, so paging reruns only this part."""
    c1, c2, c3 = st.columns(3)
    splits = [s for s in ("train", "val", "test") if (frame["split"] == s).any()]
    split = c1.selectbox("Split", [ALL] + splits, key=f"{key}-split")
    part = c2.selectbox("Body part", [ALL] + list(body_parts), key=f"{key}-part")
    label = c3.selectbox("Label", [ALL, 0, 1], key=f"{key}-label",
                         format_func=lambda v: v if v == ALL else class_names[int(v)])
    study_gallery(filter_frame(frame, split=split, body_part=part, label=label), class_names, key=key)


def study_gallery(frame: pd.DataFrame, class_names: tuple[str, str], *, key: str,
                  per_page: int = STUDIES_PER_PAGE) -> None:
    """Draw the studies of ``frame`` (already filtered), grouped and paginated."""
    studies = study_table(frame)
    if studies.empty:
        st.info("No study matches these filters.")
        return
    if int(studies["images"].max()) == 1:  # FracAtlas: each image its own study, so a grid
        image_grid(frame, class_names, key=key)
        return
    pages = page_count(len(studies), per_page)
    c1, c2 = st.columns([1, 3])
    page = c1.number_input(f"Page (of {pages})", 1, pages, 1, key=f"{key}-page")
    c2.caption(f"{len(studies):,} studies, {len(frame):,} images match; {per_page} studies per page.")
    shown = studies.iloc[(page - 1) * per_page: page * per_page]
    by_study = {sid: rows for sid, rows in frame.groupby("study_id", sort=False)}
    for _, study in shown.iterrows():
        rows = by_study[study["study_id"]]
        with st.container(border=True):
            st.markdown(
                f"**{study['study_id']}** · {study['split']} · {study['body_part']} · "
                f"{'🔴' if study['label'] else '🟢'} {class_names[int(study['label'])]} · "
                f"{study['images']} image(s)"
            )
            paths = rows["path"].tolist()
            for start in range(0, len(paths), IMAGES_PER_ROW):
                columns = st.columns(IMAGES_PER_ROW)
                for column, path in zip(columns, paths[start:start + IMAGES_PER_ROW]):
                    name = Path(path).name
                    with column:
                        try:
                            thumb = loaders.load_thumbnail(path, loaders.path_signature(path))
                        except ImageLoadError as exc:
                            st.error(f"{name}: {exc.reason.replace('_', ' ')}")
                            continue
                        st.image(thumb, caption=name, width="stretch")
                        if st.button("🔍 Full size", key=f"{key}-full-{path}"):
                            show_full_size(path, f"{study['study_id']} / {name}")


IMAGES_PER_PAGE = 24


def image_grid(frame: pd.DataFrame, class_names: tuple[str, str], *, key: str,
               per_page: int = IMAGES_PER_PAGE) -> None:
    """Single-image studies as a paginated grid of thumbnails, each captioned with its study."""
    rows = frame.sort_values("study_id", kind="stable")
    pages = page_count(len(rows), per_page)
    c1, c2 = st.columns([1, 3])
    page = c1.number_input(f"Page (of {pages})", 1, pages, 1, key=f"{key}-page")
    c2.caption(f"{len(rows):,} images match (one per study); {per_page} per page.")
    shown = rows.iloc[(page - 1) * per_page: page * per_page]
    for start in range(0, len(shown), IMAGES_PER_ROW):
        for column, (_, row) in zip(st.columns(IMAGES_PER_ROW), shown.iloc[start:start + IMAGES_PER_ROW].iterrows()):
            path = row["path"]
            with column, st.container(border=True):
                try:
                    thumb = loaders.load_thumbnail(path, loaders.path_signature(path))
                except ImageLoadError as exc:
                    st.error(f"{Path(path).name}: {exc.reason.replace('_', ' ')}")
                    continue
                st.image(thumb, width="stretch",
                         caption=f"{row['study_id']} · {row['split']} · {row['body_part']} · "
                                 f"{'🔴' if row['label'] else '🟢'} {class_names[int(row['label'])]}")
                if st.button("🔍 Full size", key=f"{key}-full-{path}"):
                    show_full_size(path, str(row["study_id"]))
