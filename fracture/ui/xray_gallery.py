"""The shipped real radiographs in the app: a picker (Predict, Preprocessing Lab) and Home's strip.

The gallery itself (FracAtlas test-split images, boxes, attribution) is read by
:func:`fracture.data.gallery.load_gallery`; this module only draws it. The
picker's choice lives in the URL (``?xray=IMG0000123``), so Home can link
straight to a prediction and a reload keeps the image.
"""
from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np
import streamlit as st

from fracture.data.gallery import GALLERY_DIR, INDEX_NAME, GalleryItem, load_gallery
from fracture.errors import FractureError
from fracture.ui import loaders

PARAM = "xray"
"""Query parameter (and widget key) holding the chosen gallery image's id."""
SOURCE_PARAM = "samples"
"""Query parameter (and widget key) of the "samples from" choice."""
SAMPLE_SOURCES = {"Gallery": "real X-rays shipped with the app (FracAtlas test split)",
                  "Dataset": "a study of the active dataset"}
ATTRIBUTION = ("Real radiographs from FracAtlas (Abedeen et al., *Scientific Data* 2023, "
               "[CC BY 4.0](https://creativecommons.org/licenses/by/4.0/)), downscaled; "
               "from the test split, so the shipped model never saw them.")


@st.cache_data(show_spinner=False)
def _items(signature: int) -> list[GalleryItem]:
    return load_gallery()


def gallery_items() -> list[GalleryItem]:
    """The shipped gallery (cached until its index changes).

    Raises:
        DatasetError: the gallery index is missing or broken.
    """
    return _items(loaders.path_signature(GALLERY_DIR / INDEX_NAME))


def gallery_image(item: GalleryItem) -> np.ndarray:
    """The item's pixels (uint8 grayscale, cached)."""
    return loaders.load_full_image(str(item.path), loaders.path_signature(item.path))


def sample_source(*, key: str = SOURCE_PARAM) -> str:
    """Radio: samples from the shipped gallery (default) or the active dataset."""
    return st.radio("Samples from", tuple(SAMPLE_SOURCES), horizontal=True, key=key, bind="query-params",
                    help=" · ".join(f"{name}: {what}" for name, what in SAMPLE_SOURCES.items()))


def gallery_picker(*, key: str = "gallery-pick") -> GalleryItem | None:
    """A picker over the gallery with a random button; ``None`` (and an error shown) when unreadable.

    The choice is mirrored in ``?xray=ID`` by hand rather than with
    ``bind="query-params"``, which would put the picker's long labels into the URL.
    """
    try:
        items = gallery_items()
    except FractureError as exc:
        st.error(str(exc))
        return None
    by_key = {item.key: item for item in items}
    synced_key = f"{key}-synced"
    url_value, synced = st.query_params.get(PARAM), st.session_state.get(synced_key)
    if url_value in by_key and url_value != synced:
        st.session_state[key] = url_value  # a link (Home) or an edited URL chose
    elif key not in st.session_state and synced in by_key:
        st.session_state[key] = synced  # back on the page: keep the last choice
    left, right = st.columns([4, 1], vertical_alignment="bottom")
    if right.button("🎲 Random", key=f"{key}-random", width="stretch"):
        st.session_state[key] = random.Random().choice([k for k in by_key if k != st.session_state.get(key)])
    chosen = left.selectbox(f"Real X-ray ({len(items)} in the gallery)", list(by_key), key=key,
                            format_func=lambda k: by_key[k].describe())
    st.query_params[PARAM] = chosen
    st.session_state[synced_key] = chosen
    st.caption(ATTRIBUTION)
    return by_key[chosen]


def gallery_strip(items: list[GalleryItem], *, link: Callable[[GalleryItem], None], per_row: int = 4) -> None:
    """Thumbnails of ``items``, each with ``link(item)`` drawn under it (Home's one-click predictions)."""
    for start in range(0, len(items), per_row):
        for column, item in zip(st.columns(per_row), items[start:start + per_row]):
            with column, st.container(border=True):
                try:
                    thumb = loaders.load_thumbnail(str(item.path), loaders.path_signature(item.path))
                except FractureError as exc:
                    st.error(str(exc))
                    continue
                st.image(square(thumb), caption=f"{item.body_part} · {item.label_name}", width="stretch")
                link(item)


def square(image: np.ndarray) -> np.ndarray:
    """Pad to a square with black, centred, so that a row of thumbnails lines up."""
    height, width = image.shape[:2]
    side = max(height, width)
    top, left = (side - height) // 2, (side - width) // 2
    pad = [(top, side - height - top), (left, side - width - left)] + [(0, 0)] * (image.ndim - 2)
    return np.pad(image, pad)


def home_selection(items: list[GalleryItem], n: int = 4) -> list[GalleryItem]:
    """A few items for Home: alternating labels, each from a different body part where possible."""
    picked: list[GalleryItem] = []
    parts: set[str] = set()
    for label in (1, 0) * n:
        pool = [i for i in items if i.label == label and i not in picked]
        fresh = [i for i in pool if i.body_part not in parts]
        if (fresh or pool) and len(picked) < n:
            item = (fresh or pool)[0]
            picked.append(item)
            parts.add(item.body_part)
    return picked
