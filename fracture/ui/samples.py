"""Pick a study from the active dataset and load its images (Predict, Preprocessing Lab)."""
from __future__ import annotations

import random
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import streamlit as st

from fracture.errors import ImageLoadError
from fracture.ui import loaders

if TYPE_CHECKING:
    from fracture.data.manifest import Manifest

#: Studies offered in one picker (a random pick can still reach every study).
MAX_PICKER_STUDIES = 500
ALL = "all"


def study_table(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per study: id, split, body part, label and image count, in a stable order."""
    if frame.empty:
        return pd.DataFrame(columns=["study_id", "split", "body_part", "label", "images"])
    studies = frame.groupby("study_id", sort=True).agg(
        split=("split", "first"), body_part=("body_part", "first"), label=("label", "max"),
        images=("path", "size"),
    )
    return studies.reset_index()


def complete_label_counts(table: pd.DataFrame) -> pd.DataFrame:
    """``split, body_part, label, count`` with a zero row for every missing combination.

    Args:
        table: ``DatasetStats.by_split_body_part`` (``split, body_part, label, images``).

    A split without any image of some body part still gets its bars' slot, so
    the split panels of the label-balance chart line up.
    """
    counts = table.groupby(["split", "body_part", "label"])["images"].sum()
    full = pd.MultiIndex.from_product(
        [sorted(table["split"].unique()), sorted(table["body_part"].unique()), [0, 1]],
        names=["split", "body_part", "label"],
    )
    return counts.reindex(full, fill_value=0).rename("count").reset_index()


def filter_frame(frame: pd.DataFrame, *, split: str = ALL, body_part: str = ALL,
                 label: int | str = ALL) -> pd.DataFrame:
    """Rows of a manifest frame matching the filters (``"all"`` keeps everything)."""
    mask = pd.Series(True, index=frame.index)
    if split != ALL:
        mask &= frame["split"] == split
    if body_part != ALL:
        mask &= frame["body_part"] == body_part
    if label != ALL:
        mask &= frame["label"] == int(label)
    return frame[mask]


def study_picker(manifest: "Manifest", *, key: str, default_split: str = "test") -> pd.DataFrame | None:
    """Filters, a study picker and a random button; returns the chosen study's manifest rows."""
    frame = manifest.frame
    splits = [s for s in ("train", "val", "test") if (frame["split"] == s).any()]
    c1, c2, c3 = st.columns(3)
    split = c1.selectbox("Split", [ALL] + splits, key=f"{key}-split",
                         index=1 + splits.index(default_split) if default_split in splits else 0)
    body_part = c2.selectbox("Body part", [ALL] + list(manifest.body_parts), key=f"{key}-part")
    label = c3.selectbox("Label", [ALL, 0, 1], key=f"{key}-label",
                         format_func=lambda v: v if v == ALL else manifest.class_names[int(v)])
    studies = study_table(filter_frame(frame, split=split, body_part=body_part, label=label))
    if studies.empty:
        st.info("No study matches these filters.")
        return None
    ids = studies["study_id"].astype(str).tolist()
    offered = ids[:MAX_PICKER_STUDIES]
    picked_key = f"{key}-study"
    if st.button("🎲 Random study", key=f"{key}-random"):
        choice = random.Random().choice(ids)
        if choice not in offered:
            offered = [choice] + offered
        st.session_state[picked_key] = choice
    elif st.session_state.get(picked_key) not in offered:
        current = st.session_state.get(picked_key)
        if current in ids:
            offered = [current] + offered
        else:
            st.session_state[picked_key] = offered[0]
    info = studies.set_index(studies["study_id"].astype(str))
    study_id = st.selectbox(
        f"Study ({len(ids):,} match)", offered, key=picked_key,
        format_func=lambda s: (f"{s} · {info.at[s, 'body_part']} · "
                               f"{manifest.class_names[int(info.at[s, 'label'])]} · "
                               f"{info.at[s, 'images']} image(s)"),
    )
    return frame[frame["study_id"].astype(str) == study_id]


def load_study_images(rows: pd.DataFrame) -> tuple[list[np.ndarray], list[str], list[str]]:
    """Decode a study's images (cached); unreadable ones become error messages."""
    images, names, problems = [], [], []
    for path in rows["path"]:
        try:
            images.append(loaders.load_full_image(path, loaders.path_signature(path)))
        except ImageLoadError as exc:
            problems.append(str(exc))
            continue
        names.append(path.rsplit("/", 1)[-1])
    return images, names, problems
